"""The MAPSeg network: a constant-width 3D ResNet encoder, a DeepLabV3 (ASPP) segmentation decoder, a light
MAE reconstruction decoder, and global-local collaboration (GLC).

Layout follows the MAPSeg reference implementation (see README, "Network"):

* encoder: the first op normalises the input with GroupNorm(1, C_in); 8 residual blocks at constant width,
  block 1 opening with a stride-4, 4x4x4 conv (96^3 -> 24^3); every conv is GroupNorm -> Conv3d(no bias)
  -> ReLU (pre-activation ordering), the third conv of a block has no ReLU before the residual sum.
* segmentation decoder: ASPP (1x1, three dilated 3x3x3, image pooling) on the concatenation of local and
  global latents, Dropout 0.1, then a x4 transposed conv, a 3x3x3 conv and a 1x1 conv to the classes.
* GLC: the global latent is cropped per sample at the local patch's box, resized trilinearly
  (align_corners=True) to the local latent size and concatenated with it.

Parameter names are chosen so that nnU-Net's stock ``-pretrained_weights`` transfers exactly the encoder: the
whole segmentation decoder lives under ``decoder.seg_layers`` (keys containing ``.seg_layers.`` are never
loaded by nnU-Net), the encoder under ``encoder``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mapseg_nnunet.architectures.glc import crop_and_resize, glc_forward, latent_boxes


def group_norm(num_channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm that falls back to a single group when there are fewer channels than groups (so the
    1-channel input gets GroupNorm(1, 1), as in the reference)."""
    groups = num_groups if num_channels >= num_groups else 1
    if num_channels % groups:
        raise ValueError(f"{num_channels} channels cannot be split into {groups} normalisation groups")
    return nn.GroupNorm(groups, num_channels)


class NormConv3d(nn.Sequential):
    """GroupNorm -> Conv3d(bias=False) [-> ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 num_groups: int, relu: bool = True):
        layers = [group_norm(in_channels, num_groups),
                  nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock3d(nn.Module):
    """conv1 (its output is the residual) -> conv2 -> conv3 (no ReLU) -> + residual -> ReLU.

    With ``stride > 1`` conv1 is a ``stride``^3 conv with that stride and no padding (patch embedding),
    otherwise every conv is 3x3x3 with padding 1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_groups: int):
        super().__init__()
        if stride > 1:
            self.conv1 = NormConv3d(in_channels, out_channels, stride, stride, 0, num_groups)
        else:
            self.conv1 = NormConv3d(in_channels, out_channels, 3, 1, 1, num_groups)
        self.conv2 = NormConv3d(out_channels, out_channels, 3, 1, 1, num_groups)
        self.conv3 = NormConv3d(out_channels, out_channels, 3, 1, 1, num_groups, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(x)
        return self.relu(self.conv3(self.conv2(residual)) + residual)


class MAPSegEncoder(nn.Module):
    """Constant-width residual encoder; downsamples once, by ``latent_stride``, in its first block."""

    def __init__(self, in_channels: int, width: int, depth: int, latent_stride: int, num_groups: int):
        super().__init__()
        self.latent_stride = latent_stride
        self.activation_checkpointing = False  # set by the trainers' ``activation_checkpointing`` setting
        self.blocks = nn.Sequential(*[
            ResidualBlock3d(in_channels if i == 0 else width, width, latent_stride if i == 0 else 1, num_groups)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            for block in self.blocks:  # recompute each block's activations in backward: memory for time
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


class ASPP3d(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3) in 3D, GroupNorm instead of BatchNorm."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int], num_groups: int,
                 dropout: float):
        super().__init__()

        def branch(kernel: int, dilation: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(in_channels, channels, kernel, padding=dilation if kernel == 3 else 0,
                          dilation=dilation, bias=False),
                group_norm(channels, num_groups), nn.ReLU(inplace=True))

        self.branches = nn.ModuleList([branch(1, 1)] + [branch(3, d) for d in dilations])
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(in_channels, channels, 1, bias=False),
                                           group_norm(channels, num_groups), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            nn.Conv3d(channels * (len(dilations) + 2), channels, 1, bias=False),
            group_norm(channels, num_groups), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [b(x) for b in self.branches]
        outputs.append(F.interpolate(self.image_pooling(x), size=x.shape[2:], mode="trilinear",
                                     align_corners=False))
        return self.project(torch.cat(outputs, dim=1))


class DeepLabSegmentationHead(nn.Module):
    """ASPP -> ConvTranspose(x latent_stride) -> 3x3x3 conv -> 1x1 conv to class logits (no skips)."""

    def __init__(self, in_channels: int, aspp_channels: int, aspp_dilations: Sequence[int], head_channels: int,
                 num_classes: int, latent_stride: int, num_groups: int, dropout: float):
        super().__init__()
        self.aspp = ASPP3d(in_channels, aspp_channels, aspp_dilations, num_groups, dropout)
        self.upsample = nn.Sequential(
            nn.ConvTranspose3d(aspp_channels, head_channels, latent_stride, stride=latent_stride),
            group_norm(head_channels, num_groups), nn.ReLU(inplace=True),
            nn.Conv3d(head_channels, head_channels, 3, padding=1, bias=False),
            group_norm(head_channels, num_groups), nn.ReLU(inplace=True))
        self.classifier = nn.Conv3d(head_channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.upsample(self.aspp(x)))


class MAPSegDecoder(nn.Module):
    """Container giving nnU-Net the ``decoder.deep_supervision`` attribute it toggles; MAPSeg has a single
    output, so the flag is recorded but never changes the output."""

    def __init__(self, seg_layers: DeepLabSegmentationHead):
        super().__init__()
        self.seg_layers = seg_layers
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg_layers(x)


class MAPSegNet(nn.Module):
    """Segmentation network of MAPSeg with global-local collaboration; implements the GLC seam
    (:mod:`mapseg_nnunet.architectures.glc`): the features of a view are the encoder's latent, which is also the
    fusion map; fusion concatenates the local latent with the cropped global latent before the decoder.

    ``forward(x)`` takes only the local patch (nnU-Net's calling convention); the patch then serves as its own
    global context. ``forward(x, global_image, boxes)`` is the full MAPSeg forward pass
    (:func:`~mapseg_nnunet.architectures.glc.glc_forward`); training calls it through ``forward`` so that a
    DistributedDataParallel wrapper synchronises its gradients.
    """

    def __init__(self, input_channels: int, num_classes: int, width: int = 512, depth: int = 8,
                 latent_stride: int = 4, encoder_groups: int = 32, aspp_channels: int = 512,
                 aspp_dilations: Sequence[int] = (4, 8, 16), head_channels: int = 64, head_groups: int = 8,
                 dropout: float = 0.1, deep_supervision: Optional[bool] = None):
        super().__init__()
        if deep_supervision:
            raise ValueError("MAPSegNet has a single output and no deep supervision; train it with a MAPSeg "
                             "trainer (nnUNetTrainerMAPSeg*), which disables deep supervision.")
        self.latent_stride = latent_stride
        self.encoder = MAPSegEncoder(input_channels, width, depth, latent_stride, encoder_groups)
        self.decoder = MAPSegDecoder(DeepLabSegmentationHead(
            2 * width, aspp_channels, aspp_dilations, head_channels, num_classes, latent_stride, head_groups,
            dropout))

    @property
    def activation_checkpointing(self) -> bool:
        return self.encoder.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, enabled: bool) -> None:
        self.encoder.activation_checkpointing = enabled

    def forward(self, x: torch.Tensor, global_image: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, with_aux: bool = True):
        if global_image is not None:
            return glc_forward(self, x, global_image, boxes, with_aux)
        return self.global_logits(self.encode(x))

    # ---- the GLC seam
    def encode(self, view: torch.Tensor) -> torch.Tensor:
        return self.encoder(view)

    def fusion_map(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def fuse_and_decode(self, local_features: torch.Tensor, global_map: torch.Tensor, boxes: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes_latent = latent_boxes(boxes, self.latent_stride, global_map.shape[2:])
        global_crop = crop_and_resize(global_map, boxes_latent, local_features.shape[2:])
        return self.decoder(torch.cat([local_features, global_crop], dim=1)), local_features, global_crop

    def global_logits(self, global_features: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([global_features, global_features], dim=1))


class MAEDecoder(nn.Module):
    """Light MAE decoder: ConvTranspose (x latent_stride) -> one residual block -> GroupNorm -> 3x3x3 conv ->
    sigmoid (intensities are in [0, 1])."""

    def __init__(self, width: int, out_channels: int, latent_stride: int, channels: Sequence[int] = (32, 16),
                 num_groups: int = 8):
        super().__init__()
        self.upsample = nn.ConvTranspose3d(width, channels[0], latent_stride, stride=latent_stride)
        self.block = ResidualBlock3d(channels[0], channels[1], 1, num_groups)
        self.reconstruction = nn.Sequential(group_norm(channels[1], num_groups),
                                            nn.Conv3d(channels[1], out_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.reconstruction(self.block(self.upsample(latent)))


class MAPSegMAENet(nn.Module):
    """The MAPSeg encoder with the MAE decoder: one network reconstructs both scales (local patches and global
    views go through the same encoder and decoder). Its ``encoder.*`` parameters have the names and shapes of
    :class:`MAPSegNet`'s, so an MAE checkpoint initialises a segmentation network's encoder."""

    def __init__(self, input_channels: int, width: int = 512, depth: int = 8, latent_stride: int = 4,
                 encoder_groups: int = 32, mae_channels: Sequence[int] = (32, 16), mae_groups: int = 8):
        super().__init__()
        self.encoder = MAPSegEncoder(input_channels, width, depth, latent_stride, encoder_groups)
        self.mae_decoder = MAEDecoder(width, input_channels, latent_stride, mae_channels, mae_groups)

    @classmethod
    def from_segmentation_kwargs(cls, input_channels: int, arch_kwargs: dict, mae_channels: Sequence[int],
                                 mae_groups: int = 8) -> "MAPSegMAENet":
        encoder_keys = ("width", "depth", "latent_stride", "encoder_groups")
        return cls(input_channels, **{k: arch_kwargs[k] for k in encoder_keys if k in arch_kwargs},
                   mae_channels=mae_channels, mae_groups=mae_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mae_decoder(self.encoder(x))
