"""One writer per folder: an exclusive `flock` on a lock file, holding who took it.

The kernel drops a `flock` when its holder dies (SIGKILL included), so a lock file left by a dead
process is simply taken over: no pid guessing, no stale-lock timeouts. The file's text (pid, host,
start time) is only there to name the holder in the error a second writer gets.

A process may take the same lock again (lmforge run holds its run folder while the trainer inside
it does too): locks are counted per path within a process, because two `flock`s on two opens of one
file conflict even inside one process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from lmforge.errors import LmforgeError

_held: dict[str, tuple[int, int]] = {}  # resolved path -> (fd, depth)


class FolderInUse(LmforgeError):
    """Another live process holds the folder's lock."""


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {started})"


class FolderLock:
    """`with FolderLock(lock_file, "run folder runs/x"):` — refuses a second writer in one line;
    `wait=True` waits for it instead (a write of a few milliseconds, as verify.json's)."""

    def __init__(self, path: str | Path, what: str, wait: bool = False):
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self.taken_over: dict | None = None  # the dead holder whose lock this one replaced

    def acquire(self) -> "FolderLock":
        key = str(self.path.resolve())
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # the holder's name is written into the file: never into one a link points to
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise LmforgeError(f"lock file {self.path} is a symbolic link and lmforge never writes through one: "
                               f"remove the link") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderInUse(
                f"{self.what} is in use by {describe_holder(holder)}: wait for it to finish, stop it, "
                f"or choose another folder") from None
        previous = _read_holder(fd)
        self.taken_over = previous or None  # a holder recorded but no lock held: it died
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _held[key] = (fd, 1)
        return self

    def release(self) -> None:
        key = str(self.path.resolve())
        if key not in _held:
            return
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        os.ftruncate(fd, 0)  # an empty file: nobody holds it (a dead holder leaves its name behind)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
