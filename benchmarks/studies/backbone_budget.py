"""Both backbones at the same iteration budget: how well the source model fits, what an iteration costs, and what
the source-only model gives on each target. This decides the width of the ResEnc U-Net CPU preset.

    python -m benchmarks.studies.backbone_budget [--epochs 3 --iterations 40 --seed 0]

Trains ``nnUNetTrainerMAPSegUDA_noMPL`` (the source terms only: the model a UDA teacher starts from at the end of
its warm-up, no MAE initialisation, no intensity augmentation unless named) through stock ``nnUNetv2_train`` on

* ``MAPSegPlansCPU``: the paper's network at the CPU preset;
* ``MAPSegResEncPlansCPU_w32``: the GLC ResEnc U-Net of ``MAPSegResEncPlannerCPU`` at the width nnU-Net's ResEnc
  planner gives it (32-256 features), the global view fused at output stride 4;
* ``MAPSegResEncPlansCPU_w16``: the same U-Net at half that width (16-128 features);
* ``MAPSegResEncPlansCPU_w16_fusion3``: at half width, the global view fused at the deepest stage (output stride
  8) instead of stride 4;
* ``MAPSegPlansCPU_resenc_w16`` (``w16_percentile``): the half-width U-Net on MAPSeg's percentile scaling (the
  paper network's data) instead of nnU-Net's z-score (``MAPSegResEncPlansCPU``'s own data);
* ``w16_nnunet_aug``: the half-width U-Net with nnU-Net's intensity augmentation on the source views
  (``source_intensity.nnunet``);

and reports per network: parameters, seconds per iteration (epoch wall time / training iterations; each epoch
also runs ``num_val_iterations_per_epoch`` validation steps, so this is slightly pessimistic), nnU-Net's pseudo
Dice at the last epoch, the source validation Dice (sliding window, ``nnUNetPredictor``), and every target's test
Dice / foreground voxel accuracy. Then, side by side in the same process (``--speed_repeats``, 0: skip), per
network: a UDA iteration (the trainer's own ``train_step`` with the target terms) against the sum of its network
passes timed alone, and GLC sliding-window inference against nnU-Net's own sliding window with the same trained
network and tiles (one global pass per case). Run it uncontended: times are only comparable side by side.
Writes ``backbone_budget.md`` / ``.json`` to ``--out`` (default: benchmarks/results/backbone_budget/).
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import re

from mapseg_nnunet.data.atomic import save_json_atomic

from ..cohort import PLANS, SHIFTS, SOURCE, TARGETS
from ..evaluation import dice_accuracy_cells, source_and_target_scores
from ..runner import FULL, Runner
from ..speed import epoch_times, glc_inference_ratios, uda_step_ratios
from ..study import add_seed, add_work_and_out, command_line

RESENC = "MAPSegResEncPlansCPU"
# architecture variants of MAPSegResEncPlansCPU (4 stages of output stride 1, 2, 4, 8): width, fusion stage
VARIANTS = {"w32": {"features_per_stage": [32, 64, 128, 256]},
            "w16": {"features_per_stage": [16, 32, 64, 128]},
            "w16_fusion3": {"features_per_stage": [16, 32, 64, 128], "fusion_stage": 3}}


# the half-width U-Net on MAPSeg's percentile scaling: the paper network's CPU plans (same spacing, patch and batch;
# raw data scaled per case by the trainers) with their network replaced by the GLC U-Net of w16
PERCENTILE = "w16_percentile"
# the half-width U-Net with nnU-Net's intensity augmentation on the source views
AUGMENTED = "w16_nnunet_aug"
AUGMENTED_SETTINGS = {"source_intensity.nnunet": True}


def write_percentile_variant(runner: Runner, name: str) -> str:
    """``MAPSegPlansCPU`` (MAPSeg's intensity convention) with the half-width GLC ResEnc U-Net of
    ``MAPSegResEncPlansCPU``."""
    folder = runner.folder(SOURCE, "nnUNet_preprocessed")
    plans = json.load(open(os.path.join(folder, "MAPSegPlansCPU.json")))
    glc = json.load(open(os.path.join(folder, RESENC + ".json")))["configurations"]["3d_fullres"]["architecture"]
    glc["arch_kwargs"].update(VARIANTS["w16"])
    plans["configurations"]["3d_fullres"]["architecture"] = glc
    return save_plans(folder, name, plans)


def save_plans(folder: str, name: str, plans: dict) -> str:
    """Plans ``name`` in the source's preprocessed folder (write, then rename), where nnU-Net finds them."""
    save_json_atomic({**plans, "plans_name": name}, os.path.join(folder, name + ".json"))
    return name


def write_architecture_variant(runner: Runner, name: str, arch_kwargs: dict) -> str:
    """``MAPSegResEncPlansCPU`` with some of the GLC U-Net's arguments replaced (same data, same everything
    else)."""
    folder = runner.folder(SOURCE, "nnUNet_preprocessed")
    plans = json.load(open(os.path.join(folder, RESENC + ".json")))
    kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    if len(kwargs["features_per_stage"]) != 4:
        raise SystemExit(f"{RESENC} has {len(kwargs['features_per_stage'])} stages; the variants assume 4")
    kwargs.update(arch_kwargs)
    return save_plans(folder, name, plans)


def training_log_numbers(model_folder: str, iterations: int) -> dict:
    """Seconds per iteration (mean epoch time / iterations per epoch) and the last epoch's pseudo Dice."""
    times = epoch_times(os.path.join(model_folder, "fold_0"))
    log = open(sorted(glob.glob(os.path.join(model_folder, "fold_0", "training_log_*.txt")))[-1]).read()
    pseudo = re.findall(r"Pseudo dice \[(.*?)\]", log)
    last = [float(v) for v in re.findall(r"[0-9.]+", pseudo[-1].replace("np.float32", ""))] if pseudo else []
    return {"seconds_per_iteration": sum(times) / len(times) / iterations if times else None,
            "epoch_times": times, "pseudo_dice_last_epoch": last}


def parameters(model_folder: str) -> int:
    import torch
    weights = torch.load(os.path.join(model_folder, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                         weights_only=False)["network_weights"]
    # dynamic-network-architectures registers modules under several names (``decoder.encoder``, ``all_modules``):
    # count each tensor once
    unique = {v.data_ptr(): v for v in weights.values() if v.dtype.is_floating_point}
    return int(sum(v.numel() for v in unique.values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    add_seed(parser)
    parser.add_argument("--networks", nargs="+", default=["MAPSegPlansCPU", *VARIANTS, PERCENTILE, AUGMENTED],
                        help=f"MAPSegPlansCPU, {RESENC} (as planned) or a variant: {', '.join(VARIANTS)}, "
                             f"{PERCENTILE}, {AUGMENTED}")
    parser.add_argument("--speed_repeats", type=int, default=3,
                        help="timed repeats of each speed ratio (0: keep those of an earlier run's json in --out)")
    add_work_and_out(parser, "backbone_budget")
    args = parser.parse_args(argv)
    runner = Runner(os.path.abspath(args.work), copy.deepcopy(FULL), quick=False)
    runner.setup()
    runner.plan(PLANS)  # the paper network's CPU plans: its row and the percentile-scaled U-Net
    runner.plan(RESENC)
    results = {}
    for network in args.networks:
        extra, suffix = {}, ""
        if network == PERCENTILE:
            base = write_percentile_variant(runner, "MAPSegPlansCPU_resenc_w16")
        elif network == AUGMENTED:
            base = write_architecture_variant(runner, f"{RESENC}_w16", VARIANTS["w16"])
            extra, suffix = AUGMENTED_SETTINGS, "_nnunetaug"
        elif network in VARIANTS:
            base = write_architecture_variant(runner, f"{RESENC}_{network}", VARIANTS[network])
        else:
            base = network
        settings = runner.source_settings(args.seed, num_epochs=args.epochs, num_iterations_per_epoch=args.iterations,
                                          warmup_iterations=args.epochs * args.iterations, **extra)
        plans = runner.variant(SOURCE, base, f"{base}{suffix}_budget_s{args.seed}", settings)
        model = runner.train(f"budget_{base}{suffix}_s{args.seed}", SOURCE, "nnUNetTrainerMAPSegUDA_noMPL", plans)
        base += suffix
        runner.say(f"{base}: predicting the source validation cases and the targets' test images")
        predictions = os.path.join(runner.work, "predictions", f"budget_s{args.seed}", base)
        results[base] = {"plans": plans, "model": model, "parameters": parameters(model),
                         **training_log_numbers(model, args.iterations),
                         "scores": source_and_target_scores(runner, model, predictions)}
    earlier = os.path.join(args.out, "backbone_budget.json")
    if not args.speed_repeats and os.path.isfile(earlier):  # keep the speed rows measured by an earlier run
        for base, n in json.load(open(earlier))["networks"].items():
            if base in results and "speed" in n:
                results[base]["speed"] = n["speed"]
                results[base]["speed_measured_by"] = n.get("speed_measured_by", "an earlier run")
    if args.speed_repeats:
        for base, n in results.items():
            runner.say(f"{base}: speed ratios ({args.speed_repeats} timed repeats each)")
            n["speed"] = uda_step_ratios(runner, args.speed_repeats, n["plans"])[:1] + \
                glc_inference_ratios(runner, args.speed_repeats, n["model"])[:1]
            n["speed_measured_by"] = f"--speed_repeats {args.speed_repeats}"
    command = command_line("backbone_budget", argv).strip()
    result = {"command": command, "iterations": args.epochs * args.iterations, "seed": args.seed, "networks": results}
    runner.save_result(args.out, "backbone_budget", result, write_markdown)


def write_markdown(out: str, r: dict) -> None:
    lines = ["# Both backbones at the same iteration budget (source-only, no MAE; intensity augmentation only where "
             "named)",
             "",
             f"Command: `{r['command']}`: `nnUNetTrainerMAPSegUDA_noMPL`, {r['iterations']} iterations, seed "
             f"{r['seed']}. Seconds per iteration: epoch wall time / training iterations (validation steps "
             "included), from each training's own log (trainings are reused across runs; each ran alone on the "
             "machine).", "",
             "Dice %: mean of CSF / GM / WM; accuracy %: voxel accuracy inside the brain (label > 0).", "",
             "| network (plans) | parameters | s / iteration | pseudo Dice, last epoch | source val Dice | "
             + " | ".join(f"{SHIFTS[t]} Dice / accuracy" for t in TARGETS) + " |",
             "|---|---|---|---|---|" + "---|" * len(TARGETS)]
    for name, n in r["networks"].items():
        pseudo = " / ".join(f"{v:.2f}" for v in n["pseudo_dice_last_epoch"])
        lines.append(f"| {name} | {n['parameters'] / 1e6:.2f} M | {n['seconds_per_iteration']:.2f} | {pseudo} | "
                     f"{dice_accuracy_cells(n['scores'])} |")
    speed = [(name, row) for name, n in r["networks"].items() for row in n.get("speed", [])]
    if speed:
        by = sorted({n.get("speed_measured_by", "this run") for n in r["networks"].values() if "speed" in n})
        lines += ["", f"Speed ratios, side by side in one run of this script ({', '.join(by)}; median of the timed "
                  "repeats):", "",
                  "| network (plans) | ratio | value | detail |", "|---|---|---|---|"]
        lines += [f"| {name} | {row['name']} | {row['ratio']:.2f} | {row['detail']} |" for name, row in speed]
    with open(os.path.join(out, "backbone_budget.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
