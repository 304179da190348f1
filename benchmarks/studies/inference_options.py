"""Does nnU-Net's Gaussian weighting or test-time mirroring help GLC inference? Dice and time, side by side.

    python -m benchmarks.studies.inference_options [--model FOLDER] [--step 0.833]

Predicts the three targets' test images with one MAPSeg model (default: the fitted source-only model of
``benchmarks.studies.learning_curve``, else seed 0's centralized UDA model of ``benchmarks.run``) through
``nnUNetPredictor`` (the GLC path of ``nnUNetv2_predict``) with Gaussian weighting on / off x mirroring on / off, and
writes ``inference_options.md`` / ``.json`` to ``--out`` (default: benchmarks/results/inference_options/). Times are
ratios to the default (Gaussian on, no mirroring), measured in this one run.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ..cohort import CLASS_NAMES, PLANS, SHIFTS, SOURCE, TARGETS
from ..evaluation import predict_folder, score_folder
from ..runner import FULL, Runner
from ..study import add_work_and_out, command_line


OPTIONS = [("Gaussian, no mirroring", True, False), ("uniform, no mirroring", False, False),
           ("Gaussian, mirroring", True, True), ("uniform, mirroring", False, True)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="MAPSeg model folder (nnUNet_results/.../TRAINER__PLANS__CONF)")
    parser.add_argument("--step", type=float, default=0.833, help="sliding-window step (the paper's stride 80 of 96)")
    add_work_and_out(parser, "inference_options")
    args = parser.parse_args(argv)
    runner = Runner(os.path.abspath(args.work), FULL, quick=False)
    model = args.model
    if model is None:
        for trainer, plans in (("nnUNetTrainerMAPSegUDA_noMPL", f"{PLANS}_curve_s0"), ("nnUNetTrainerMAPSegUDA",
                                                                                     f"{PLANS}_bench_s0")):
            model = runner.model_folder(SOURCE, trainer, plans)
            if os.path.isfile(os.path.join(model, "fold_0", "checkpoint_final.pth")):
                break
        else:
            raise SystemExit("No trained MAPSeg model found: run python -m benchmarks.studies.learning_curve or "
                             "python -m benchmarks.run first, or pass --model.")
    results = {}
    for name, gaussian, mirroring in OPTIONS:
        runner.say(f"{os.path.basename(model)}: {name}")
        row = {"seconds": 0.0}
        for t in TARGETS:
            out = os.path.join(runner.work, "predictions", "inference_options", name.replace(", ", "_").replace(" ", "_"),
                               str(t))
            row["seconds"] += predict_folder(model, os.path.join(runner.folder(t), "imagesTs"), out,
                                             step=args.step, gaussian=gaussian, mirroring=mirroring)
            row[str(t)] = score_folder(out, os.path.join(runner.folder(t), "labelsTs"))
        results[name] = row
    default = results[OPTIONS[0][0]]["seconds"]
    report = {"command": command_line("inference_options", argv),
              "model": model, "step": args.step, "results": results}
    with open(os.path.join(args.out, "inference_options.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = ["# GLC inference: Gaussian weighting and test-time mirroring", "",
             f"Command: `{report['command'].strip()}`; model `{os.path.basename(model)}`, step {args.step}, "
             f"nnUNetPredictor on the CPU.", "",
             f"Target test Dice % (mean of {' / '.join(CLASS_NAMES.values())}); time relative to Gaussian without "
             f"mirroring, same run.", "",
             "| option | " + " | ".join(SHIFTS[t] for t in TARGETS) + " | mean | time ratio |",
             "|---|" + "---|" * (len(TARGETS) + 2)]
    for name, row in results.items():
        means = [row[str(t)]["mean"] for t in TARGETS]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) +
                     f" | {np.mean(means):.1f} | {row['seconds'] / default:.2f} |")
    with open(os.path.join(args.out, "inference_options.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    runner.say(f"done: {os.path.join(args.out, 'inference_options.md')}")


if __name__ == "__main__":
    main()
