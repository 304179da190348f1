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

import copy
from typing import List, Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json

from mapseg_nnunet.data.atomic import save_json_atomic
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name, nnunet_paths
from mapseg_nnunet.data.unlabeled import preprocess_unlabeled_dataset

REGISTRY_FILE = "mapseg_targets.json"
ROLES = ("target", "pool")


def load_registry(source: str | int) -> dict:
    _, preprocessed = nnunet_paths()
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
    _, preprocessed = nnunet_paths()
    return join(preprocessed, entry["dataset_name"], entry["data_identifier"])


def plans_for_target(source: str | int, target_name: str, plans_identifier: str, configuration: str) -> dict:
    """The source's plans ``plans_identifier`` as the target's copy (``dataset_name`` replaced), refused with the
    file named when the plans or the configuration are missing."""
    _, preprocessed = nnunet_paths()
    plans_path = join(preprocessed, dataset_name(source), plans_identifier + ".json")
    if not isfile(plans_path):
        raise DatasetError(f"{plans_path}: plans are missing; plan the source first "
                           f"(mapseg_plan_and_preprocess -d {source})")
    plans = copy.deepcopy(load_json(plans_path))
    if configuration not in plans["configurations"]:
        raise DatasetError(f"{plans_path}: configuration {configuration!r} not found")
    plans["dataset_name"] = target_name
    return plans


def plans_for_registered_target(source: str | int, target: str | int, plans_identifier: str,
                                configuration: str = "3d_fullres") -> str:
    """The target's copy of the source plans ``plans_identifier`` (what nnU-Net loads to build a trainer on the
    target, e.g. a federated client), returned as a path. A target registered with other plans that share the
    preprocessed data (``MAPSegResEncPlansCPU`` planned with ``--no_pp`` after ``MAPSegPlansCPU``, a plans variant)
    gets the copy written now, exactly as registration writes it; its data are not touched. A target registered
    with neither is refused, naming the command that registers it."""
    _, preprocessed = nnunet_paths()
    source_name, target_name = dataset_name(source), dataset_name(target)
    path = join(preprocessed, target_name, plans_identifier + ".json")
    if isfile(path):
        return path
    target_plans = plans_for_target(source, target_name, plans_identifier, configuration)
    data_identifier = target_plans["configurations"][configuration]["data_identifier"]
    shared = [t for t in registered_targets(source_name, plans_identifier, configuration, ROLES, data_identifier)
              if t["dataset_name"] == target_name and t["data_identifier"] == data_identifier]
    if not shared or not isdir(target_data_folder(shared[0])):
        raise DatasetError(f"{target_name} is not registered to {source_name} with plans {plans_identifier} or with "
                           f"plans sharing its data ({data_identifier}); run mapseg_register_targets -s {source} "
                           f"-t {target} -p {plans_identifier}")
    save_json_atomic(target_plans, path)
    return path


def register_target(source: str | int, target: str | int, plans_identifier: str,
                    configuration: str = "3d_fullres", role: str = "target", progress: bool = True) -> dict:
    """Preprocess one target with the source plans and record it; returns the registry entry."""

    if role not in ROLES:
        raise DatasetError(f"role must be one of {ROLES}, got {role!r}")
    raw, preprocessed = nnunet_paths()
    source_name, target_name = dataset_name(source), dataset_name(target)
    if source_name == target_name:
        raise DatasetError(f"{target_name}: a dataset cannot be registered as a target of itself")
    target_plans = plans_for_target(source, target_name, plans_identifier, configuration)
    source_json = load_json(join(preprocessed, source_name, "dataset.json"))
    num_cases, data_identifier, findings = preprocess_unlabeled_dataset(target_name, target_plans, plans_identifier,
                                                                        configuration, source_json, source_name,
                                                                        progress)

    entry = {"dataset_name": target_name, "role": role, "plans_identifier": plans_identifier,
             "configuration": configuration, "data_identifier": data_identifier, "num_cases": num_cases,
             "channel_names": source_json["channel_names"],
             "has_test_labels": isdir(join(raw, target_name, "labelsTs")), "intensities_found": findings}
    registry = load_registry(source_name)
    registry["targets"] = [t for t in registry["targets"] if not (
        t["dataset_name"] == target_name and t["plans_identifier"] == plans_identifier
        and t["configuration"] == configuration)] + [entry]
    save_json_atomic(registry, join(preprocessed, source_name, REGISTRY_FILE))
    return entry


def training_domains(source_name: str, plans_identifier: str, configuration: str, data_identifier: str,
                     roles: Sequence[str], identifiers: Optional[List[str]] = None) -> List[tuple]:
    """``[(dataset name, nnU-Net dataset)]``: the source's preprocessed cases (``identifiers``, default all) and
    every registered dataset of the given roles. Target datasets carry no labels (their seg is nnU-Net's
    non-zero mask only)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    _, preprocessed = nnunet_paths()
    source_folder = join(preprocessed, source_name, data_identifier)
    domains = [(source_name, infer_dataset_class(source_folder)(source_folder, identifiers))]
    for entry in registered_targets(source_name, plans_identifier, configuration, roles, data_identifier):
        folder = target_data_folder(entry)
        if not isdir(folder):
            raise DatasetError(f"{folder}: registered target data are missing; run mapseg_register_targets again")
        domains.append((entry["dataset_name"], infer_dataset_class(folder)(folder)))
    return domains
