"""Random cube masking for masked autoencoding and masked pseudo-labeling, and its settings.

The volume is split into ``cube``^3 cubes; per sample, ``round(n_cubes * ratio)`` of them (chosen independently
for every sample and every call) are zeroed. The network sees the full grid with zeroed cubes: nothing is
dropped and there is no mask token (as the reference). Local patches use 8^3 cubes and global views 4^3 cubes
(half the local size) at ratio 0.7 by default; both are trainer settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch


def random_cube_mask(batch_size: int, shape: Sequence[int], cube: int, ratio: float,
                     device: torch.device | str = "cpu",
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Binary mask (B, 1, *shape), 1 = masked voxel."""
    if any(s % cube for s in shape):
        raise ValueError(f"patch {list(shape)} is not divisible into {cube}^3 cubes")
    if not 0 <= ratio < 1:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    grid = [s // cube for s in shape]
    n = grid[0] * grid[1] * grid[2]
    n_masked = int(round(n * ratio))
    noise = torch.rand(batch_size, n, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    cubes = (ranks < n_masked).float().view(batch_size, 1, *grid)
    for axis in range(3):
        cubes = cubes.repeat_interleave(cube, dim=2 + axis)
    return cubes


def mask_volume(x: torch.Tensor, cube: int, ratio: float,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero random cubes of ``x`` (B, C, *shape); returns (masked x, mask (B, 1, *shape))."""
    mask = random_cube_mask(x.shape[0], x.shape[2:], cube, ratio, x.device, generator)
    return x * (1 - mask), mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked voxels only (all channels)."""
    squared = ((prediction - target) ** 2) * mask
    return squared.sum() / (mask.sum() * prediction.shape[1]).clamp_min(1)


def mean_intensity_baseline(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trivial reconstruction: every masked voxel predicted as the mean of the sample's visible voxels
    (per channel). Reconstruction skill = 1 - masked_mse(model) / masked_mse(this)."""
    visible = 1 - mask
    mean = (x * visible).sum((2, 3, 4), keepdim=True) / visible.sum((2, 3, 4), keepdim=True).clamp_min(1)
    return mean.expand_as(x)


@dataclass
class MaskingSettings:
    """Trainer settings ``masking.ratio``, ``masking.local_cube``, ``masking.global_cube`` (MAE, UDA, TTA, Fed)."""
    ratio: float = 0.7
    local_cube: int = 8
    global_cube: Optional[int] = None  # None: half the local cube

    @property
    def global_cube_size(self) -> int:
        return self.global_cube or max(1, self.local_cube // 2)

    def mask(self, x: torch.Tensor, g: torch.Tensor, generator: Optional[torch.Generator] = None
             ) -> Tuple[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
        """``((masked x, mask of x), (masked g, mask of g))`` for local patches ``x`` and global views ``g``."""
        return (mask_volume(x, self.local_cube, self.ratio, generator),
                mask_volume(g, self.global_cube_size, self.ratio, generator))

    def masked(self, x: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        (xm, _), (gm, _) = self.mask(x, g)
        return xm, gm
