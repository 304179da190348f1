"""Paired statistics for the benchmark report: per-case Dice differences between two methods on the same test cases
of the same seed, a two-level bootstrap interval of their mean (seeds, then cases within seeds) and a verdict
(better / worse / unresolved), per comparison (:data:`COMPARISONS`) and shift. Written by
:func:`benchmarks.report.render` into results.json (``paired``) and RESULTS.md (section 2b)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from mapseg_nnunet.evaluation.paired import (FEW_CASES, LEVEL, RESAMPLES, bootstrap_interval,
                                           mean_foreground_dice, verdict)

BEST = "best"  # in COMPARISONS: the method of BEST_CANDIDATES with the highest mean per-case Dice on the shift
BEST_CANDIDATES = ("source_only", "source_only_cr", "source_only_cr_matched", "uda_cr", "tta_cr", "fed_cr")
# comparison name -> (method, reference); each difference is method - reference
MATCHED_CONTROL = "source_only_cr_matched"  # the teacher continued for UDA's adapting iterations, no target terms
ABLATION_PREFIX = "ablation/"  # quality rows of the ablations (benchmarks.evaluation)
COMPARISONS: Dict[str, Tuple[str, str]] = {
    "uda-vs-matched_control": ("uda_cr", MATCHED_CONTROL),
    "uda-vs-teacher": ("uda_cr", "source_only_cr"),
    "tta-vs-teacher": ("tta_cr", "source_only_cr"),
    "fed-vs-uda": ("fed_cr", "uda_cr"),
    "best-vs-floor": (BEST, "floor")}


def case_values(scores: dict) -> Dict[str, float]:
    """Per-case Dice (%) of one method on one target: ``{case file name: mean over its foreground classes}``, NaN
    classes (absent from prediction and reference) skipped; NaN when every class is. Empty without ``cases``."""
    return {case: mean_foreground_dice(classes.values()) for case, classes in scores.get("cases", {}).items()}


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


def comparisons(quality: dict) -> Dict[str, Tuple[str, str]]:
    """:data:`COMPARISONS`, then each ablation of ``quality`` (rows ``ablation/<name>``) against the
    iteration-matched control: ``"<name>-vs-matched_control"``."""
    ablations = sorted({m for row in quality.values() for m in row if m.startswith(ABLATION_PREFIX)})
    return {**COMPARISONS, **{f"{m[len(ABLATION_PREFIX):]}-vs-matched_control": (m, MATCHED_CONTROL)
                              for m in ablations}}


def paired_table(quality: dict, targets: Dict[str, str]) -> Dict[str, Dict[str, dict]]:
    """``{comparison: {shift: {"mean", "ci95", "n"}}}`` (:func:`bootstrap_interval`; best-vs-floor adds the best
    ``"method"``) for :func:`comparisons` on ``targets`` (``{target id: shift name}``), shifts without data left
    out."""
    out: Dict[str, Dict[str, dict]] = {}
    for name, (method, reference) in comparisons(quality).items():
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
