"""The EMA teacher of masked pseudo-labeling (paper Eq. 3)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from mapseg_nnunet.architectures.unwrap import unwrap_network


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
