"""Timing: how long a callable takes, measured the same way in every chapter.

Timings on a shared CPU are noisy; a chapter asserts only facts that survive
the noise (which curve grows faster), never a number of milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock


def time_callable(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
                  statistic: str = "median", clock: Callable[[], float] = time.perf_counter) -> float:
    """Wall-clock seconds of one call of `fn()`: the median (or, with statistic="min",
    the fastest) of `repeats` calls, after `warmup` untimed calls. The fastest run is
    the one least disturbed by other programs on a shared machine. `clock` may be
    time.process_time for one-threaded CPU work: then other programs do not count."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        _synchronize()
        start = clock()
        fn()
        _synchronize()
        seconds.append(clock() - start)
    return min(seconds) if statistic == "min" else statistics.median(seconds)


def max_path_length(connections: torch.Tensor) -> int:
    """Layers needed until information has travelled along every path it ever can.

    connections: (n, n) boolean, True at [i, j] when one layer carries position j
    into position i (the diagonal included: each position keeps what it has).
    Self-attention connects everything in 1 layer; a recurrence needs n - 1 steps.
    """
    if connections.dim() != 2 or connections.shape[0] != connections.shape[1]:
        raise ValueError(f"connections must be a square (n, n) matrix, got {tuple(connections.shape)}")
    if connections.dtype != torch.bool or not connections.diagonal().all():
        raise ValueError("connections must be boolean with a True diagonal")
    reach = torch.eye(len(connections), dtype=torch.bool)  # after 0 layers: each position itself
    layers = 0
    while True:
        wider = (connections.int() @ reach.int()) > 0  # one more layer
        if torch.equal(wider, reach):
            return layers
        reach, layers = wider, layers + 1
