"""Every private name of nnU-Net and batchgenerators this package relies on, in one place, with the nnU-Net version
they were checked against. A new nnU-Net release that renames one of them fails here, by name, not deep inside a
training or a prediction.

* ``nnUNetPredictor._manage_input_and_output_lists`` and ``._internal_predict_sliding_window_return_logits``: the
  predictor hook (:mod:`mapseg_nnunet.inference.predictor_hook`) wraps them (input checks; GLC windows);
* ``BasicTransform._apply_to_image`` (batchgeneratorsv2): a transform's image step with parameters drawn elsewhere
  (MAPSeg draws them once per sample and applies them to both views);
* ``MultiThreadedAugmenter._finish`` (batchgenerators): stops a loader's worker processes.
"""
from __future__ import annotations

from importlib.metadata import version

import torch

SUPPORTED_NNUNET_MINOR = "2.8"
PREDICTOR_PRIVATE_METHODS = ("_manage_input_and_output_lists", "_internal_predict_sliding_window_return_logits")


def check_nnunet_version() -> str:
    """The installed nnunetv2 version; refuses versions whose private names were not checked."""
    found = version("nnunetv2")
    if not (found == SUPPORTED_NNUNET_MINOR or found.startswith(SUPPORTED_NNUNET_MINOR + ".")):
        raise RuntimeError(f"mapseg_nnunet relies on private names of nnunetv2 {SUPPORTED_NNUNET_MINOR}.x "
                           f"(mapseg_nnunet/compat.py), found {found}. Install nnunetv2>={SUPPORTED_NNUNET_MINOR}.0,"
                           f"<2.9.")
    return found


def predictor_private_methods() -> tuple:
    """``(nnUNetPredictor, names)``: the predictor class and the private methods the hook wraps, each checked to
    exist."""
    check_nnunet_version()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    missing = [name for name in PREDICTOR_PRIVATE_METHODS if not callable(getattr(nnUNetPredictor, name, None))]
    if missing:
        raise RuntimeError(f"nnUNetPredictor has no {', '.join(missing)} in nnunetv2 {version('nnunetv2')}: the "
                           f"predictor hook cannot be installed (mapseg_nnunet/compat.py)")
    return nnUNetPredictor, PREDICTOR_PRIVATE_METHODS


def apply_to_image(transform, image: torch.Tensor, **params) -> torch.Tensor:
    """A batchgeneratorsv2 transform's image step with given parameters (``params`` from its ``get_parameters``)."""
    return transform._apply_to_image(image, **params)


def finish_loader(loader) -> None:
    """Stop a batchgenerators loader's worker processes (a no-op for loaders without workers)."""
    finish = getattr(loader, "_finish", None)
    if finish is not None:
        finish()
