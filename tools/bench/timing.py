"""Median wall time of repeated calls, shared by the reference timing scripts in this folder."""

import statistics
import time


def median_ms(fn, runs: int) -> float:
    """Calls `fn` once to warm up, then `runs` times; the median in milliseconds."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
