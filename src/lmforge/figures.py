"""Figures that may not exist, JSON any parser reads, and results that print themselves.

A figure that cannot be computed (a loss over no validation tokens, an interval over no trials) is
`None` beside a `*_reason` saying why, never NaN: NaN and Infinity are not JSON (RFC 8259), and
Python's `json.dumps` writes them by default. `dumps` is the one way lmforge writes JSON: strict
(`allow_nan=False`), with any non-finite float that slipped through written as null.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any


def finite(x: Any) -> Any:
    """x, or None where it is a float that is not a number or is infinite."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return finite(obj)


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def fmt(x: Any, spec: str = ".4f", missing: str = "n/a") -> str:
    """A figure for a log line: `missing` where it does not exist."""
    return missing if finite(x) is None else format(x, spec)


def size(n_bytes: float) -> str:
    """Bytes for a person: "24.1 kB", "3.3 MB", "1.20 GB" (a 24 kB corpus read "0.0 MB")."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n_bytes:,.0f} bytes"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 thread', '2 threads', '1,500 processes': the count and its noun in the right number."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


class Result(ABC):
    """A stage's result as a command shows it: `lines()` for a person, `to_json()` for a program
    (`--json`), so the command line only picks one of the two. A subclass is a dataclass whose first
    field is what the stage returned; that is its JSON unless it says otherwise."""

    @abstractmethod
    def lines(self) -> list[str]:
        """What a person reads, a line each."""

    def to_json(self) -> str:
        return dumps(getattr(self, fields(self)[0].name))

    def __str__(self) -> str:
        return "\n".join(self.lines())
