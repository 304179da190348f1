"""Dice tables of ``make demo`` from the ``summary.json`` files of ``nnUNetv2_evaluate_simple``:

* target test Dice per target and class: source-only baseline vs MAPSeg UDA (``PREDICTIONS/MODEL/DatasetXXX_Name``),
  and the paired difference per test case (last model - first, mean over the foreground classes) with a 95 %
  bootstrap interval over the cases and its verdict (better / worse / unresolved);
* with ``--test_time TRAINER``, the paper's Table 3 for test-time UDA: source validation Dice (forgetting) and
  target test Dice (gain) before (stage 1 = the baseline) and after stage 2 at each target site
  (``PREDICTIONS/source_validation/BASELINE``, ``PREDICTIONS/source_validation/TRAINER/DatasetXXX_Name``,
  ``PREDICTIONS/TRAINER/DatasetXXX_Name``), next to centralized UDA on the same target.

    python -m mapseg_nnunet.cli.demo_report PREDICTIONS BASELINE_TRAINER MAPSEG_TRAINER [--test_time TTA_TRAINER]
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

import numpy as np

from mapseg_nnunet.evaluation.paired import FEW_CASES, bootstrap_interval, mean_foreground_dice, verdict

def foreground_labels(folder: str) -> Dict[str, int]:
    """``{name: value}`` of the foreground labels in the ``dataset.json`` nnUNetv2_predict writes next to its
    predictions."""
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (nnUNetv2_predict writes it with the predictions of {folder})")
    return {name: int(value) for name, value in json.load(open(path))["labels"].items() if int(value) > 0}


def load_dice(folder: str) -> Dict[str, float]:
    """Per-class and mean foreground Dice (%) of one evaluated prediction folder."""
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no evaluation summary (run nnUNetv2_evaluate_simple on {folder})")
    summary = json.load(open(path))
    dice = {name: 100 * summary["mean"][str(value)]["Dice"] for name, value in foreground_labels(folder).items()}
    dice["mean"] = 100 * summary["foreground_mean"]["Dice"]
    return dice


def case_dice(folder: str) -> Dict[str, float]:
    """``{case file: mean foreground Dice (%)}`` from ``summary.json``'s per-case metrics (classes absent from both
    prediction and reference, NaN in nnU-Net's evaluation, skipped)."""
    summary = json.load(open(os.path.join(folder, "summary.json")))
    labels = [str(v) for v in foreground_labels(folder).values()]
    return {os.path.basename(case["reference_file"]): mean_foreground_dice(case["metrics"][label]["Dice"]
                                                                            for label in labels)
            for case in summary["metric_per_case"]}


def paired_difference(first: str, last: str) -> dict:
    """Per test case, Dice of ``last`` minus ``first`` (evaluated prediction folders of the same cases): ``{"mean",
    "ci95", "n"}`` (bootstrap over the cases) and ``"verdict"``."""
    a, b = case_dice(first), case_dice(last)
    if set(a) != set(b):
        raise ValueError(f"{first} and {last} were evaluated on different cases: {sorted(set(a) ^ set(b))}")
    differences = np.array([b[c] - a[c] for c in sorted(a)], dtype=float)
    entry = bootstrap_interval({"demo": differences[~np.isnan(differences)]})
    return {**entry, "verdict": verdict(entry)}


def report(predictions: str, models: List[str]) -> str:
    targets = sorted(d for d in os.listdir(os.path.join(predictions, models[0])) if d.startswith("Dataset"))
    columns = list(foreground_labels(os.path.join(predictions, models[0], targets[0]))) + ["mean"]
    width = max(36, *(len(m) for m in models))
    lines = [f"Target test Dice (%), GLC prediction; models: " + ", ".join(models),
             f"{'target test set':32s} {'model':{width}s} " + " ".join(f"{c:>6s}" for c in columns)]
    for target in targets:
        rows = [load_dice(os.path.join(predictions, model, target)) for model in models]
        for model, dice in zip(models, rows):
            lines.append(f"{target:32s} {model:{width}s} " + " ".join(f"{dice[c]:6.1f}" for c in columns))
        lines.append(f"{'':32s} {'difference (last - first)':{width}s} " +
                     " ".join(f"{rows[-1][c] - rows[0][c]:+6.1f}" for c in columns))
        paired = paired_difference(os.path.join(predictions, models[0], target),
                                   os.path.join(predictions, models[-1], target))
        lo, hi = paired["ci95"]
        few = f" (fewer than {FEW_CASES} cases: interval too narrow)" if paired["n"] < FEW_CASES else ""
        lines.append(f"{'':32s} paired per case: {paired['mean']:+.1f} Dice, 95 % interval [{lo:+.1f}, {hi:+.1f}] "
                     f"over {paired['n']} cases: {paired['verdict']}{few}")
    return "\n".join(lines)


def test_time_report(predictions: str, baseline: str, centralized: str, test_time: str) -> str:
    """Table 3 of the paper on the demo cohort: mean foreground Dice (%)."""
    source_before = load_dice(os.path.join(predictions, "source_validation", baseline))["mean"]
    targets = sorted(d for d in os.listdir(os.path.join(predictions, test_time)) if d.startswith("Dataset"))
    lines = [f"Test-time UDA (paper Table 3), mean foreground Dice (%): stage 1 = {baseline} (source site), "
             f"stage 2 = {test_time} (target site, no source data)",
             f"{'target site':32s} {'source val':>10s} {'after':>6s} {'dSource':>7s} {'target':>7s} {'after':>6s} "
             f"{'dTarget':>7s} {'centralized UDA':>15s}"]
    for target in targets:
        source_after = load_dice(os.path.join(predictions, "source_validation", test_time, target))["mean"]
        target_before = load_dice(os.path.join(predictions, baseline, target))["mean"]
        target_after = load_dice(os.path.join(predictions, test_time, target))["mean"]
        central = load_dice(os.path.join(predictions, centralized, target))["mean"]
        lines.append(f"{target:32s} {source_before:10.1f} {source_after:6.1f} {source_after - source_before:+7.1f} "
                     f"{target_before:7.1f} {target_after:6.1f} {target_after - target_before:+7.1f} "
                     f"{central:15.1f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="folder with one sub-folder per model, one per target inside")
    parser.add_argument("models", nargs="+", help="trainer names (sub-folders); the first is the baseline")
    parser.add_argument("--test_time", help="test-time UDA trainer: add the Table 3 report (stage 1 = the first "
                                            "model, centralized UDA = the last)")
    args = parser.parse_args(argv)
    print(report(args.predictions, args.models))
    if args.test_time:
        print()
        print(test_time_report(args.predictions, args.models[0], args.models[-1], args.test_time))


if __name__ == "__main__":
    main()
