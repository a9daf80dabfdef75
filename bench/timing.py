"""Timing helpers the micro-benchmarks share."""

from __future__ import annotations

import time


def best_of(fn, rounds: int = 7, calls: int = 30) -> float:
    """Seconds per call of `fn`, the best of `rounds` rounds of `calls` calls (after one call to warm up):
    the least disturbed measure on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best
