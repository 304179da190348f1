"""Unlabeled target cohorts registered to a labeled source dataset.

A target cohort is an ordinary nnU-Net raw dataset (``DatasetYYY_Name/imagesTr`` + ``dataset.json``; no
``labelsTr`` needed; ``imagesTs``/``labelsTs`` may hold target test labels, used for evaluation only).
``mapseg_register_targets -s SOURCE -t TARGET [TARGET ...] -p PLANS`` checks that each target is compatible with
the source (same channel count and names), preprocesses the target's ``imagesTr`` with the **source** plans
(stock fingerprinting and plan transfer need labels), and records the link in the source's preprocessed folder
(``mapseg_targets.json``), which the MAPSeg trainers read. Several targets per source are supported (multi-target,
federated clients); a target can also be registered as an extra unlabeled ``pool`` (used only for MAE
pretraining).

Following nnU-Net's plan-transfer convention, the target's preprocessed data live in its own preprocessed
folder: ``nnUNet_preprocessed/DatasetYYY_Name/{PLANS}.json`` (the source plans, renamed to the target dataset),
``dataset.json`` and ``{data_identifier}/``. Labels in the target's raw folder are never opened: cases are listed
from ``imagesTr`` and preprocessed without a segmentation.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from tqdm import tqdm

from mapseg_nnunet.atomic import replace_directory, save_json_atomic
from mapseg_nnunet.validation import DatasetError, check_dataset_images

REGISTRY_FILE = "mapseg_targets.json"
ROLES = ("target", "pool")


def _paths():
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    for name, value in (("nnUNet_raw", nnUNet_raw), ("nnUNet_preprocessed", nnUNet_preprocessed)):
        if not value.is_set():
            raise DatasetError(f"environment variable {name} is not set")
    return os.fspath(nnUNet_raw), os.fspath(nnUNet_preprocessed)


def dataset_name(dataset: str | int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise DatasetError(f"dataset {dataset}: {e}") from e


def list_image_cases(images_folder: str, file_ending: str) -> Dict[str, List[str]]:
    """``case -> [channel files]`` from an nnU-Net images folder (``<case>_<XXXX><ending>``)."""
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder, \
        get_identifiers_from_splitted_dataset_folder
    if not isdir(images_folder):
        raise DatasetError(f"{images_folder}: folder is missing")
    identifiers = get_identifiers_from_splitted_dataset_folder(images_folder, file_ending)
    files = create_lists_from_splitted_dataset_folder(images_folder, file_ending, identifiers)
    return dict(zip(identifiers, files))


def check_compatible(source_json: dict, target_json: dict, target_json_path: str, source: str) -> None:
    source_channels = {str(k): v for k, v in source_json["channel_names"].items()}
    target_channels = {str(k): v for k, v in target_json.get("channel_names", {}).items()}
    if len(target_channels) != len(source_channels):
        raise DatasetError(f"{target_json_path}: the target has {len(target_channels)} channel(s) "
                           f"{target_channels}, source {source} has {len(source_channels)} {source_channels}")
    if target_channels != source_channels:
        raise DatasetError(f"{target_json_path}: channel names {target_channels} differ from those of source "
                           f"{source} {source_channels}; name the channels identically (same order, same names)")
    if target_json.get("file_ending") is None:
        raise DatasetError(f"{target_json_path}: 'file_ending' is missing")


def load_registry(source: str | int) -> dict:
    _, preprocessed = _paths()
    name = dataset_name(source)
    path = join(preprocessed, name, REGISTRY_FILE)
    if not isfile(path):
        return {"source": name, "targets": []}
    return load_json(path)


def registered_targets(source: str | int, plans_identifier: str, configuration: str = "3d_fullres",
                       roles: Sequence[str] = ("target",), data_identifier: Optional[str] = None) -> List[dict]:
    """Targets registered with ``plans_identifier``; a plans variant that shares preprocessed data
    (``data_identifier``, see ``mapseg_plans_variant``) falls back to the targets registered with that data."""
    entries = [t for t in load_registry(source)["targets"] if t["configuration"] == configuration
               and t["role"] in roles]
    own = [t for t in entries if t["plans_identifier"] == plans_identifier]
    if own or data_identifier is None:
        return own
    shared, seen = [], set()
    for t in entries:
        if t["data_identifier"] == data_identifier and t["dataset_name"] not in seen:
            shared.append(t)
            seen.add(t["dataset_name"])
    return shared


def target_data_folder(entry: dict) -> str:
    _, preprocessed = _paths()
    return join(preprocessed, entry["dataset_name"], entry["data_identifier"])


def preprocess_unlabeled_dataset(target: str, target_plans: dict, plans_identifier: str, configuration: str,
                                 source_json: dict, source: str, progress: bool = True) -> tuple:
    """Preprocess the ``imagesTr`` of raw dataset ``target`` with ``target_plans`` (the source plans renamed to the
    target) into ``nnUNet_preprocessed/<target>/``: plans, dataset.json (the source's label space) and the
    preprocessed cases, each written then renamed. Checks compatibility with the ``source_json`` of dataset ``source`` first. Returns
    ``(number of cases, data identifier)``."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw, preprocessed = _paths()
    target_json_path = join(raw, target, "dataset.json")
    if not isfile(target_json_path):
        raise DatasetError(f"{target_json_path}: file is missing")
    target_json = load_json(target_json_path)
    check_compatible(source_json, target_json, target_json_path, source)
    cases = list_image_cases(join(raw, target, "imagesTr"), target_json["file_ending"])
    if not cases:
        raise DatasetError(f"{join(raw, target, 'imagesTr')}: no images (expected <case>_0000"
                           f"{target_json['file_ending']})")
    manager = PlansManager(target_plans)
    config = manager.get_configuration(configuration)
    reader = manager.image_reader_writer_class()
    check_dataset_images({c: {"images": f} for c, f in cases.items()}, len(source_json["channel_names"]), reader,
                         progress)
    target_dataset_json = {**target_json, "labels": source_json["labels"], "numTraining": len(cases)}
    folder = join(preprocessed, target)
    os.makedirs(folder, exist_ok=True)
    final_dir = join(folder, config.data_identifier)
    partial_dir = final_dir + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    os.makedirs(partial_dir)
    preprocessor = DefaultPreprocessor(verbose=False)
    foreground = list(manager.get_label_manager(source_json).foreground_labels)
    try:
        for case, files in tqdm(cases.items(), desc=f"Preprocessing {target} with {plans_identifier}",
                                disable=not progress):
            data, seg, properties = preprocessor.run_case(files, None, manager, config, source_json)
            properties["class_locations"] = {label: [] for label in foreground}  # no labels: random patches
            properties["mapseg_unlabeled"] = True
            data, seg = data.astype(np.float32, copy=False), seg.astype(np.int8, copy=False)
            blocks, chunks = comp_blosc2_params(data.shape, tuple(config.patch_size), data.itemsize)
            blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(config.patch_size), seg.itemsize)
            nnUNetDatasetBlosc2.save_case(data, seg, properties, join(partial_dir, case), chunks=chunks,
                                          blocks=blocks, chunks_seg=chunks_seg, blocks_seg=blocks_seg)
        save_json_atomic(target_plans, join(folder, plans_identifier + ".json"))
        save_json_atomic(target_dataset_json, join(folder, "dataset.json"))
        replace_directory(partial_dir, final_dir)
    finally:
        shutil.rmtree(partial_dir, ignore_errors=True)
    return len(cases), config.data_identifier


def register_target(source: str | int, target: str | int, plans_identifier: str,
                    configuration: str = "3d_fullres", role: str = "target", progress: bool = True) -> dict:
    """Preprocess one target with the source plans and record it; returns the registry entry."""

    if role not in ROLES:
        raise DatasetError(f"role must be one of {ROLES}, got {role!r}")
    raw, preprocessed = _paths()
    source_name, target_name = dataset_name(source), dataset_name(target)
    if source_name == target_name:
        raise DatasetError(f"{target_name}: a dataset cannot be registered as a target of itself")
    plans_path = join(preprocessed, source_name, plans_identifier + ".json")
    if not isfile(plans_path):
        raise DatasetError(f"{plans_path}: plans are missing; plan the source first "
                           f"(mapseg_plan_and_preprocess -d {source})")
    source_json = load_json(join(preprocessed, source_name, "dataset.json"))
    plans = load_json(plans_path)
    if configuration not in plans["configurations"]:
        raise DatasetError(f"{plans_path}: configuration {configuration!r} not found")
    target_plans = copy.deepcopy(plans)
    target_plans["dataset_name"] = target_name
    num_cases, data_identifier = preprocess_unlabeled_dataset(target_name, target_plans, plans_identifier,
                                                              configuration, source_json, source_name, progress)

    entry = {"dataset_name": target_name, "role": role, "plans_identifier": plans_identifier,
             "configuration": configuration, "data_identifier": data_identifier, "num_cases": num_cases,
             "channel_names": source_json["channel_names"],
             "has_test_labels": isdir(join(raw, target_name, "labelsTs"))}
    registry = load_registry(source_name)
    registry["targets"] = [t for t in registry["targets"] if not (
        t["dataset_name"] == target_name and t["plans_identifier"] == plans_identifier
        and t["configuration"] == configuration)] + [entry]
    save_json_atomic(registry, join(preprocessed, source_name, REGISTRY_FILE))
    return entry


def register_targets_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Register unlabeled target datasets to a labeled source dataset: check compatibility, "
                    "preprocess the targets' imagesTr with the source plans, record the link so that MAPSeg "
                    "trainers on the source find them.")
    parser.add_argument("-s", required=True, help="[REQUIRED] Source dataset name or id (planned already).")
    parser.add_argument("-t", nargs="+", default=[], help="Target dataset names or ids.")
    parser.add_argument("-p", default="MAPSegPlans", help="Plans identifier of the source. Default: MAPSegPlans")
    parser.add_argument("-c", default="3d_fullres", help="Configuration. Default: 3d_fullres")
    parser.add_argument("--role", default="target", choices=ROLES,
                        help="'target': adapted to (UDA, federated clients); 'pool': extra unlabeled images used "
                             "only by MAE pretraining. Default: target")
    parser.add_argument("--list", action="store_true", help="List the registered datasets of the source and exit.")
    parser.add_argument("--no_pbar", action="store_true", help="Disable progress bars.")
    args = parser.parse_args(argv)
    try:
        if not args.list and not args.t:
            parser.error("give target datasets with -t, or --list")
        for t in args.t:
            entry = register_target(args.s, t, args.p, args.c, args.role, not args.no_pbar)
            print(f"Registered {entry['dataset_name']} ({entry['num_cases']} cases, role {entry['role']}) to "
                  f"{dataset_name(args.s)} with {args.p}/{args.c}")
        for t in load_registry(args.s)["targets"]:
            print(f"{t['dataset_name']}: role {t['role']}, {t['num_cases']} cases, {t['plans_identifier']}/"
                  f"{t['configuration']}, test labels: {'yes' if t['has_test_labels'] else 'no'}")
    except DatasetError as e:
        raise SystemExit(f"ERROR: {e}")


def training_domains(source_name: str, plans_identifier: str, configuration: str, data_identifier: str,
                     roles: Sequence[str], identifiers: Optional[List[str]] = None) -> List[tuple]:
    """``[(dataset name, nnU-Net dataset)]``: the source's preprocessed cases (``identifiers``, default all) and
    every registered dataset of the given roles. Target datasets carry no labels (their seg is nnU-Net's
    non-zero mask only)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    _, preprocessed = _paths()
    source_folder = join(preprocessed, source_name, data_identifier)
    domains = [(source_name, infer_dataset_class(source_folder)(source_folder, identifiers))]
    for entry in registered_targets(source_name, plans_identifier, configuration, roles, data_identifier):
        folder = target_data_folder(entry)
        if not isdir(folder):
            raise DatasetError(f"{folder}: registered target data are missing; run mapseg_register_targets again")
        domains.append((entry["dataset_name"], infer_dataset_class(folder)(folder)))
    return domains
