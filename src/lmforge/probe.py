"""Measuring this machine: the dense matmul peak that CPU MFU is judged against.

Used by training (MFU on CPUs) and by the cost model (`--hardware cpu`); it imports neither.
"""

from __future__ import annotations

import functools
import time

import torch


def measured_matmul_flops(device_type: str, dtype: torch.dtype, size: int = 1536, reps: int = 6,
                          threads: int | None = None) -> float:
    """Best-of-`reps` dense matmul throughput on this device, FLOP/s (what MFU is measured against on CPUs),
    on `threads` CPU threads (default: torch's current count). Measured once per process and shape.

    Best-of, because a busy neighbour only ever slows a sample down; at 1536² a CPU matmul is
    large enough to reach its plateau (512² reaches ~60% of it on a 2-core AVX2 machine)."""
    threads = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measured(device_type, dtype, size, reps, threads)
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def _measured(device_type: str, dtype: torch.dtype, size: int, reps: int, threads: int) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device_type)
    b = torch.randn(size, size, dtype=dtype, device=device_type)
    best = float("inf")
    for _ in range(reps + 2):  # two warm-up rounds
        if device_type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device_type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


measured_matmul_flops.cache_clear = _measured.cache_clear  # measure again (a sample taken under load)
