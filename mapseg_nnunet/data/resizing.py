"""Reading and resizing case arrays as the sampler needs them: a region of a case (lazily read, filled outside
the case), a volume at voxel coordinates (trilinear or nearest, ``grid_sample``), and ``F.interpolate``'s
trilinear (``align_corners=False``) and nearest resizes as per-axis source indices and weights."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def interpolate_at(volume: np.ndarray, coords: np.ndarray, mode: str, fill: float) -> np.ndarray:
    """``volume`` (C, X, Y, Z) at voxel coordinates ``coords`` (3, *out) (voxel centres at integers), trilinear
    (``bilinear``) or ``nearest``; ``fill`` outside the volume (trilinear blends towards it, as grid_sample's
    zeros padding)."""
    shape = np.array(volume.shape[1:], dtype=np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    norm = np.asarray(coords, dtype=np.float32) / np.maximum(shape - 1, 1) * 2 - 1
    grid = torch.from_numpy(norm).flip(0).permute(*range(1, coords.ndim), 0)[None]
    src = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None] - fill
    return (F.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=True)[0] + fill).numpy()


def read_region(array, lo: np.ndarray, hi: np.ndarray, fill: float, dtype, transform=None) -> np.ndarray:
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


def linear_resize_weights(size: int, out: int) -> Tuple[np.ndarray, np.ndarray]:
    """The same as the source indices needed (sorted) and the (out, len(indices)) weight matrix."""
    i0, i1, l1 = _linear_resize_taps(size, out)
    indices = np.unique(np.concatenate([i0, i1]))
    weights = np.zeros((out, indices.size))
    np.add.at(weights, (np.arange(out), np.searchsorted(indices, i0)), 1 - l1)
    np.add.at(weights, (np.arange(out), np.searchsorted(indices, i1)), l1)
    return indices, weights


def separable_resize(weights: Sequence[np.ndarray], values: np.ndarray) -> np.ndarray:
    """``values`` (C, A, B, D) resized by one weight matrix per spatial axis ((out, A), ...), in float32."""
    v = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    for axis, w in enumerate(weights):
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        v = torch.movedim(torch.tensordot(w, v, dims=([1], [axis + 1])), 0, axis + 1)
    return v.numpy()


def nearest_resize_indices(size: int, out: int) -> np.ndarray:
    """Source indices of ``F.interpolate(mode='nearest')`` along one axis."""
    if size == out:
        return np.arange(out)
    scale = np.float32(size) / np.float32(out)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64), size - 1)

