"""Timing code honestly: the one timing helper of the benchmarks (``benchmarks/``) and chapter 12.

:func:`timed` wraps :class:`torch.utils.benchmark.Timer`, which avoids the usual pitfalls: it synchronises the
accelerator (e.g. CUDA, whose launches are asynchronous) before each clock reading, and each measurement is preceded
by untimed warm-up calls. On top of it :func:`timed` adds explicit warm-up calls (the first call pays for allocation,
lazy initialisation and, on a GPU, kernel selection or compilation), keeps the current torch thread count (the
Timer's own default is one thread), and reports the **median** of the repeats, which one interruption cannot skew.
"""

from __future__ import annotations

import statistics
from typing import Callable, NamedTuple

import torch
from torch.utils import benchmark


class Timing(NamedTuple):
    """``median`` seconds per call, and the per-call ``times`` of every repeat (in the order measured)."""

    median: float
    times: list


def timed(fn: Callable[[], object], reps: int = 10, warmup: int = 3, number: int = 1,
          num_threads: int | None = None) -> Timing:
    """Seconds per call of ``fn()``: ``warmup`` untimed calls, then ``reps`` measurements of ``number`` calls each by
    :meth:`torch.utils.benchmark.Timer.timeit` (which synchronises the accelerator around the clock readings and runs
    two untimed calls of its own before each measurement). Runs with ``num_threads`` torch threads (default: the
    current number). Returns :class:`Timing` ``(median, times)``, per call."""
    if reps < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1, number >= 1 and warmup >= 0, got {reps}, {number}, {warmup}")
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn},
                            num_threads=torch.get_num_threads() if num_threads is None else num_threads)
    for _ in range(warmup):
        fn()
    times = [timer.timeit(number).mean for _ in range(reps)]
    return Timing(statistics.median(times), times)
