"""One long run: do the target terms help at ten times the benchmark's budget?

    python -m benchmarks.studies.long_run [--seed 0 --teacher_iterations 1000 --adapt_iterations 1000 --every 100
                                           --teacher_cases 4 --work work_dirs/benchmarks]

One seed, on the benchmark's demo cohort and CPU U-Net preset, in the benchmark's work folder (the seed's MAE
encoder of ``python -m benchmarks.run`` is reused, or trained here):

1. **The teacher**: contrast-randomized source-only MAPSeg (``nnUNetTrainerMAPSegUDA_noMPL``, the benchmark's
   teacher recipe) for ``--teacher_iterations``, a checkpoint every ``--every`` iterations; its target test Dice
   every ``2 x --every`` iterations shows where it plateaus.
2. **Two arms continuing it** for ``--adapt_iterations`` through stock ``nnUNetv2_train --c``: UDA
   (``nnUNetTrainerMAPSegUDA``: masked pseudo-labeling from the first adapting step, EMA teacher, GLC) and the
   iteration-matched control (``_noMPL``: the same iterations without target terms).
3. **Every ``--every`` adapting iterations**: the target test Dice of both arms on all test cases; the per-class
   accuracy of the EMA teacher's pseudo-labels (its prediction of the first ``--teacher_cases`` test cases of each
   target; per reference class, the share of its voxels the teacher labels right); and how far the EMA teacher has
   moved from its start, ``||theta_t - theta_0|| / ||theta_0||`` over its floating-point weights.

Writes ``long_run.md``, ``.json`` and ``.png`` to ``--out`` (default: benchmarks/results/long_run/). Trainings and
predictions are cached in the work folder, so an interrupted run continues where it stopped. On 2 CPU cores the
defaults took 97 min with the seed's MAE reused: teacher 16, UDA 36 (about 6 of them contended), control 17, predicting
1,320 cases 28.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List

import numpy as np
import torch

from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION

from ..cohort import CLASS_NAMES, SHIFTS, SOURCE, TARGETS
from ..evaluation import predict_and_score
from ..runner import Runner
from ..study import add_seed, add_work_and_out, command_line



def relative_distance(weights: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor]) -> float:
    """``||w - w0|| / ||w0||`` over the floating-point entries both state dicts share."""
    keys = [k for k, v in start.items() if torch.is_floating_point(v) and k in weights]
    if not keys:
        raise ValueError("no floating-point weights in common")
    moved = sum(float(((weights[k].double() - start[k].double()) ** 2).sum()) for k in keys)
    size = sum(float((start[k].double() ** 2).sum()) for k in keys)
    return float(np.sqrt(moved / size))


def subset_folder(runner: Runner, target: int, cases: int) -> tuple:
    """(images, labels) folders holding the first ``cases`` test cases of ``target`` (links)."""
    base = os.path.join(runner.work, "long_run_subsets", f"{target}_first{cases}")
    images, labels = os.path.join(base, "images"), os.path.join(base, "labels")
    source_labels = os.path.join(runner.folder(target), "labelsTs")
    names = sorted(f for f in os.listdir(source_labels) if f.endswith(".nii.gz"))[:cases]
    if not os.path.isdir(labels) or sorted(os.listdir(labels)) != names:
        os.makedirs(images, exist_ok=True)
        os.makedirs(labels, exist_ok=True)
        for name in names:
            for folder, source, file in ((images, "imagesTs", name[:-7] + "_0000.nii.gz"),
                                         (labels, "labelsTs", name)):
                link = os.path.join(folder, file)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(runner.folder(target), source, file), link)
    return images, labels


def teacher_checkpoint(fold: str, checkpoint: str) -> str:
    """A copy of ``checkpoint`` whose predicting weights are its EMA teacher's (written once, then renamed)."""
    name = checkpoint.replace(".pth", "_teacher.pth")
    path = os.path.join(fold, name)
    if not os.path.isfile(path):
        data = torch.load(os.path.join(fold, checkpoint), map_location="cpu", weights_only=False)
        data["network_weights"] = data["mapseg"]["teacher_weights"]
        torch.save(data, path + ".partial")
        os.replace(path + ".partial", path)
    return name


def on_targets(model: str, checkpoint: str, output: str, test_sets: Dict[int, tuple]) -> Dict[str, dict]:
    """Scores of ``model``'s ``checkpoint`` on every target's test cases (``test_sets``: {target: (images,
    labels)}; cached)."""
    return {str(t): predict_and_score(model, images, labels, os.path.join(output, str(t)), checkpoint)
            for t, (images, labels) in test_sets.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed(parser)
    parser.add_argument("--teacher_iterations", type=int, default=1000)
    parser.add_argument("--adapt_iterations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="iterations per epoch: one checkpoint each")
    parser.add_argument("--teacher_cases", type=int, default=4,
                        help="test cases per target on which the EMA teacher's pseudo-labels are scored")
    parser.add_argument("--test_cases", type=int, default=None,
                        help="score only the first N test cases per target (a pipeline check; default: all)")
    add_work_and_out(parser, "long_run")
    args = parser.parse_args(argv)
    for name in ("teacher_iterations", "adapt_iterations"):
        if getattr(args, name) % args.every:
            parser.error(f"--{name} ({getattr(args, name)}) must be a multiple of --every ({args.every})")
    runner = Runner.for_study(args.work)
    b = runner.budget
    mae = runner.mae(args.seed)
    teacher_epochs, adapt_epochs = args.teacher_iterations // args.every, args.adapt_iterations // args.every
    per_epoch = {"num_iterations_per_epoch": args.every, "keep_epoch_checkpoints": True}
    teacher_plans = runner.variant(SOURCE, b.plans, f"{b.plans}_long_teacher_s{args.seed}", runner.source_settings(
        args.seed, num_epochs=teacher_epochs, warmup_iterations=args.teacher_iterations, **per_epoch,
        **CONTRAST_RANDOMIZATION))
    teacher = runner.train("long_teacher", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", teacher_plans, pretrained=mae)
    arms = {}
    for arm, trainer in (("uda", "nnUNetTrainerMAPSegUDA"), ("control", "nnUNetTrainerMAPSegUDA_noMPL")):
        plans = runner.variant(SOURCE, b.plans, f"{b.plans}_long_{arm}_s{args.seed}", runner.source_settings(
            args.seed, num_epochs=teacher_epochs + adapt_epochs, warmup_iterations=args.teacher_iterations,
            **per_epoch, **CONTRAST_RANDOMIZATION))
        arms[arm] = runner.continue_training(f"long_{arm}", trainer, plans, teacher, teacher_epochs)

    predictions = os.path.join(runner.work, "predictions", f"long_run_s{args.seed}" + (
        f"_first{args.test_cases}" if args.test_cases else ""))
    test_sets = {t: subset_folder(runner, t, args.test_cases) if args.test_cases else
                 (os.path.join(runner.folder(t), "imagesTs"), os.path.join(runner.folder(t), "labelsTs"))
                 for t in TARGETS}
    runner.say("the teacher's learning curve: target test Dice every 2 x --every iterations")
    teacher_curve = {}
    for epoch in range(1, teacher_epochs, 2):
        checkpoint = f"checkpoint_epoch_{epoch:03d}.pth"
        if os.path.isfile(os.path.join(teacher, "fold_0", checkpoint)):
            teacher_curve[(epoch + 1) * args.every] = on_targets(
                teacher, checkpoint, os.path.join(predictions, "teacher", str(epoch)), test_sets)
    teacher_curve[args.teacher_iterations] = on_targets(teacher, "checkpoint_final.pth",
                                                        os.path.join(predictions, "teacher", "final"), test_sets)
    start = torch.load(os.path.join(teacher, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                       weights_only=False)["network_weights"]
    subsets = {t: subset_folder(runner, t, args.teacher_cases) for t in TARGETS}
    runner.say("both arms every --every adapting iterations; the EMA teacher's pseudo-labels and distance")
    rows = []
    for epoch in range(teacher_epochs, teacher_epochs + adapt_epochs):
        last = epoch == teacher_epochs + adapt_epochs - 1
        checkpoint = "checkpoint_final.pth" if last else f"checkpoint_epoch_{epoch:03d}.pth"
        row = {"iterations": (epoch + 1) * args.every, "adapted": (epoch + 1 - teacher_epochs) * args.every}
        for arm, model in arms.items():
            row[arm] = on_targets(model, checkpoint, os.path.join(predictions, arm, str(epoch)), test_sets)
        fold = os.path.join(arms["uda"], "fold_0")
        data = torch.load(os.path.join(fold, checkpoint), map_location="cpu", weights_only=False)
        row["teacher_distance"] = relative_distance(data["mapseg"]["teacher_weights"], start)
        row["student_distance"] = relative_distance(data["mapseg"]["student_weights"], start)
        row["teacher_steps"] = data["mapseg"]["teacher_steps"]
        name = teacher_checkpoint(fold, checkpoint)
        row["pseudo_label_accuracy"] = {}
        for t, (images, labels) in subsets.items():
            output = os.path.join(predictions, "ema_teacher", str(epoch), str(t))
            row["pseudo_label_accuracy"][str(t)] = predict_and_score(arms["uda"], images, labels, output,
                                                                     name)["class_voxel_accuracy"]
        rows.append(row)
    result = {"command": command_line("long_run", argv),
              "seed": args.seed, "plans": b.plans, "every": args.every,
              "teacher_iterations": args.teacher_iterations, "adapt_iterations": args.adapt_iterations,
              "teacher_cases": args.teacher_cases, "test_cases": args.test_cases or "all", "models": {"teacher": teacher, **arms},
              "teacher_curve": {str(k): {t: {"mean": v[t]["mean"], "classes": v[t]["classes"]} for t in v}
                                for k, v in teacher_curve.items()},
              "rows": [{**r, **{arm: {t: {"mean": s["mean"], "classes": s["classes"], "cases": s["cases"]}
                                      for t, s in r[arm].items()} for arm in arms}} for r in rows]}
    runner.save_result(args.out, "long_run", result, lambda out, r: (write_markdown(out, r), plot(out, r)))


def adapting_table(r: dict) -> List[str]:
    lines = ["| adapting iterations | " + " | ".join(f"{SHIFTS[t]}: UDA / control / UDA - control"
                                                   for t in TARGETS) + " | EMA teacher moved | student moved |",
             "|---|" + "---|" * (len(TARGETS) + 2)]
    for row in r["rows"]:
        cells = []
        for t in map(str, TARGETS):
            u, c = row["uda"][t]["mean"], row["control"][t]["mean"]
            cells.append(f"{u:.1f} / {c:.1f} / {u - c:+.1f}")
        lines.append(f"| {row['adapted']} | " + " | ".join(cells) +
                     f" | {100 * row['teacher_distance']:.1f} % | {100 * row['student_distance']:.1f} % |")
    return lines


def write_markdown(out: str, r: dict) -> None:
    classes = " / ".join(CLASS_NAMES.values())
    lines = ["# One long run: masked pseudo-labeling against its iteration-matched control", "",
             f"Command: `{r['command'].strip()}`; seed {r['seed']}, plans `{r['plans']}`, the benchmark's demo "
             f"cohort ({r['test_cases']} test cases per target). The teacher: contrast-randomized source-only MAPSeg for "
             f"{r['teacher_iterations']} iterations; then {r['adapt_iterations']} iterations of UDA and of the "
             f"control (the same iterations without target terms), a checkpoint every {r['every']}.", "",
             "## The teacher's learning curve (target test Dice, mean over the foreground classes)", "",
             "| source iterations | " + " | ".join(SHIFTS[t] for t in TARGETS) + " |",
             "|---|" + "---|" * len(TARGETS)]
    for iterations, scores in sorted(r["teacher_curve"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {iterations} | " + " | ".join(f"{scores[str(t)]['mean']:.1f}" for t in TARGETS) + " |")
    lines += ["", "## Adapting: target test Dice of both arms, and how far the networks moved", "",
              "Moved: relative weight distance from the teacher model handed over, ||w - w0|| / ||w0||.", ""]
    lines += adapting_table(r)
    lines += ["", f"## The EMA teacher's pseudo-labels: per-class accuracy ({classes}, % of each reference class's "
                  f"voxels labelled right) on the first {r['teacher_cases']} test cases of each target", "",
              "| adapting iterations | " + " | ".join(SHIFTS[t] for t in TARGETS) + " |",
              "|---|" + "---|" * len(TARGETS)]
    for row in r["rows"]:
        lines.append(f"| {row['adapted']} | " + " | ".join(
            " / ".join(f"{row['pseudo_label_accuracy'][str(t)][str(c)]:.1f}" for c in CLASS_NAMES)
            for t in TARGETS) + " |")
    lines += ["", "![long run](long_run.png)", ""]
    with open(os.path.join(out, "long_run.md"), "w") as f:
        f.write("\n".join(lines))


def plot(out: str, r: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(TARGETS) + 1, figsize=(4.2 * (len(TARGETS) + 1), 3.6))
    curve = sorted((int(k), v) for k, v in r["teacher_curve"].items())
    for ax, t in zip(axes, map(str, TARGETS)):
        ax.plot([k for k, _ in curve], [v[t]["mean"] for _, v in curve], "k.-", label="teacher (source-only)")
        x = [row["iterations"] for row in r["rows"]]
        ax.plot(x, [row["uda"][t]["mean"] for row in r["rows"]], "C0.-", label="UDA")
        ax.plot(x, [row["control"][t]["mean"] for row in r["rows"]], "C1.-", label="control (no target terms)")
        ax.axvline(r["teacher_iterations"], color="grey", lw=0.8, ls=":")
        ax.set_title(SHIFTS[int(t)])
        ax.set_xlabel("iterations")
        ax.set_ylabel("target test Dice (%)")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    ax.plot([row["adapted"] for row in r["rows"]], [100 * row["teacher_distance"] for row in r["rows"]], "C2.-",
            label="EMA teacher")
    ax.plot([row["adapted"] for row in r["rows"]], [100 * row["student_distance"] for row in r["rows"]], "C3.-",
            label="student")
    ax.set_xlabel("adapting iterations")
    ax.set_ylabel("moved from the teacher model (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "long_run.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
