"""Figures that may not exist, and JSON any parser reads.

A figure that cannot be computed (a loss over no validation tokens, an interval over no trials) is
`None` beside a `*_reason` saying why, never NaN: NaN and Infinity are not JSON (RFC 8259), and
Python's `json.dumps` writes them by default. `dumps` is the one way lmforge writes JSON: strict
(`allow_nan=False`), with any non-finite float that slipped through written as null.
"""

from __future__ import annotations

import json
import math
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
