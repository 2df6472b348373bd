"""What a long stage says while it works: a bar on a terminal, dated lines anywhere else.

A stage silent for minutes looks hung, so each phase of prepare and tokenize says when it starts.
A phase that counts (documents read, documents encoded) redraws a bar on a terminal; redirected to a
file or a CI log, where a bar's carriage returns pile up into one unreadable line, it prints a dated
line every `interval` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Callable


def on_terminal() -> bool:
    return sys.stdout.isatty()


class Meter:
    """A running count: tqdm's bar on a terminal, else "2026-12-07 06:40:01 prepare: read 12,000 documents"
    through `log` every `interval` seconds, and once more at `close` when any was printed. With a
    `total` the bar shows how far along it is."""

    def __init__(self, what: str, unit: str, log: Callable[[str], None], enabled: bool = True,
                 interval: float = 30.0, total: int | None = None):
        self.what, self.unit, self.log, self.interval = what, unit, log, interval
        self.count = 0
        self.enabled = enabled
        self.bar = None
        if enabled and on_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(unit=unit, desc=what, total=total, mininterval=1.0, dynamic_ncols=True)
        self._said_at = time.monotonic()
        self._said_count = 0

    def update(self, n: int) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self._said_at >= self.interval:
            self._say()

    def _say(self) -> None:
        self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.what} {self.count:,} {self.unit}s")
        self._said_at, self._said_count = time.monotonic(), self.count

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif 0 < self._said_count < self.count:  # the total, when a line was printed before it
            self._say()
