"""Progress inside a training epoch: on a CPU an epoch can take many minutes, and nnU-Net logs only at epoch ends.
:class:`IterationProgress` writes one line every ``interval_s`` seconds (iteration, iterations per second, time
left in the epoch); it reads the clock once per iteration and does nothing else, so the loop is not slowed."""
from __future__ import annotations

from time import perf_counter
from typing import Callable


class IterationProgress:
    def __init__(self, total: int, interval_s: float, log: Callable[[str], None], epoch: int,
                 clock: Callable[[], float] = perf_counter):
        self.total, self.interval_s, self.log, self.epoch, self.clock = total, interval_s, log, epoch, clock
        self.start = self.last = clock()

    def update(self, done: int) -> None:
        """Call after iteration ``done`` (1-based) has finished."""
        if self.interval_s <= 0 or done >= self.total:
            return
        now = self.clock()
        if now - self.last < self.interval_s:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        self.log(f"epoch {self.epoch}: iteration {done}/{self.total}, {rate:.3g} it/s, "
                 f"{(self.total - done) / rate:.0f} s left in this epoch")
