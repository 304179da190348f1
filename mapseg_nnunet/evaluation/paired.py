"""Paired statistics of two models on the same test cases: a bootstrap interval of the mean per-case difference
(over seeds, then cases within seeds) and its verdict. Used by ``make demo``'s report and by the benchmarks."""
from __future__ import annotations

from typing import Dict

import numpy as np

RESAMPLES, LEVEL = 10000, 0.95
# below this many paired cases a percentile bootstrap sees too few distinct resamples and its interval is too
# narrow: reports mark such rows
FEW_CASES = 10


def mean_foreground_dice(class_dice) -> float:
    """One case's mean foreground Dice in percent from its per-class Dice (fractions, as nnU-Net's evaluation
    writes them): classes that are NaN or None (absent from prediction and reference) skipped; NaN when all are."""
    values = np.array([np.nan if v is None else v for v in class_dice], dtype=float)
    kept = values[~np.isnan(values)]
    return float(100 * kept.mean()) if kept.size else float("nan")


def bootstrap_interval(differences: Dict[str, np.ndarray], resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> dict:
    """``{"mean", "ci95": [lo, hi], "n"}`` of ``{seed: per-case differences}``: the plain mean of all differences,
    the percentile interval (at ``level``) of a two-level bootstrap and n = all differences (cases x seeds). Each
    resample draws the seeds with replacement, then, for each drawn seed, its cases with replacement, and takes the
    mean over all drawn differences; with one seed, a bootstrap over its cases. Deterministic for a given ``seed``."""
    arrays = [np.asarray(d, dtype=float) for d in differences.values()]
    if not arrays or not all(a.size for a in arrays):
        raise ValueError("bootstrap_interval needs at least one seed, each with at least one difference")
    sizes = np.array([a.size for a in arrays])
    padded = np.zeros((len(arrays), sizes.max()))  # seeds x cases, zeros beyond each seed's cases (masked below)
    for i, a in enumerate(arrays):
        padded[i, :a.size] = a
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(arrays), size=(resamples, len(arrays)))  # resample x position -> seed
    n = sizes[drawn][..., None]  # that seed's number of cases
    cases = (rng.random((resamples, len(arrays), sizes.max())) * n).astype(int)  # uniform in [0, n) per slot
    used = np.arange(sizes.max()) < n  # a drawn seed contributes as many draws as it has cases
    means = (padded[drawn[..., None], cases] * used).sum(axis=(1, 2)) / used.sum(axis=(1, 2))
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(np.concatenate(arrays).mean()), "ci95": [float(lo), float(hi)], "n": int(sizes.sum())}


def verdict(entry: dict) -> str:
    """"better" when the interval lies above 0, "worse" when below, else "unresolved" (it contains 0)."""
    lo, hi = entry["ci95"]
    return "better" if lo > 0 else "worse" if hi < 0 else "unresolved"
