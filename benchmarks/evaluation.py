"""Prediction (nnU-Net's ``nnUNetPredictor`` API, GLC through the installed predictor hook, the same path as
``nnUNetv2_predict``) and Dice against test labels, for every model of a benchmark run."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from .cohort import LABELS, SOURCE, TARGETS
from .paired import ABLATION_PREFIX


def case_metrics(prediction_file: str, reference_file: str, labels=LABELS) -> Dict[int, dict]:
    """nnU-Net's own per-case evaluation (``compute_metrics``, what ``nnUNetv2_evaluate_simple`` runs per case):
    ``{label: {"Dice", "TP", "n_ref", ...}}``; Dice NaN where a label is absent from both."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    return compute_metrics(reference_file, prediction_file, SimpleITKIO(), list(labels))["metrics"]


def score_folder(prediction_folder: str, label_folder: str) -> dict:
    """Mean per-class Dice (%) over the cases of ``label_folder`` and their mean ('mean'), and the voxel accuracy
    (%) inside the reference's foreground (label > 0: how often a pseudo-label from this model would be right),
    saved as scores.json. Per case: nnU-Net's evaluation (:func:`case_metrics`)."""
    per_case = {}
    correct, counted = dict.fromkeys(LABELS, 0), dict.fromkeys(LABELS, 0)
    for name in sorted(f for f in os.listdir(label_folder) if f.endswith(".nii.gz")):
        metrics = case_metrics(os.path.join(prediction_folder, name), os.path.join(label_folder, name))
        per_case[name] = {label: float(m["Dice"]) for label, m in metrics.items()}
        for label, m in metrics.items():  # voxels of the reference's class labelled right
            correct[label] += int(m["TP"])
            counted[label] += int(m["n_ref"])
    classes = {str(label): 100 * float(np.nanmean([c[label] for c in per_case.values()])) for label in LABELS}
    result = {"classes": classes, "mean": float(np.nanmean(list(classes.values()))),
              "foreground_voxel_accuracy": 100 * sum(correct.values()) / max(sum(counted.values()), 1),
              "class_voxel_accuracy": {str(label): 100 * correct[label] / counted[label] if counted[label] else float("nan")
                                       for label in LABELS},
              "cases": {k: {str(label): v for label, v in c.items()} for k, c in per_case.items()}}
    with open(os.path.join(prediction_folder, "scores.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def predict_folder(model_folder: str, images: str, output: str, checkpoint: str = "checkpoint_final.pth",
                   fold: str = "0", log: Optional[str] = None, step: float = 0.833, gaussian: bool = True,
                   mirroring: bool = False, network_attributes: Optional[dict] = None) -> float:
    """nnUNetPredictor on a folder of images (its messages go to ``log``); returns the seconds spent predicting
    (model loading excluded). Defaults are the benchmarks' inference settings (the paper's stride 80 of 96).
    ``network_attributes`` overrides prediction settings the network carries (e.g.
    ``mapseg_outside_box_is_background``)."""
    os.makedirs(output, exist_ok=True)
    attributes = tuple(sorted((network_attributes or {}).items()))
    with open(log or os.devnull, "a") as f, contextlib.redirect_stdout(f):
        return _predict_folder(model_folder, images, output, checkpoint, fold, step, gaussian, mirroring,
                               attributes)


@functools.lru_cache(maxsize=1)  # a model's targets are predicted one after the other: load it once
def _predictor(model_folder: str, checkpoint: str, fold: str, step: float, gaussian: bool, mirroring: bool,
               attributes: tuple = ()):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=step, use_gaussian=gaussian, use_mirroring=mirroring,
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, (fold if fold == "all" else int(fold),),
                                                   checkpoint_name=checkpoint)
    if mirroring and not predictor.allowed_mirroring_axes:
        predictor.allowed_mirroring_axes = (0, 1, 2)  # trained without flips: mirror all axes when asked to
    from mapseg_nnunet.architectures.unwrap import unwrap_network
    for name, value in attributes:
        setattr(unwrap_network(predictor.network), name, value)
    return predictor


def _predict_folder(model_folder: str, images: str, output: str, checkpoint: str, fold: str, step: float,
                    gaussian: bool, mirroring: bool, attributes: tuple = ()) -> float:
    predictor = _predictor(model_folder, checkpoint, fold, step, gaussian, mirroring, attributes)
    start = time.perf_counter()
    predictor.predict_from_files_sequential(images, output, save_probabilities=False, overwrite=True)
    return time.perf_counter() - start


def predict_and_score(model_folder: str, images: str, labels: str, output: str,
                      checkpoint: str = "checkpoint_final.pth") -> dict:
    """Predict ``images`` with the model, score against ``labels``; cached in ``output/scores.json``."""
    cached = os.path.join(output, "scores.json")
    if os.path.isfile(cached) and os.path.getmtime(cached) > os.path.getmtime(
            os.path.join(model_folder, "fold_0", checkpoint)):  # evaluated after the model was (re)trained
        return json.load(open(cached))
    predict_folder(model_folder, images, output, checkpoint, log=os.path.join(output, "predict.log"))
    return score_folder(output, labels)


def source_validation_folder(runner) -> tuple:
    """Images / labels of the source's fold-0 validation cases (Table 3's source Dice), as symlink folders."""
    return validation_folders(runner, SOURCE, os.path.join(runner.work, "source_validation"))


def validation_folders(runner, dataset: int, base: str) -> tuple:
    """Images / labels of ``dataset``'s fold-0 validation cases as symlink folders under ``base``."""
    raw = runner.folder(dataset)
    split = json.load(open(os.path.join(runner.folder(dataset, "nnUNet_preprocessed"), "splits_final.json")))[0]
    images, labels = os.path.join(base, "images"), os.path.join(base, "labels")
    for folder in (images, labels):
        os.makedirs(folder, exist_ok=True)
    for case in split["val"]:
        for src, dst in ((os.path.join(raw, "imagesTr", f"{case}_0000.nii.gz"), images),
                         (os.path.join(raw, "labelsTr", f"{case}.nii.gz"), labels)):
            link = os.path.join(dst, os.path.basename(src))
            if not os.path.exists(link):
                os.symlink(src, link)
    return images, labels


# methods evaluated on every target's test labels, and those evaluated on their own target only ('<method>/<target>')
TARGET_METHODS = ("floor", "floor_da5", "source_only", "source_only_cr", "source_only_cr_matched", "uda_cr")
PER_TARGET_METHODS = ("oracle", "tta_cr")
# models also scored on the source's validation cases (Table 3: what adaptation costs the source)
SOURCE_METHODS = ("source_only", "source_only_cr", "uda_cr")


def evaluate_all(runner, seeds: Dict[int, Dict[str, str]], fed: Optional[str],
                 ablations: Dict[int, Dict[str, str]]) -> dict:
    """{'quality': {seed: {method: {target: scores}}}, 'source': {seed: {method: scores}}, 'ablations':
    {name: {target: scores}} (the first seed that ran them), 'selection': [per-epoch records of the first seed's UDA
    run] or None}. ``ablations``: {seed: {name: model folder}}; each also enters that seed's quality row as
    ``ablation/<name>`` (:data:`ABLATION_PREFIX`), for the paired intervals."""
    predictions = os.path.join(runner.work, "predictions")
    targets = {t: (os.path.join(runner.folder(t), "imagesTs"), os.path.join(runner.folder(t), "labelsTs"))
               for t in TARGETS}

    def on_targets(model_folder: str, name: str, only: Optional[List[int]] = None,
                   checkpoint: str = "checkpoint_final.pth") -> dict:
        return {str(t): predict_and_score(model_folder, *targets[t], os.path.join(predictions, name, str(t)),
                                          checkpoint) for t in (only or TARGETS)}

    src_images, src_labels = source_validation_folder(runner)
    results = {"quality": {}, "source": {}, "ablations": {}, "selection": None}
    for seed, models in seeds.items():
        runner.say(f"evaluating seed {seed}")
        row = {method: on_targets(models[method], f"s{seed}/{method}") for method in TARGET_METHODS
               if method in models}
        for method in PER_TARGET_METHODS:
            if f"{method}/{TARGETS[0]}" in models:
                row[method] = {str(t): on_targets(models[f"{method}/{t}"], f"s{seed}/{method}", [t])[str(t)]
                               for t in TARGETS}
        results["quality"][seed] = row
        source = {method: predict_and_score(models[method], src_images, src_labels,
                                            os.path.join(predictions, f"s{seed}/source_val/{method}"))
                  for method in SOURCE_METHODS if method in models}
        for t in TARGETS if runner.budget.is_reference(seed) else ():  # the forgetting check: reference seeds
            source[f"tta_cr/{t}"] = predict_and_score(models[f"tta_cr/{t}"], src_images, src_labels,
                                                      os.path.join(predictions, f"s{seed}/source_val/tta_cr_{t}"))
        results["source"][seed] = source
    first = min(seeds)
    if fed:
        results["quality"][first]["fed_cr"] = on_targets(fed, f"s{first}/fed_cr")
    for seed in sorted(ablations):
        for name, folder in ablations[seed].items():
            # the first seed's predictions keep the folder earlier runs cached them in
            where = f"ablation/{name.replace(' ', '_')}" if seed == first else \
                f"s{seed}/ablation/{name.replace(' ', '_')}"
            scores = on_targets(folder, where)
            results["quality"].setdefault(seed, {})[ABLATION_PREFIX + name] = scores
            results["ablations"].setdefault(name, scores)
    uda = seeds[first]["uda_cr"]
    epochs = sorted(f for f in os.listdir(os.path.join(uda, "fold_0")) if f.startswith("checkpoint_epoch_"))
    if epochs:
        runner.say(f"selection check: target Dice of the {len(epochs)} epoch checkpoints of seed {first}'s UDA run")
        final = torch.load(os.path.join(uda, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                           weights_only=False)
        history, last_epoch = final["mapseg"]["score_history"], final["current_epoch"] - 1
        per_epoch = []
        for checkpoint in epochs:
            epoch = int(checkpoint.split("_")[-1].split(".")[0])
            dice = results["quality"][first]["uda_cr"] if epoch == last_epoch else \
                on_targets(uda, f"s{first}/uda_epochs/{epoch}", checkpoint=checkpoint)  # the last one is the final
            record = next(r for r in history if r["epoch"] == epoch)
            per_epoch.append({"epoch": epoch, "score": record["score"], "adapted": record.get("adapted", True),
                              "source_dice": record["source_dice"],
                              "mpl": record["mpl"], "target_dice": {t: dice[t]["mean"] for t in dice},
                              "target_classes": {t: dice[t]["classes"] for t in dice},
                              "target_accuracy": {t: dice[t]["foreground_voxel_accuracy"] for t in dice}})
        results["selection"] = per_epoch
    return results


def source_and_target_scores(runner, model: str, predictions: str, checkpoint: str = "checkpoint_final.pth") -> dict:
    """A model's scores on the source's validation cases and every target's test images ({'source' | target id:
    classes, mean, foreground_voxel_accuracy, class_voxel_accuracy}); predictions cached under ``predictions``."""
    src_images, src_labels = source_validation_folder(runner)  # the split exists once a model has trained
    scores = {"source": predict_and_score(model, src_images, src_labels, os.path.join(predictions, "source"),
                                          checkpoint)}
    for t in TARGETS:
        scores[str(t)] = predict_and_score(model, os.path.join(runner.folder(t), "imagesTs"),
                                           os.path.join(runner.folder(t), "labelsTs"), os.path.join(predictions, str(t)),
                                           checkpoint)
    keys = ("classes", "mean", "foreground_voxel_accuracy", "class_voxel_accuracy")
    return {k: {kk: v[kk] for kk in keys if kk in v} for k, v in scores.items()}


def dice_accuracy_cells(scores: dict) -> str:
    """Markdown cells: source validation Dice, then 'Dice / accuracy' per target."""
    return f"{scores['source']['mean']:.1f} | " + " | ".join(
        f"{scores[str(t)]['mean']:.1f} / {scores[str(t)]['foreground_voxel_accuracy']:.1f}" for t in TARGETS)

