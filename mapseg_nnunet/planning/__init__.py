"""Plans: presets, MAPSeg configurations in nnU-Net plans, plans variants, atomic preprocessing."""
