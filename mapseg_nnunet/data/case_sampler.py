"""Global-local sampling of one case: for each training sample, a local patch ``x`` at the plans' patch size, the
whole case ``X`` resized to the same size, and the box of ``x`` inside ``X``.

Geometric augmentation is defined on the **whole case** (as in the reference), so the local patch and the global
view come from the same transformed volume ``T`` and the box is exact:

1. the case in MAPSeg's intensity convention (training percentile jitter), see :mod:`mapseg_nnunet.data.intensity`;
2. with probability ``affine_probability`` a random affine about the case centre (isotropic scale, rotations
   about the three axes), image trilinear, labels nearest; then random flips per axis (MAE); ``T`` is zero-padded
   to at least the patch size (:class:`~mapseg_nnunet.data.sample_geometry.SampleTransform`);
3. foreground box = :func:`~mapseg_nnunet.data.foreground_box.case_foreground_box`: the bounding box of the
   voxels that differ from the case's constant background in any channel (0 after MAPSeg's intensity rules),
   within nnU-Net's non-zero mask (``seg >= 0``) when there is a segmentation. The predictor
   (:func:`mapseg_nnunet.inference.glc.global_view`) uses the same function, so training and prediction agree on
   the global view also when the raw background is a non-zero constant (z-scored MRI), where nnU-Net's crop to
   non-zero crops nothing and ``seg >= 0`` is the whole case. In ``T`` it is the case's box mirrored and shifted,
   or, after an affine, the bounding box of the transformed foreground's convex hull (within one voxel of the
   transformed mask's);
4. local patch start (:func:`~mapseg_nnunet.data.foreground_box.sample_local_start`): with probability
   ``box_probability`` uniform such that the patch stays inside the foreground box (centred when the box is
   smaller than the patch), otherwise uniform over the whole transformed case (nnU-Net's random patches), so that
   whole-volume scans also show the network their constant background; the patch's voxels inside the box are
   recorded (``voxels_in_box``) for the rule that outside the box is background;
5. global view = the foreground box of ``T`` resized to the patch size per axis (anisotropically, as the
   reference), images trilinear (``align_corners=False``, as ``F.interpolate``), labels nearest;
6. box of the local patch in global voxel units, ``[lo, hi)`` per axis: ``(start - box_start) * patch / box_size``.
   Global voxel ``u`` covers ``[u, u + 1)``; it samples the case at ``box_start + (u + 0.5) * box_size / patch -
   0.5``, which is the same convention, so the box is exact (tested with coordinate-valued volumes).

``T`` is never computed as a whole: each output voxel maps back to the case
(:class:`~mapseg_nnunet.data.sample_geometry.SampleTransform`; reads and resizes:
:mod:`mapseg_nnunet.data.resizing`), so a sample costs what the patch and the global view cost, not the case's
voxel count (issue #20; measured by ``python -m benchmarks.studies.sampling_cost``). :class:`CaseSampler` reads a case
once (intensity statistics, foreground box and hull, the case's values on the grid its unaugmented global view
reads, a strided copy for the global view of affine samples); each sample then reads only the local patch's
region of the case. Without an affine this equals the whole-case computation exactly (tested); after an affine
the global view samples the strided copy (the case itself when it is at most twice the patch per axis).

The loaders batching these samples: :mod:`mapseg_nnunet.data.global_local`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from mapseg_nnunet.data.foreground_box import (box_in_global_view, case_foreground_mask, foreground_box,
                                               patch_voxels_in_box, sample_local_start)
from mapseg_nnunet.data.intensity import CaseIntensity
from mapseg_nnunet.data.resizing import (interpolate_at, linear_resize_weights, nearest_resize_indices, read_region,
                                         separable_resize)
from mapseg_nnunet.data.sample_geometry import GlobalLocalAugmentation, SampleTransform, draw_transform, hull_points


class CaseSampler:
    """What sampling needs from one case, computed once from the whole case (the only pass over all its voxels):
    intensity statistics (:class:`~mapseg_nnunet.data.intensity.CaseIntensity`), the foreground box
    (:func:`case_foreground_box` of the normalised case, as the predictor computes it) and the hull of the
    foreground, the case values on the grid of its unaugmented global view, and a copy of the case at a stride
    (about twice the global view's resolution) for the global view of affine samples. Each sample then reads only
    the local patch's region of the case: its cost follows the patch, not the case's voxel count."""

    def __init__(self, image, seg, patch: Sequence[int], intensity: Optional[dict], with_labels: bool):
        image = np.asarray(image, dtype=np.float32)
        seg = np.asarray(seg) if seg is not None else None
        self.patch = tuple(int(p) for p in patch)
        self.shape = image.shape[1:]
        self.with_labels = with_labels and seg is not None
        self.intensity = CaseIntensity(image, intensity)
        mask = case_foreground_mask(self.intensity.normalize(image), seg)
        self.box = foreground_box(mask)
        self.hull = hull_points(mask)
        # unaugmented global view: the box resized to the patch (trilinear); flips only mirror it
        self.grid = [linear_resize_weights(int(hi - lo), p) for (lo, hi), p in zip(self.box, self.patch)]
        self.grid_values = image[np.ix_(range(image.shape[0]), *[lo + idx for (lo, _), (idx, _) in
                                                                   zip(self.box, self.grid)])]
        # a copy at a stride for the global view of affine samples
        self.stride = tuple(max(1, s // (2 * p)) for s, p in zip(self.shape, self.patch))
        strided = (slice(None),) + tuple(slice(None, None, f) for f in self.stride)
        self.strided_values = np.ascontiguousarray(image[strided])
        self.nbytes = self.grid_values.nbytes + self.strided_values.nbytes + self.intensity.nbytes + self.hull.nbytes
        if self.with_labels:
            self.seg_grid = []
            for (lo, hi), p in zip(self.box, self.patch):
                idx = nearest_resize_indices(int(hi - lo), p)
                self.seg_grid.append(np.unique(np.concatenate([lo + idx, hi - 1 - idx])))
            self.seg_grid_values = seg[0][np.ix_(*self.seg_grid)]
            self.strided_seg = np.ascontiguousarray(seg[strided])
            self.nbytes += self.seg_grid_values.nbytes + self.strided_seg.nbytes

    def transformed_box(self, t: SampleTransform) -> np.ndarray:
        """(3, 2) foreground box in the transformed padded case: the case's box flipped and shifted (exact), or
        the bounding box of the transformed foreground hull (affine; voxels within one voxel of it)."""
        before, shape = np.array(t.before), np.array(t.shape)
        if not t.affine:
            box = self.box.copy()
            for axis in range(3):
                if t.flips[axis]:
                    box[axis] = shape[axis] - box[axis, ::-1]
            return box + before[:, None]
        if self.hull.shape[1] == 0:
            return np.stack([before, before + shape], 1)
        q = t.from_case(self.hull)
        lo = np.floor(q.min(1) + 1e-6).astype(np.int64)
        hi = np.ceil(q.max(1) - 1e-6).astype(np.int64) + 1
        lo, hi = np.clip(lo, before, before + shape), np.clip(hi, before, before + shape)
        hi = np.maximum(hi, lo + 1)
        return np.stack([lo, hi], 1)

    def sample(self, image, seg, rng: np.random.Generator, aug: GlobalLocalAugmentation,
               percentile: Optional[float] = None, box_probability: float = 1.0) -> Dict[str, np.ndarray]:
        """One sample; ``image`` / ``seg`` are the case's arrays (read lazily: only the local region). The local
        patch lies inside the foreground box with probability ``box_probability``, else anywhere in the case."""
        patch = np.array(self.patch)
        t = draw_transform(self.shape, patch, aug, rng)
        box = self.transformed_box(t)
        start = sample_local_start(box, patch, t.padded, rng, box_probability)

        def normalize(values):
            return self.intensity.normalize(values, percentile)

        out = {"box": box_in_global_view(start, patch, box), "foreground": box,
               "voxels_in_box": patch_voxels_in_box(start, patch, box)}
        if not t.affine:
            # integer voxels: read the patch's region, mirror it where flipped, pad outside the case
            o_lo = start - np.array(t.before)
            lo = np.where(t.flips, np.array(t.shape) - (o_lo + patch), o_lo)
            flip_axes = tuple(a + 1 for a in range(3) if t.flips[a])
            out["data"] = np.flip(read_region(image, lo, lo + patch, 0.0, np.float32, normalize), flip_axes)
            g = separable_resize([w for _, w in self.grid], normalize(self.grid_values))
            out["global"] = np.flip(g, flip_axes).astype(np.float32)
            if self.with_labels:
                out["target"] = np.flip(read_region(seg, lo, lo + patch, -1, np.int16), flip_axes)
                positions = []
                for axis, ((b_lo, b_hi), p) in enumerate(zip(self.box, patch)):
                    idx = nearest_resize_indices(int(b_hi - b_lo), int(p))
                    wanted = (b_hi - 1 - idx) if t.flips[axis] else (b_lo + idx)
                    positions.append(np.searchsorted(self.seg_grid[axis], wanted))
                out["global_target"] = self.seg_grid_values[np.ix_(*positions)][None].astype(np.int16)
        else:
            # the transformed case T exists on the case's shape (zero / -1 in the padding around it): its voxels
            # are trilinear (labels nearest) samples of the case; the local patch is T on the patch's voxels, the
            # global view T's foreground box resized to the patch (trilinear between T's voxels, as the predictor
            # resizes), here from the strided copy of the case
            strides = np.reshape(self.stride, (3, 1, 1, 1)).astype(np.float32)
            c, padding = t.grid_to_case([np.arange(s, s + p) for s, p in zip(start, patch)])
            lo = np.floor(c.reshape(3, -1).min(1)).astype(np.int64) - 1
            hi = np.floor(c.reshape(3, -1).max(1)).astype(np.int64) + 2
            shifted = c - lo.reshape(3, 1, 1, 1).astype(np.float32)
            out["data"] = interpolate_at(read_region(image, lo, hi, 0.0, np.float32, normalize), shifted, "bilinear",
                                         0.0)
            out["data"][:, padding] = 0
            # T on the voxels the resize reads (a separable grid), then the resize's weights
            grid = [linear_resize_weights(int(b_hi - b_lo), int(p)) for (b_lo, b_hi), p in zip(box, patch)]
            cg, padding_g = t.grid_to_case([b_lo + idx for (b_lo, _), (idx, _) in zip(box, grid)])
            values = interpolate_at(normalize(self.strided_values), cg / strides, "bilinear", 0.0)
            values[:, padding_g] = 0
            out["global"] = separable_resize([w for _, w in grid], values)
            if self.with_labels:
                target = interpolate_at(read_region(seg, lo, hi, -1, np.float32), shifted, "nearest", -1.0)
                target[:, padding] = -1
                out["target"] = target.astype(np.int16)
                cn, padding_n = t.grid_to_case([b_lo + nearest_resize_indices(int(b_hi - b_lo), int(p))
                                                for (b_lo, b_hi), p in zip(box, patch)])
                global_target = interpolate_at(self.strided_seg.astype(np.float32), cn / strides, "nearest", -1.0)
                global_target[:, padding_n] = -1
                out["global_target"] = global_target.astype(np.int16)
        out["data"] = np.ascontiguousarray(out["data"], dtype=np.float32)
        out["global"] = np.ascontiguousarray(out["global"], dtype=np.float32)
        for key in ("target", "global_target"):
            if key in out:
                out[key] = np.ascontiguousarray(out[key])
        return out


def global_local_sample(image: np.ndarray, seg: Optional[np.ndarray], patch: Sequence[int],
                        aug: GlobalLocalAugmentation, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One training sample from a whole case. ``image`` (C, X, Y, Z) already intensity-normalised; ``seg``
    (1, X, Y, Z) with nnU-Net's convention (-1 outside the non-zero mask) or None. ``foreground`` in the result is
    the case's foreground box (:func:`~mapseg_nnunet.data.foreground_box.case_foreground_box`) in voxels of the
    transformed, padded case. (The data loaders keep a :class:`CaseSampler` per case instead of building one per
    sample.)"""
    return CaseSampler(image, seg, patch, None, with_labels=seg is not None).sample(image, seg, rng, aug)

