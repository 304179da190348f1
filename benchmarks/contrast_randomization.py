"""Does intensity augmentation make the source model (the teacher every pseudo-label comes from) robust to the
target's contrast? Source-only models with and without it, on the demo cohort.

    python -m benchmarks.contrast_randomization [--epochs 8 --iterations 40 --seed 0 --plans MAPSegResEncPlansCPU]

Trains ``nnUNetTrainerMAPSegUDA_noMPL`` (the source terms of Eq. 9: exactly the model a UDA run's teacher starts
from at the end of its warm-up) through stock ``nnUNetv2_train`` for each configuration below, then predicts the
source's validation cases and every target's test images (``nnUNetPredictor``, the path of ``nnUNetv2_predict``):

* ``paper``: no intensity augmentation (the paper's sampler);
* ``nnunet``: nnU-Net's own intensity transforms (``source_intensity.nnunet``);
* ``nnunet+gin+remap``: plus GIN-style random convolution and signed random intensity remapping, each with
  probability 0.5 (``source_intensity.gin_probability`` / ``remap_probability``).

Reported per shift: target test Dice (%) per class and mean, and the foreground voxel accuracy (%), i.e. how often
the teacher's pseudo-label would be right inside the brain; and the source validation Dice. Writes
``contrast_randomization.md`` / ``.json`` to ``--out`` (default: benchmarks/). Work folder and cohort are the
benchmarks' (``work_dirs/benchmarks``); finished trainings and predictions are reused.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

from mapseg_nnunet.trainers.uda import CONTRAST_RANDOMIZATION

from .cohort import CLASS_NAMES, PLANNERS, SHIFTS, SOURCE, TARGETS
from .evaluation import dice_accuracy_cells, source_and_target_scores
from .runner import FULL, Runner

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGURATIONS = {
    "paper": {},
    "nnunet": {"source_intensity.nnunet": True},
    "nnunet+gin+remap": CONTRAST_RANDOMIZATION,  # the trainers' _contrastRandomized variants
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plans", default="MAPSegResEncPlansCPU", choices=sorted(PLANNERS))
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--work", default=os.path.join(os.path.dirname(HERE), "work_dirs", "benchmarks"))
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args(argv)
    runner = Runner(os.path.abspath(args.work), copy.deepcopy(FULL), quick=False)
    runner.setup()
    runner.plan(args.plans)
    results = {}
    for name in args.configurations:
        settings = runner.source_settings(args.seed, num_epochs=args.epochs, num_iterations_per_epoch=args.iterations,
                                          warmup_iterations=args.epochs * args.iterations, **CONFIGURATIONS[name])
        tag = name.replace("+", "_")
        plans = runner.variant(SOURCE, args.plans, f"{args.plans}_cr_{tag}_s{args.seed}", settings)
        model = runner.train(f"cr_{tag}_s{args.seed}", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans)
        predictions = os.path.join(runner.work, "predictions", f"cr_{args.plans}_s{args.seed}", tag)
        runner.say(f"{name}: predicting the source validation cases and the targets' test images")
        results[name] = {"settings": CONFIGURATIONS[name], "model": model,
                         "scores": source_and_target_scores(runner, model, predictions)}
    result = {"command": "python -m benchmarks.contrast_randomization " + " ".join(
        argv if argv is not None else sys.argv[1:]), "plans": args.plans, "iterations": args.epochs * args.iterations,
        "seed": args.seed, "configurations": results}
    runner.save_result(args.out, "contrast_randomization", result, write_markdown)


def write_markdown(out: str, r: dict) -> None:
    classes = " / ".join(CLASS_NAMES.values())
    lines = ["# Source-only models with and without intensity augmentation (the teacher's starting point)", "",
             f"Command: `{r['command'].strip()}`: `nnUNetTrainerMAPSegUDA_noMPL` on `{r['plans']}`, "
             f"{r['iterations']} iterations, seed {r['seed']}, no MAE initialisation; one seed, so differences of a "
             f"few Dice points are within seed noise.", "",
             f"Dice %: mean of {classes} (per class in contrast_randomization.json); accuracy %: voxel accuracy "
             f"inside the brain (label > 0), i.e. how often the teacher's pseudo-label would be right.", "",
             "| configuration | source val Dice | " +
             " | ".join(f"{SHIFTS[t]} Dice / accuracy" for t in TARGETS) + " |",
             "|---|---|" + "---|" * len(TARGETS)]
    for name, c in r["configurations"].items():
        lines.append(f"| {name} | {dice_accuracy_cells(c['scores'])} |")
    with open(os.path.join(out, "contrast_randomization.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
