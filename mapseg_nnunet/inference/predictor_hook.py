"""The one hook MAPSeg needs in nnU-Net's predictor: whole-case intensity normalisation before the sliding
window, for networks that declare MAPSeg intensity settings.

``nnUNetv2_predict`` only ever runs a trainer's static ``build_network_architecture``; MAPSeg trainers call
:func:`install` there, so the hook is active exactly when a MAPSeg network is built. The wrapped method is
``nnUNetPredictor.predict_sliding_window_return_logits`` (used by ``nnUNetv2_predict``, the Python
``nnUNetPredictor`` API and the trainers' final validation); networks without the attribute are untouched. The
hook refuses nnunetv2 versions it was not tested against."""
from __future__ import annotations

import functools
from importlib.metadata import version

import torch

SUPPORTED_NNUNET_MINOR = "2.8"
INTENSITY_ATTRIBUTE = "mapseg_intensity"


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    if hasattr(network, "module"):  # DDP
        network = network.module
    return getattr(network, "_orig_mod", network)  # torch.compile


def check_nnunet_version() -> str:
    found = version("nnunetv2")
    if not (found == SUPPORTED_NNUNET_MINOR or found.startswith(SUPPORTED_NNUNET_MINOR + ".")):
        raise RuntimeError(f"mapseg_nnunet's predictor hook supports nnunetv2 {SUPPORTED_NNUNET_MINOR}.x, found "
                           f"{found}. Install nnunetv2>={SUPPORTED_NNUNET_MINOR}.0,<2.9.")
    return found


def normalize_for_network(network: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    from mapseg_nnunet.intensity import normalize_case
    settings = getattr(unwrap_network(network), INTENSITY_ATTRIBUTE, None)
    if settings is None:
        return image
    normalized = normalize_case(image.detach().cpu().float().numpy(), settings)
    return torch.from_numpy(normalized).to(device=image.device)


def install() -> None:
    """Idempotent."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    original = nnUNetPredictor.predict_sliding_window_return_logits
    if getattr(original, "_mapseg_hook", False):
        return
    check_nnunet_version()

    @functools.wraps(original)
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        return original(self, normalize_for_network(self.network, input_image))

    predict_sliding_window_return_logits._mapseg_hook = True
    predict_sliding_window_return_logits._mapseg_original = original
    nnUNetPredictor.predict_sliding_window_return_logits = predict_sliding_window_return_logits
