"""Single-question studies on the benchmark's demo cohort, each run from the repository root as
``python -m benchmarks.studies.NAME`` (its docstring says how); each writes its .md / .json (and plots) to
``benchmarks/results/NAME/`` by default (:mod:`benchmarks.study`). A list with costs: benchmarks/README.md.

* ``backbone_budget``: both backbones (and U-Net variants) at one iteration budget;
* ``cohort_gaps``: stock-nnU-Net floor vs target oracle per demo target;
* ``contrast_randomization``: source-only teachers with and without intensity augmentation;
* ``gpu_paper_preset``: the paper preset's memory, AMP vs fp32 and MFU, where a GPU is available;
* ``inference_options``: Gaussian weighting and test-time mirroring for GLC inference;
* ``learning_curve``: the source-only learning curve of a CPU preset;
* ``long_run``: one seed at about ten times the benchmark's budget;
* ``masked_inputs``: masked vs clean input on a trained model;
* ``network_cost``: parameter counts, nnU-Net's memory estimate, cost of a GLC training step;
* ``pseudo_label_weighting``: masked pseudo-labeling continuing a contrast-randomized teacher;
* ``sampling_cost``: cost of a global-local training sample against the case's size;
* ``whole_volume``: whole-volume scans, MAPSeg source-only vs stock nnU-Net;
* ``zscored_intensity``: what the intensity rule does to z-scored MRI.
"""
