"""Unlabeled datasets preprocessed with another dataset's plans (nnU-Net's plan transfer without labels): the
target cohorts of UDA and the target site of test-time UDA.

Cases are listed from ``imagesTr`` and preprocessed without a segmentation; labels in the raw folder are never
opened. Everything is written then renamed."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from tqdm import tqdm

from mapseg_nnunet.data.atomic import replace_directory, save_json_atomic
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.input_checks import check_dataset_images
from mapseg_nnunet.data.intensity import (channel_rules, check_against_rules, describe_findings, survey_case,
                                          survey_findings)
from mapseg_nnunet.data.paths import nnunet_paths


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


def preprocess_unlabeled_dataset(target: str, target_plans: dict, plans_identifier: str, configuration: str,
                                 source_json: dict, source: str, progress: bool = True) -> tuple:
    """Preprocess the ``imagesTr`` of raw dataset ``target`` with ``target_plans`` (the source plans renamed to the
    target) into ``nnUNet_preprocessed/<target>/``: plans, dataset.json (the source's label space) and the
    preprocessed cases, each written then renamed. Checks compatibility with the ``source_json`` of dataset ``source``
    first, and the images against the plans' intensity rules (what was found is printed). Returns
    ``(number of cases, data identifier, intensity findings per channel)``."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw, preprocessed = nnunet_paths()
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
    surveys = check_dataset_images({c: {"images": f} for c, f in cases.items()}, len(source_json["channel_names"]),
                                   reader, progress, survey=survey_case)
    findings = None
    intensity = (config.configuration.get("mapseg") or {}).get("intensity")
    if intensity is not None:
        rules = channel_rules(intensity, len(source_json["channel_names"]))
        check_against_rules(rules, surveys, plans_identifier)
        findings = survey_findings(list(source_json["channel_names"].values()), surveys)
        for line in describe_findings(findings, rules, f"{target} intensities"):
            print(line)
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
    return len(cases), config.data_identifier, findings
