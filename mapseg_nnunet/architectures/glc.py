"""The network seam of MAPSeg: what the losses, the GLC predictor, the trainers and the federation need from a
segmentation network with global-local collaboration (paper Sec. 3.4), declared once.

Inputs are a local patch ``x`` (B, C, *patch), the global view ``g`` (the case's foreground box resized to the
patch size) and the patch's box inside the global view ``boxes`` (B, 3, 2; global-view voxels, [start, end)).
A GLC network provides

* ``encode(view)``: the features of one view (opaque to callers: MAPSegNet's latent, a U-Net's skip list);
* ``fusion_map(features)``: the feature map at the fusion stage, which is what the global view contributes; the
  GLC predictor computes it **once per case**;
* ``fuse_and_decode(local_features, global_map, boxes)``: the local logits from the local features with the
  global map cropped at ``boxes`` and resized to the local map, and the two maps the cosine term compares
  ``(logits, local_map, global_crop)``;
* ``global_logits(global_features)``: the auxiliary prediction of the global view (fused with itself);

and ``forward`` with nnU-Net's calling convention, ``forward(x)`` (the patch as its own context:
``global_logits(encode(x))``), or the training forward ``forward(x, g, boxes, with_aux)`` = :func:`glc_forward`.
Implementations: :class:`~mapseg_nnunet.architectures.mapseg_net.MAPSegNet` (the paper's network) and
:class:`~mapseg_nnunet.architectures.glc_unet.GLCUNet` (nnU-Net's U-Nets).
"""
from __future__ import annotations

from typing import Any, Dict, Protocol, Sequence, Tuple, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class GLCNetwork(Protocol):
    def encode(self, view: torch.Tensor) -> Any: ...

    def fusion_map(self, features: Any) -> torch.Tensor: ...

    def fuse_and_decode(self, local_features: Any, global_map: torch.Tensor, boxes: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def global_logits(self, global_features: Any) -> torch.Tensor: ...


def glc_forward(network: GLCNetwork, x: torch.Tensor, global_view: torch.Tensor, boxes: torch.Tensor,
                with_aux: bool = True) -> Dict[str, torch.Tensor]:
    """The training forward of a GLC network: ``logits`` (fused local prediction), ``aux_logits`` (global view,
    when ``with_aux``), ``local_features`` and ``global_crop`` (the maps of the cosine term)."""
    local, global_ = network.encode(x), network.encode(global_view)
    logits, local_map, global_crop = network.fuse_and_decode(local, network.fusion_map(global_), boxes)
    out = {"logits": logits, "local_features": local_map, "global_crop": global_crop}
    if with_aux:
        out["aux_logits"] = network.global_logits(global_)
    return out


def latent_boxes(boxes: torch.Tensor, stride, latent_shape: Sequence[int]) -> torch.Tensor:
    """Voxel boxes ``(B, 3, 2)`` [start, end) in the global view -> integer boxes in a feature grid of ``stride``
    (a number or one per axis): floor(start / stride), ceil(end / stride), at least one cell wide. Boxes are not
    clipped to the grid: a local patch that reaches beyond the case's foreground box (whole-volume scans) reaches
    beyond the global view, where :func:`crop_and_resize` gives no context (zeros), so the global features stay
    aligned with the local ones. ``latent_shape`` is the grid's (kept for the callers' signature)."""
    boxes = boxes.to(torch.float64)
    stride = torch.as_tensor(stride, dtype=torch.float64, device=boxes.device)
    lo = torch.floor(boxes[..., 0] / stride)
    hi = torch.maximum(torch.ceil(boxes[..., 1] / stride), lo + 1)
    return torch.stack([lo, hi], dim=-1).to(torch.int64)


def crop_and_resize(global_map: torch.Tensor, boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop each sample's map at its own integer box ``(B, 3, 2)`` and resize it trilinearly (align_corners=True)
    to ``size``; the parts of a box outside the map are zeros (no global context there)."""
    crops = []
    grid = global_map.shape[2:]
    for b in range(global_map.shape[0]):
        box = boxes[b].tolist()
        if all(0 <= lo and hi <= n for (lo, hi), n in zip(box, grid)):
            crop = global_map[b:b + 1, :, box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]
        else:
            crop = global_map.new_zeros((1, global_map.shape[1], *[hi - lo for lo, hi in box]))
            inside = [(max(lo, 0), min(hi, n)) for (lo, hi), n in zip(box, grid)]
            if all(a < z for a, z in inside):
                crop[(slice(None), slice(None)) + tuple(slice(a - lo, z - lo) for (a, z), (lo, _) in
                                                         zip(inside, box))] = \
                    global_map[(slice(b, b + 1), slice(None)) + tuple(slice(a, z) for a, z in inside)]
        crops.append(F.interpolate(crop, size=tuple(size), mode="trilinear", align_corners=True))
    return torch.cat(crops, dim=0)
