"""How long does a CPU-preset network need to fit the source? The source-only learning curve.

    python -m benchmarks.studies.learning_curve [--epochs 20 --iterations 100 --seed 0 --eval_every 5]
    python -m benchmarks.studies.learning_curve --plans MAPSegResEncPlansCPU --no_mae --tta_epochs 0 [...]
    python -m benchmarks.studies.learning_curve --plans MAPSegResEncPlansCPU --contrast_randomization
                                                --tta_epochs 0 [...]

Trains the network of ``--plans`` (default: the paper's network, ``MAPSegPlansCPU``; ``MAPSegResEncPlansCPU``: the
GLC ResEnc U-Net) with the source terms only (``nnUNetTrainerMAPSegUDA_noMPL``, from the benchmark's MAE encoder on
the same plans unless ``--no_mae``; with ``--contrast_randomization`` on contrast-randomized source views, the UDA
teacher's recipe) through stock ``nnUNetv2_train`` for
``epochs x iterations`` iterations on the benchmark's demo cohort
(``work_dirs/benchmarks``, set up by ``python -m benchmarks.run`` or here), then reads nnU-Net's per-epoch source pseudo
Dice from the checkpoint's log and predicts the three targets' test images with the final checkpoint (and with
every ``eval_every``-th epoch checkpoint). The stock U-Net floor of the benchmark (120 iterations) is the
reference line where the benchmark has trained it. Writes ``learning_curve.md``, ``.json`` and ``.png`` (for
another ``--plans``: ``learning_curve_PLANS.*``) to ``--out`` (default: benchmarks/results/learning_curve/). A finished
training is reused.
"""
from __future__ import annotations

import argparse
import json
import os

from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION

from ..cohort import CLASS_NAMES, PLANS, SHIFTS, SOURCE, STOCK_PLANS, TARGETS
from ..evaluation import predict_and_score
from ..runner import FULL, Runner
from ..study import add_plans, add_seed, add_work_and_out, command_line



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    add_seed(parser)
    parser.add_argument("--eval_every", type=int, default=5, help="target Dice of every N-th epoch checkpoint")
    parser.add_argument("--tta_epochs", type=int, default=3,
                        help="then test-time UDA on the cross-sequence target from the final model, this many epochs "
                             "of --iterations (0: none)")
    add_plans(parser, PLANS)
    parser.add_argument("--no_mae", action="store_true", help="start from nnU-Net's initialisation, not the MAE")
    parser.add_argument("--contrast_randomization", action="store_true",
                        help="contrast-randomized source views (the UDA teacher's recipe): where does its *target* "
                             "Dice plateau?")
    add_work_and_out(parser, "learning_curve")
    args = parser.parse_args(argv)
    runner = Runner.for_study(args.work, args.plans)
    runner.budget.plans = args.plans  # the MAE encoder is pretrained on the same plans
    mae = None if args.no_mae else runner.mae(args.seed)
    cr = "_cr" if args.contrast_randomization else ""
    suffix = ("" if args.plans == PLANS else f"_{args.plans}") + cr
    settings = runner.source_settings(args.seed, num_epochs=args.epochs, num_iterations_per_epoch=args.iterations,
                                      num_val_iterations_per_epoch=8, warmup_iterations=args.iterations,
                                      keep_epoch_checkpoints=True, **(CONTRAST_RANDOMIZATION if cr else {}))
    plans = runner.variant(SOURCE, args.plans, f"{args.plans}_curve{cr}_s{args.seed}", settings)
    model = runner.train(f"curve_source_only{suffix}", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans, pretrained=mae)
    fold = os.path.join(model, "fold_0")
    import torch
    final = torch.load(os.path.join(fold, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    logging = final["logging"]
    train_minutes = sum(e - s for s, e in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])) / 60
    curve = [{"iterations": (e + 1) * args.iterations, "source_pseudo_dice": [float(d) for d in per_class],
              "mean": float(mean)}
             for e, (per_class, mean) in enumerate(zip(logging["dice_per_class_or_region"], logging["mean_fg_dice"]))]

    runner.say("target Dice of the final (and every --eval_every-th epoch) checkpoint")
    predictions = os.path.join(runner.work, "predictions", f"curve{suffix}_s{args.seed}")
    checkpoints = {len(curve) * args.iterations: "checkpoint_final.pth"}
    for e in range(args.eval_every - 1, len(curve) - 1, args.eval_every):
        if os.path.isfile(os.path.join(fold, f"checkpoint_epoch_{e:03d}.pth")):
            checkpoints[(e + 1) * args.iterations] = f"checkpoint_epoch_{e:03d}.pth"
    target_dice = {}
    for iterations, checkpoint in sorted(checkpoints.items()):
        target_dice[iterations] = {
            t: predict_and_score(model, os.path.join(runner.folder(t), "imagesTs"),
                                 os.path.join(runner.folder(t), "labelsTs"),
                                 os.path.join(predictions, str(iterations), str(t)), checkpoint)
            for t in TARGETS}
    floor_folder = os.path.join(runner.work, "predictions", f"s{args.seed}", "floor")
    floor = {t: json.load(open(os.path.join(floor_folder, str(t), "scores.json")))
             for t in TARGETS if os.path.isfile(os.path.join(floor_folder, str(t), "scores.json"))}
    floor_model = runner.model_folder(SOURCE, "nnUNetTrainer_settingsFromPlans", f"{STOCK_PLANS}_bench_s{args.seed}")
    floor_source = None
    if os.path.isfile(os.path.join(floor_model, "fold_0", "checkpoint_final.pth")):
        log = torch.load(os.path.join(floor_model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["logging"]
        floor_source = {"iterations": len(log["mean_fg_dice"]) * FULL.iterations,
                        "source_pseudo_dice": [float(d) for d in log["dice_per_class_or_region"][-1]]}

    tta = test_time_adaptation(runner, model, plans, args) if args.tta_epochs else None

    result = {"command": command_line("learning_curve", argv),
              "plans": args.plans, "mae": mae is not None, "model": model, "train_minutes": train_minutes,
              "curve": curve,
              "target_dice": {str(k): {str(t): v[t] for t in v} for k, v in target_dice.items()},
              "floor_target_dice": {str(t): floor[t] for t in floor}, "floor_source": floor_source,
              "tta": tta}
    runner.save_result(args.out, f"learning_curve{suffix}", result,
                       lambda out, r: (write_markdown(out, r, suffix), plot(out, r, suffix)))


def test_time_adaptation(runner, stage1: str, plans: str, args) -> dict:
    """Stage 2 of test-time UDA on the cross-sequence target, started from the long source-only model; target test
    Dice of every epoch's checkpoint (does adaptation help once the teacher is a fitted source model?)."""
    target = TARGETS[0]
    tplans = f"{plans}_tta"
    folder = runner.model_folder(target, "nnUNetTrainerMAPSegTTA", tplans)
    if not os.path.isfile(os.path.join(folder, "fold_0", "checkpoint_final.pth")):
        runner.sh(f"curve_receive_{target}", ["mapseg_receive_source_model", "-t", str(target), "-m", stage1, "-f", "0",
                                              "--no_pbar"])
        runner.variant(target, plans, tplans, {"seed": args.seed, "num_epochs": args.tta_epochs,
                                               "num_iterations_per_epoch": args.iterations,
                                               "num_val_iterations_per_epoch": 4, "initial_lr": FULL.lr,
                                               "keep_epoch_checkpoints": True})
    runner.train(f"curve_tta_{target}", target, "nnUNetTrainerMAPSegTTA", tplans)
    images, labels = os.path.join(runner.folder(target), "imagesTs"), os.path.join(runner.folder(target), "labelsTs")
    predictions = os.path.join(runner.work, "predictions", f"curve_s{args.seed}", "tta")
    per_epoch = {}
    for e in range(args.tta_epochs):
        checkpoint = f"checkpoint_epoch_{e:03d}.pth"
        if os.path.isfile(os.path.join(folder, "fold_0", checkpoint)):
            per_epoch[(e + 1) * args.iterations] = predict_and_score(folder, images, labels,
                                                                     os.path.join(predictions, str(e)), checkpoint)
    return {"target": target, "model": folder, "target_dice": {str(k): v for k, v in per_epoch.items()}}


def write_markdown(out: str, r: dict, suffix: str = "") -> None:
    classes = " / ".join(CLASS_NAMES.values())
    network = "GLC ResEnc U-Net" if "ResEnc" in r.get("plans", PLANS) else "MAPSeg network"
    lines = [f"# Source-only learning curve of the CPU-preset {network}", "",
             f"Command: `{r['command'].strip()}` (model `{os.path.basename(r['model'])}`"
             f"{'' if r.get('mae', True) else ', no MAE initialisation'}; training took "
             f"{r['train_minutes']:.0f} min of epoch time on this machine).", "",
             f"Source pseudo Dice: nnU-Net's per-epoch Dice on the source validation patches ({classes}).", "",
             "| iterations | " + " | ".join(CLASS_NAMES.values()) + " | mean |",
             "|---|" + "---|" * (len(CLASS_NAMES) + 1)]
    for row in r["curve"]:
        lines.append(f"| {row['iterations']} | " + " | ".join(f"{d:.2f}" for d in row["source_pseudo_dice"]) +
                     f" | {row['mean']:.2f} |")
    if r["floor_source"]:
        fs = r["floor_source"]
        lines += ["", f"Stock U-Net (the floor) after {fs['iterations']} iterations: " +
                  " / ".join(f"{d:.2f}" for d in fs["source_pseudo_dice"]) + f" ({classes})."]
    lines += ["", f"Target test Dice % (mean of {classes}; per class in learning_curve.json):", "",
              "| model | " + " | ".join(SHIFTS[t] for t in TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for iterations, scores in r["target_dice"].items():
        lines.append(f"| {network} source-only, {iterations} iterations | " +
                     " | ".join(f"{scores[str(t)]['mean']:.1f}" for t in TARGETS) + " |")
    if r["floor_target_dice"]:
        lines.append("| stock U-Net floor (benchmark) | " +
                     " | ".join(f"{r['floor_target_dice'][str(t)]['mean']:.1f}" if str(t) in r["floor_target_dice"]
                                else "-" for t in TARGETS) + " |")
    if r.get("tta"):
        lines += ["", f"Test-time UDA on {SHIFTS[r['tta']['target']]} from the final model above (target test Dice %):",
                  "", "| adaptation iterations | " + " | ".join(CLASS_NAMES.values()) + " | mean |",
                  "|---|" + "---|" * (len(CLASS_NAMES) + 1)]
        start = r["target_dice"][max(r["target_dice"], key=int)][str(r["tta"]["target"])]
        for iterations, scores in [("0 (source model)", start)] + list(r["tta"]["target_dice"].items()):
            lines.append(f"| {iterations} | " + " | ".join(f"{scores['classes'][str(c)]:.1f}" for c in CLASS_NAMES) +
                         f" | {scores['mean']:.1f} |")
    lines += ["", f"![learning curve](learning_curve{suffix}.png)", ""]
    with open(os.path.join(out, f"learning_curve{suffix}.md"), "w") as f:
        f.write("\n".join(lines))


def plot(out: str, r: dict, suffix: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    its = [row["iterations"] for row in r["curve"]]
    for c, name in enumerate(CLASS_NAMES.values()):
        ax.plot(its, [row["source_pseudo_dice"][c] for row in r["curve"]],
                label=f"{'U-Net' if 'ResEnc' in r.get('plans', PLANS) else 'MAPSeg'} {name}")
    if r["floor_source"]:
        for c, name in enumerate(CLASS_NAMES.values()):
            ax.scatter([r["floor_source"]["iterations"]], [r["floor_source"]["source_pseudo_dice"][c]], marker="x",
                       label=f"stock U-Net {name}", color=f"C{c}")
    ax.set_xlabel("training iterations (batch 2, 32^3)")
    ax.set_ylabel("source pseudo Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"learning_curve{suffix}.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
