"""Global-local collaboration on nnU-Net's own U-Nets (``PlainConvUNet``, ``ResidualEncoderUNet`` of
dynamic-network-architectures), through the GLC seam of :mod:`mapseg_nnunet.architectures.glc`.

The global view runs through the same encoder as the local patch. At one encoder stage, ``fusion_stage``, the
global view's feature map is cropped at the local patch's box (in that stage's grid), resized to the local map
and fused with it by a 1x1 convolution over the concatenation, initialised to pass the local map through
unchanged: the fused network starts out as the plain U-Net. The decoder takes the local patch's skips with the
fused map in place of the stage's skip. The global auxiliary prediction is the global view fused with itself and
decoded; the cosine term compares the local map and the global crop at the fusion stage.

Parameter names: the U-Net's own under ``unet.`` (so ``unet.decoder.seg_layers.*`` is the only head, which stock
``-pretrained_weights`` skips) and the fusion under ``fusion.``. Deep supervision is off: the MAPSeg terms
(masked views, pseudo-labels, the global auxiliary prediction) are defined on the full-resolution output, and
nnU-Net's deep-supervision loss would need every one of them at every decoder scale.
"""
from __future__ import annotations

import pydoc
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mapseg_nnunet.architectures.glc import crop_and_resize, glc_forward, latent_boxes

SUPPORTED_UNETS = ("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                   "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet")


def cumulative_strides(strides: Sequence, stage: int) -> Tuple[int, ...]:
    """Per-axis stride of encoder stage ``stage``'s output (the product of the strides up to it); a scalar stride
    applies to every axis (as in dynamic-network-architectures)."""
    ndim = max((np.size(s) for s in strides), default=1)
    per_stage = [np.broadcast_to(np.asarray(s, dtype=np.int64), (ndim,)) for s in strides[:stage + 1]]
    return tuple(int(v) for v in np.prod(per_stage, axis=0))


class GLCUNet(nn.Module):
    def __init__(self, input_channels: int, num_classes: int, unet_class_name: str, fusion_stage: int,
                 deep_supervision: Optional[bool] = None, **unet_kwargs):
        super().__init__()
        if deep_supervision:
            raise ValueError("GLCUNet trains without deep supervision; train it with a MAPSeg trainer "
                             "(nnUNetTrainerMAPSeg*), which disables it.")
        if unet_class_name not in SUPPORTED_UNETS:
            raise ValueError(f"GLCUNet wraps {', '.join(SUPPORTED_UNETS)}; got {unet_class_name!r}")
        self.unet = pydoc.locate(unet_class_name)(input_channels, num_classes=num_classes, deep_supervision=False,
                                                  **unet_kwargs)
        encoder = self.unet.encoder
        if not 0 <= fusion_stage < len(encoder.output_channels):
            raise ValueError(f"fusion_stage {fusion_stage} is not an encoder stage (0-{len(encoder.output_channels) - 1})")
        self.fusion_stage = fusion_stage
        self.fusion_stride = cumulative_strides(encoder.strides, fusion_stage)
        channels = encoder.output_channels[fusion_stage]
        self.fusion = encoder.conv_op(2 * channels, channels, 1, bias=True)
        self.reset_fusion()

    @torch.no_grad()
    def reset_fusion(self) -> None:
        """fused = local map: the network computes exactly what the wrapped U-Net computes."""
        channels = self.fusion.out_channels
        self.fusion.weight.zero_()
        self.fusion.weight[:, :channels].view(channels, channels).copy_(torch.eye(channels))
        self.fusion.bias.zero_()

    def initialize(self, module: nn.Module) -> None:
        """nnU-Net's weight initialisation (``network.apply(network.initialize)``): the U-Net's own, the fusion
        left as the identity."""
        if module is not self.fusion:
            self.unet.initialize(module)

    @property
    def activation_checkpointing(self) -> bool:
        return False

    @activation_checkpointing.setter
    def activation_checkpointing(self, enabled: bool) -> None:
        if enabled:
            raise ValueError("activation checkpointing is implemented for MAPSegNet only")

    def forward(self, x: torch.Tensor, global_image: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, with_aux: bool = True):
        if global_image is not None:
            return glc_forward(self, x, global_image, boxes, with_aux)
        return self.global_logits(self.encode(x))

    # ---- the GLC seam
    def encode(self, view: torch.Tensor) -> List[torch.Tensor]:
        return self.unet.encoder(view)

    def fusion_map(self, features: List[torch.Tensor]) -> torch.Tensor:
        return features[self.fusion_stage]

    def _decode_fused(self, skips: List[torch.Tensor], local_map: torch.Tensor, global_crop: torch.Tensor):
        skips = list(skips)
        skips[self.fusion_stage] = self.fusion(torch.cat([local_map, global_crop], dim=1))
        return self.unet.decoder(skips)

    def fuse_and_decode(self, local_features: List[torch.Tensor], global_map: torch.Tensor, boxes: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        local_map = local_features[self.fusion_stage]
        boxes_in_map = latent_boxes(boxes, self.fusion_stride, global_map.shape[2:])
        global_crop = crop_and_resize(global_map, boxes_in_map, local_map.shape[2:])
        return self._decode_fused(local_features, local_map, global_crop), local_map, global_crop

    def global_logits(self, global_features: List[torch.Tensor]) -> torch.Tensor:
        own = global_features[self.fusion_stage]
        return self._decode_fused(global_features, own, own)
