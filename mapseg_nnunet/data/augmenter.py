"""Run MAPSeg data loaders in nnU-Net's background augmentation workers (same policy as nnU-Net:
``nnUNet_n_proc_DA`` workers, single-threaded when it is 0)."""
from __future__ import annotations

import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA


def wrap_in_augmenter(train_loader, val_loader, device: torch.device):
    processes = get_allowed_n_proc_DA()
    if processes == 0:
        train, val = SingleThreadedAugmenter(train_loader, None), SingleThreadedAugmenter(val_loader, None)
    else:
        pin = device.type == "cuda"
        train = NonDetMultiThreadedAugmenter(train_loader, None, processes, max(6, processes // 2), None, pin, 0.002)
        val = NonDetMultiThreadedAugmenter(val_loader, None, max(1, processes // 2), max(3, processes // 4), None,
                                           pin, 0.002)
    next(train)
    next(val)
    return train, val
