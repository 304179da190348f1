"""Does each demo target leave room to adapt? The stock-nnU-Net floor and the target oracle per shift.

    python -m benchmarks.studies.cohort_gaps [--seed 0 --epochs 4 --iterations 30]

Trains stock nnU-Net (``nnUNetTrainer_settingsFromPlans`` on ``nnUNetPlansCPU``, the benchmarks' budget-matched
baseline) on the labeled source (the floor) and on each target's labeled training copy (the oracle), through
``nnUNetv2_train``, with the benchmark's budget by default (the same runs and names as ``python -m
benchmarks.run``, so either reuses the other's models), and scores both on each target's test images. Writes
``cohort_gaps.md`` / ``.json`` to ``--out`` (default: benchmarks/results/cohort_gaps/). The cohort's goal:
oracle - floor >= 20 Dice on every target.
"""
from __future__ import annotations

import argparse
import copy
import json
import os

from ..cohort import CLASS_NAMES, ORACLES, SHIFTS, SOURCE, STOCK_PLANS, TARGETS
from ..evaluation import predict_and_score
from ..runner import FULL, Runner
from ..study import add_seed, add_work_and_out, command_line

STOCK_TRAINER = "nnUNetTrainer_settingsFromPlans"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed(parser)
    parser.add_argument("--epochs", type=int, default=FULL.epochs)
    parser.add_argument("--iterations", type=int, default=FULL.iterations, help="iterations per epoch")
    add_work_and_out(parser, "cohort_gaps")
    args = parser.parse_args(argv)
    budget = copy.deepcopy(FULL)
    budget.epochs, budget.iterations = args.epochs, args.iterations
    same_as_benchmark = (args.epochs, args.iterations) == (FULL.epochs, FULL.iterations)
    suffix = f"bench_s{args.seed}" if same_as_benchmark else f"gaps{args.epochs}x{args.iterations}_s{args.seed}"
    runner = Runner(os.path.abspath(args.work), budget, quick=False)
    runner.setup()
    settings = runner.stock_settings(args.seed)
    plans = runner.variant(SOURCE, STOCK_PLANS, f"{STOCK_PLANS}_{suffix}", settings)
    floor = runner.train(f"s{args.seed}_floor" if same_as_benchmark else f"floor_{suffix}", SOURCE, STOCK_TRAINER,
                         plans)
    rows = {}
    for target, oracle_id in zip(TARGETS, ORACLES):
        oplans = runner.variant(oracle_id, STOCK_PLANS, f"{STOCK_PLANS}_{suffix}", settings)
        oracle = runner.train(f"s{args.seed}_oracle_{target}" if same_as_benchmark else f"oracle_{target}_{suffix}",
                              oracle_id, STOCK_TRAINER, oplans)
        images, labels = os.path.join(runner.folder(target), "imagesTs"), os.path.join(runner.folder(target), "labelsTs")
        predictions = os.path.join(runner.work, "predictions", f"gaps_{suffix}", str(target))
        runner.say(f"{SHIFTS[target]}: floor and oracle on the test images")
        rows[str(target)] = {
            "floor": predict_and_score(floor, images, labels, os.path.join(predictions, "floor")),
            "oracle": predict_and_score(oracle, images, labels, os.path.join(predictions, "oracle"))}
    result = {"command": command_line("cohort_gaps", argv),
              "iterations": args.epochs * args.iterations, "seed": args.seed,
              "targets": {t: {k: {kk: v[kk] for kk in ("classes", "mean")} for k, v in r.items()}
                          for t, r in rows.items()}}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cohort_gaps.json"), "w") as f:
        json.dump(result, f, indent=1)
    classes = " / ".join(CLASS_NAMES.values())
    lines = ["# Room to adapt per demo target: stock-nnU-Net floor vs target oracle", "",
             f"Command: `{result['command'].strip()}`: stock nnU-Net (`{STOCK_TRAINER}` on `{STOCK_PLANS}`), "
             f"{result['iterations']} iterations, seed {args.seed}; target test Dice % (mean of {classes}).", "",
             "| target | floor | oracle | gap | per class floor | per class oracle |", "|---|---|---|---|---|---|"]
    for t, r in result["targets"].items():
        lines.append(f"| {SHIFTS[int(t)]} | {r['floor']['mean']:.1f} | {r['oracle']['mean']:.1f} | "
                     f"{r['oracle']['mean'] - r['floor']['mean']:.1f} | " +
                     " / ".join(f"{v:.1f}" for v in r["floor"]["classes"].values()) + " | " +
                     " / ".join(f"{v:.1f}" for v in r["oracle"]["classes"].values()) + " |")
    with open(os.path.join(args.out, "cohort_gaps.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    runner.say(f"done: {os.path.join(args.out, 'cohort_gaps.md')}")


if __name__ == "__main__":
    main()
