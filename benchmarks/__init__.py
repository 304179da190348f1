"""Benchmarks of the MAPSeg nnU-Net plugin on the demo cohort, run from the repository root (benchmarks/README.md):

    python -m benchmarks.run [--quick]        # results/RESULTS.md: quality, test-time UDA, ablations, selection, speed
    python -m benchmarks.report [FOLDER]      # RESULTS.md and plots again from FOLDER/results.json (default results/)
    python -m benchmarks.studies.NAME         # one study (benchmarks.studies): results/NAME/

The harness: the demo cohort's constants in :mod:`benchmarks.cohort`, the work folder's stock nnU-Net commands in
:mod:`benchmarks.runner`, prediction and scoring in :mod:`benchmarks.evaluation`, speed ratios in
:mod:`benchmarks.speed`, paired statistics in :mod:`benchmarks.paired`, the report in :mod:`benchmarks.report`, and
what every study shares (arguments, result files) in :mod:`benchmarks.study`. Imports point one way: the studies use
the harness, the harness never imports a study, and the benchmarks use ``mapseg_nnunet``, never the reverse."""
