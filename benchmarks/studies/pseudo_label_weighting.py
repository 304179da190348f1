"""Hard vs confidence-weighted masked pseudo-labels, from the same teacher, on the demo cohort.

    python -m benchmarks.studies.pseudo_label_weighting [--teacher nnunet+gin+remap --adapt_epochs 2 --seed 0]

Starts from a finished source-only model of ``python -m benchmarks.studies.contrast_randomization`` (same plans,
settings and seed; trained first if missing). ``nnUNetTrainerMAPSegUDA`` with ``warmup_iterations`` equal to that run's
length is that run plus the target terms, so its warm-up is not trained again: the source-only checkpoint is
copied into the UDA model folder and stock ``nnUNetv2_train ... --c`` continues it for ``--adapt_epochs`` epochs
with masked pseudo-labeling on all registered targets (the EMA teacher starts as the source-only model). One run
per ``pseudo_labeling.weighting``: ``hard`` (the paper's argmax) and ``confidence`` (MIC-style: each term scaled by
the share of voxels whose teacher probability exceeds ``pseudo_labeling.threshold``), and a control that
continues the source-only model for as many iterations without the target terms.

Reported per shift: target test Dice (%) and foreground voxel accuracy of the adapted student (the predicting
network), next to the source-only teacher's; the epoch-mean pseudo-label weight; the source validation Dice.
Writes ``pseudo_label_weighting.md`` / ``.json`` to ``--out`` (default: benchmarks/results/pseudo_label_weighting/).
"""
from __future__ import annotations

import argparse
import copy
import os

import torch

from . import contrast_randomization as cr
from ..cohort import CLASS_NAMES, SHIFTS, SOURCE, TARGETS
from ..evaluation import dice_accuracy_cells, source_and_target_scores
from ..runner import FULL, Runner
from ..study import add_plans, add_seed, add_work_and_out, command_line

# run name -> (trainer, settings): both weightings, and the control that continues the source-only model for as
# many iterations without pseudo-labels (what the extra iterations alone do)
RUNS = {"hard": ("nnUNetTrainerMAPSegUDA", {"pseudo_labeling.weighting": "hard"}),
        "confidence": ("nnUNetTrainerMAPSegUDA", {"pseudo_labeling.weighting": "confidence"}),
        "source-only continued": ("nnUNetTrainerMAPSegUDA_noMPL", {})}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="nnunet+gin+remap", choices=list(cr.CONFIGURATIONS),
                        help="the source-only configuration of benchmarks.studies.contrast_randomization to start from")
    parser.add_argument("--source_epochs", type=int, default=3, help="its epochs (as trained there)")
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch (as trained there)")
    parser.add_argument("--adapt_epochs", type=int, default=2)
    add_seed(parser)
    add_plans(parser, "MAPSegResEncPlansCPU")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    add_work_and_out(parser, "pseudo_label_weighting")
    args = parser.parse_args(argv)
    cr.main(["--epochs", str(args.source_epochs), "--iterations", str(args.iterations), "--seed", str(args.seed),
             "--plans", args.plans, "--configurations", args.teacher, "--work", args.work,
             "--out", os.path.join(args.work, "contrast_randomization_for_weighting")])
    runner = Runner(os.path.abspath(args.work), copy.deepcopy(FULL), quick=False)
    tag = args.teacher.replace("+", "_")
    source_iterations = args.source_epochs * args.iterations
    source_plans = f"{args.plans}_cr_{tag}_s{args.seed}"
    source_model = runner.model_folder(SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", source_plans)
    results = {"source-only teacher": {"scores": source_and_target_scores(runner, source_model, os.path.join(
        runner.work, "predictions", f"cr_{args.plans}_s{args.seed}", tag))}}
    for name in args.runs:
        trainer, extra = RUNS[name]
        settings = runner.source_settings(
            args.seed, num_epochs=args.source_epochs + args.adapt_epochs, num_iterations_per_epoch=args.iterations,
            warmup_iterations=source_iterations, **cr.CONFIGURATIONS[args.teacher], **extra)
        tag_run = {"hard": "hard", "confidence": "confidence", "source-only continued": "continued"}[name]
        plans = runner.variant(SOURCE, args.plans, f"{source_plans}_uda_{tag_run}{args.adapt_epochs}", settings)
        folder = runner.continue_training(f"plw_{plans}", trainer, plans, source_model, args.source_epochs)
        final = os.path.join(folder, "fold_0", "checkpoint_final.pth")
        history = torch.load(final, map_location="cpu", weights_only=False)["mapseg"]["score_history"]
        runner.say(f"{name}: predicting the source validation cases and the targets' test images")
        results[name] = {"trainer": trainer, "settings": settings, "model": folder, "score_history": history,
                         "scores": source_and_target_scores(runner, folder, os.path.join(
                             runner.work, "predictions", f"plw_{args.plans}_s{args.seed}", f"{tag}_{tag_run}"))}
    result = {"command": command_line("pseudo_label_weighting", argv), "plans": args.plans, "teacher": args.teacher,
              "source_iterations": source_iterations, "adapt_iterations": args.adapt_epochs * args.iterations,
              "seed": args.seed, "runs": results}
    runner.save_result(args.out, "pseudo_label_weighting", result, write_markdown)


def write_markdown(out: str, r: dict) -> None:
    classes = " / ".join(CLASS_NAMES.values())
    lines = ["# Hard vs confidence-weighted masked pseudo-labels (same teacher)", "",
             f"Command: `{r['command'].strip()}`: `nnUNetTrainerMAPSegUDA` on `{r['plans']}` continuing the "
             f"source-only model `{r['teacher']}` ({r['source_iterations']} iterations) for {r['adapt_iterations']} "
             f"iterations of masked pseudo-labeling on all three targets, seed {r['seed']}; one seed. 'source-only "
             f"continued': the same iterations without the target terms (`nnUNetTrainerMAPSegUDA_noMPL`).", "",
             f"Dice %: mean of {classes} (per class in pseudo_label_weighting.json); accuracy %: voxel accuracy inside "
             f"the brain (label > 0). Pseudo-label weight: epoch mean of the loss weight (1 for hard labels).", "",
             "| run | source val Dice | " + " | ".join(f"{SHIFTS[t]} Dice / accuracy" for t in TARGETS) +
             " | pseudo-label weight per adapted epoch |", "|---|---|" + "---|" * len(TARGETS) + "---|"]
    for name, c in r["runs"].items():
        weights = ", ".join(f"{h['pseudo_label_weight']:.2f}" for h in c.get("score_history", [])
                            if h.get("pseudo_label_weight") is not None) or "-"
        lines.append(f"| {name} | {dice_accuracy_cells(c['scores'])} | {weights} |")
    with open(os.path.join(out, "pseudo_label_weighting.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
