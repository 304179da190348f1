"""Random-number state in checkpoints, so that ``nnUNetv2_train ... --c`` continues a run exactly.

nnU-Net's checkpoint restores weights, optimiser, grad scaler, logger and epoch; what a run draws next (masks,
dropout, augmentation, which case and patch) depends on the random states as well. The trainers store
Python's, NumPy's and PyTorch's global states (CUDA's too on GPUs) and the generators of the global-local data
loaders when those run in the training process (``nnUNet_n_proc_DA=0``). A resumed run restores them once its
loaders exist, right before the first iteration: with in-process loaders and deterministic kernels it then
draws exactly what the uninterrupted run drew. nnU-Net's background augmentation workers (``nnUNet_n_proc_DA``
> 0) seed themselves and prefetch batches, so with them the data order after a resume differs, as in stock
nnU-Net; the network-side draws (masks, dropout) still continue from the saved state.
"""
from __future__ import annotations

import random
from typing import Dict, Iterable, Optional

import numpy as np
import torch

RNG_KEY = "rng_state"


def in_process_loaders(augmenters: Dict[str, object]) -> Dict[str, object]:
    """``{name: global-local loader}`` for the augmenters that run their loader in this process (nnU-Net's
    ``SingleThreadedAugmenter``); a loader combining others (source + target) contributes each of them."""
    found = {}
    for name, augmenter in augmenters.items():
        loader = getattr(augmenter, "data_loader", None)  # absent on the multi-process augmenters
        if loader is None:
            continue
        parts = {"source": getattr(loader, "source", None), "target": getattr(loader, "target", None)}
        if any(p is not None for p in parts.values()):
            found.update({f"{name}.{k}": p for k, p in parts.items() if p is not None})
        elif hasattr(loader, "rng"):
            found[name] = loader
    return found


def capture_rng_state(loaders: Optional[Dict[str, object]] = None) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "loaders": {}}
    for name, loader in (loaders or {}).items():
        if loader.rng is not None:
            state["loaders"][name] = loader.rng.bit_generator.state
    return state


def restore_rng_state(state: dict, loaders: Optional[Dict[str, object]] = None) -> Iterable[str]:
    """Restore what :func:`capture_rng_state` saved; returns the names of loaders whose state could not be
    restored (saved in-process, now in background workers, or the other way round)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    loaders = loaders or {}
    for name, loader_state in state.get("loaders", {}).items():
        if name in loaders:
            generator = np.random.default_rng()
            generator.bit_generator.state = loader_state
            loaders[name].rng = generator
    return sorted(set(state.get("loaders", {})) ^ set(loaders))
