"""Where and in what precision training runs, the peak its MFU is judged against (the figures come
from `lmforge.hardware`; here only what needs torch's device and dtype objects), and its CPU threads."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from lmforge.errors import LmforgeError
from lmforge.hardware import (catalogued_training_peak, cpu_has_bf16, cpu_seconds, cpu_training_peak,
                              measured_matmul_flops, usable_cpus)


def resolve_device(name: str) -> torch.device:
    """The device `train.device` names. On CUDA, float32 matmuls run as TF32 from here on (tensor
    cores, 10-bit mantissa; PyTorch defaults to full FP32, 7x slower on an H100)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmforgeError(f"train.device={name} but no CUDA device is visible: use train.device=cpu")
    device = torch.device(name)
    if device.type == "cuda":
        enable_tf32()
    return device


def enable_tf32() -> None:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        matmul.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True


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


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The peak MFU is measured against: a catalogued accelerator's data-sheet figure (the table
    `lmforge estimate` uses), otherwise this device's matmul rate, measured."""
    if device.type == "cuda":
        peak = catalogued_training_peak(torch.cuda.get_device_name(device), dtype == torch.bfloat16)
        return peak if peak is not None else measured_matmul_flops(device.type, dtype)
    return cpu_training_peak(dtype, torch.get_num_threads())


def remeasured_peak(device: torch.device, dtype: torch.dtype, achieved: float, peak: float, threads: int) -> float:
    """A CPU peak measured while another process was busy reads low, and MFU then passes 100%:
    measure again when a step beats the peak, and keep the larger value."""
    if device.type == "cuda" or achieved <= peak:
        return peak
    return max(peak, cpu_training_peak(dtype, threads, again=True))


def set_threads(threads: int) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class ThreadGovernor:
    """Intra-op threads that follow the cores other processes leave free (`train.threads=0` on a CPU).

    A thread beyond the free cores waits for one, and every step waits for that thread: beside one
    busy process on 2 cores, 2 spinning threads ran a step 1.7x slower than 1 thread, 2 sleeping
    (PASSIVE) ones 1.2x (issue 14), and sleeping costs a fifth of each step on a quiet machine. So
    between steps, every `every_s`, the busy time of the CPUs this process may use since the last
    look is read from /proc/stat, this process's own is taken off, and the thread count becomes the free cores (at
    most torch's count at the start). Thread counts change summation order in some kernels: set
    `train.threads` for a fixed count where bit-exact runs matter."""

    def __init__(self, most: int, every_s: float = 2.0):
        self.most, self.threads, self.every_s = most, most, every_s
        self.others = 0.0  # cores other processes kept busy at the last look
        self.last = cpu_seconds()
        self.next_look = time.monotonic() + every_s

    @property
    def active(self) -> bool:
        return self.most > 1 and self.last is not None

    def free_cores(self) -> float:
        now = cpu_seconds()
        machine, own, wall = (b - a for a, b in zip(self.last, now))
        self.last = now
        others = self.others = max(0.0, machine - own) / max(wall, 1e-3)
        return min(self.most, len(usable_cpus()) - others)

    def poll(self, now: bool = False) -> int | None:
        """The new thread count when it changed (and is set), else None. Cheap between looks."""
        if not self.active or (not now and time.monotonic() < self.next_look):
            return None
        self.next_look = time.monotonic() + self.every_s
        wanted = max(1, min(self.most, math.floor(self.free_cores() + 0.3)))  # a core 70% free is worth a thread
        if wanted == torch.get_num_threads():
            return None
        torch.set_num_threads(wanted)
        self.threads = wanted
        return wanted
