"""Sliding-window inference with global-local collaboration (paper Sec. 3.4): the segmentation of a local window
needs the whole case's global features (any network of the GLC seam, :mod:`mapseg_nnunet.architectures.glc`).

For one (already intensity-normalised) case ``(C, X, Y, Z)``:

1. zero-pad to at least the patch size (nnU-Net's ``pad_nd_image``, reverted at the end);
2. global view = the foreground box resized to the patch size, with the definition training uses
   (:func:`mapseg_nnunet.data.foreground_box.case_foreground_box`: voxels differing from the case's constant
   background, 0 after MAPSeg's intensity rules); its fusion map is computed
   **once per case** (once per mirroring when test-time mirroring is on);
3. windows at nnU-Net's steps (``compute_steps_for_sliding_window``, ``tile_step_size``; the paper's stride 80 on
   96^3 is step 0.833); each window's local features are fused with the global map cropped at the window's box in
   the global view (``fuse_and_decode``);
4. optional Gaussian weighting (nnU-Net's ``compute_gaussian``) and test-time mirroring. Mirroring is exact: for
   a flip along axis ``a`` the window, the global view and the window's box are all flipped, which equals running
   the GLC prediction on the flipped case;
5. with ``outside_box_is_background`` (the trainer setting; :mod:`mapseg_nnunet.data.foreground_box`) the windows
   stay inside the foreground box, as the training patches do (nnU-Net's steps over the box,
   :func:`window_starts_in_box`), and every voxel outside the box is background.

Logits are accumulated in float32 on ``results_device``.
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from tqdm import tqdm

from mapseg_nnunet.data.foreground_box import (OUTSIDE_BOX_IS_BACKGROUND, box_in_global_view, case_foreground_box,
                                               logits_outside_box_to_background_)

# windows predicted together by nnUNetv2_predict's GLC sliding window (they share the case's global map; the logits
# equal one-window-at-a-time prediction to float precision). CPU convolutions of one small window leave most of
# the cores' throughput unused (ratio in benchmarks/results/RESULTS.md, speed section); on a GPU four windows of the
# paper's 96^3 patch stay far below the memory training needs.
WINDOWS_PER_BATCH = 4


def global_view(image: torch.Tensor, patch_size: Sequence[int], box: Optional[np.ndarray] = None
                ) -> Tuple[torch.Tensor, np.ndarray]:
    """``image`` (C, X, Y, Z) -> (global view (1, C, *patch), foreground box (3, 2) in voxels of ``image``);
    ``box`` when the caller has computed it (:func:`case_foreground_box` of ``image``)."""
    if box is None:
        box = case_foreground_box(image.detach().cpu().numpy())
    crop = image[(slice(None),) + tuple(slice(int(lo), int(hi)) for lo, hi in box)]
    view = F.interpolate(crop[None].float(), size=tuple(patch_size), mode="trilinear", align_corners=False)
    return view, box


def flip_box(box: torch.Tensor, spatial_axes: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """Box (B, 3, 2) in global-view voxels after flipping the view along ``spatial_axes`` (0, 1, 2)."""
    box = box.clone()
    for axis in spatial_axes:
        box[:, axis] = patch_size[axis] - box[:, axis].flip(-1)
    return box


def mirror_combinations(mirror_axes: Optional[Sequence[int]]) -> list:
    """Identity plus every non-empty combination of ``mirror_axes`` (spatial axes), as nnU-Net mirrors."""
    axes = tuple(mirror_axes or ())
    return [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def window_starts_in_box(shape: Sequence[int], patch_size: Sequence[int], foreground: np.ndarray,
                         tile_step_size: float) -> list:
    """Sliding-window starts that keep every window inside the ``foreground`` box, as training keeps its local
    patches (a box smaller than the patch gets the windows centred on it, clipped to the case ``shape``): nnU-Net's
    steps over the box grown to at least the patch size."""
    lo, size = [], []
    for (b0, b1), p, s in zip(foreground, patch_size, shape):
        width = max(int(b1 - b0), int(p))
        lo.append(int(min(max((b0 + b1 - width) // 2, 0), s - width)))
        size.append(width)
    steps = compute_steps_for_sliding_window(size, tuple(int(p) for p in patch_size), tile_step_size)
    return [tuple(a + b for a, b in zip(lo, start)) for start in itertools.product(*steps)]


@torch.inference_mode()
def glc_window_logits(network: torch.nn.Module, data: torch.Tensor, window_starts: Sequence[Sequence[int]],
                      patch_size: Sequence[int], num_classes: int, use_gaussian: bool = True,
                      mirror_axes: Optional[Sequence[int]] = None, device: torch.device = torch.device("cpu"),
                      results_device: Optional[torch.device] = None, progress: bool = False,
                      foreground: Optional[np.ndarray] = None,
                      windows_per_batch: int = WINDOWS_PER_BATCH) -> torch.Tensor:
    """GLC logits (num_classes, X, Y, Z) of the normalised case ``data`` (C, X, Y, Z), already padded to at least
    the patch size, from the windows starting at ``window_starts`` (``windows_per_batch`` at a time) with a
    GLC ``network`` (:class:`~mapseg_nnunet.architectures.glc.GLCNetwork`) (in eval mode, on ``device``);
    ``foreground`` the case's foreground box when the caller has computed it. Voxels no window covers are NaN
    (0 / 0), as in nnU-Net's sliding window."""
    patch_size = tuple(int(p) for p in patch_size)
    results_device = results_device or device
    data = data.to(results_device)
    view, foreground = global_view(data, patch_size, foreground)
    combinations = mirror_combinations(mirror_axes)
    view = view.to(device)
    global_maps = {axes: network.fusion_map(network.encode(torch.flip(view, [a + 2 for a in axes])))
                   for axes in combinations}

    weight = compute_gaussian(patch_size, sigma_scale=1. / 8, value_scaling_factor=10, dtype=torch.float32,
                              device=results_device) if use_gaussian else torch.ones(patch_size, device=results_device)
    logits = torch.zeros((num_classes, *data.shape[1:]), dtype=torch.float32, device=results_device)
    weights = torch.zeros(data.shape[1:], dtype=torch.float32, device=results_device)
    batches = [window_starts[i:i + windows_per_batch] for i in range(0, len(window_starts), windows_per_batch)]
    progress_bar = tqdm(total=len(window_starts), disable=not progress, desc="GLC sliding window")
    for batch in batches:
        windows = [tuple(slice(s, s + p) for s, p in zip(start, patch_size)) for start in batch]
        local = torch.stack([data[(slice(None),) + window] for window in windows]).to(device)
        box = torch.from_numpy(np.stack([box_in_global_view(start, patch_size, foreground) for start in batch])
                               ).to(device)
        prediction = 0
        for axes in combinations:
            dims = [a + 2 for a in axes]
            global_map = global_maps[axes].expand(len(batch), *global_maps[axes].shape[1:])
            fused = network.fuse_and_decode(network.encode(torch.flip(local, dims)), global_map,
                                            flip_box(box, axes, patch_size))[0]
            prediction = prediction + torch.flip(fused, dims)
        prediction = (prediction / len(combinations)).float().to(results_device)
        for window, window_prediction in zip(windows, prediction):
            logits[(slice(None),) + window] += window_prediction * weight
            weights[window] += weight
        progress_bar.update(len(batch))
    progress_bar.close()
    logits /= weights
    return logits


@torch.inference_mode()
def glc_sliding_window_logits(network: torch.nn.Module, image: torch.Tensor, patch_size: Sequence[int],
                              num_classes: int, tile_step_size: float = 0.5, use_gaussian: bool = True,
                              mirror_axes: Optional[Sequence[int]] = None,
                              device: torch.device = torch.device("cpu"),
                              results_device: Optional[torch.device] = None, progress: bool = False,
                              outside_box_is_background: bool = OUTSIDE_BOX_IS_BACKGROUND,
                              windows_per_batch: int = WINDOWS_PER_BATCH) -> torch.Tensor:
    """GLC logits (num_classes, X, Y, Z) of the normalised case ``image`` (C, X, Y, Z): padding and window
    steps as nnU-Net's sliding window (the predictor hook gets both from nnU-Net itself), and the rule for voxels
    outside the foreground box (step 5)."""
    patch_size = tuple(int(p) for p in patch_size)
    data, revert = pad_nd_image(image, patch_size, "constant", {"value": 0}, True, None)
    starts = list(itertools.product(*compute_steps_for_sliding_window(data.shape[1:], patch_size, tile_step_size)))
    foreground = case_foreground_box(data.detach().cpu().numpy())
    if outside_box_is_background:
        starts = window_starts_in_box(data.shape[1:], patch_size, foreground, tile_step_size)
    logits = glc_window_logits(network, data, starts, patch_size, num_classes, use_gaussian, mirror_axes, device,
                               results_device, progress, foreground, windows_per_batch)
    if outside_box_is_background:
        logits_outside_box_to_background_(logits[None], torch.as_tensor(foreground)[None])
    return logits[(slice(None),) + tuple(revert[1:])]
