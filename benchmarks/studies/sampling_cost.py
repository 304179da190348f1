"""Cost of one global-local training sample against the case's size and against stock nnU-Net's data augmentation
of one patch, measured side by side in one run (issue #20: sampling cost must follow the patch and the global
view's size, not the case's voxel count).

    python -m benchmarks.studies.sampling_cost [--samples 20]
                                               [--out benchmarks/results/sampling_cost/sampling_cost.json]

Cases: brain-like z-scored volumes (:func:`mapseg_nnunet.data.synthetic.zscored_brain_case`) of 240x240x155
(1 mm full-size brain MRI) and 60x75x60, stored as nnU-Net stores preprocessed cases (blosc2, chunked for the
patch) and read through nnU-Net's dataset class, as training reads them. Sampler: the MAE trainer's
:class:`~mapseg_nnunet.data.global_local.GlobalLocalDataLoader` (CPU preset patch 32^3, MAPSeg intensity rule with
the training percentile jitter, affine with probability 0.35, flips), one sample per batch, in this process.
Stock: nnU-Net's ``nnUNetDataLoader`` with ``nnUNetTrainer.get_training_transforms`` (its rotation, scaling,
intensity and mirroring transforms) for one 32^3 patch of the large case. Each sampler's first sample (a case's
first visit) is timed on its own; ratios are of the means of the following samples (absolute times depend on the
machine and its load)."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

PATCH = (32, 32, 32)
SHAPES = {"large": (240, 240, 155), "small": (60, 75, 60)}


def write_case(folder: str, name: str, shape, seed: int = 0) -> None:
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    from mapseg_nnunet.data.synthetic import zscored_brain_case
    image, label, _ = zscored_brain_case(np.random.default_rng(seed), shape)
    data, seg = image[None].astype(np.float32), label[None].astype(np.int8)
    blocks, chunks = comp_blosc2_params(data.shape, PATCH, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, PATCH, seg.itemsize)
    properties = {"class_locations": {1: [], 2: []}, "spacing": [1.0, 1.0, 1.0]}
    nnUNetDatasetBlosc2.save_case(data, seg, properties, os.path.join(folder, name), chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)


def sample_times(fn, samples: int) -> dict:
    """The first call (a case's first visit: the loader reads the whole case once and keeps what sampling needs)
    timed on its own, then the mean and median of ``samples`` further calls."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"first": round(first, 4), "mean": round(float(np.mean(times)), 4),
            "median": round(float(np.median(times)), 4)}


def global_local_sampler(folder: str, case: str):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from mapseg_nnunet.data.global_local import GlobalLocalDataLoader
    from mapseg_nnunet.data.intensity import intensity_settings_for_channels
    from mapseg_nnunet.data.sample_geometry import GlobalLocalAugmentation
    loader = GlobalLocalDataLoader([(case, nnUNetDatasetBlosc2(folder, [case]))], 1, PATCH,
                                   intensity_settings_for_channels(["FLAIR"]), GlobalLocalAugmentation(),
                                   with_labels=True)
    return loader.generate_train_batch


def stock_sampler(folder: str, case: str):
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    rotation = (-30. / 360 * 2. * np.pi, 30. / 360 * 2. * np.pi)  # nnUNetTrainer's 3D defaults
    initial = get_patch_size(PATCH, rotation, rotation, rotation, (0.85, 1.25))
    transforms = nnUNetTrainer.get_training_transforms(PATCH, rotation, None, (0, 1, 2), False)
    labels = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    loader = nnUNetDataLoader(nnUNetDatasetBlosc2(folder, [case]), 1, initial, PATCH, labels, 0.0,
                              transforms=transforms)
    return loader.generate_train_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)  # as in nnU-Net's augmentation workers
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, shape) in enumerate(SHAPES.items()):
            write_case(folder, name, shape, seed=i)
        seconds = {
            "global_local_large": sample_times(global_local_sampler(folder, "large"), args.samples),
            "global_local_small": sample_times(global_local_sampler(folder, "small"), args.samples),
            "stock_nnunet_large": sample_times(stock_sampler(folder, "large"), args.samples),
        }
    mean = {k: v["mean"] for k, v in seconds.items()}
    result = {
        "patch": list(PATCH), "shapes": {k: list(v) for k, v in SHAPES.items()}, "samples": args.samples,
        "seconds_per_sample": seconds,
        "ratio_large_over_small": round(mean["global_local_large"] / mean["global_local_small"], 2),
        "ratio_global_local_over_stock_large": round(mean["global_local_large"] / mean["stock_nnunet_large"], 2),
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from mapseg_nnunet.data.atomic import save_json_atomic
        save_json_atomic(result, args.out)


if __name__ == "__main__":
    main()
