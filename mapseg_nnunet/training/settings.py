"""Trainer settings: one key set for ablations, budgets and seeds, from two places.

* **Trainer variants** (nnU-Net's ``nnUNetTrainer_5epochs`` convention, one attribute each) declare their
  settings as a class attribute, ``trainer_settings = {"num_epochs": 8, "loss_weights.use_mpl": False}``,
  applied when the trainer is constructed; a variant of a variant inherits its parent's and overrides what it
  names.
* **Plans variants** (``mapseg_plans_variant``, :mod:`mapseg_nnunet.planning.plans_variant`) carry the same keys
  per configuration, ``"trainer_settings": {"masking.ratio": 0.5, "seed": 1}``; they win over the variant's.

Each key names an attribute of the trainer (dotted for nested settings such as ``masking.local_cube`` or
``loss_weights.gamma``); the trainer applies the plans' when it initialises, before the network is built, and
logs both. ``seed`` seeds Python, NumPy and PyTorch there (network initialisation, masks and the in-process data
order) and the MAPSeg trainers' background augmentation workers (:mod:`mapseg_nnunet.data.augmenter`): the same
seed trains the same model. nnU-Net copies the plans into the
results folder, so every model records the settings it was trained with, and results of different variants
land in different folders (``TRAINER__PLANS__CONFIGURATION``).
"""
from __future__ import annotations

import random
from typing import Any, Dict, List

import numpy as np
import torch

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
    naming ``where`` (the plans or the variant) and the setting, so a typo never silently trains the default."""
    applied = []
    for name, value in settings.items():
        if name == "seed":
            trainer.seed = int(value)  # the data loaders' background workers derive theirs from it
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


def variant_settings(trainer_class: type) -> Dict[str, Any]:
    """The ``trainer_settings`` class attributes along the class hierarchy, the most derived winning."""
    merged: Dict[str, Any] = {}
    for klass in reversed(trainer_class.__mro__):
        merged.update(vars(klass).get(SETTINGS_KEY, {}))
    return merged


def plans_settings(configuration_manager) -> Dict[str, Any]:
    return configuration_manager.configuration.get(SETTINGS_KEY) or {}


def effective_setting(trainer_class: type, configuration_manager, name: str, default: Any) -> Any:
    """A setting as a trainer of ``trainer_class`` on these plans will have it, without building the trainer
    (for nnU-Net's static ``build_network_architecture``, which ``nnUNetv2_predict`` calls)."""
    return {**variant_settings(trainer_class), **plans_settings(configuration_manager)}.get(name, default)


class PlansTrainerSettings:
    """Mixin for nnU-Net trainers. Construction ends with :meth:`set_defaults` (the trainer's own defaults; each
    trainer extends it) and then the variant's ``trainer_settings``, so attributes set on a constructed trainer
    (nnU-Net's Python API) are kept; ``initialize()`` applies the plans' settings (before the network is built).
    The setting ``final_validation = false`` skips nnU-Net's validation of the fold's cases after training
    (benchmarks evaluate their own test sets)."""
    trainer_settings: Dict[str, Any] = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # nnU-Net records this signature's arguments
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.set_defaults()
        for line in apply_trainer_settings(self, variant_settings(type(self)), f"trainer {type(self).__name__}"):
            self.print_to_log_file(f"Trainer setting of {type(self).__name__}: {line}")

    def set_defaults(self) -> None:
        """The trainer's own defaults (subclasses call ``super().set_defaults()`` first)."""
        self.final_validation = True
        self.seed = None  # the setting ``seed``: None leaves the random state as nnU-Net does

    def initialize(self):
        settings = plans_settings(self.configuration_manager)
        where = f"plans {self.plans_manager.plans_name}, configuration {self.configuration_name}"
        for line in apply_trainer_settings(self, settings, where):
            self.print_to_log_file(f"Trainer setting from the plans: {line}")
        super().initialize()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.final_validation:
            self.print_to_log_file("Final validation skipped (trainer setting final_validation = false)")
            return
        super().perform_actual_validation(save_probabilities)
