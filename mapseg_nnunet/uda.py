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
weights). Pseudo-labels are the teacher's hard argmax on the unmasked views, detached.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mapseg_nnunet.architectures import channelwise_cosine_loss
from mapseg_nnunet.inference.predictor_hook import unwrap_network
from mapseg_nnunet.masking import mask_volume


@dataclass
class MAPSegLossWeights:
    beta: float = 0.5
    gamma: float = 0.05
    delta: float = 0.025
    use_glc: bool = True     # ablation: without GLC the global terms vanish and the local patch is its own context
    use_mpl: bool = True     # ablation: without MPL no target terms (source-only with masking)


@dataclass
class MaskingSettings:
    ratio: float = 0.7
    local_cube: int = 8
    global_cube: Optional[int] = None  # None: half the local cube

    def masked(self, x: torch.Tensor, g: torch.Tensor):
        return (mask_volume(x, self.local_cube, self.ratio)[0],
                mask_volume(g, self.global_cube or max(1, self.local_cube // 2), self.ratio)[0])


def ema_alpha(steps_since_teacher_init: int, schedule: str) -> float:
    """Eq. 3 weights of the paper: ``large`` (large-scale MAE pretraining): 0.999 for 1,000 steps, then 0.9999;
    ``small``: 0.99 for 1,000 steps, 0.999 for the next 2,000, then 0.9999. Steps are iterations."""
    if schedule == "large":
        return 0.999 if steps_since_teacher_init < 1000 else 0.9999
    if schedule == "small":
        if steps_since_teacher_init < 1000:
            return 0.99
        return 0.999 if steps_since_teacher_init < 3000 else 0.9999
    raise ValueError(f"unknown EMA schedule {schedule!r} (large or small)")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """theta <- alpha theta + (1 - alpha) phi, parameters and floating buffers."""
    student = unwrap_network(student)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
        else:
            t.copy_(s)


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student's plain module (never of its DDP / torch.compile wrapper: the EMA teacher is
    updated identically on every rank from the synchronised student and needs no gradient synchronisation)."""
    teacher = copy.deepcopy(unwrap_network(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _forward(network: nn.Module, x: torch.Tensor, g: torch.Tensor, boxes: torch.Tensor, use_glc: bool):
    if use_glc:
        return network(x, g, boxes)
    return {"logits": network(x)}  # the patch as its own context


def source_loss(student: nn.Module, seg_loss: Callable, batch: Dict[str, torch.Tensor], w: MAPSegLossWeights,
                masking: MaskingSettings) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Eq. 9 on a labeled batch (``data``, ``global``, ``box``, ``target``, ``global_target``)."""
    x, g, boxes = batch["data"], batch["global"], batch["box"]
    y, Y = batch["target"], batch["global_target"]
    xm, gm = masking.masked(x, g)
    total, parts = 0.0, {}
    for name, (xi, gi) in (("unmasked", (x, g)), ("masked", (xm, gm))):
        out = _forward(student, xi, gi, boxes, w.use_glc)
        seg = seg_loss(out["logits"], y)
        total = total + w.beta * seg
        parts[f"source_seg_{name}"] = seg.item()
        if w.use_glc:
            aux = seg_loss(out["aux_logits"], Y)
            cos = channelwise_cosine_loss(out["local_latent"], out["global_crop"])
            total = total + w.gamma * aux + w.delta * cos
            parts[f"source_global_{name}"], parts[f"source_cos_{name}"] = aux.item(), cos.item()
    return total, parts


@torch.no_grad()
def pseudo_labels(teacher: nn.Module, batch: Dict[str, torch.Tensor], use_glc: bool):
    out = _forward(teacher, batch["data"], batch["global"], batch["box"], use_glc)
    local = out["logits"].argmax(1, keepdim=True)
    global_ = out["aux_logits"].argmax(1, keepdim=True) if use_glc else None
    return local, global_


def target_loss(student: nn.Module, teacher: nn.Module, seg_loss: Callable, batch: Dict[str, torch.Tensor],
                w: MAPSegLossWeights, masking: MaskingSettings, self_supervised: bool = False
                ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Centralized target terms (``self_supervised=False``) or Eq. 10 (``True``). ``parts['mpl']`` is
    seg(f(x_t^M), f_T(x_t)), the L_MPL of the model-selection Score."""
    x, g, boxes = batch["data"], batch["global"], batch["box"]
    y_pl, Y_pl = pseudo_labels(teacher, batch, w.use_glc)
    xm, gm = masking.masked(x, g)
    views = [("masked", xm, gm)] + ([("unmasked", x, g)] if self_supervised else [])
    local_weight = w.beta if self_supervised else 1.0
    global_weight = w.gamma if self_supervised else 2 * w.gamma
    cos_weight = w.delta if self_supervised else 2 * w.delta
    total, parts = 0.0, {}
    for name, xi, gi in views:
        out = _forward(student, xi, gi, boxes, w.use_glc)
        seg = seg_loss(out["logits"], y_pl)
        total = total + local_weight * seg
        parts["mpl" if name == "masked" else "target_seg_unmasked"] = seg.item()
        if w.use_glc:
            aux = seg_loss(out["aux_logits"], Y_pl)
            cos = channelwise_cosine_loss(out["local_latent"], out["global_crop"])
            total = total + global_weight * aux + cos_weight * cos
            parts[f"target_global_{name}"], parts[f"target_cos_{name}"] = aux.item(), cos.item()
    return total, parts


@torch.no_grad()
def masked_pseudo_label_check(student: nn.Module, teacher: nn.Module, seg_loss: Callable,
                              batch: Dict[str, torch.Tensor], w: MAPSegLossWeights, masking: MaskingSettings
                              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-free validation: L_MPL = seg(f(x^M), f_T(x)) without gradients, with the student's logits on the
    masked input and the teacher's pseudo-labels, ``(mpl, logits, pseudo_labels)``."""
    y_pl, _ = pseudo_labels(teacher, batch, w.use_glc)
    xm, gm = masking.masked(batch["data"], batch["global"])
    logits = _forward(student, xm, gm, batch["box"], w.use_glc)["logits"]
    return seg_loss(logits, y_pl), logits, y_pl


def mean_over_ranks(values) -> float:
    """Mean of per-iteration values over this process and, under DDP, all ranks, so every rank takes the same
    selection and early-stopping decisions."""
    local = torch.tensor([float(np.sum(values)), float(len(values))], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        local = local.to(backend_device)
        dist.all_reduce(local)
    total, count = local.tolist()
    return total / count if count else 0.0


def selection_score(source_dice: float, mean_mpl: float) -> float:
    """Label-free model selection (paper Sec. 3.7): Dice on the source validation data - 0.5 x the epoch mean of
    L_MPL. With nnU-Net's Dice+CE (CE - soft Dice), L_MPL can be negative."""
    return source_dice - 0.5 * mean_mpl
