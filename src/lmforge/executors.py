"""Where the data stages run their tasks: a local process pool or a Ray cluster, one interface.

prepare (its shards and partitions) and tokenize (its pieces) hand each task to `submit(fn, *args)`
and wait for them all with `wait()`. A task returns nothing: it writes its result to a file the
parent reads, so the same task runs in a pool, on a Ray node, or inline in this process. At most
2 x workers tasks are in flight, so what the parent holds for them follows the settings.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

from lmforge.errors import LmforgeError
from lmforge.hardware import usable_cpus
from lmforge.processes import end_with_parent

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """A process pool (or, with one worker, this process) with a bounded number of tasks in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        # spawn: workers import only the task's code, not whatever the parent holds (torch, a model);
        # they end with this process, even when it is SIGKILLed (lmforge/processes.py)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent,
                                        initargs=(os.getpid(),)) if workers > 1 else None
        self.pending: list[Future] = []

    def submit(self, fn, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) >= 2 * self.workers:
            self.pending.pop(0).result()

    def wait(self) -> None:
        for f in self.pending:
            f.result()
        self.pending.clear()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class RayExecutor:
    """The same tasks on a Ray cluster (`pip install lmforge[ray]`): `ray.init()` joins the
    cluster named by RAY_ADDRESS or starts a local one. Workers read and write the stage's output
    folder, so it must be on storage every node sees."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise LmforgeError("--executor ray needs Ray: pip install 'lmforge[ray]'") from None
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.pending: list = []
        self.limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn, *args) -> None:
        self.pending.append(self.ray.remote(fn).remote(*args))
        if len(self.pending) >= self.limit:  # bounded memory: wait for the oldest task
            self.ray.get(self.pending.pop(0))

    def wait(self) -> None:
        self.ray.get(self.pending)
        self.pending.clear()

    def close(self) -> None:
        if self.owns:
            self.ray.shutdown()


def make_executor(name: str, workers: int):
    """prepare.executor and prepare.workers (0: one per core), the processes of the data stages."""
    if name == "ray":
        return RayExecutor(num_cpus=workers or None)
    if name != "local":
        raise LmforgeError(f"prepare.executor={name!r}: choose {' or '.join(EXECUTORS)}")
    return LocalExecutor(workers or len(usable_cpus()))
