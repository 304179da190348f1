"""One optimisation step with nnU-Net's mixed precision (autocast + its ``GradScaler`` on CUDA) and gradient
clipping, shared by the MAPSeg trainers; and activation checkpointing of the encoder."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional, Tuple

import torch


def autocast_context(device: torch.device, use_amp: bool):
    """fp16 autocast on CUDA when ``use_amp`` (as nnU-Net trains); a no-op elsewhere (CPU autocast is slow)."""
    return torch.autocast(device.type) if use_amp and device.type == "cuda" else contextlib.nullcontext()


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter],
                   grad_scaler: Optional[torch.amp.GradScaler] = None, clip_norm: Optional[float] = None) -> None:
    """Backward, optional clipping (on unscaled gradients), step; through ``grad_scaler`` when given."""
    parameters = list(parameters)
    if grad_scaler is not None:
        grad_scaler.scale(loss).backward()
        if clip_norm is not None:
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()


def amp_step(optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter], device: torch.device,
             use_amp: bool, grad_scaler: Optional[torch.amp.GradScaler], compute_loss: Callable[[], Tuple],
             clip_norm: Optional[float] = None) -> Tuple:
    """``compute_loss()`` -> (loss, *extra) under :func:`autocast_context`, then :func:`optimizer_step`.
    Returns what ``compute_loss`` returned."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, use_amp):
        out = compute_loss()
    scaler = grad_scaler if use_amp and device.type == "cuda" else None
    optimizer_step(optimizer, out[0], parameters, scaler, clip_norm)
    return out
