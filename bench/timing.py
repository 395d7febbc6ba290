"""Timing and peak memory of one call on the GPU machine (CPU runs time only), for the bench scripts."""

from __future__ import annotations

import time

import torch

CUDA = torch.cuda.is_available()


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median seconds, peak GiB above the memory in use before (CUDA only), last result) of
    ``repeats`` calls after one warm-up call."""
    fn()  # warm-up
    sync()
    base = torch.cuda.memory_allocated() if CUDA else 0
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    times, out = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if CUDA else float("nan")
    return sorted(times)[len(times) // 2], peak, out
