"""Paired statistics for the benchmark report: per-case Dice differences between two methods on the same test cases
of the same seed, a two-level bootstrap interval of their mean (seeds, then cases within seeds) and a verdict
(better / worse / unresolved), per comparison (:data:`COMPARISONS`) and shift. Written by
:func:`benchmarks.report.render` into results.json (``paired``) and RESULTS.md (section 2b)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

BEST = "best"  # in COMPARISONS: the method of BEST_CANDIDATES with the highest mean per-case Dice on the shift
BEST_CANDIDATES = ("source_only", "source_only_cr", "source_only_cr_matched", "uda_cr", "tta_cr", "fed_cr")
# comparison name -> (method, reference); each difference is method - reference
COMPARISONS: Dict[str, Tuple[str, str]] = {
    "uda-vs-matched_control": ("uda_cr", "source_only_cr_matched"),
    "uda-vs-teacher": ("uda_cr", "source_only_cr"),
    "tta-vs-teacher": ("tta_cr", "source_only_cr"),
    "fed-vs-uda": ("fed_cr", "uda_cr"),
    "best-vs-floor": (BEST, "floor")}
RESAMPLES, LEVEL = 10000, 0.95
# below this many paired cases a percentile bootstrap sees too few distinct resamples and its interval is too
# narrow: the report marks such rows
FEW_CASES = 10


def case_values(scores: dict) -> Dict[str, float]:
    """Per-case Dice (%) of one method on one target: ``{case file name: mean over its foreground classes}``, NaN
    classes (absent from prediction and reference) skipped; NaN when every class is. Empty without ``cases``."""
    out = {}
    for case, classes in scores.get("cases", {}).items():
        values = np.array([np.nan if v is None else v for v in classes.values()], dtype=float)
        out[case] = float(100 * values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")
    return out


def paired_differences(quality: dict, method: str, reference: str, target: str) -> Dict[str, np.ndarray]:
    """``{seed: per-case Dice differences method - reference (points)}`` on ``target``, for each seed of ``quality``
    (``{seed: {method: {target: scores}}}``) that ran both with per-case scores; a case NaN for either method is
    left out (so is a seed left with none). Empty when no seed ran both. ValueError when the two case sets
    differ."""
    out = {}
    for seed, row in quality.items():
        if target not in row.get(method, {}) or target not in row.get(reference, {}):
            continue
        a, b = case_values(row[method][target]), case_values(row[reference][target])
        if set(a) != set(b):
            raise ValueError(f"{method} and {reference} scored different cases on target {target}, seed {seed}: "
                             f"{sorted(set(a) ^ set(b))}")
        differences = np.array([a[c] - b[c] for c in sorted(a)], dtype=float)
        differences = differences[~np.isnan(differences)]
        if differences.size:
            out[str(seed)] = differences
    return out


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


def best_method(quality: dict, target: str) -> str | None:
    """The method of :data:`BEST_CANDIDATES` with the highest mean per-case Dice on ``target`` (mean over the seeds
    that ran it of each seed's mean over cases); None when none has per-case scores."""
    means = {}
    for method in BEST_CANDIDATES:
        seed_means = []
        for row in quality.values():
            if target in row.get(method, {}):
                values = np.array(list(case_values(row[method][target]).values()), dtype=float)
                if (~np.isnan(values)).any():
                    seed_means.append(values[~np.isnan(values)].mean())
        if seed_means:
            means[method] = float(np.mean(seed_means))
    return max(means, key=means.get) if means else None


def paired_table(quality: dict, targets: Dict[str, str]) -> Dict[str, Dict[str, dict]]:
    """``{comparison: {shift: {"mean", "ci95", "n"}}}`` (:func:`bootstrap_interval`; best-vs-floor adds the best
    ``"method"``) for :data:`COMPARISONS` on ``targets`` (``{target id: shift name}``), shifts without data left
    out."""
    out: Dict[str, Dict[str, dict]] = {}
    for name, (method, reference) in COMPARISONS.items():
        for target, shift in targets.items():
            chosen = best_method(quality, target) if method == BEST else method
            differences = paired_differences(quality, chosen, reference, target) if chosen else {}
            if differences:
                entry = bootstrap_interval(differences)
                out.setdefault(name, {})[shift] = {**entry, "method": chosen} if method == BEST else entry
    return out


def paired_lines(paired: Dict[str, Dict[str, dict]]) -> List[str]:
    """Section 2b of RESULTS.md: how the intervals are computed, then one table row per comparison and shift."""
    lines = [f"Per case: the mean Dice (%) over its foreground classes; difference = method - reference on the same "
             f"test cases of the same seed, over the seeds that ran both. Mean of all differences, and the "
             f"{100 * LEVEL:.0f} % percentile interval of a two-level bootstrap ({RESAMPLES} resamples: seeds drawn "
             f"with replacement, then cases with replacement within each drawn seed). \"better\" / \"worse\": the "
             f"interval lies above / below 0; \"unresolved\": the interval contains 0. best-vs-floor compares the "
             f"method with the highest mean Dice on the shift (named in parentheses; chosen on the same test cases). "
             f"Below {FEW_CASES} pairs a percentile bootstrap has too few distinct resamples: such rows are marked.",
             "", "| comparison | shift | mean difference (Dice) | 95 % interval | n (cases x seeds) | verdict |",
             "|---|---|---|---|---|---|"]
    if not paired:
        return lines[:1] + ["", "No comparison had two methods scored per case on the same seed."]
    for name, shifts in paired.items():
        for shift, entry in shifts.items():
            label = f"{name} ({entry['method']})" if "method" in entry else name
            lo, hi = entry["ci95"]
            lines.append(f"| {label} | {shift} | {entry['mean']:+.1f} | [{lo:+.1f}, {hi:+.1f}] | {entry['n']} | "
                         f"{verdict(entry)}{' (few cases: interval too narrow)' if entry['n'] < FEW_CASES else ''} |")
    return lines
