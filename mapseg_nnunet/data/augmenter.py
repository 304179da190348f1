"""Run MAPSeg data loaders in nnU-Net's background augmentation workers (same policy as nnU-Net:
``nnUNet_n_proc_DA`` workers, single-threaded when it is 0).

**Same seed, same batches.** Without a seed this is nnU-Net's own arrangement: ``NonDetMultiThreadedAugmenter``,
whose workers seed themselves from the operating system and whose batches arrive in whatever order the workers
finish them. With the trainer's ``seed`` setting the workers run under batchgenerators' ``MultiThreadedAugmenter``
instead, which collects batches from the workers in a fixed round-robin order, and each worker gets its own seed
derived from the trainer's (:func:`worker_seeds`): NumPy's (the global-local sampler and nnU-Net's transforms) and
PyTorch's (contrast randomization's random networks) random state. Workers therefore draw different batches from
each other, and the same batches in every run with that seed. The workers live for the whole run, so every epoch
continues their streams. In the training process (``nnUNet_n_proc_DA=0``) the trainer's seed already fixes
everything.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

TRAIN_STREAM, VALIDATION_STREAM = 0, 1  # the training and validation workers' seed streams differ


def worker_seeds(seed: int, stream: int, processes: int) -> List[int]:
    """One seed per worker of a ``stream`` (training or validation), derived from the trainer's ``seed``: distinct
    between workers and streams, the same in every run."""
    children = np.random.SeedSequence([int(seed), int(stream)]).spawn(processes)
    return [int(child.generate_state(1)[0] % 2 ** 31) for child in children]


class SeededWorkerLoader:
    """A data loader for a seeded background worker: when batchgenerators starts the worker (``set_thread_id``,
    right after it seeded NumPy with the worker's seed) it also seeds PyTorch from it and keeps the worker to one
    thread, as nnU-Net's own workers do. Everything else is the wrapped loader's."""

    def __init__(self, loader):
        self.loader = loader

    def set_thread_id(self, thread_id: int) -> None:
        torch.manual_seed(int(np.random.randint(0, 2 ** 31)))
        torch.set_num_threads(1)
        self.loader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.loader)

    def __getattr__(self, name):  # only for names this wrapper lacks
        if "loader" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["loader"], name)


def wrap_in_augmenter(train_loader, val_loader, device: torch.device, seed: Optional[int] = None):
    """(training, validation) augmenters for the loaders, primed with one batch each; ``seed`` (the trainer's
    ``seed`` setting, or None) makes the background workers' batches reproducible (module docstring)."""
    processes = get_allowed_n_proc_DA()
    pin = device.type == "cuda"
    if processes == 0:
        train, val = SingleThreadedAugmenter(train_loader, None), SingleThreadedAugmenter(val_loader, None)
    elif seed is None:
        train = NonDetMultiThreadedAugmenter(train_loader, None, processes, max(6, processes // 2), None, pin, 0.002)
        val = NonDetMultiThreadedAugmenter(val_loader, None, max(1, processes // 2), max(3, processes // 4), None,
                                           pin, 0.002)
    else:
        val_processes = max(1, processes // 2)
        train = MultiThreadedAugmenter(SeededWorkerLoader(train_loader), None, processes, num_cached_per_queue=3,
                                       seeds=worker_seeds(seed, TRAIN_STREAM, processes), pin_memory=pin,
                                       wait_time=0.002)
        val = MultiThreadedAugmenter(SeededWorkerLoader(val_loader), None, val_processes, num_cached_per_queue=2,
                                     seeds=worker_seeds(seed, VALIDATION_STREAM, val_processes), pin_memory=pin,
                                     wait_time=0.002)
    next(train)
    next(val)
    return train, val


def seeded_nnunet_augmenters(build_single_threaded, device: torch.device, seed: Optional[int]):
    """nnU-Net's own (training, validation) loaders in seeded workers: ``build_single_threaded`` is
    ``nnUNetTrainer.get_dataloaders`` of the trainer, run here with ``nnUNet_n_proc_DA=0`` so that it builds its
    loaders without starting workers; they then run as :func:`wrap_in_augmenter` runs MAPSeg's. Without a seed,
    nnU-Net's own augmenters unchanged."""
    if seed is None or get_allowed_n_proc_DA() == 0:
        return build_single_threaded()
    previous = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = "0"
    try:
        train, val = build_single_threaded()
    finally:
        if previous is None:
            del os.environ["nnUNet_n_proc_DA"]
        else:
            os.environ["nnUNet_n_proc_DA"] = previous
    return wrap_in_augmenter(train.data_loader, val.data_loader, device, seed)
