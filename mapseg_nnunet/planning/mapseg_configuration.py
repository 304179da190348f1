"""MAPSeg configurations inside nnU-Net plans.

A MAPSeg configuration is an ordinary nnU-Net configuration whose ``architecture`` names
:class:`~mapseg_nnunet.architectures.mapseg_net.MAPSegNet` and which carries a ``mapseg`` block (preset name
and intensity settings). nnU-Net ignores the extra key and copies the plans into the results folder, so
``nnUNetv2_predict`` sees exactly what training used."""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch

from mapseg_nnunet.planning.presets import NETWORK_CLASS_NAME, PRESETS, MAPSegPreset


def mapseg_block(preset: MAPSegPreset, intensity: Optional[dict]) -> dict:
    return {"preset": preset.name, "intensity": intensity, "mae_channels": list(preset.mae_channels)}


def is_mapseg_configuration(configuration: dict) -> bool:
    return (configuration.get("architecture", {}).get("network_class_name") == NETWORK_CLASS_NAME
            and "mapseg" in configuration)


def preset_for_device(preset_name: str, device: torch.device) -> MAPSegPreset:
    """``auto`` picks the paper preset on CUDA and the CPU preset elsewhere."""
    if preset_name == "auto":
        preset_name = "paper" if device.type == "cuda" else "cpu"
    if preset_name not in PRESETS:
        raise ValueError(f"Unknown MAPSeg preset {preset_name!r}; choose one of {sorted(PRESETS)} or 'auto'")
    return PRESETS[preset_name]


def adapt_plans(plans: dict, configuration: str, preset: MAPSegPreset) -> Tuple[dict, bool]:
    """Return a copy of ``plans`` whose ``configuration`` runs MAPSeg, and whether anything had to change.

    MAPSeg plans are returned unchanged. Other plans (e.g. stock ``nnUNetPlans``) keep nnU-Net's spacing,
    resampling and normalisation (the preprocessed data already carry it, so the MAPSeg intensity step is
    switched off) and get the preset's patch size, batch size and network."""
    if configuration not in plans.get("configurations", {}):
        raise KeyError(f"Configuration {configuration!r} is not in plans {plans.get('plans_name')!r}; available: "
                       f"{sorted(plans.get('configurations', {}))}")
    plans = copy.deepcopy(plans)
    cfg = plans["configurations"][configuration]
    if is_mapseg_configuration(cfg):
        return plans, False
    spacing = cfg.get("spacing") or _inherited(plans, configuration, "spacing")
    if spacing is not None and len(spacing) != 3:
        raise ValueError(f"MAPSeg is a 3D method; configuration {configuration!r} of plans "
                         f"{plans.get('plans_name')!r} is {len(spacing)}D. Use 3d_fullres.")
    cfg["patch_size"] = list(preset.patch_size)
    cfg["batch_size"] = preset.batch_size
    cfg["architecture"] = preset.architecture()
    cfg["mapseg"] = mapseg_block(preset, intensity=None)
    return plans, True


def _inherited(plans: dict, configuration: str, key: str):
    cfg = plans["configurations"][configuration]
    while key not in cfg and "inherits_from" in cfg:
        cfg = plans["configurations"][cfg["inherits_from"]]
    return cfg.get(key)
