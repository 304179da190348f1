"""Target Dice table of ``make demo``: source-only baseline vs MAPSeg UDA, per target test set and class, from the
``summary.json`` files of ``nnUNetv2_evaluate_simple`` in ``PREDICTIONS/MODEL/DatasetXXX_Name``.

    python -m mapseg_nnunet.demo_report PREDICTIONS BASELINE_TRAINER MAPSEG_TRAINER
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

from mapseg_nnunet.dataset_conversion.demo_brain import LABELS


def load_dice(folder: str) -> Dict[str, float]:
    """Per-class and mean foreground Dice (%) of one evaluated prediction folder."""
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no evaluation summary (run nnUNetv2_evaluate_simple on {folder})")
    summary = json.load(open(path))
    dice = {name: 100 * summary["mean"][str(value)]["Dice"] for name, value in LABELS.items() if value > 0}
    dice["mean"] = 100 * summary["foreground_mean"]["Dice"]
    return dice


def report(predictions: str, models: List[str]) -> str:
    targets = sorted(d for d in os.listdir(os.path.join(predictions, models[0])) if d.startswith("Dataset"))
    columns = [n for n, v in LABELS.items() if v > 0] + ["mean"]
    lines = [f"Target test Dice (%), GLC prediction; models: " + ", ".join(models),
             f"{'target test set':32s} {'model':36s} " + " ".join(f"{c:>6s}" for c in columns)]
    for target in targets:
        rows = [load_dice(os.path.join(predictions, model, target)) for model in models]
        for model, dice in zip(models, rows):
            lines.append(f"{target:32s} {model:36s} " + " ".join(f"{dice[c]:6.1f}" for c in columns))
        lines.append(f"{'':32s} {'difference (last - first)':36s} " +
                     " ".join(f"{rows[-1][c] - rows[0][c]:+6.1f}" for c in columns))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="folder with one sub-folder per model, one per target inside")
    parser.add_argument("models", nargs="+", help="trainer names (sub-folders); the first is the baseline")
    args = parser.parse_args(argv)
    print(report(args.predictions, args.models))


if __name__ == "__main__":
    main()
