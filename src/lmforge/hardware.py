"""The machine: the one owner of every fact about the hardware lmforge runs on or plans for.

- Accelerators: the catalogue (lmforge/hardware.yaml, plus a user's --hardware-file), looked up by
  name, alias or the device name torch reports, and the peak that training's MFU is judged against.
- This CPU: its dense matmul rate, measured (a CPU has no data-sheet peak lmforge could trust),
  whether it multiplies bf16 natively, the CPUs this process may use and how busy they are, its
  physical memory.
- Power and its cost to the climate: a catalogued device's board power, or CPU_WATTS_PER_THREAD;
  the data centre's PUE and the grid's carbon intensity that energy and CO2e default to.

No torch at import: `lmforge estimate` and the folder readers start without it; only the matmul
measurement imports it, when it runs.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lmforge.errors import LmforgeError
from lmforge.figures import plural

if TYPE_CHECKING:
    import torch

GB = 1e9

# An assumed figure, not a reading (lmforge reads no power meter): a CPU's package power shared
# among the threads that keep it busy. Energy of CPU runs (`--hardware cpu`, the report) is this
# times the threads.
CPU_WATTS_PER_THREAD = 15.0
# Touvron et al. 2023 (LLaMA, section 6): PUE 1.1 and the US average grid, 0.385 kg CO2e per kWh
DEFAULT_PUE = 1.1
DEFAULT_GRID_KG_PER_KWH = 0.385


# ---------------------------------------------------------------- accelerators

@dataclass
class Hardware:
    name: str
    peak: dict[str, float]
    memory_gb: float
    power_w: float
    price_per_hour: float = 0.0

    def peak_flops(self, precision: str) -> float:
        key = {"bf16-mixed": "bf16", "fp16-mixed": "fp16", "bf16": "bf16", "fp16": "fp16", "fp32": "fp32",
               "fp8": "fp8", "tf32": "tf32"}.get(precision, precision)
        if key in self.peak:
            return self.peak[key]
        for fallback in ("bf16", "fp16", "tf32", "fp32"):  # the precision this device runs fastest at
            if fallback in self.peak:
                return self.peak[fallback]
        raise LmforgeError(f"hardware {self.name} lists no peak FLOP/s")


def load_catalogue(extra_file: str | None = None) -> dict[str, dict]:
    data = yaml.safe_load((resources.files("lmforge") / "hardware.yaml").read_text())
    if extra_file:
        try:
            user = yaml.safe_load(Path(extra_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LmforgeError(f"--hardware-file {extra_file}: cannot read it ({str(e).splitlines()[0]})") from None
        except ValueError:  # not UTF-8 text
            raise LmforgeError(f"--hardware-file {extra_file}: not a text file; give a YAML file like hardware.yaml") from None
        if not isinstance(user, dict) or not all(isinstance(v, dict) for v in user.values()):
            raise LmforgeError(f"--hardware-file {extra_file}: must map names to entries like hardware.yaml")
        data.update(user)
    return data


def _hardware(entry_name: str, entry: dict) -> Hardware:
    try:
        return Hardware(entry_name, {k: float(v) for k, v in entry["peak"].items()}, float(entry["memory_gb"]),
                        float(entry["power_w"]), float(entry.get("price_per_hour", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LmforgeError(f"hardware entry {entry_name!r} is incomplete ({e}): it needs peak, memory_gb, power_w") from None


def find_hardware(name: str, extra_file: str | None = None) -> Hardware:
    """A catalogue entry by name, alias or device name (torch.cuda.get_device_name's string);
    `cpu` measures this machine's matmul peak."""
    key = name.lower()
    if key == "cpu":
        return local_cpu()
    catalogue = load_catalogue(extra_file)
    for entry_name, entry in catalogue.items():
        if key == entry_name or key in [a.lower() for a in entry.get("aliases", [])]:
            return _hardware(entry_name, entry)
    by_device = hardware_for_device(name, extra_file)
    if by_device is not None:
        return by_device
    names = list(catalogue) + [a for e in catalogue.values() for a in e.get("aliases", [])] + ["cpu"]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(catalogue))}, cpu"
    raise LmforgeError(f"unknown hardware {name!r}{hint}")


def hardware_for_device(device_name: str, extra_file: str | None = None) -> Hardware | None:
    """The entry whose `device_names` match the whole of a device's name as torch reports it
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", ...), or None for a device not catalogued.
    Whole-name matching keeps apart what substrings confuse: H100 SXM, PCIe and NVL; L4 and L40S."""
    name = device_name.strip()
    for entry_name, entry in load_catalogue(extra_file).items():
        if any(re.fullmatch(pattern, name, flags=re.IGNORECASE) for pattern in entry.get("device_names", [])):
            return _hardware(entry_name, entry)
    return None


def catalogued_training_peak(device_name: str, bf16: bool) -> float | None:
    """The data-sheet peak a training run on this device is judged against: bf16, or for float32
    training TF32 where the device has it (training turns TF32 on), else fp32; None when the device
    is not catalogued."""
    hw = hardware_for_device(device_name)
    if hw is None:
        return None
    return hw.peak_flops("bf16" if bf16 else ("tf32" if "tf32" in hw.peak else "fp32"))


def power_watts(device_name: str, devices: int = 1, threads: int = 1) -> float:
    """What a run draws: a catalogued accelerator's board power times its devices, or, for a CPU or
    an unknown device, CPU_WATTS_PER_THREAD times the threads it ran."""
    known = hardware_for_device(device_name)
    return known.power_w * max(1, devices) if known else CPU_WATTS_PER_THREAD * max(1, threads)


# ---------------------------------------------------------------- this CPU

def usable_cpus() -> set[int]:
    """The CPUs this process may run on (a container's or taskset's mask), not all the machine's."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def physical_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy seconds of the CPUs this process may use, of this process, wall clock), or None without
    /proc/stat. Its per-CPU lines are read, so other containers' cores do not count."""
    usable, busy = usable_cpus(), 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in usable:
                    user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(x) for x in fields] + [0] * 8)[:8]
                    busy += user + nice + system + irq + softirq + steal
    except (OSError, ValueError):
        return None
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()


def measured_matmul_flops(device_type: str, dtype: torch.dtype, size: int = 1536, reps: int = 6,
                          threads: int | None = None) -> float:
    """Best-of-`reps` dense matmul throughput on this device, FLOP/s (what MFU is measured against on CPUs),
    on `threads` CPU threads (default: torch's current count). Measured once per process and shape.

    Best-of, because a busy neighbour only ever slows a sample down; at 1536² a CPU matmul is
    large enough to reach its plateau (512² reaches ~60% of it on a 2-core AVX2 machine)."""
    import torch

    threads = threads or torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _measured(device_type, dtype, size, reps, threads)
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def _measured(device_type: str, dtype: torch.dtype, size: int, reps: int, threads: int) -> float:
    import torch

    # a generator of its own: drawing from torch's global one would leave a run's RNG state (saved in
    # its checkpoints) depending on whether this was the process's first measurement
    gen = torch.Generator(device_type).manual_seed(0)
    a = torch.randn(size, size, dtype=dtype, device=device_type, generator=gen)
    b = torch.randn(size, size, dtype=dtype, device=device_type, generator=gen)
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


def cpu_training_peak(dtype: torch.dtype, threads: int, again: bool = False) -> float:
    """One core's matmul rate times the threads training runs. Measured on one thread, a busy
    neighbour takes at most that thread's core; on all threads every sample waits for the slowest
    one (2 cores beside other jobs: 27.7 GFLOP/s on 2 threads, 39.3 on 1; a run's MFU read 99.9%).
    `again` measures anew: a sample taken while another process was busy reads low."""
    if again:
        measured_matmul_flops.cache_clear()
    return measured_matmul_flops("cpu", dtype, threads=1) * threads


def local_cpu() -> Hardware:
    """This machine's CPU as a catalogue entry, its peak measured now (fp32 and bf16 matmuls, all
    torch threads) and its power CPU_WATTS_PER_THREAD for each of those threads."""
    import torch

    threads = torch.get_num_threads()
    fp32 = measured_matmul_flops("cpu", torch.float32)
    bf16 = measured_matmul_flops("cpu", torch.bfloat16, 512, 3)
    return Hardware(f"cpu ({plural(threads, 'thread')})", {"fp32": fp32, "bf16": bf16}, physical_memory_bytes() / GB,
                    power_watts("cpu", threads=threads))
