"""Whole-volume scans (issue #33): does MAPSeg place the background of a whole-head field of view as stock nnU-Net
does? The demo source's anatomy padded into a large field of view and z-scored over the whole volume, so that the
air is one constant negative value filling most of the case (as public collections ship skull-stripped MRI; nnU-Net's
crop to non-zero crops nothing).

    python -m benchmarks.studies.whole_volume [--epochs 6 --iterations 40 --seed 0 --field 112 120 104 --arms ...]

Trains through stock ``nnUNetv2_train`` on fold 0 of the whole-volume source, at equal patch, batch and iterations:

* ``stock nnU-Net``: ``nnUNetTrainer_settingsFromPlans`` on ``nnUNetPlansCPU``;
* ``before``: ``nnUNetTrainerMAPSegUDA_noMPL`` on ``MAPSegResEncPlansCPU`` with the sampling and prediction of the
  code before whole-volume support (local patches inside the foreground box only,
  ``oversample_foreground_percent = 1``; no rule outside the box, ``outside_box_is_background = false``; the
  random draws of that code), also predicted with the rule: the defaults now (the rule is a prediction setting,
  and source-only training does not use it);
* ``after``: 0.67 of the patches inside the box, the others anywhere in the case, the rule on; also predicted
  without the rule (the network alone);
* ``after_box033``: nnU-Net's share, 0.33 of the patches inside the box;
* ``cr_before`` / ``cr_after``: with contrast randomization (the UDA teacher's recipe), before and with the
  defaults;
* ``--tight`` adds stock nnU-Net and ``before`` / ``after`` on the demo source as it is (cropped to the brain by
  nnU-Net), which the change must not harm.

Reported on the fold-0 validation cases (``nnUNetPredictor``, the path of ``nnUNetv2_predict``): Dice per class and
mean, the voxels labelled foreground outside the brain's bounding box, and those labelled foreground in the constant air
(inside the box as well) farther than 2 voxels from the brain. Writes ``whole_volume.md`` / ``.json`` to
``--out`` (default: benchmarks/results/whole_volume/); work folder ``work_dirs/benchmarks_whole_volume``; finished
runs are reused.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mapseg_nnunet.data.foreground_box import foreground_box
from mapseg_nnunet.training.variants import CONTRAST_RANDOMIZATION

from ..cohort import CLASS_NAMES, LABELS, SOURCE
from ..evaluation import case_metrics, predict_folder, validation_folders
from ..runner import FULL, Runner
from ..study import REPO, add_seed, add_work_and_out, command_line

WHOLE = 961  # the demo source in a whole-volume field of view
AIR_MARGIN = 2  # voxels: foreground in the air farther than this from any tissue voxel is counted
BEFORE = {"oversample_foreground_percent": 1.0, "outside_box_is_background": False}
RANDOM_PATCHES = {"oversample_foreground_percent": 0.67}  # a third of the patches anywhere in the case
# arm -> (row label, recipe, whole-volume settings)
ARMS = {
    "before": ("MAPSeg source-only, before: patches inside the box only, no rule outside it", {}, BEFORE),
    "after": ("MAPSeg source-only, 0.67 of the patches inside the box, a third anywhere; rule on", {},
              RANDOM_PATCHES),
    "after_box033": ("MAPSeg source-only, 0.33 of the patches inside the box (nnU-Net's share); rule on", {},
                     {"oversample_foreground_percent": 0.33}),
    "cr_before": ("MAPSeg source-only contrast-randomized, before", CONTRAST_RANDOMIZATION, BEFORE),
    "cr_after": ("MAPSeg source-only contrast-randomized, defaults (patches inside the box, rule on)",
                 CONTRAST_RANDOMIZATION, {}),
}


def write_whole_volume_source(runner: Runner, field) -> None:
    """Dataset 961: every case of the demo source centred in ``field`` (voxels; at least the case), then z-scored
    over the whole volume (written to a ``.partial`` folder, renamed when complete)."""
    import shutil
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    source = runner.folder(SOURCE)
    final = os.path.join(runner.env["nnUNet_raw"], f"Dataset{WHOLE}_DemoBrainWholeVolume")
    if os.path.isdir(final):
        return
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(partial, sub))
    cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(source, "labelsTr")))
    for case in cases:
        image = sitk.ReadImage(os.path.join(source, "imagesTr", f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(os.path.join(source, "labelsTr", f"{case}.nii.gz"))
        shape = np.array(image.GetSize())  # x, y, z
        if np.any(shape > np.array(field)):
            raise ValueError(f"{case}: {shape.tolist()} voxels do not fit the field of view {list(field)}")
        lower = [int(v) for v in (np.array(field) - shape) // 2]
        upper = [int(v) for v in np.array(field) - shape - lower]
        padded = {}
        for name, itk in (("image", image), ("label", label)):
            padded[name] = sitk.ConstantPad(itk, lower, upper, 0)
        array = sitk.GetArrayFromImage(padded["image"]).astype(np.float32)
        array = (array - array.mean()) / array.std()
        zscored = sitk.GetImageFromArray(array)
        zscored.CopyInformation(padded["image"])
        sitk.WriteImage(zscored, os.path.join(partial, "imagesTr", f"{case}_0000.nii.gz"), useCompression=True)
        sitk.WriteImage(padded["label"], os.path.join(partial, "labelsTr", f"{case}.nii.gz"), useCompression=True)
    dataset = json.load(open(os.path.join(source, "dataset.json")))
    generate_dataset_json(partial, dataset["channel_names"], dataset["labels"], len(cases), ".nii.gz",
                          dataset_name="DemoBrainWholeVolume",
                          description=f"the demo source centred in {list(field)} voxels, z-scored over the volume")
    os.replace(partial, final)


def score(predictions: str, labels: str, images: str) -> dict:
    """Mean Dice (%) per class and overall; per case the voxels labelled foreground outside the brain's box and
    those labelled foreground in the constant air (the image's minimum; inside the box as well) farther than
    ``AIR_MARGIN`` voxels from any other voxel (the reference itself labels air at the brain's edge)."""
    cases = {}
    for name in sorted(f for f in os.listdir(labels) if f.endswith(".nii.gz")):
        reference = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(labels, name)))
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(predictions, name)))
        image = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(images, name[:-7] + "_0000.nii.gz")))
        outside = np.ones(reference.shape, bool)
        outside[tuple(slice(int(lo), int(hi)) for lo, hi in foreground_box(reference > 0))] = False
        air = image == image.min()
        far_air = ndimage.distance_transform_edt(air) > AIR_MARGIN
        metrics = case_metrics(os.path.join(predictions, name), os.path.join(labels, name))
        cases[name] = {"dice": {str(k): 100 * float(m["Dice"]) for k, m in metrics.items()},
                       "foreground_outside_box": int((prediction[outside] > 0).sum()),
                       "foreground_in_far_air": int((prediction[far_air] > 0).sum()),
                       "reference_in_far_air": int((reference[far_air] > 0).sum()),
                       "foreground_predicted": int((prediction > 0).sum()),
                       "foreground_reference": int((reference > 0).sum())}
    classes = {str(k): float(np.nanmean([c["dice"][str(k)] for c in cases.values()])) for k in LABELS}
    return {"classes": classes, "mean": float(np.mean(list(classes.values()))),
            "foreground_outside_box": float(np.mean([c["foreground_outside_box"] for c in cases.values()])),
            "foreground_in_far_air": float(np.mean([c["foreground_in_far_air"] for c in cases.values()])),
            "cases": cases}


def predict_and_score(runner: Runner, name: str, model: str, dataset: int, rule: Optional[bool] = None) -> dict:
    """Predict the fold-0 validation cases with ``model`` (the rule outside the box as its plans say, or as
    ``rule`` overrides) and score them; cached."""
    images, labels = validation_folders(runner, dataset, os.path.join(runner.work, f"validation_{dataset}"))
    output = os.path.join(runner.work, "predictions", name)
    cached = os.path.join(output, "scores.json")
    if os.path.isfile(cached) and os.path.getmtime(cached) > os.path.getmtime(
            os.path.join(model, "fold_0", "checkpoint_final.pth")):
        result = json.load(open(cached))
        if "foreground_in_far_air" in result:
            return result
        runner.say(f"{name}: re-scoring the cached predictions")  # predicted before the air measure existed
    else:
        runner.say(f"{name}: predicting the fold-0 validation cases of dataset {dataset}")
        predict_folder(model, images, output, log=os.path.join(output, "predict.log"),
                       network_attributes=None if rule is None else {"mapseg_outside_box_is_background": rule})
    result = score(output, labels, images)
    with open(cached, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=40, help="iterations per epoch")
    add_seed(parser)
    parser.add_argument("--field", type=int, nargs=3, default=[112, 120, 104],
                        help="field of view in voxels (x y z) at the demo's 2.2 mm")
    parser.add_argument("--arms", nargs="+", default=["before", "after", "after_box033", "cr_after"],
                        choices=list(ARMS), help="MAPSeg runs on the whole-volume source (stock nnU-Net always runs)")
    parser.add_argument("--tight", action="store_true", help="also the before / after pair on the cropped source")
    add_work_and_out(parser, "whole_volume", work=os.path.join(REPO, "work_dirs", "benchmarks_whole_volume"))
    args = parser.parse_args(argv)
    runner = Runner(os.path.abspath(args.work), copy.deepcopy(FULL), quick=False)
    if not os.path.isdir(os.path.join(runner.env["nnUNet_raw"], f"Dataset{SOURCE}_DemoBrainSourceT1w")):
        runner.sh("cohort", [sys.executable, "-m", "mapseg_nnunet.dataset_conversion.demo_brain", "--overwrite"])
    write_whole_volume_source(runner, args.field)
    datasets = [WHOLE] + ([SOURCE] if args.tight else [])
    for dataset in datasets:
        for planner in ("nnUNetPlannerCPU", "MAPSegResEncPlannerCPU"):
            marker = os.path.join(runner.work, f".planned_{dataset}_{planner}")
            if not os.path.isfile(marker):
                runner.sh(f"plan_{dataset}_{planner}", ["mapseg_plan_and_preprocess", "-d", str(dataset), "-pl",
                                                        planner, "-np", "1", "-npfp", "1", "--no_pbar"])
                open(marker, "w").write("ok\n")
    budget = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations}
    results = {}
    for dataset in datasets:
        cohort = "whole-volume" if dataset == WHOLE else "cropped"
        stock = runner.variant(dataset, "nnUNetPlansCPU", f"nnUNetPlansCPU_wv_s{args.seed}",
                               {**runner.stock_settings(args.seed), **budget})
        model = runner.train(f"wv_{dataset}_stock_s{args.seed}", dataset, "nnUNetTrainer_settingsFromPlans", stock)
        results[f"{cohort}: stock nnU-Net"] = predict_and_score(runner, f"{dataset}_stock_s{args.seed}", model, dataset)
        for arm in args.arms if dataset == WHOLE else ("before", "after"):
            label, recipe, settings = ARMS[arm]
            plans = runner.variant(dataset, "MAPSegResEncPlansCPU", f"MAPSegResEncPlansCPU_wv_{arm}_s{args.seed}",
                                   runner.source_settings(args.seed, **budget, **recipe, **settings))
            model = runner.train(f"wv_{dataset}_{arm}_s{args.seed}", dataset, "nnUNetTrainerMAPSegUDA_noMPL", plans)
            results[f"{cohort}: {label}"] = predict_and_score(runner, f"{dataset}_{arm}_s{args.seed}", model, dataset)
            if arm == "after" and dataset == WHOLE:
                results[f"{cohort}: the same model predicted without the rule (the network alone)"] = \
                    predict_and_score(runner, f"{dataset}_{arm}_norule_s{args.seed}", model, dataset, rule=False)
            if arm == "before" and dataset == WHOLE:  # the defaults: patches inside the box only, with the rule
                results[f"{cohort}: MAPSeg source-only, defaults: patches inside the box only, rule on (the before "
                        f"model predicted with the rule)"] = predict_and_score(
                    runner, f"{dataset}_{arm}_rule_s{args.seed}", model, dataset, rule=True)
    result = {"command": command_line("whole_volume", argv),
              "iterations": args.epochs * args.iterations, "seed": args.seed, "field": args.field,
              "timings_s": {k: round(v, 1) for k, v in runner.timings.items()}, "results": results}
    runner.save_result(args.out, "whole_volume", result, write_markdown)


def write_markdown(out: str, r: dict) -> None:
    classes = " / ".join(CLASS_NAMES.values())
    first = next(iter(r["results"].values()))["cases"].values()
    ref_air = float(np.mean([c["reference_in_far_air"] for c in first]))
    lines = ["# Whole-volume scans: MAPSeg source-only against stock nnU-Net at equal iterations", "",
             f"Command: `{r['command'].strip()}`; {r['iterations']} iterations, seed {r['seed']}, CPU presets "
             f"(32^3 patch, batch 2); the demo source (12 cases at 2.2 mm) centred in a "
             f"{' x '.join(map(str, r['field']))}-voxel field of view and z-scored over the volume (constant "
             f"negative air). One seed: differences of a point or two are within seed noise.", "",
             f"Fold-0 validation cases of the source. Dice %: {classes} and their mean; outside box: voxels labelled "
             f"foreground outside the brain's bounding box; in the air: voxels labelled foreground in the constant "
             f"air, inside the box as well, farther than {AIR_MARGIN} voxels from the brain (means per case; the reference labels "
             f"{ref_air:.0f} such voxels).", "",
             "| model | Dice (" + classes + ") | mean Dice | foreground voxels outside the box | foreground voxels "
             "in the air |", "|---|---|---|---|---|"]
    for name, s in r["results"].items():
        per_class = " / ".join(f"{s['classes'][str(k)]:.1f}" for k in LABELS)
        lines.append(f"| {name} | {per_class} | {s['mean']:.1f} | {s['foreground_outside_box']:.0f} | "
                     f"{s['foreground_in_far_air']:.0f} |")
    with open(os.path.join(out, "whole_volume.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
