"""Masked pseudo-labeling with an EMA teacher and global-local collaboration (paper Sec. 3.3-3.4, Eq. 1-10).

Terms (``seg`` is nnU-Net's Dice+CE; ``f`` the student, ``f_T`` the EMA teacher; ``x``/``X`` local patch and
global view, ``^M`` masked, ``s``/``t`` source/target):

* source (Eq. 9 = L_FSS + the source part of L_MPL + L_GLC^S):
  ``beta (seg(f(x_s), y_s) + seg(f(x_s^M), y_s)) + gamma (seg(f(X_s), Y_s) + seg(f(X_s^M), Y_s))
  + delta (cos(x_s, X_s) + cos(x_s^M, X_s^M))``
* target, centralized UDA (the target part of Eq. 2 + Eq. 6):
  ``seg(f(x_t^M), f_T(x_t)) + 2 gamma seg(f(X_t^M), f_T(X_t)) + 2 delta cos(x_t^M, X_t^M)``
* target, self-supervised update of federated clients and test-time UDA (Eq. 10):
  ``beta (seg(f(x_t^M), f_T(x_t)) + seg(f(x_t), f_T(x_t))) + gamma (... X ...) + delta (cos(x_t, X_t) +
  cos(x_t^M, X_t^M))``

with beta = 0.5, gamma = 0.05, delta = 0.025 (paper; the reference code's grouping gives the same effective
weights). Pseudo-labels are the teacher's hard argmax on the unmasked (clean) views, detached. When the batch
carries intensity-augmented student views (``student_data`` / ``student_global``) the student sees those (masked)
and the teacher the clean ones. :class:`PseudoLabelSettings` ``weighting = "confidence"`` (beyond the paper; MIC's
quality weight) scales each pseudo-labeled term by the share of voxels whose teacher probability exceeds
``threshold``; the L_MPL reported for the Score is always the unweighted term. ``alignment = "source_shares"``
(beyond the paper) aligns the teacher's foreground class shares to the source's before the argmax
(:mod:`mapseg_nnunet.method.class_shares`); it needs the source's shares, so centralized UDA only. With
``outside_box_is_background`` (the trainer setting of that name) the local pseudo-labels are background outside
the case's foreground box, the rule every MAPSeg prediction follows (:mod:`mapseg_nnunet.data.foreground_box`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mapseg_nnunet.data.foreground_box import OUTSIDE_BOX_IS_BACKGROUND, labels_outside_box_to_background
from mapseg_nnunet.method.class_shares import aligned_labels, class_ratios, label_shares
from mapseg_nnunet.method.masking import MaskingSettings


def channelwise_cosine_loss(local_map: torch.Tensor, global_crop: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between each channel's spatial map in the local features and in the cropped global
    features at the fusion stage, averaged over channels and samples. This is the axis the reference implementation uses
    (CosineEmbeddingLoss on (channels, voxels)), not a per-voxel cosine between feature vectors."""
    local_maps = local_map.flatten(2)
    global_maps = global_crop.flatten(2)
    return (1 - F.cosine_similarity(local_maps, global_maps, dim=2, eps=1e-8)).mean()


@dataclass
class MAPSegLossWeights:
    beta: float = 0.5
    gamma: float = 0.05
    delta: float = 0.025
    use_glc: bool = True     # ablation: without GLC the global terms vanish and the local patch is its own context
    use_mpl: bool = True     # ablation: without MPL no target terms (source-only with masking)
    # once adapting, the source terms on the unmasked view too (this project) or the masked view only (the reference
    # code's adaptation step)
    source_unmasked_after_warmup: bool = True


@dataclass
class PseudoLabelSettings:
    weighting: str = "hard"   # 'hard': the paper's argmax with weight 1; 'confidence': MIC's quality weight
    threshold: float = 0.968  # teacher probability counted as confident (MIC's value)
    alignment: str = "none"   # 'source_shares': teacher's foreground class shares aligned to the source's
    max_ratio: float = 4.0    # clamp of the alignment's per-class factor (and of its inverse)

    def check(self) -> None:
        if self.weighting not in ("hard", "confidence"):
            raise ValueError(f"pseudo_labeling.weighting must be 'hard' or 'confidence', got {self.weighting!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"pseudo_labeling.threshold must be in (0, 1), got {self.threshold}")
        if self.alignment not in ("none", "source_shares"):
            raise ValueError(f"pseudo_labeling.alignment must be 'none' or 'source_shares', got {self.alignment!r}")
        if not self.max_ratio >= 1:
            raise ValueError(f"pseudo_labeling.max_ratio must be >= 1, got {self.max_ratio}")

    def weight(self, teacher_logits: torch.Tensor):
        """Weight of a pseudo-labeled term given the teacher's logits: 1 (hard), or the share of voxels whose
        teacher probability exceeds the threshold (confidence; the only case that computes probabilities)."""
        if self.weighting == "hard":
            return 1.0
        return (teacher_logits.softmax(1).amax(1) > self.threshold).float().mean()


def _forward(network: nn.Module, x: torch.Tensor, g: torch.Tensor, boxes: torch.Tensor, use_glc: bool):
    if use_glc:
        return network(x, g, boxes)
    return {"logits": network(x)}  # the patch as its own context


def source_loss(student: nn.Module, seg_loss: Callable, batch: Dict[str, torch.Tensor], w: MAPSegLossWeights,
                masking: MaskingSettings, unmasked: bool = True) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Eq. 9 on a labeled batch (``data``, ``global``, ``box``, ``target``, ``global_target``); ``unmasked=False``:
    the masked view's terms only."""
    x, g, boxes = batch["data"], batch["global"], batch["box"]
    y, Y = batch["target"], batch["global_target"]
    xm, gm = masking.masked(x, g)
    total, parts = 0.0, {}
    views = (("unmasked", (x, g)), ("masked", (xm, gm))) if unmasked else (("masked", (xm, gm)),)
    for name, (xi, gi) in views:
        out = _forward(student, xi, gi, boxes, w.use_glc)
        seg = seg_loss(out["logits"], y)
        total = total + w.beta * seg
        parts[f"source_seg_{name}"] = seg.item()
        if w.use_glc:
            aux = seg_loss(out["aux_logits"], Y)
            cos = channelwise_cosine_loss(out["local_features"], out["global_crop"])
            total = total + w.gamma * aux + w.delta * cos
            parts[f"source_global_{name}"], parts[f"source_cos_{name}"] = aux.item(), cos.item()
    return total, parts


@torch.no_grad()
def pseudo_labels(teacher: nn.Module, batch: Dict[str, torch.Tensor], use_glc: bool,
                  pseudo_labeling: PseudoLabelSettings = PseudoLabelSettings(),
                  source_shares: Optional[torch.Tensor] = None,
                  outside_box_is_background: bool = OUTSIDE_BOX_IS_BACKGROUND):
    """The teacher's hard labels on the clean local and global views (global None without GLC) and its output;
    aligned to ``source_shares`` when ``pseudo_labeling.alignment`` says so; local labels background outside the
    foreground box (the batch's ``voxels_in_box``) when ``outside_box_is_background``."""
    out = _forward(teacher, batch["data"], batch["global"], batch["box"], use_glc)
    ratios = None
    if pseudo_labeling.alignment == "source_shares":
        if source_shares is None:
            raise ValueError("pseudo_labeling.alignment = 'source_shares' needs the source's class shares (labeled "
                             "source data: centralized UDA only)")
        ratios = class_ratios(source_shares, out["aux_logits"] if use_glc else out["logits"],
                              pseudo_labeling.max_ratio)
    local = aligned_labels(out["logits"], ratios)
    if outside_box_is_background and "voxels_in_box" in batch:  # the loaders' batches (not hand-made ones)
        local = labels_outside_box_to_background(local, batch["voxels_in_box"])
    global_ = aligned_labels(out["aux_logits"], ratios) if use_glc else None
    return local, global_, out


def target_loss(student: nn.Module, teacher: nn.Module, seg_loss: Callable, batch: Dict[str, torch.Tensor],
                w: MAPSegLossWeights, masking: MaskingSettings, self_supervised: bool = False,
                pseudo_labeling: PseudoLabelSettings = PseudoLabelSettings(),
                source_shares: Optional[torch.Tensor] = None,
                outside_box_is_background: bool = OUTSIDE_BOX_IS_BACKGROUND
                ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Centralized target terms (``self_supervised=False``) or Eq. 10 (``True``). ``parts['mpl']`` is
    seg(f(x_t^M), f_T(x_t)) (unweighted), the L_MPL of the model-selection Score; ``parts['pseudo_label_weight']``
    the weight of the local pseudo-labeled terms; ``parts['pseudo_label_shares']`` the foreground class shares of
    the local pseudo-labels."""
    boxes = batch["box"]
    x, g = batch.get("student_data", batch["data"]), batch.get("student_global", batch["global"])
    y_pl, Y_pl, teacher_out = pseudo_labels(teacher, batch, w.use_glc, pseudo_labeling, source_shares,
                                            outside_box_is_background)
    local_pl_weight = pseudo_labeling.weight(teacher_out["logits"])
    global_pl_weight = pseudo_labeling.weight(teacher_out["aux_logits"]) if w.use_glc else None
    xm, gm = masking.masked(x, g)
    views = [("masked", xm, gm)] + ([("unmasked", x, g)] if self_supervised else [])
    local_weight = w.beta if self_supervised else 1.0
    global_weight = w.gamma if self_supervised else 2 * w.gamma
    cos_weight = w.delta if self_supervised else 2 * w.delta
    total, parts = 0.0, {"pseudo_label_weight": float(local_pl_weight),
                         "pseudo_label_shares": label_shares(y_pl, teacher_out["logits"].shape[1]).tolist()}
    for name, xi, gi in views:
        out = _forward(student, xi, gi, boxes, w.use_glc)
        seg = seg_loss(out["logits"], y_pl)
        total = total + local_weight * local_pl_weight * seg
        parts["mpl" if name == "masked" else "target_seg_unmasked"] = seg.item()
        if w.use_glc:
            aux = seg_loss(out["aux_logits"], Y_pl)
            cos = channelwise_cosine_loss(out["local_features"], out["global_crop"])
            total = total + global_weight * global_pl_weight * aux + cos_weight * cos
            parts[f"target_global_{name}"], parts[f"target_cos_{name}"] = aux.item(), cos.item()
    return total, parts


@torch.no_grad()
def masked_pseudo_label_check(student: nn.Module, teacher: nn.Module, seg_loss: Callable,
                              batch: Dict[str, torch.Tensor], w: MAPSegLossWeights, masking: MaskingSettings,
                              outside_box_is_background: bool = OUTSIDE_BOX_IS_BACKGROUND
                              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-free validation: L_MPL = seg(f(x^M), f_T(x)) without gradients, with the student's logits on the
    masked input and the teacher's pseudo-labels, ``(mpl, logits, pseudo_labels)``."""
    y_pl = pseudo_labels(teacher, batch, w.use_glc, outside_box_is_background=outside_box_is_background)[0]
    xm, gm = masking.masked(batch["data"], batch["global"])
    logits = _forward(student, xm, gm, batch["box"], w.use_glc)["logits"]
    return seg_loss(logits, y_pl), logits, y_pl
