"""The hook MAPSeg needs in nnU-Net's predictor. For networks that declare MAPSeg settings it (1) normalises each
case once in MAPSeg's intensity convention (not once per fold of an ensemble) and (2) replaces nnU-Net's
patch-wise prediction of the sliding-window steps by the global-local one (:func:`mapseg_nnunet.inference.glc.
glc_window_logits`). Everything else stays nnU-Net's: padding, the window steps (``tile_step_size``), Gaussian
weighting, mirroring, autocast, the device and its out-of-memory fallback to accumulating on the CPU, tqdm.

``nnUNetv2_predict`` only ever runs a trainer's static ``build_network_architecture``; MAPSeg trainers call
:func:`install` there, so the hook is active exactly when a MAPSeg network is built. Three methods of
``nnUNetPredictor`` are wrapped: ``predict_logits_from_preprocessed_data`` (normalises once, then nnU-Net's fold
loop), ``predict_sliding_window_return_logits`` (normalises when called directly, as the trainers' final
validation does) and ``_internal_predict_sliding_window_return_logits`` (GLC windows, and the rule that outside
the case's foreground box is background when the network declares it: the windows stay inside the box, as the
training patches do, :mod:`mapseg_nnunet.data.foreground_box`). A fourth,
``_manage_input_and_output_lists``, checks that every input file reads to its end before nnU-Net's preprocessing
workers start (SimpleITK accepts a truncated ``.nii.gz`` and would segment garbage): a corrupt input stops the
prediction with the file named. Networks without the attributes are untouched. The hook refuses nnunetv2 versions
it was not tested against (:mod:`mapseg_nnunet.compat`)."""
from __future__ import annotations

import functools

import torch

from mapseg_nnunet.architectures.unwrap import unwrap_network
from mapseg_nnunet.compat import predictor_private_methods
from mapseg_nnunet.data.foreground_box import case_foreground_box, logits_outside_box_to_background_
from mapseg_nnunet.data.input_checks import check_files_readable
from mapseg_nnunet.data.intensity import normalize_case

INTENSITY_ATTRIBUTE = "mapseg_intensity"
GLC_ATTRIBUTE = "mapseg_glc_inference"
OUTSIDE_BOX_ATTRIBUTE = "mapseg_outside_box_is_background"
_NORMALISED_FLAG = "_mapseg_case_normalised"


def normalize_for_network(network: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    settings = getattr(unwrap_network(network), INTENSITY_ATTRIBUTE, None)
    if settings is None:
        return image
    normalized = normalize_case(image.detach().cpu().float().numpy(), settings)
    return torch.from_numpy(normalized).to(device=image.device)


def _wrap(cls, name: str, make):
    original = getattr(cls, name)
    wrapped = functools.wraps(original)(make(original))
    wrapped._mapseg_hook = True
    wrapped._mapseg_original = original
    setattr(cls, name, wrapped)


def install() -> None:
    """Idempotent."""
    nnUNetPredictor, (manage_inputs, internal_windows) = predictor_private_methods()
    if getattr(nnUNetPredictor.predict_sliding_window_return_logits, "_mapseg_hook", False):
        return

    def normalise_once(original):
        def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
            data = normalize_for_network(self.network, data)
            setattr(self, _NORMALISED_FLAG, True)
            try:
                return original(self, data)
            finally:
                setattr(self, _NORMALISED_FLAG, False)
        return predict_logits_from_preprocessed_data

    def normalise_direct_calls(original):
        def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
            if not getattr(self, _NORMALISED_FLAG, False):
                input_image = normalize_for_network(self.network, input_image)
            return original(self, input_image)
        return predict_sliding_window_return_logits

    def glc_windows(original):
        def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                           do_on_device: bool = True):
            network = unwrap_network(self.network)
            glc, rule = getattr(network, GLC_ATTRIBUTE, False), getattr(network, OUTSIDE_BOX_ATTRIBUTE, False)
            if not (glc or rule):
                return original(self, data, slicers, do_on_device)
            foreground = case_foreground_box(data.detach().cpu().numpy())
            if rule:  # windows inside the box, as the training patches
                from mapseg_nnunet.inference.glc import window_starts_in_box
                patch = [int(p) for p in self.configuration_manager.patch_size]
                slicers = [(slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, patch)) for start in
                           window_starts_in_box(data.shape[1:], patch, foreground, self.tile_step_size)]
            logits = predict_glc(self, data, slicers, do_on_device, foreground) if glc else \
                original(self, data, slicers, do_on_device)
            if rule:
                logits_outside_box_to_background_(logits[None], torch.as_tensor(foreground)[None],
                                                  self.label_manager.has_regions)
            return logits
        return _internal_predict_sliding_window_return_logits

    def check_inputs(original):
        def _manage_input_and_output_lists(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if hasattr(unwrap_network(self.network), INTENSITY_ATTRIBUTE):
                check_files_readable([f for files in result[0] for f in files if isinstance(f, str)])
            return result
        return _manage_input_and_output_lists

    _wrap(nnUNetPredictor, manage_inputs, check_inputs)
    _wrap(nnUNetPredictor, "predict_logits_from_preprocessed_data", normalise_once)
    _wrap(nnUNetPredictor, internal_windows, glc_windows)
    _wrap(nnUNetPredictor, "predict_sliding_window_return_logits", normalise_direct_calls)


def window_start(slicer) -> tuple:
    """The spatial start of one of nnU-Net's window slicers (channel slice first)."""
    return tuple(int(s.start) for s in slicer[1:])


def predict_glc(predictor, data: torch.Tensor, slicers, do_on_device: bool, foreground=None) -> torch.Tensor:
    """GLC logits of the padded, normalised case ``data`` over nnU-Net's window ``slicers``, with the settings of
    an ``nnUNetPredictor``; accumulated on its device when ``do_on_device``, else on the CPU; ``foreground`` the
    case's foreground box when already computed."""
    from mapseg_nnunet.inference import glc
    starts = [window_start(slicer) for slicer in slicers]
    return glc.glc_window_logits(
        unwrap_network(predictor.network), data, starts, predictor.configuration_manager.patch_size,
        predictor.label_manager.num_segmentation_heads, predictor.use_gaussian,
        predictor.allowed_mirroring_axes if predictor.use_mirroring else None, predictor.device,
        predictor.device if do_on_device else torch.device("cpu"), progress=predictor.allow_tqdm,
        foreground=foreground, windows_per_batch=glc.WINDOWS_PER_BATCH)
