"""Global-local sampling: for each training sample, a local patch ``x`` at the plans' patch size, the whole case
``X`` resized to the same size, and the box of ``x`` inside ``X``.

Geometric augmentation is defined on the **whole case** (as in the reference), so the local patch and the global
view come from the same transformed volume ``T`` and the box is exact:

1. the case in MAPSeg's intensity convention (training percentile jitter), see :mod:`mapseg_nnunet.data.intensity`;
2. with probability ``affine_probability`` a random affine about the case centre (isotropic scale, rotations
   about the three axes), image trilinear, labels nearest; then random flips per axis (MAE); ``T`` is zero-padded
   to at least the patch size (:class:`SampleTransform`);
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

``T`` is never computed as a whole: each output voxel maps back to the case (:class:`SampleTransform`), so a
sample costs what the patch and the global view cost, not the case's voxel count (issue #20; measured by
``python -m benchmarks.sampling_cost``). :class:`CaseSampler` reads a case once (intensity statistics, foreground
box and hull, the case's values on the grid its unaugmented global view reads, a strided copy for the global
view of affine samples); each sample then reads only the local patch's region of the case. Without an affine
this equals the whole-case computation exactly (tested); after an affine the global view samples the strided
copy (the case itself when it is at most twice the patch per axis).

:class:`GlobalLocalDataLoader` runs this inside nnU-Net's background workers (it is a batchgenerators
``DataLoader``), sampling domains uniformly (domain-balanced) and then a case within the domain. Intensity
augmentation (:mod:`mapseg_nnunet.data.intensity_augmentation`) comes last, with the same parameters for both views
of a sample: ``intensity_augmentation`` changes the views themselves (labeled source),
``student_intensity_augmentation`` adds augmented copies ``student_data`` / ``student_global`` next to the clean
views (unlabeled targets: clean views for the teacher's pseudo-labels, augmented ones for the student).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from batchgenerators.dataloading.data_loader import DataLoader

from mapseg_nnunet.data.foreground_box import (box_in_global_view, case_foreground_mask, foreground_box,
                                               patch_voxels_in_box, sample_local_start)
from mapseg_nnunet.data.intensity import CaseIntensity, draw_training_percentile
from mapseg_nnunet.data.intensity_augmentation import IntensityAugmentation, transform_views


@dataclass(frozen=True)
class GlobalLocalAugmentation:
    """Settings of the geometric augmentation (reference values for MAE)."""
    affine_probability: float = 0.35
    scale_range: Tuple[float, float] = (0.75, 1.5)
    rotation_degrees: float = 40.0
    flip_probability: float = 0.5  # per axis; 0 disables flips (the reference flips only for MAE)


NO_AUGMENTATION = GlobalLocalAugmentation(affine_probability=0.0, flip_probability=0.0)
# per data loader (one per background worker): the per-case samplers kept in memory (about 2.5 MB per case at the
# CPU preset's 32^3 patch; a full 1 mm brain case at the paper preset's 96^3)
SAMPLER_CACHE_BYTES = 1 << 30


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


@dataclass(frozen=True)
class SampleTransform:
    """Where a voxel ``q`` of the transformed, padded case lies in the case: ``o = q - before`` (the padding that
    brings the case to at least the patch size), flips ``o_a -> S_a - 1 - o_a``, then, when an affine was drawn,
    ``c = inverse @ o + offset`` (a rotation and isotropic scale about the case centre; image trilinear, labels
    nearest, zero / -1 outside the case)."""
    shape: Tuple[int, int, int]
    before: Tuple[int, int, int]
    padded: Tuple[int, int, int]
    flips: Tuple[bool, bool, bool]
    inverse: Optional[np.ndarray] = None
    offset: Optional[np.ndarray] = None

    @property
    def affine(self) -> bool:
        return self.inverse is not None

    def grid_to_case(self, axes: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Case coordinates (3, n0, n1, n2) (float32) of the voxels ``axes[0] x axes[1] x axes[2]`` of the
        transformed padded case, and whether each lies in the padding around the transformed case."""
        o = []
        for a, values in enumerate(axes):
            v = np.asarray(values, dtype=np.float64) - self.before[a]
            o.append(self.shape[a] - 1 - v if self.flips[a] else v)
        shapes = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
        if self.inverse is None:
            c = np.stack(np.broadcast_arrays(*[v.reshape(sh) for v, sh in zip(o, shapes)]))
        else:
            c = np.stack([sum(self.inverse[i, a] * o[a].reshape(shapes[a]) for a in range(3)) + self.offset[i]
                          for i in range(3)])
        inside = [(np.asarray(v) >= b) & (np.asarray(v) < b + n) for v, b, n in zip(axes, self.before, self.shape)]
        padding = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
        return c.astype(np.float32), padding

    def from_case(self, c: np.ndarray) -> np.ndarray:
        """(3, N) case coordinates -> coordinates in the transformed padded case."""
        o = c
        if self.inverse is not None:
            o = np.linalg.solve(self.inverse, c - np.reshape(self.offset, (3, 1)))
        o = np.where(np.reshape(self.flips, (3, 1)), np.reshape(np.array(self.shape) - 1, (3, 1)) - o, o)
        return o + np.reshape(self.before, (3, 1))


def draw_transform(shape: Sequence[int], patch: Sequence[int], aug: GlobalLocalAugmentation,
                   rng: np.random.Generator) -> SampleTransform:
    """With probability ``aug.affine_probability`` a random affine about the case centre (isotropic scale,
    rotations about the three axes), then random flips per axis."""
    shape = np.asarray(shape, dtype=np.int64)
    inverse = offset = None
    if rng.random() < aug.affine_probability:
        scale = rng.uniform(*aug.scale_range)
        rot = _rotation(np.deg2rad(rng.uniform(-aug.rotation_degrees, aug.rotation_degrees, 3)))
        inverse = rot.T / scale  # output voxel -> input voxel
        centre = (shape - 1) / 2
        offset = centre - inverse @ centre
    flips = tuple(bool(aug.flip_probability > 0 and rng.random() < aug.flip_probability) for _ in range(3))
    padded = np.maximum(shape, np.asarray(patch, dtype=np.int64))
    before = (padded - shape) // 2
    return SampleTransform(tuple(int(v) for v in shape), tuple(int(v) for v in before),
                           tuple(int(v) for v in padded), flips, inverse, offset)


def _sample(volume: np.ndarray, coords: np.ndarray, mode: str, fill: float) -> np.ndarray:
    """``volume`` (C, X, Y, Z) at voxel coordinates ``coords`` (3, *out) (voxel centres at integers), trilinear
    (``bilinear``) or ``nearest``; ``fill`` outside the volume (trilinear blends towards it, as grid_sample's
    zeros padding)."""
    shape = np.array(volume.shape[1:], dtype=np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    norm = np.asarray(coords, dtype=np.float32) / np.maximum(shape - 1, 1) * 2 - 1
    grid = torch.from_numpy(norm).flip(0).permute(*range(1, coords.ndim), 0)[None]
    src = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None] - fill
    return (F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=True)[0] + fill).numpy()


def _read_region(array, lo: np.ndarray, hi: np.ndarray, fill: float, dtype, transform=None) -> np.ndarray:
    """``array[:, lo:hi]`` (any of nnU-Net's case arrays: numpy, memory map, blosc2, read lazily) with ``fill``
    where ``[lo, hi)`` leaves the array; ``transform`` maps the values read (normalisation) before filling."""
    shape = np.array(array.shape[1:])
    a, b = np.maximum(lo, 0), np.minimum(hi, shape)
    out = np.full((array.shape[0], *(hi - lo)), fill, dtype=dtype)
    if np.all(b > a):
        values = np.asarray(array[(slice(None),) + tuple(slice(int(x), int(y)) for x, y in zip(a, b))])
        values = transform(values) if transform is not None else values.astype(dtype, copy=False)
        out[(slice(None),) + tuple(slice(int(x - l), int(y - l)) for x, y, l in zip(a, b, lo))] = values
    return out


def _linear_resize_taps(size: int, out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F.interpolate(mode='trilinear', align_corners=False)`` along one axis: for each output voxel the two
    source indices and the weight of the second."""
    scale = np.float32(size) / np.float32(out)
    src = np.maximum((np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.where(i0 < size - 1, i0 + 1, i0)
    return i0, i1, (src - i0).astype(np.float64)


def _linear_resize_weights(size: int, out: int) -> Tuple[np.ndarray, np.ndarray]:
    """The same as the source indices needed (sorted) and the (out, len(indices)) weight matrix."""
    i0, i1, l1 = _linear_resize_taps(size, out)
    indices = np.unique(np.concatenate([i0, i1]))
    weights = np.zeros((out, indices.size))
    np.add.at(weights, (np.arange(out), np.searchsorted(indices, i0)), 1 - l1)
    np.add.at(weights, (np.arange(out), np.searchsorted(indices, i1)), l1)
    return indices, weights


def _separable_resize(weights: Sequence[np.ndarray], values: np.ndarray) -> np.ndarray:
    """``values`` (C, A, B, D) resized by one weight matrix per spatial axis ((out, A), ...), in float32."""
    v = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    for axis, w in enumerate(weights):
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        v = torch.movedim(torch.tensordot(w, v, dims=([1], [axis + 1])), 0, axis + 1)
    return v.numpy()


def _nearest_resize_indices(size: int, out: int) -> np.ndarray:
    """Source indices of ``F.interpolate(mode='nearest')`` along one axis."""
    if size == out:
        return np.arange(out)
    scale = np.float32(size) / np.float32(out)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64), size - 1)


def _hull_points(mask: np.ndarray) -> np.ndarray:
    """(3, K) voxel centres whose bounding box under any affine map equals that of the whole ``mask``: the
    vertices of its convex hull, found among the first and last voxel of each z column."""
    columns = mask.any(2)
    if not columns.any():
        return np.zeros((3, 0))
    x, y = np.nonzero(columns)
    first = np.argmax(mask[x, y], axis=1)
    last = mask.shape[2] - 1 - np.argmax(mask[x, y, ::-1], axis=1)
    points = np.unique(np.concatenate([np.stack([x, y, first], 1), np.stack([x, y, last], 1)]), axis=0)
    try:
        from scipy.spatial import ConvexHull
        points = points[ConvexHull(points).vertices]
    except Exception:  # flat or tiny foreground: keep all the column ends
        pass
    return points.T.astype(np.float64)


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
        self.hull = _hull_points(mask)
        # unaugmented global view: the box resized to the patch (trilinear); flips only mirror it
        self.grid = [_linear_resize_weights(int(hi - lo), p) for (lo, hi), p in zip(self.box, self.patch)]
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
                idx = _nearest_resize_indices(int(hi - lo), p)
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
            out["data"] = np.flip(_read_region(image, lo, lo + patch, 0.0, np.float32, normalize), flip_axes)
            g = _separable_resize([w for _, w in self.grid], normalize(self.grid_values))
            out["global"] = np.flip(g, flip_axes).astype(np.float32)
            if self.with_labels:
                out["target"] = np.flip(_read_region(seg, lo, lo + patch, -1, np.int16), flip_axes)
                positions = []
                for axis, ((b_lo, b_hi), p) in enumerate(zip(self.box, patch)):
                    idx = _nearest_resize_indices(int(b_hi - b_lo), int(p))
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
            out["data"] = _sample(_read_region(image, lo, hi, 0.0, np.float32, normalize), shifted, "bilinear", 0.0)
            out["data"][:, padding] = 0
            # T on the voxels the resize reads (a separable grid), then the resize's weights
            grid = [_linear_resize_weights(int(b_hi - b_lo), int(p)) for (b_lo, b_hi), p in zip(box, patch)]
            cg, padding_g = t.grid_to_case([b_lo + idx for (b_lo, _), (idx, _) in zip(box, grid)])
            values = _sample(normalize(self.strided_values), cg / strides, "bilinear", 0.0)
            values[:, padding_g] = 0
            out["global"] = _separable_resize([w for _, w in grid], values)
            if self.with_labels:
                target = _sample(_read_region(seg, lo, hi, -1, np.float32), shifted, "nearest", -1.0)
                target[:, padding] = -1
                out["target"] = target.astype(np.int16)
                cn, padding_n = t.grid_to_case([b_lo + _nearest_resize_indices(int(b_hi - b_lo), int(p))
                                                for (b_lo, b_hi), p in zip(box, patch)])
                global_target = _sample(self.strided_seg.astype(np.float32), cn / strides, "nearest", -1.0)
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


class GlobalLocalDataLoader(DataLoader):
    """Batches of global-local samples from one or more domains (nnU-Net datasets), domain-balanced.

    Keys: ``data``, ``global`` (B, C, *patch) float32, ``box`` (B, 3, 2), ``voxels_in_box`` (B, 3, 2) int64 (the
    patch's voxels inside the case's foreground box), ``domain`` (B,) int64, ``keys``;
    ``target``/``global_target`` (B, 1, *patch) when ``with_labels``; ``student_data``/``student_global`` when
    ``student_intensity_augmentation`` is active (``intensity_augmentation`` changes ``data`` / ``global``
    themselves). Labeled domains keep nnU-Net's -1 outside the non-zero mask; callers map it to background for the
    loss."""

    def __init__(self, domains: List[Tuple[str, object]], batch_size: int, patch_size: Sequence[int],
                 intensity: Optional[dict], augmentation: GlobalLocalAugmentation, with_labels: bool,
                 training: bool = True, intensity_augmentation: Optional[IntensityAugmentation] = None,
                 student_intensity_augmentation: Optional[IntensityAugmentation] = None,
                 cache_bytes: int = SAMPLER_CACHE_BYTES, box_probability: float = 1.0):
        super().__init__(domains, batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=True, shuffle=False, infinite=True)
        if not domains:
            raise ValueError("GlobalLocalDataLoader needs at least one domain")
        self.domains = domains
        self.patch_size = tuple(int(p) for p in patch_size)
        self.intensity = intensity
        self.augmentation = augmentation
        self.with_labels = with_labels
        self.training = training
        for name, augmentation in (("views", intensity_augmentation), ("student", student_intensity_augmentation)):
            if augmentation is not None and augmentation.needs_labels and (not with_labels or name == "student"):
                raise ValueError(f"class-wise intensities (class_wise_probability > 0) re-render label classes: "
                                 f"they apply to the labeled source's views only, not to the {name} intensity "
                                 f"augmentation of {'unlabeled' if not with_labels else 'target student'} samples")
        self.view_transforms = (intensity_augmentation.transforms()
                                if intensity_augmentation is not None and intensity_augmentation.active else [])
        self.student_transforms = (student_intensity_augmentation.transforms()
                                   if student_intensity_augmentation is not None
                                   and student_intensity_augmentation.active else [])
        self.rng = None
        self.cache_bytes = cache_bytes
        if not 0 <= box_probability <= 1:
            raise ValueError(f"the probability of a local patch inside the foreground box (the trainer's "
                             f"oversample_foreground_percent) must be in [0, 1], got {box_probability}")
        self.box_probability = float(box_probability)  # else the patch lies anywhere in the case
        self._cases: "OrderedDict[tuple, CaseSampler]" = OrderedDict()
        self._cached_bytes = 0

    def _case_sampler(self, key, data, seg) -> CaseSampler:
        """The case's :class:`CaseSampler`, kept (least recently used first out) within ``cache_bytes``."""
        sampler = self._cases.get(key)
        if sampler is None:
            sampler = CaseSampler(data, seg, self.patch_size, self.intensity, with_labels=self.with_labels)
            self._cases[key] = sampler
            self._cached_bytes += sampler.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cases) > 1:
                self._cached_bytes -= self._cases.popitem(last=False)[1].nbytes
        else:
            self._cases.move_to_end(key)
        return sampler

    def __getstate__(self):  # background workers start with an empty cache
        state = dict(self.__dict__)
        state["_cases"], state["_cached_bytes"] = OrderedDict(), 0
        return state

    def _rng(self) -> np.random.Generator:
        # seeded from numpy's global state, which nnU-Net's background workers seed individually
        if self.rng is None:
            self.rng = np.random.default_rng(np.random.randint(0, 2 ** 31))
        return self.rng

    def generate_train_batch(self):
        rng = self._rng()
        samples, domains, keys = [], [], []
        for _ in range(self.batch_size):
            d = int(rng.integers(len(self.domains)))
            dataset = self.domains[d][1]
            key = dataset.identifiers[int(rng.integers(len(dataset.identifiers)))]
            data, seg, _, _ = dataset.load_case(key)
            percentile = None
            if self.intensity is not None and self.training:
                percentile = draw_training_percentile(self.intensity, rng)
            sampler = self._case_sampler((d, key), data, seg)
            samples.append(sampler.sample(data, seg, rng, self.augmentation, percentile, self.box_probability))
            domains.append(d)
            keys.append(f"{self.domains[d][0]}/{key}")
        batch = {k: torch.from_numpy(np.stack([s[k] for s in samples]))
                 for k in ("data", "global", "box", "voxels_in_box")}
        if self.with_labels:
            batch["target"] = torch.from_numpy(np.stack([s["target"] for s in samples]).astype(np.int16))
            batch["global_target"] = torch.from_numpy(np.stack([s["global_target"] for s in samples])
                                                      .astype(np.int16))
        if self.view_transforms:
            labels = zip(batch["target"], batch["global_target"]) if self.with_labels else [None] * len(samples)
            views = [transform_views(self.view_transforms, [x, g], None if t is None else list(t))
                     for x, g, t in zip(batch["data"], batch["global"], labels)]
            batch["data"], batch["global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        if self.student_transforms:
            views = [transform_views(self.student_transforms, [x, g]) for x, g in zip(batch["data"], batch["global"])]
            batch["student_data"], batch["student_global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        batch["domain"] = torch.as_tensor(domains, dtype=torch.int64)
        batch["keys"] = keys
        return batch


class SourceTargetLoader(DataLoader):
    """One batch of labeled source samples and one of unlabeled target samples per call
    (``{'source': ..., 'target': ...}``; ``target`` is None without registered targets)."""

    def __init__(self, source: GlobalLocalDataLoader, target: Optional[GlobalLocalDataLoader]):
        super().__init__([source, target], source.batch_size, num_threads_in_multithreaded=1, seed_for_shuffle=None,
                         return_incomplete=True, shuffle=False, infinite=True)
        self.source, self.target = source, target

    def generate_train_batch(self):
        return {"source": self.source.generate_train_batch(),
                "target": self.target.generate_train_batch() if self.target is not None else None}


def single_dataset_loaders(name: str, folder: str, dataset_class, train_keys: Sequence[str],
                           val_keys: Sequence[str], batch_size: int, patch_size: Sequence[int],
                           intensity: Optional[dict], augmentation: GlobalLocalAugmentation,
                           student_intensity_augmentation: Optional[IntensityAugmentation] = None,
                           box_probability: float = 1.0) -> Tuple[GlobalLocalDataLoader, GlobalLocalDataLoader]:
    """Unlabeled training and validation loaders on one dataset's own cases (a target site: test-time UDA and
    federated clients); validation samples are unaugmented. Both draw local patches inside the foreground box with
    probability ``box_probability``."""
    train = GlobalLocalDataLoader([(name, dataset_class(folder, train_keys))], batch_size, patch_size, intensity,
                                  augmentation, with_labels=False,
                                  student_intensity_augmentation=student_intensity_augmentation,
                                  box_probability=box_probability)
    val = GlobalLocalDataLoader([(name, dataset_class(folder, val_keys))], batch_size, patch_size, intensity,
                                NO_AUGMENTATION, with_labels=False, training=False, box_probability=box_probability)
    return train, val
