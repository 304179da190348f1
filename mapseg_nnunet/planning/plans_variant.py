"""Plans variants carrying trainer settings: ablations, budgets and seeds without code edits.

A plans *variant* is a copy of a plans file under a new identifier that shares the original's preprocessed data
(same ``data_identifier``, nnU-Net's convention for plans variants) and adds, per configuration,

    "trainer_settings": {"masking.ratio": 0.5, "loss_weights.use_glc": false, "num_epochs": 4, "seed": 1}

The keys and how trainers apply them: :mod:`mapseg_nnunet.training.settings`.

    mapseg_plans_variant -d 951 -p MAPSegPlansCPU -o MAPSegPlansCPU_mask50 --set masking.ratio=0.5
    nnUNetv2_train 951 3d_fullres 0 -tr nnUNetTrainerMAPSegUDA -p MAPSegPlansCPU_mask50
"""
from __future__ import annotations

import copy
import json
from typing import Any, Dict, Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from mapseg_nnunet.data.atomic import save_json_atomic
from mapseg_nnunet.data.errors import DatasetError
from mapseg_nnunet.data.paths import dataset_name
from mapseg_nnunet.training.settings import SETTINGS_KEY


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
