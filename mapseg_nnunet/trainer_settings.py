"""Trainer settings carried by the plans: ablations, budgets and seeds without code edits.

A plans *variant* is a copy of a plans file under a new identifier that shares the original's preprocessed data
(same ``data_identifier``, nnU-Net's convention for plans variants) and adds, per configuration,

    "trainer_settings": {"masking.ratio": 0.5, "loss_weights.use_glc": false, "num_epochs": 4, "seed": 1}

Each key names an attribute of the trainer (dotted for nested settings such as ``masking.local_cube`` or
``loss_weights.gamma``); the trainer applies them when it initialises, before the network is built, and logs
them. ``seed`` seeds Python, NumPy and PyTorch there (network initialisation, masks and the in-process data
order; nnU-Net's background augmentation workers draw their own seeds). nnU-Net copies the plans into the
results folder, so every model records the settings it was trained with, and results of different variants
land in different folders (``TRAINER__PLANS__CONFIGURATION``).

    mapseg_plans_variant -d 951 -p MAPSegPlansCPU -o MAPSegPlansCPU_mask50 --set masking.ratio=0.5
    nnUNetv2_train 951 3d_fullres 0 -tr nnUNetTrainerMAPSegUDA -p MAPSegPlansCPU_mask50
"""
from __future__ import annotations

import argparse
import copy
import json
import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from mapseg_nnunet.atomic import save_json_atomic
from mapseg_nnunet.validation import DatasetError

SETTINGS_KEY = "trainer_settings"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch; under DDP each rank adds its rank, so ranks draw different batches."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        seed += dist.get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_trainer_settings(trainer, settings: Dict[str, Any], where: str) -> List[str]:
    """Set each ``settings`` entry on ``trainer``; returns log lines. An unknown name raises ``ValueError``
    naming ``where`` (the plans) and the setting, so a typo never silently trains the default."""
    applied = []
    for name, value in settings.items():
        if name == "seed":
            seed_everything(int(value))
            applied.append(f"seed = {int(value)}")
            continue
        owner, parts = trainer, name.split(".")
        for part in parts[:-1]:
            if not hasattr(owner, part):
                raise ValueError(f"{where}: trainer setting {name!r}: {type(trainer).__name__} has no {part!r}")
            owner = getattr(owner, part)
        if not hasattr(owner, parts[-1]):
            raise ValueError(f"{where}: unknown trainer setting {name!r} for {type(trainer).__name__}")
        current = getattr(owner, parts[-1])
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(owner, parts[-1], value)
        applied.append(f"{name} = {value!r} (default {current!r})")
    return applied


def configure_from_plans(trainer) -> None:
    """Apply the ``trainer_settings`` of the trainer's configuration and log them (no-op without any)."""
    settings = trainer.configuration_manager.configuration.get(SETTINGS_KEY) or {}
    if not settings:
        return
    where = f"plans {trainer.plans_manager.plans_name}, configuration {trainer.configuration_name}"
    for line in apply_trainer_settings(trainer, settings, where):
        trainer.print_to_log_file(f"Trainer setting from the plans: {line}")


def parse_assignments(assignments: Sequence[str]) -> Dict[str, Any]:
    """``["masking.ratio=0.5", "loss_weights.use_glc=false"]`` -> dict; values are JSON (bare words are strings)."""
    settings = {}
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"trainer setting {item!r} is not NAME=VALUE")
        name, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings[name.strip()] = value
    return settings


def make_plans_variant(dataset: str, plans_identifier: str, variant_identifier: str, settings: Dict[str, Any],
                       configurations: Optional[Sequence[str]] = None, overwrite: bool = False) -> str:
    """Write ``nnUNet_preprocessed/<dataset>/<variant_identifier>.json``: the plans with ``settings`` added to the
    trainer settings of ``configurations`` (default all). Returns its path."""
    from nnunetv2.paths import nnUNet_preprocessed
    from mapseg_nnunet.targets import dataset_name
    name = dataset_name(dataset)
    source = join(nnUNet_preprocessed, name, plans_identifier + ".json")
    target = join(nnUNet_preprocessed, name, variant_identifier + ".json")
    if not isfile(source):
        raise DatasetError(f"{source}: plans are missing")
    if variant_identifier == plans_identifier:
        raise DatasetError(f"{target}: the variant needs its own plans identifier")
    if isfile(target) and not overwrite:
        raise DatasetError(f"{target} exists (use --overwrite to replace it)")
    plans = copy.deepcopy(load_json(source))
    plans["plans_name"] = variant_identifier
    owners = [c for c, cfg in plans["configurations"].items() if "data_identifier" in cfg]
    for configuration in configurations or owners:
        if configuration not in plans["configurations"]:
            raise DatasetError(f"{source}: configuration {configuration!r} not found")
        config = plans["configurations"][configuration]
        if "data_identifier" not in config:
            raise DatasetError(f"{source}: configuration {configuration!r} inherits its data; give the "
                               f"configurations that own data with -c")
        config[SETTINGS_KEY] = {**(config.get(SETTINGS_KEY) or {}), **settings}
    save_json_atomic(plans, target)
    return target


def plans_variant_entry(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a plans variant that shares the preprocessed data of existing plans and carries "
                    "trainer settings (ablation switches, budget, seed) for nnUNetv2_train -p VARIANT.")
    parser.add_argument("-d", required=True, help="[REQUIRED] Dataset name or id.")
    parser.add_argument("-p", required=True, help="[REQUIRED] Plans identifier to copy, e.g. MAPSegPlansCPU.")
    parser.add_argument("-o", required=True, help="[REQUIRED] Plans identifier of the variant.")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="Trainer settings, values in JSON, e.g. masking.ratio=0.5 loss_weights.use_glc=false "
                             "num_epochs=4 seed=1")
    parser.add_argument("-c", nargs="+", default=None, help="Configurations to change. Default: all that own data")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing variant.")
    args = parser.parse_args(argv)
    try:
        path = make_plans_variant(args.d, args.p, args.o, parse_assignments(args.set), args.c, args.overwrite)
    except (DatasetError, ValueError) as e:
        raise SystemExit(f"ERROR: {e}")
    print(f"Wrote {path}")


class PlansTrainerSettings:
    """Mixin for nnU-Net trainers: ``initialize()`` first applies the plans' trainer settings (before the network
    is built); the setting ``final_validation = false`` skips nnU-Net's validation of the fold's cases after
    training (benchmarks evaluate their own test sets)."""
    final_validation = True

    def initialize(self):
        configure_from_plans(self)
        super().initialize()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.final_validation:
            self.print_to_log_file("Final validation skipped (trainer setting final_validation = false)")
            return
        super().perform_actual_validation(save_probabilities)
