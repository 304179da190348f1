"""Global-local sampling: for each training sample, a local patch ``x`` at the plans' patch size, the whole case
``X`` resized to the same size, and the box of ``x`` inside ``X``.

Geometric augmentation is applied to the **whole case** first (as in the reference), so the local patch and the
global view come from the same transformed volume and the box is exact:

1. whole case in MAPSeg's intensity convention (training percentile jitter), see :mod:`mapseg_nnunet.data.intensity`;
2. with probability ``affine_probability`` a random affine about the case centre (isotropic scale, rotations
   about the three axes), image trilinear, labels nearest; then random flips per axis (MAE);
3. foreground box = :func:`case_foreground_box` of the transformed case: the bounding box of the voxels that differ
   from the case's constant background in any channel (0 after MAPSeg's intensity rules), within nnU-Net's
   non-zero mask (``seg >= 0``) when there is a segmentation. The predictor
   (:func:`mapseg_nnunet.inference.glc.global_view`) uses the same function, so training and prediction agree on
   the global view also when the raw background is a non-zero constant (z-scored MRI), where nnU-Net's crop to
   non-zero crops nothing and ``seg >= 0`` is the whole case;
4. local patch start uniform such that the patch stays inside the foreground box (centred when the box is
   smaller than the patch; the case is zero-padded to at least the patch size);
5. global view = the foreground box resized to the patch size per axis (anisotropically, as the reference), images
   trilinear (``align_corners=False``), labels nearest;
6. box of the local patch in global voxel units, ``[lo, hi)`` per axis: ``(start - box_start) * patch / box_size``.
   Global voxel ``u`` covers ``[u, u + 1)``; it samples the case at ``box_start + (u + 0.5) * box_size / patch -
   0.5``, which is the same convention, so the box is exact (tested with coordinate-valued volumes).

:class:`GlobalLocalDataLoader` runs this inside nnU-Net's background workers (it is a batchgenerators
``DataLoader``), sampling domains uniformly (domain-balanced) and then a case within the domain. Intensity
augmentation (:mod:`mapseg_nnunet.data.intensity_augmentation`) comes last, with the same parameters for both views
of a sample: ``views`` changes the views themselves (labeled source), ``student`` adds augmented copies
``student_data`` / ``student_global`` next to the clean views (unlabeled targets: clean views for the teacher's
pseudo-labels, augmented ones for the student).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from batchgenerators.dataloading.data_loader import DataLoader

from mapseg_nnunet.data.intensity import background_value, draw_training_percentile, normalize_case
from mapseg_nnunet.data.intensity_augmentation import IntensityAugmentation, transform_views


@dataclass(frozen=True)
class GlobalLocalAugmentation:
    """Settings of the geometric augmentation (reference values for MAE)."""
    affine_probability: float = 0.35
    scale_range: Tuple[float, float] = (0.75, 1.5)
    rotation_degrees: float = 40.0
    flip_probability: float = 0.5  # per axis; 0 disables flips (the reference flips only for MAE)


NO_AUGMENTATION = GlobalLocalAugmentation(affine_probability=0.0, flip_probability=0.0)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _grid_sample(volume: torch.Tensor, matrix: np.ndarray, offset: np.ndarray, mode: str,
                 padding_value: float = 0.0) -> torch.Tensor:
    """Resample ``volume`` (C, X, Y, Z) at voxel coordinates ``matrix @ idx + offset`` (same output shape)."""
    shape = volume.shape[1:]
    idx = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    coords = torch.einsum("ij,jxyz->ixyz", torch.as_tensor(matrix, dtype=torch.float32), idx) + \
        torch.as_tensor(offset, dtype=torch.float32).view(3, 1, 1, 1)
    # grid_sample wants (x=last dim, ..., normalised to [-1, 1], align_corners=True)
    norm = torch.stack([coords[i] / max(shape[i] - 1, 1) * 2 - 1 for i in range(3)])
    grid = norm.flip(0).permute(1, 2, 3, 0)[None]
    src = volume[None].float() - padding_value
    out = F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=True)[0] + padding_value
    return out


def random_affine(image: np.ndarray, seg: Optional[np.ndarray], aug: GlobalLocalAugmentation,
                  rng: np.random.Generator) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Whole-case affine (probability ``aug.affine_probability``) and flips. ``seg`` may be None; regions
    moved in from outside the case become image 0 and seg -1 (outside nnU-Net's non-zero mask)."""
    if rng.random() < aug.affine_probability:
        scale = rng.uniform(*aug.scale_range)
        rot = _rotation(np.deg2rad(rng.uniform(-aug.rotation_degrees, aug.rotation_degrees, 3)))
        inverse = rot.T / scale  # output voxel -> input voxel
        centre = (np.array(image.shape[1:]) - 1) / 2
        offset = centre - inverse @ centre
        image = _grid_sample(torch.from_numpy(np.ascontiguousarray(image)), inverse, offset, "bilinear").numpy()
        if seg is not None:
            seg = _grid_sample(torch.from_numpy(np.ascontiguousarray(seg)).float(), inverse, offset, "nearest",
                               padding_value=-1).numpy().astype(seg.dtype)
    for axis in range(3):
        if aug.flip_probability > 0 and rng.random() < aug.flip_probability:
            image = np.flip(image, axis + 1)
            seg = np.flip(seg, axis + 1) if seg is not None else None
    return np.ascontiguousarray(image), (np.ascontiguousarray(seg) if seg is not None else None)


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


def _pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> Tuple[np.ndarray, np.ndarray]:
    pad = [max(0, p - s) for p, s in zip(shape, array.shape[1:])]
    before = np.array([p // 2 for p in pad])
    if any(pad):
        array = np.pad(array, [(0, 0)] + [(b, p - b) for b, p in zip(before, pad)], constant_values=value)
    return array, before


def sample_local_start(box: np.ndarray, patch: Sequence[int], shape: Sequence[int],
                       rng: np.random.Generator) -> np.ndarray:
    """Uniform patch start keeping the patch inside the foreground box; centred on smaller boxes."""
    start = np.zeros(3, dtype=np.int64)
    for axis in range(3):
        lo, hi = box[axis]
        p, s = patch[axis], shape[axis]
        if hi - lo >= p:
            start[axis] = rng.integers(lo, hi - p + 1)
        else:
            start[axis] = (lo + hi - p) // 2
        start[axis] = int(np.clip(start[axis], 0, s - p))
    return start


def box_in_global_view(start: Sequence[int], patch: Sequence[int], foreground: np.ndarray) -> np.ndarray:
    """(3, 2) float32 box ``[lo, hi)`` of the local patch starting at ``start`` inside the global view (the
    ``foreground`` box (3, 2) of the case resized to ``patch``), clipped to the view: step 6 above."""
    start, patch = np.asarray(start, dtype=np.float64), np.asarray(patch, dtype=np.float64)
    scale = patch / (foreground[:, 1] - foreground[:, 0])
    box = np.stack([(start - foreground[:, 0]) * scale, (start + patch - foreground[:, 0]) * scale], axis=1)
    return np.clip(box, 0, patch[:, None]).astype(np.float32)


def resize(volume: np.ndarray, size: Sequence[int], mode: str) -> np.ndarray:
    """(C, X, Y, Z) -> (C, *size); ``trilinear`` (align_corners=False) or ``nearest``."""
    t = torch.from_numpy(np.ascontiguousarray(volume)).float()[None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(t, size=tuple(size), mode=mode, **kwargs)[0].numpy()


def global_local_sample(image: np.ndarray, seg: Optional[np.ndarray], patch: Sequence[int],
                        aug: GlobalLocalAugmentation, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One training sample from a whole case. ``image`` (C, X, Y, Z) already intensity-normalised; ``seg``
    (1, X, Y, Z) with nnU-Net's convention (-1 outside the non-zero mask) or None. ``foreground`` in the result is
    the case's foreground box (:func:`case_foreground_box`) in voxels of the transformed, padded case."""
    image, seg = random_affine(image, seg, aug, rng)
    image, before = _pad_to(image, patch, 0.0)
    if seg is not None:
        seg, _ = _pad_to(seg, patch, -1)
    box = case_foreground_box(image, seg)
    start = sample_local_start(box, patch, image.shape[1:], rng)
    local = tuple(slice(s, s + p) for s, p in zip(start, patch))
    crop = tuple(slice(lo, hi) for lo, hi in box)
    out = {
        "data": image[(slice(None),) + local],
        "global": resize(image[(slice(None),) + crop], patch, "trilinear"),
        "box": box_in_global_view(start, patch, box),
        "foreground": box,
    }
    if seg is not None:
        out["target"] = seg[(slice(None),) + local]
        out["global_target"] = resize(seg[(slice(None),) + crop], patch, "nearest")
    return out


class GlobalLocalDataLoader(DataLoader):
    """Batches of global-local samples from one or more domains (nnU-Net datasets), domain-balanced.

    Keys: ``data``, ``global`` (B, C, *patch) float32, ``box`` (B, 3, 2), ``domain`` (B,) int64, ``keys``;
    ``target``/``global_target`` (B, 1, *patch) when ``with_labels``; ``student_data``/``student_global`` when
    ``student`` augmentation is active. Labeled domains keep nnU-Net's -1 outside the non-zero mask; callers map it
    to background for the loss."""

    def __init__(self, domains: List[Tuple[str, object]], batch_size: int, patch_size: Sequence[int],
                 intensity: Optional[dict], augmentation: GlobalLocalAugmentation, with_labels: bool,
                 training: bool = True, views: Optional[IntensityAugmentation] = None,
                 student: Optional[IntensityAugmentation] = None):
        super().__init__(domains, batch_size, 1, None, True, False, True)
        if not domains:
            raise ValueError("GlobalLocalDataLoader needs at least one domain")
        self.domains = domains
        self.patch_size = tuple(int(p) for p in patch_size)
        self.intensity = intensity
        self.augmentation = augmentation
        self.with_labels = with_labels
        self.training = training
        self.view_transforms = views.transforms() if views is not None and views.active else []
        self.student_transforms = student.transforms() if student is not None and student.active else []
        self.rng = None

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
            data = np.asarray(data, dtype=np.float32)
            if self.intensity is not None:
                percentile = draw_training_percentile(self.intensity, rng) if self.training else None
                data = normalize_case(data, self.intensity, percentile)
            seg = np.asarray(seg) if seg is not None else None
            samples.append(global_local_sample(data, seg, self.patch_size, self.augmentation, rng))
            domains.append(d)
            keys.append(f"{self.domains[d][0]}/{key}")
        batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in ("data", "global", "box")}
        if self.view_transforms:
            views = [transform_views(self.view_transforms, [x, g]) for x, g in zip(batch["data"], batch["global"])]
            batch["data"], batch["global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        if self.student_transforms:
            views = [transform_views(self.student_transforms, [x, g]) for x, g in zip(batch["data"], batch["global"])]
            batch["student_data"], batch["student_global"] = (torch.stack([v[i] for v in views]) for i in (0, 1))
        if self.with_labels:
            batch["target"] = torch.from_numpy(np.stack([s["target"] for s in samples]).astype(np.int16))
            batch["global_target"] = torch.from_numpy(np.stack([s["global_target"] for s in samples])
                                                      .astype(np.int16))
        batch["domain"] = torch.as_tensor(domains, dtype=torch.int64)
        batch["keys"] = keys
        return batch


class SourceTargetLoader(DataLoader):
    """One batch of labeled source samples and one of unlabeled target samples per call
    (``{'source': ..., 'target': ...}``; ``target`` is None without registered targets)."""

    def __init__(self, source: GlobalLocalDataLoader, target: Optional[GlobalLocalDataLoader]):
        super().__init__([source, target], source.batch_size, 1, None, True, False, True)
        self.source, self.target = source, target

    def generate_train_batch(self):
        return {"source": self.source.generate_train_batch(),
                "target": self.target.generate_train_batch() if self.target is not None else None}


def single_dataset_loaders(name: str, folder: str, dataset_class, train_keys: Sequence[str],
                           val_keys: Sequence[str], batch_size: int, patch_size: Sequence[int],
                           intensity: Optional[dict], augmentation: GlobalLocalAugmentation,
                           student: Optional[IntensityAugmentation] = None
                           ) -> Tuple[GlobalLocalDataLoader, GlobalLocalDataLoader]:
    """Unlabeled training and validation loaders on one dataset's own cases (a target site: test-time UDA and
    federated clients); validation samples are unaugmented."""
    train = GlobalLocalDataLoader([(name, dataset_class(folder, train_keys))], batch_size, patch_size, intensity,
                                  augmentation, False, student=student)
    val = GlobalLocalDataLoader([(name, dataset_class(folder, val_keys))], batch_size, patch_size, intensity,
                                NO_AUGMENTATION, False, training=False)
    return train, val
