"""Where training runs: the thread count that follows the cores other processes leave free."""

import os
import subprocess
import sys
import time

import pytest
import torch

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
