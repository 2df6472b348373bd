"""Processes: this one's peak memory, and workers that end with the process that started them.

A pool worker waits for its next task on a pipe from its parent. When the parent dies by SIGKILL
(the OOM killer, `kill -9`, a job scheduler's hard stop) no handler runs, nothing closes the pool,
and the worker waits forever: each killed `lmforge prepare --workers 2` left its two workers and
multiprocessing's resource tracker behind (29 such processes after the fault benchmark's 20
kills), and a killed sweep left a worker that went on training. On Linux the kernel can signal a
child when its parent dies; the pools ask for that in their initializer.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def peak_rss_bytes() -> int:
    """The most resident memory this process has held so far (its high-water mark, not its use now)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kilobytes


def end_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Pool initializer: get `signum` when `parent` dies (Linux; elsewhere nothing is asked)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)
