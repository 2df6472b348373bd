"""The machine (lmforge.hardware) and where training runs: catalogued peaks and power against the
data sheets, this machine's CPUs and memory against the kernel's own accounts, and the thread
count that follows the cores other processes leave free."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from lmforge import hardware
from lmforge.training.device import ThreadGovernor

SPIN = "while True: pass"


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2, reason="needs Linux, 2+ cores")
def test_threads_give_way_to_busy_processes_and_never_leave_the_range():
    """A process that keeps every core busy leaves none free: training drops to one thread (not
    zero); this process's own work is never taken for another's."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))  # the CPUs this process (and its competitors) may use
    governor = ThreadGovernor(most=cores, every_s=0.0)
    try:
        time.sleep(0.5)
        governor.poll(now=True)
        quiet = governor.others < 0.3  # nothing else ran while this process slept
        torch.set_num_threads(cores)
        x = torch.randn(256, 256)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:  # our own threads busy: not "other processes"
            x = (x @ x).tanh()
        governor.poll(now=True)
        if quiet:  # (a shared machine's other users come and go: judged only when it was quiet)
            assert governor.others < 0.5 and governor.threads == cores
        competitors = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores)]
        try:
            time.sleep(1.0)
            governor.poll(now=True)
            assert governor.others > cores - 0.6  # measured, not assumed
            assert governor.threads == 1 == torch.get_num_threads()
        finally:
            for p in competitors:
                p.kill()
                p.wait()
    finally:
        torch.set_num_threads(before)


H100_SXM = "NVIDIA H100 80GB HBM3"  # torch.cuda.get_device_name on an H100 SXM


def test_a_training_peak_is_the_data_sheets_at_the_precision_training_runs():
    # NVIDIA H100 SXM data sheet, dense: BF16 989.5 TFLOP/s, TF32 494.7 (float32 training runs as TF32)
    assert hardware.catalogued_training_peak(H100_SXM, bf16=True) == pytest.approx(989.5e12, rel=1e-3)
    assert hardware.catalogued_training_peak(H100_SXM, bf16=False) == pytest.approx(494.7e12, rel=1e-3)
    assert hardware.catalogued_training_peak("Tesla T4", bf16=False) == pytest.approx(8.1e12)  # no TF32: FP32
    assert hardware.catalogued_training_peak("NVIDIA A10G", bf16=True) is None  # not catalogued: measured instead


def test_power_is_the_board_power_per_device_or_per_cpu_thread():
    assert hardware.power_watts(H100_SXM, devices=8, threads=16) == 8 * 700  # H100 SXM data sheet: up to 700 W
    assert hardware.power_watts("cpu", devices=1, threads=4) == 4 * hardware.CPU_WATTS_PER_THREAD


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux")
def test_physical_memory_is_what_the_kernel_counts():
    total_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    assert hardware.physical_memory_bytes() == total_kb * 1024


NARROW = """
import json, os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from lmforge import hardware
from lmforge.executors import make_executor
executor = make_executor("local", 0)
cpu = hardware.find_hardware("cpu")
print(json.dumps({"usable": sorted(hardware.usable_cpus()), "workers": executor.workers, "cpu": cpu.name,
                  "watts": cpu.power_w}))
executor.close()
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs Linux, 2+ CPUs")
def test_a_narrow_affinity_mask_is_the_machine_lmforge_sees():
    """In a container or under taskset the process may use fewer CPUs than os.cpu_count(): prepare
    started a worker for each of the machine's CPUs, and `--hardware cpu` drew 15 W for each."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own count: the mask's
    r = subprocess.run([sys.executable, "-c", NARROW], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert len(seen["usable"]) == 1 and seen["workers"] == 1
    assert seen["cpu"] == "cpu (1 thread)" and seen["watts"] == hardware.CPU_WATTS_PER_THREAD
