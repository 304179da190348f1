"""Does intensity augmentation make the source model (the teacher every pseudo-label comes from) robust to the
target's contrast? Source-only models with and without it, on the demo cohort.

    python -m benchmarks.studies.contrast_randomization [--epochs 8 --iterations 40 --seed 0
                                                         --plans MAPSegResEncPlansCPU]

Trains ``nnUNetTrainerMAPSegUDA_noMPL`` (the source terms of Eq. 9: exactly the model a UDA run's teacher starts
from at the end of its warm-up) through stock ``nnUNetv2_train`` for each configuration below, then predicts the
source's validation cases and every target's test images (``nnUNetPredictor``, the path of ``nnUNetv2_predict``):

* ``paper``: no intensity augmentation (the paper's sampler);
* ``nnunet``: nnU-Net's own intensity transforms (``source_intensity.nnunet``);
* ``nnunet+gin+remap``: plus GIN-style random convolution and signed random intensity remapping, each with
  probability 0.5 (``source_intensity.gin_probability`` / ``remap_probability``);
* ``nnunet+class_wise``: nnU-Net's transforms after class-wise random intensities with probability 0.8 (every label
  class split into up to 3 intensity sub-clusters, each re-rendered on its own: ``class_wise_probability``);
* ``nnunet+lookup_table``: nnU-Net's transforms after a random non-monotone look-up table over the whole image
  with probability 0.8 (label-free: ``lookup_table_probability``);
* ``nnunet+class_wise_textured``: class-wise random intensities on every sample (probability 1.0), each cluster
  keeping its own texture (``class_wise_gaussian_probability`` 0): no real source contrast left to learn an
  intensity order from, and no flat-noise clusters that real scans never show;
* ``nnunet+gin+remap+class_wise``: the contrast-randomized variants' chain with textured class-wise intensities
  in front of it (probability 0.5);
* ``nnunet+gin+remap+lookup_table``: the same chain with a non-monotone look-up table after GIN and remapping
  (probability 0.5), the label-free way to orderings a monotone curve cannot reach.

With ``--eval_every N`` every N-th epoch checkpoint is scored as well: a learning curve of each configuration
(``contrast_randomization_curve.md`` / ``.json``), to see where a teacher plateaus. A run adds its
configurations to those already in the result file at the same budget, seed and plans (each keeps the command
that measured it), so configurations measured in separate runs stand in one table.

Reported per shift: target test Dice (%) per class and mean, and the foreground voxel accuracy (%), i.e. how often
the teacher's pseudo-label would be right inside the brain; and the source validation Dice. Writes
``contrast_randomization.md`` / ``.json`` to ``--out`` (default: benchmarks/results/contrast_randomization/). Work
folder and cohort are the benchmarks' (``work_dirs/benchmarks``); finished trainings and predictions are reused.
"""
from __future__ import annotations

import argparse
import json
import os

from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION

from ..cohort import CLASS_NAMES, SHIFTS, SOURCE, TARGETS
from ..evaluation import dice_accuracy_cells, source_and_target_scores
from ..runner import Runner
from ..study import add_plans, add_seed, add_work_and_out, command_line

CONFIGURATIONS = {
    "paper": {},
    "nnunet": {"source_intensity.nnunet": True},
    "nnunet+gin+remap": CONTRAST_RANDOMIZATION,  # the trainers' _contrastRandomized variants
    "nnunet+class_wise": {"source_intensity.nnunet": True, "source_intensity.class_wise_probability": 0.8},
    "nnunet+lookup_table": {"source_intensity.nnunet": True, "source_intensity.lookup_table_probability": 0.8},
    "nnunet+class_wise_textured": {"source_intensity.nnunet": True, "source_intensity.class_wise_probability": 1.0,
                                   "source_intensity.class_wise_gaussian_probability": 0.0},
    "nnunet+gin+remap+class_wise": {**CONTRAST_RANDOMIZATION, "source_intensity.class_wise_probability": 0.5,
                                    "source_intensity.class_wise_gaussian_probability": 0.0},
    "nnunet+gin+remap+lookup_table": {**CONTRAST_RANDOMIZATION, "source_intensity.lookup_table_probability": 0.5},
}


def earlier_configurations(path: str, iterations: int, seed: int, plans: str) -> dict:
    """Configurations already measured in the result file ``path`` at the same budget, seed and plans (each with
    the command that measured it); nothing when the file is missing or was measured otherwise."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        earlier = json.load(f)
    if (earlier.get("iterations"), earlier.get("seed"), earlier.get("plans")) != (iterations, seed, plans):
        return {}
    return {name: {"command": earlier.get("command", ""), **c} for name, c in earlier.get("configurations", {}).items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    add_seed(parser)
    add_plans(parser, "MAPSegResEncPlansCPU")
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--eval_every", type=int, default=0,
                        help="also score every N-th epoch checkpoint (a learning curve; 0: the final model only)")
    add_work_and_out(parser, "contrast_randomization")
    args = parser.parse_args(argv)
    runner = Runner.for_study(args.work, args.plans)
    command = command_line("contrast_randomization", argv)
    result_name = "contrast_randomization_curve" if args.eval_every else "contrast_randomization"
    results = earlier_configurations(os.path.join(args.out, result_name + ".json"), args.epochs * args.iterations,
                                     args.seed, args.plans)
    for name in args.configurations:
        curve = {"keep_epoch_checkpoints": True} if args.eval_every else {}
        settings = runner.source_settings(args.seed, num_epochs=args.epochs, num_iterations_per_epoch=args.iterations,
                                          warmup_iterations=args.epochs * args.iterations, **curve,
                                          **CONFIGURATIONS[name])
        tag = name.replace("+", "_")
        plans = runner.variant(SOURCE, args.plans, f"{args.plans}_cr_{tag}_s{args.seed}", settings)
        model = runner.train(f"cr_{tag}_s{args.seed}", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans)
        predictions = os.path.join(runner.work, "predictions", f"cr_{args.plans}_s{args.seed}", tag)
        runner.say(f"{name}: predicting the source validation cases and the targets' test images")
        results[name] = {"command": command, "settings": CONFIGURATIONS[name], "model": model,
                         "scores": source_and_target_scores(runner, model, predictions)}
        if args.eval_every:
            results[name]["curve"] = {str(args.epochs * args.iterations): results[name]["scores"]}
            for epoch in range(args.eval_every - 1, args.epochs - 1, args.eval_every):
                runner.say(f"{name}: scoring the checkpoint of epoch {epoch}")
                results[name]["curve"][str((epoch + 1) * args.iterations)] = source_and_target_scores(
                    runner, model, os.path.join(predictions, f"epoch_{epoch:03d}"), f"checkpoint_epoch_{epoch:03d}.pth")
    result = {"command": command, "plans": args.plans,
              "iterations": args.epochs * args.iterations, "seed": args.seed, "configurations": results}
    runner.save_result(args.out, result_name, result, write_markdown)


def write_markdown(out: str, r: dict) -> None:
    classes = " / ".join(CLASS_NAMES.values())
    commands = sorted({c.get("command", r["command"]).strip() for c in r["configurations"].values()})
    lines = ["# Source-only models with and without intensity augmentation (the teacher's starting point)", "",
             f"Command{'s' if len(commands) > 1 else ''}: " + "; ".join(f"`{c}`" for c in commands) +
             f": `nnUNetTrainerMAPSegUDA_noMPL` on `{r['plans']}`, "
             f"{r['iterations']} iterations, seed {r['seed']}, no MAE initialisation; one seed, so differences of a "
             f"few Dice points are within seed noise.", "",
             f"Dice %: mean of {classes} (per class in the .json beside this file); accuracy %: voxel accuracy "
             f"inside the brain (label > 0), i.e. how often the teacher's pseudo-label would be right.", "",
             "| configuration | source val Dice | " +
             " | ".join(f"{SHIFTS[t]} Dice / accuracy" for t in TARGETS) + " |",
             "|---|---|" + "---|" * len(TARGETS)]
    for name, c in r["configurations"].items():
        lines.append(f"| {name} | {dice_accuracy_cells(c['scores'])} |")
    name = "contrast_randomization"
    if any("curve" in c for c in r["configurations"].values()):
        name += "_curve"
        lines += ["", f"Learning curve: Dice % per class ({classes}) and their mean; pseudo-label accuracy % per class "
                  "inside the brain.", "",
                  "| configuration | iterations | source val | " + " | ".join(SHIFTS[t] for t in TARGETS) +
                  " | " + " | ".join(f"{SHIFTS[t]} accuracy" for t in TARGETS) + " |",
                  "|---|---|---|" + "---|" * 2 * len(TARGETS)]
        for config, c in r["configurations"].items():
            for iterations, scores in sorted(c.get("curve", {}).items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {config} | {iterations} | {scores['source']['mean']:.1f} | " + " | ".join(
                    f"{scores[str(t)]['mean']:.1f} ({class_cells(scores[str(t)]['classes'])})" for t in TARGETS) +
                    " | " + " | ".join(class_cells(scores[str(t)].get("class_voxel_accuracy", {})) for t in TARGETS) +
                    " |")
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def class_cells(per_class: dict) -> str:
    """'a / b / c': one number per class, in the cohort's label order ('-' where missing)."""
    return " / ".join(f"{per_class[str(label)]:.0f}" if str(label) in per_class else "-" for label in CLASS_NAMES)


if __name__ == "__main__":
    main()
