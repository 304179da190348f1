"""Geometry of a global-local sample: the geometric augmentation's settings, the transform drawn per sample
(a random affine about the case centre, flips, zero padding to the patch size) mapping the transformed case's
voxels back to the case, and the foreground's convex hull, whose transformed bounding box is the foreground box
of an affine sample."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np


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


def hull_points(mask: np.ndarray) -> np.ndarray:
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

