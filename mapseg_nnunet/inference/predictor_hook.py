"""The one hook MAPSeg needs in nnU-Net's predictor. For networks that declare MAPSeg settings it (1) normalises the
whole case in MAPSeg's intensity convention before the sliding window and (2) replaces nnU-Net's patch-wise sliding
window by the global-local one (:mod:`mapseg_nnunet.inference.glc`), driven by the predictor's own settings
(``tile_step_size``, ``use_gaussian``, ``use_mirroring`` / ``allowed_mirroring_axes``, device, tqdm).

``nnUNetv2_predict`` only ever runs a trainer's static ``build_network_architecture``; MAPSeg trainers call
:func:`install` there, so the hook is active exactly when a MAPSeg network is built. The wrapped method is
``nnUNetPredictor.predict_sliding_window_return_logits`` (used by ``nnUNetv2_predict``, the Python
``nnUNetPredictor`` API and the trainers' final validation); networks without the attribute are untouched. The
hook refuses nnunetv2 versions it was not tested against."""
from __future__ import annotations

import contextlib
import functools
from importlib.metadata import version

import torch

SUPPORTED_NNUNET_MINOR = "2.8"
INTENSITY_ATTRIBUTE = "mapseg_intensity"
GLC_ATTRIBUTE = "mapseg_glc_inference"


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
        image = normalize_for_network(self.network, input_image)
        if getattr(unwrap_network(self.network), GLC_ATTRIBUTE, False):
            return predict_glc(self, image)
        return original(self, image)

    predict_sliding_window_return_logits._mapseg_hook = True
    predict_sliding_window_return_logits._mapseg_original = original
    nnUNetPredictor.predict_sliding_window_return_logits = predict_sliding_window_return_logits


def predict_glc(predictor, image: torch.Tensor) -> torch.Tensor:
    """GLC sliding window with the settings of an ``nnUNetPredictor``; logits on the CPU unless the predictor
    keeps everything on its device."""
    from mapseg_nnunet.inference.glc import glc_sliding_window_logits
    network = unwrap_network(predictor.network).to(predictor.device).eval()
    on_device = predictor.perform_everything_on_device and predictor.device.type != "cpu"
    autocast = torch.autocast(predictor.device.type) if predictor.device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return glc_sliding_window_logits(
            network, image, predictor.configuration_manager.patch_size,
            predictor.label_manager.num_segmentation_heads, predictor.tile_step_size, predictor.use_gaussian,
            predictor.allowed_mirroring_axes if predictor.use_mirroring else None, predictor.device,
            predictor.device if on_device else torch.device("cpu"), progress=predictor.allow_tqdm)
