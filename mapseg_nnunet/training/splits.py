"""Cross-validation splits for small labeled cohorts.

nnU-Net's default split is 5-fold (``splits_final.json``, written the first time a numbered fold trains); with
fewer than 5 labeled cases scikit-learn stops the run with "Cannot have number of splits n_splits=5 greater than
the number of samples". Small labeled cohorts are common in this field, so:

* the trainers (:class:`SplitCheck`) say so before training starts, with what to do;
* ``mapseg_nnunet split -d ID`` writes ``splits_final.json`` with ``min(5, cases)`` folds (leave-one-out below 5
  cases; nnU-Net's own seeded ``generate_crossval_split``), which nnU-Net then uses as it always does.

Score selection (:mod:`mapseg_nnunet.method.selection`) takes its source term from the fold's validation cases:
one case per fold under leave-one-out; with fold ``all`` the validation cases are the training cases, so the
source term measures fit rather than generalisation and the target term (L_MPL) decides more.
"""
from __future__ import annotations

import os
from typing import List, Optional

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from mapseg_nnunet.data.atomic import save_json_atomic
from mapseg_nnunet.data.errors import DatasetError

DEFAULT_FOLDS = 5  # nnU-Net's
SPLITS_FILE = "splits_final.json"


def small_cohort_message(dataset: str, num_cases: int, fold) -> str:
    return (f"{dataset} has {num_cases} labeled case(s), fewer than the {DEFAULT_FOLDS} folds of nnU-Net's default "
            f"split, so fold {fold} cannot be made (stock nnU-Net stops with 'Cannot have number of splits "
            f"n_splits=5 greater than the number of samples'). Either train on every case with fold 'all' "
            f"(nnUNetv2_train ... 3d_fullres all ...; Score selection then measures source Dice on the training "
            f"cases), or write a split with {'one validation case per fold' if num_cases >= 2 else 'more cases'}: "
            f"mapseg_nnunet split -d {dataset} (then train folds 0..{max(num_cases - 1, 0)}), or write "
            f"splits_final.json yourself (nnU-Net's format: a list of {{'train': [...], 'val': [...]}}).")


def check_split_possible(preprocessed_dataset_folder_base: str, identifiers: List[str], fold, dataset: str) -> None:
    """Raise before nnU-Net's default 5-fold split would fail (numbered fold, no splits file, < 5 cases)."""
    if fold == "all" or isfile(join(preprocessed_dataset_folder_base, SPLITS_FILE)):
        return
    if len(identifiers) < DEFAULT_FOLDS:
        raise RuntimeError(small_cohort_message(dataset, len(identifiers), fold))


class SplitCheck:
    """Trainer mixin (before ``nnUNetTrainer`` in the bases): :func:`check_split_possible` before nnU-Net's
    ``do_split``."""

    def do_split(self):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        if self.fold != "all" and not isfile(join(self.preprocessed_dataset_folder_base, SPLITS_FILE)):
            dataset_class = self.dataset_class or infer_dataset_class(self.preprocessed_dataset_folder)
            check_split_possible(self.preprocessed_dataset_folder_base,
                                 list(dataset_class.get_identifiers(self.preprocessed_dataset_folder)), self.fold,
                                 self.plans_manager.dataset_name)
        return super().do_split()


def write_splits(preprocessed_dataset_folder_base: str, identifiers: List[str], folds: Optional[int] = None,
                 overwrite: bool = False, seed: int = 12345) -> list:
    """``splits_final.json`` with ``folds`` folds (default ``min(5, cases)``: leave-one-out below 5 cases), made by
    nnU-Net's seeded ``generate_crossval_split``; written then renamed. An existing file is kept unless
    ``overwrite`` (models trained on it refer to it)."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    path = join(preprocessed_dataset_folder_base, SPLITS_FILE)
    if isfile(path) and not overwrite:
        raise DatasetError(f"{path}: a split exists already ({len(load_json(path))} folds); models trained on it "
                           f"refer to it. Pass --overwrite to replace it.")
    identifiers = sorted(identifiers)
    folds = min(DEFAULT_FOLDS, len(identifiers)) if folds is None else folds
    if len(identifiers) < 2:
        raise DatasetError(f"{preprocessed_dataset_folder_base}: {len(identifiers)} labeled case(s) cannot be split; "
                           f"train fold 'all'")
    if not 2 <= folds <= len(identifiers):
        raise DatasetError(f"{preprocessed_dataset_folder_base}: {folds} folds for {len(identifiers)} cases; use "
                           f"2 to {len(identifiers)} folds")
    splits = generate_crossval_split(identifiers, seed=seed, n_splits=folds)
    save_json_atomic(splits, path)
    return splits


def labeled_identifiers(raw_dataset_folder: str) -> List[str]:
    """The labeled training cases of a raw nnU-Net dataset (what nnU-Net's split is made of)."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    if not isfile(join(raw_dataset_folder, "dataset.json")):
        raise DatasetError(f"{join(raw_dataset_folder, 'dataset.json')}: file is missing")
    dataset_json = load_json(join(raw_dataset_folder, "dataset.json"))
    cases = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    return [k for k, v in cases.items() if v.get("label") and os.path.isfile(v["label"])]
