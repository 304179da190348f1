"""Benchmarks of the MAPSeg nnU-Net plugin on the demo cohort, run from the repository root:

    python -m benchmarks.run [--quick]        # RESULTS.md: quality, test-time UDA, ablations, selection, speed
    python -m benchmarks.learning_curve       # learning_curve.md: the source-only learning curve
    python -m benchmarks.inference_options    # inference_options.md: Gaussian weighting and mirroring for GLC
    python -m benchmarks.network_cost         # parameter counts; cost of a GLC training step
    python -m benchmarks.gpu_paper_preset     # where a GPU is available: the paper preset's memory, AMP, MFU
    python -m benchmarks.report OUT_FOLDER    # RESULTS.md and plots again from OUT_FOLDER/results.json

The demo cohort's constants are in :mod:`benchmarks.cohort`, the work folder's stock nnU-Net commands in
:mod:`benchmarks.runner`. Imports point one way: the benchmarks use ``mapseg_nnunet``, never the reverse."""
