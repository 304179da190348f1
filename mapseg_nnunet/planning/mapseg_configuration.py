"""MAPSeg configurations inside nnU-Net plans.

A MAPSeg configuration is an ordinary nnU-Net configuration whose ``architecture`` names a network of the GLC
seam (:class:`~mapseg_nnunet.architectures.mapseg_net.MAPSegNet` or
:class:`~mapseg_nnunet.architectures.glc_unet.GLCUNet` around one of nnU-Net's U-Nets) and which carries a
``mapseg`` block (preset name and intensity settings). nnU-Net ignores the extra key and copies the plans into the results folder, so
``nnUNetv2_predict`` sees exactly what training used."""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

from mapseg_nnunet.architectures.glc_unet import SUPPORTED_UNETS, cumulative_strides
from mapseg_nnunet.planning.presets import GLC_UNET_CLASS_NAME, LATENT_STRIDE, NETWORK_CLASS_NAME, MAPSegPreset

# GLC U-Nets fuse the global view at the encoder stage of this output stride (MAPSegNet's latent stride)
FUSION_STRIDE = LATENT_STRIDE


def mapseg_block(preset: MAPSegPreset, intensity: Optional[dict]) -> dict:
    return {"preset": preset.name, "intensity": intensity, "mae_channels": list(preset.mae_channels)}


def is_mapseg_configuration(configuration: dict) -> bool:
    return (configuration.get("architecture", {}).get("network_class_name") in (NETWORK_CLASS_NAME,
                                                                                 GLC_UNET_CLASS_NAME)
            and "mapseg" in configuration)


def fusion_stage_for_stride(strides: Sequence, fusion_stride: int) -> int:
    """The first encoder stage whose output stride reaches ``fusion_stride`` on every axis (the deepest stage when
    none does)."""
    for stage in range(len(strides)):
        if min(cumulative_strides(strides, stage)) >= fusion_stride:
            return stage
    return len(strides) - 1


def glc_unet_architecture(unet_architecture: dict, fusion_stride: int) -> dict:
    """nnU-Net's ``architecture`` entry of a U-Net (as its planners write it) wrapped in the GLC U-Net, fusing at
    the stage of output stride ``fusion_stride``."""
    kwargs = unet_architecture["arch_kwargs"]
    return {"network_class_name": GLC_UNET_CLASS_NAME,
            "arch_kwargs": {"unet_class_name": unet_architecture["network_class_name"],
                            "fusion_stage": fusion_stage_for_stride(kwargs["strides"], fusion_stride), **kwargs},
            "_kw_requires_import": list(unet_architecture["_kw_requires_import"])}


def adapt_plans(plans: dict, configuration: str) -> Tuple[dict, bool]:
    """Return a copy of ``plans`` whose ``configuration`` runs MAPSeg, and whether anything had to change.

    MAPSeg plans are returned unchanged. Other plans (stock ``nnUNetPlans``, ``nnUNetResEncUNet*Plans``, ...)
    keep everything nnU-Net planned for them: spacing, resampling, normalisation (the preprocessed data carry it,
    so the MAPSeg intensity step is off), patch, batch and their U-Net, which runs inside the GLC U-Net with the
    fusion at output stride :data:`FUSION_STRIDE` (deep supervision off, as for every MAPSeg network)."""
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
    architecture = cfg.get("architecture") or _inherited(plans, configuration, "architecture")
    if architecture is None or architecture["network_class_name"] not in SUPPORTED_UNETS:
        raise ValueError(f"configuration {configuration!r} of plans {plans.get('plans_name')!r} has the network "
                         f"{(architecture or {}).get('network_class_name')}; MAPSeg runs on MAPSeg plans or on "
                         f"{', '.join(SUPPORTED_UNETS)}")
    cfg["architecture"] = glc_unet_architecture(architecture, FUSION_STRIDE)
    cfg["mapseg"] = {"preset": None, "intensity": None}
    return plans, True


def _inherited(plans: dict, configuration: str, key: str):
    cfg = plans["configurations"][configuration]
    while key not in cfg and "inherits_from" in cfg:
        cfg = plans["configurations"][cfg["inherits_from"]]
    return cfg.get(key)
