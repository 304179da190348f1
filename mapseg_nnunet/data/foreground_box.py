"""The case's foreground box, where local patches are drawn from, and the rule for what lies outside it.

**Foreground box** (:func:`case_foreground_box`): the bounding box of the voxels that differ from the case's
constant background in any channel (0 after MAPSeg's intensity rules; a z-scored MRI's constant negative air),
within nnU-Net's non-zero mask (``seg >= 0``) when there is a segmentation. It is what the global view shows, in
training and in prediction alike. On data with a zero background nnU-Net's preprocessing has already cropped the
case to it (crop to non-zero); on whole-volume scans whose background is a non-zero constant (z-scored MRI as
distributed) nnU-Net crops nothing, and the box is typically a small part of the case.

**Local patches** (:func:`sample_local_start`), after nnU-Net's rule of random patches plus oversampled foreground
ones: with probability ``box_probability`` (the trainer's ``oversample_foreground_percent``; 1 by default,
``BOX_PATCH_PROBABILITY``) the patch lies inside the foreground box (centred on a smaller box), otherwise its start
is uniform over the whole case, so that the network also sees windows of constant background and windows that
straddle the box's edge. Where a patch leaves the box, its box in the global view leaves the view as well and its
global context there is empty (:func:`box_in_global_view`), in training and prediction alike. Measured on whole
volumes, random patches did not teach the network the constant background and cost Dice inside the box, so the
default keeps every patch inside the box and leaves the background outside it to the rule below.

**Outside the box is background** (trainer setting ``outside_box_is_background``, on by default): outside the
foreground box every voxel holds the constant background value, so nothing there can be told apart from air. With
the setting on, every prediction a MAPSeg model makes labels it background: ``nnUNetv2_predict`` and the trainers'
final validation (the sliding windows stay inside the box, as the training patches do), the teacher's
pseudo-labels in centralized, test-time and federated UDA, and the validation patches that drive model selection.
This extends nnU-Net's own crop to non-zero (outside the crop nnU-Net's export writes background) to any constant
background. A case without a constant background has its whole volume as box, so the rule changes nothing there.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from mapseg_nnunet.data.intensity import background_value

# the default of the trainer setting ``outside_box_is_background`` (read by nnUNetv2_predict through the plans)
OUTSIDE_BOX_IS_BACKGROUND = True
# the MAPSeg trainers' default share of local patches inside the foreground box (trainer setting
# ``oversample_foreground_percent``): all of them. Drawing a third anywhere in the case scored 2.1 Dice lower on
# the whole-volume demo source, and the network alone still labelled the air
# (benchmarks/results/whole_volume/whole_volume.md); the rule outside the box places the background
BOX_PATCH_PROBABILITY = 1.0
# logit margin written outside the box: softmax gives background probability 1 in float16 and float32
BACKGROUND_LOGIT_MARGIN = 1e4


def foreground_box(mask: np.ndarray) -> np.ndarray:
    """(3, 2) [start, end) of the non-zero voxels of ``mask`` (X, Y, Z); the whole array when empty."""
    box = np.zeros((3, 2), dtype=np.int64)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(mask.any(axis=other))[0]
        box[axis] = (hits[0], hits[-1] + 1) if hits.size else (0, mask.shape[axis])
    return box


def case_foreground_mask(image: np.ndarray, seg: Optional[np.ndarray] = None) -> np.ndarray:
    """(X, Y, Z) foreground of a case ``image`` (C, X, Y, Z): voxels differing from their channel's constant
    background (:func:`mapseg_nnunet.data.intensity.background_value`; exactly 0 after MAPSeg's intensity rules) in
    any channel, within ``seg >= 0`` (nnU-Net's non-zero mask) when ``seg`` (1, X, Y, Z) is given. Channels without
    a constant background do not restrict it; a case where no channel has one is foreground everywhere."""
    image = np.asarray(image)
    mask = None
    for channel in image:
        background = background_value(channel, 0.0)
        if background is not None:
            differs = channel != background
            mask = differs if mask is None else mask | differs
    if mask is None:
        mask = np.ones(image.shape[1:], dtype=bool)
    if seg is not None:
        mask &= np.asarray(seg)[0] >= 0
    return mask


def case_foreground_box(image: np.ndarray, seg: Optional[np.ndarray] = None) -> np.ndarray:
    """(3, 2) [start, end) of :func:`case_foreground_mask`: the box the global view shows, in training and in
    prediction alike."""
    return foreground_box(case_foreground_mask(image, seg))


def sample_local_start(box: np.ndarray, patch: Sequence[int], shape: Sequence[int], rng: np.random.Generator,
                       box_probability: float = 1.0) -> np.ndarray:
    """Start of a local patch in a case of ``shape`` (at least the patch per axis): with probability
    ``box_probability`` uniform such that the patch stays inside the foreground ``box`` (centred on smaller
    boxes), otherwise uniform over the whole case. The choice is drawn only when ``0 < box_probability < 1``, so
    a probability of 1 draws exactly what the inside-the-box rule alone draws."""
    inside = box_probability >= 1 or (box_probability > 0 and rng.random() < box_probability)
    start = np.zeros(3, dtype=np.int64)
    for axis in range(3):
        p, s = patch[axis], shape[axis]
        lo, hi = box[axis] if inside else (0, s)
        if hi - lo >= p:
            start[axis] = rng.integers(lo, hi - p + 1)
        else:
            start[axis] = (lo + hi - p) // 2
        start[axis] = int(np.clip(start[axis], 0, s - p))
    return start


def box_in_global_view(start: Sequence[int], patch: Sequence[int], foreground: np.ndarray) -> np.ndarray:
    """(3, 2) float32 box ``[lo, hi)`` of the local patch starting at ``start`` in the coordinates of the global
    view (the ``foreground`` box (3, 2) of the case resized to ``patch``). Not clipped: where the patch leaves the
    foreground box the box leaves ``[0, patch)``, and the network's global crop is empty there
    (:func:`mapseg_nnunet.architectures.glc.crop_and_resize`), so local and global features stay aligned."""
    start, patch = np.asarray(start, dtype=np.float64), np.asarray(patch, dtype=np.float64)
    scale = patch / (foreground[:, 1] - foreground[:, 0])
    box = np.stack([(start - foreground[:, 0]) * scale, (start + patch - foreground[:, 0]) * scale], axis=1)
    return box.astype(np.float32)


def patch_voxels_in_box(start: Sequence[int], patch: Sequence[int], foreground: np.ndarray) -> np.ndarray:
    """(3, 2) int64 ``[lo, hi)`` per axis: the voxels of the local patch starting at ``start`` that lie inside the
    ``foreground`` box, in patch coordinates (``lo == hi`` on some axis: the patch lies wholly outside)."""
    start, patch = np.asarray(start, dtype=np.int64), np.asarray(patch, dtype=np.int64)
    lo = np.clip(foreground[:, 0] - start, 0, patch)
    hi = np.clip(foreground[:, 1] - start, lo, patch)
    return np.stack([lo, hi], axis=1)


def outside_box_mask(voxels_in_box: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """(B, 1, *patch) bool: the voxels of each patch outside its foreground box, from the batch's
    ``voxels_in_box`` (B, 3, 2) (:func:`patch_voxels_in_box` per sample)."""
    ranges = voxels_in_box.to(torch.int64)
    axes = [torch.arange(int(p), device=ranges.device) for p in patch]
    inside = None
    for axis, positions in enumerate(axes):
        along = (positions[None] >= ranges[:, axis, :1]) & (positions[None] < ranges[:, axis, 1:])  # (B, p)
        shape = [ranges.shape[0], 1, 1, 1]
        shape[axis + 1] = int(patch[axis])
        along = along.reshape(shape)
        inside = along if inside is None else inside & along
    return ~inside[:, None]


def labels_outside_box_to_background(labels: torch.Tensor, voxels_in_box: torch.Tensor) -> torch.Tensor:
    """Hard labels (B, 1, *patch) with the voxels outside each patch's foreground box set to background (0)."""
    return labels.masked_fill(outside_box_mask(voxels_in_box, labels.shape[2:]), 0)


def logits_outside_box_to_background_(logits: torch.Tensor, voxels_in_box: torch.Tensor,
                                      regions: bool = False) -> torch.Tensor:
    """In place: logits (B, K, *patch) that predict background with certainty outside each patch's foreground
    box (``voxels_in_box`` (B, 3, 2)): softmax (``regions`` False) channel 0 at 0 and every other at
    ``-BACKGROUND_LOGIT_MARGIN``; sigmoid regions (``regions`` True) all at ``-BACKGROUND_LOGIT_MARGIN``. For a
    whole case pass ``logits[None]`` and its box as ``voxels_in_box`` (1, 3, 2)."""
    outside = outside_box_mask(voxels_in_box, logits.shape[2:])[:, 0]
    for k in range(logits.shape[1]):
        logits[:, k].masked_fill_(outside, 0.0 if k == 0 and not regions else -BACKGROUND_LOGIT_MARGIN)
    return logits

