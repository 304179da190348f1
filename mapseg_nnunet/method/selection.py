"""Label-free model selection (paper Sec. 3.7) and the rank-consistent epoch means it is computed from."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def mean_over_ranks(values) -> float:
    """Mean of per-iteration values over this process and, under DDP, all ranks, so every rank takes the same
    selection and early-stopping decisions."""
    local = torch.tensor([float(np.sum(values)), float(len(values))], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        local = local.to(backend_device)
        dist.all_reduce(local)
    total, count = local.tolist()
    return total / count if count else 0.0


def selection_score(source_dice: float, mean_mpl: float) -> float:
    """Label-free model selection (paper Sec. 3.7): Dice on the source validation data - 0.5 x the epoch mean of
    L_MPL. With nnU-Net's Dice+CE (CE - soft Dice), L_MPL can be negative."""
    return source_dice - 0.5 * mean_mpl


def replaces_best(record: dict, best: dict | None) -> bool:
    """Whether the epoch ``record`` (``score`` and ``adapted``: whether target terms ran in it) replaces the
    ``best`` one so far. Like is compared with like: warm-up epochs carry L_MPL = 0, which would favour them over
    every adapted epoch (whose L_MPL is positive), so once adaptation has run only adapted epochs are eligible, the
    first of them replacing any warm-up best; among epochs of one kind the higher Score wins. Runs that never adapt
    (source-only) rank all their epochs by Score (= source Dice)."""
    if best is None:
        return True
    if bool(record["adapted"]) != bool(best["adapted"]):
        return bool(record["adapted"])
    return record["score"] > best["score"]
