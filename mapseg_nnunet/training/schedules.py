"""Learning-rate schedules expressed in iterations (nnU-Net epochs are 250 iterations, the reference's 100 or
500, so epoch-based thresholds would not transfer)."""
from __future__ import annotations

import math
from typing import Optional

from torch.optim import Optimizer


class IterationLR:
    """A learning rate that is a pure function ``lr_at(iteration)`` of the iteration count. nnU-Net calls
    ``step(epoch)`` at each epoch start; trainers call ``step_iteration()`` after each optimizer step; resuming
    from an epoch is exact."""
    optimizer: Optimizer
    iterations_per_epoch: int
    iteration: int = 0

    def lr_at(self, iteration: int) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.iteration)

    def step(self, epoch: int | None = None) -> None:
        if epoch is not None:
            self.iteration = epoch * self.iterations_per_epoch
        self._apply()

    def step_iteration(self) -> None:
        self.iteration += 1
        self._apply()


class ConstantThenCosineLR(IterationLR):
    """MAE schedule of the paper (Suppl. Tab. 2): constant ``base_lr`` for the first ``constant_fraction`` of
    the iterations (200 of 300 epochs), then cosine annealing with period parameter ``t_max_fraction`` of the
    iterations (T_max = 20 of 300 epochs) down to ``min_lr``. As in the reference the cosine is not restarted
    but continues, so the rate goes down and up again (it ends at ``min_lr`` for the paper's numbers)."""

    def __init__(self, optimizer: Optimizer, base_lr: float, total_iterations: int, iterations_per_epoch: int,
                 min_lr: float = 1e-6, constant_fraction: float = 2 / 3, t_max_fraction: float = 1 / 15):
        self.optimizer = optimizer
        self.base_lr, self.min_lr = base_lr, min_lr
        self.iterations_per_epoch = iterations_per_epoch
        self.constant_iterations = int(round(total_iterations * constant_fraction))
        self.t_max = max(1, int(round(total_iterations * t_max_fraction)))
        self.iteration = 0
        self._apply()

    def lr_at(self, iteration: int) -> float:
        if iteration < self.constant_iterations:
            return self.base_lr
        t = iteration - self.constant_iterations
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.t_max)) / 2


class CosineWarmRestartsLR(IterationLR):
    """UDA schedule of the paper (Suppl. Tab. 3): cosine annealing with warm restarts, T_0 = ``t0_iterations``
    (the reference's 10 epochs of 100 iterations), T_mult = 2, down to ``min_lr``; per iteration, resumable
    from the epoch like :class:`ConstantThenCosineLR`."""

    def __init__(self, optimizer: Optimizer, base_lr: float, iterations_per_epoch: int, t0_iterations: int = 1000,
                 t_mult: int = 2, min_lr: float = 1e-8):
        self.optimizer, self.base_lr, self.min_lr = optimizer, base_lr, min_lr
        self.iterations_per_epoch, self.t0, self.t_mult = iterations_per_epoch, t0_iterations, t_mult
        self.iteration = 0
        self._apply()

    def lr_at(self, iteration: int) -> float:
        period, t = self.t0, iteration
        while t >= period:
            t -= period
            period *= self.t_mult
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / period)) / 2


class RoundCosineLR:
    """Fed-MAPSeg schedule (paper Appendix 1.2): one learning rate per federated round, cosine-decayed from
    ``base_lr`` in round 0 to ``min_lr`` in the last round (1e-4 -> 1e-6 in the paper). nnU-Net's ``step(epoch)``
    with epoch = round sets it; iterations inside a round keep it."""

    def __init__(self, optimizer: Optimizer, base_lr: float, min_lr: float, num_rounds: int):
        self.optimizer, self.base_lr, self.min_lr, self.num_rounds = optimizer, base_lr, min_lr, num_rounds
        self.step(0)

    def lr_at(self, round_index: int) -> float:
        progress = min(1.0, round_index / max(1, self.num_rounds - 1))
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def step(self, epoch: int | None = None) -> None:
        set_learning_rate(self.optimizer, self.lr_at(epoch or 0))

    def step_iteration(self) -> None:
        pass


def set_learning_rate(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class FixedLR:
    """For trainers whose learning rate is set from outside (federated clients: the server's round rate)."""

    def step(self, epoch: int | None = None) -> None:
        pass

    def step_iteration(self) -> None:
        pass


def sigmoid_rampup(step: int, length: int) -> float:
    """Weight of the target terms ``step`` iterations after the hand-over: the mean-teacher ramp-up
    ``exp(-5 (1 - t)^2)``, ``t = step / length`` clipped to [0, 1]; 1 throughout when ``length`` <= 0 (the paper:
    full weight from the first adapting step)."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def never_adapts_warning(warmup_iterations: int, num_epochs: int, num_iterations_per_epoch: int) -> Optional[str]:
    """The warning a UDA run logs at its start when its warm-up covers its whole budget (so it trains the source
    terms only, whatever its name says); None when it adapts."""
    total = num_epochs * num_iterations_per_epoch
    if warmup_iterations < total:
        return None
    return (f"WARNING: warmup_iterations ({warmup_iterations}) is not below this run's iterations (num_epochs "
            f"{num_epochs} x num_iterations_per_epoch {num_iterations_per_epoch} = {total}): this UDA run never "
            f"adapts and trains the source terms only. Lower the trainer setting warmup_iterations or raise "
            f"num_epochs (mapseg_plans_variant --set warmup_iterations=N).")
