"""The benchmarks' shared timer: the best of several wall-clock timings, the least-disturbed one on a shared machine."""

from __future__ import annotations

import time


def best_time(fn, repeats: int = 5, warmup: bool = True) -> float:
    """Best of `repeats` timings of fn() in seconds, after one untimed call when `warmup`."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
