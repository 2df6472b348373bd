"""Where and in what precision training runs, and how fast that hardware could go."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys

import torch

from lmforge.errors import LmforgeError
from lmforge.probe import measured_matmul_flops


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmforgeError(f"train.device={name} but no CUDA device is visible: use train.device=cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision: weights and optimizer stay fp32, matmuls run in bf16."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
GPU_PEAK_BF16 = {
    "H200": 989e12, "H100": 989e12, "H800": 989e12, "GH200": 989e12, "B200": 2250e12,
    "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "4090": 165e12,
    "3090": 71e12, "V100": 125e12, "T4": 65e12,
}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_BF16.items():
            if key in name:
                return flops if dtype == torch.bfloat16 else flops / 2  # TF32 runs at half the bf16 rate
    return measured_matmul_flops(device.type, dtype)


def remeasured_peak(device: torch.device, dtype: torch.dtype, achieved: float, peak: float) -> float:
    """A CPU peak measured while another process was busy reads low, and MFU then passes 100%:
    measure again when a step beats the peak, and keep the larger value."""
    if device.type == "cuda" or achieved <= peak:
        return peak
    measured_matmul_flops.cache_clear()
    return max(peak, measured_matmul_flops(device.type, dtype))


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of unmapping them.

    Each CPU training step frees and reallocates the same large activations (the logits alone are
    batch x seq x vocab floats); above glibc's mmap threshold every such allocation is a fresh mmap
    whose pages fault in again. Measured on the tiny preset: 5.1 s -> 1.2 s of system time and
    7.2k -> 8.2k tokens/s. A training process reuses its memory, so holding on to it is free.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))


def set_threads(threads: int) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
