"""MAPSeg (Masked Autoencoding and Pseudo-Labeling Segmentation) for nnU-Net v2."""
__version__ = "0.1.0"
