"""Small file helpers every stage shares: atomic writes and completion by fingerprint.

A stage's output folder is complete when its marker file (a JSON object) holds the fingerprint
of the inputs and settings that made it; any other state (absent, half written, another
fingerprint) means "redo". Writes go to a temporary name and are renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def _tmp_name(path: Path) -> Path:
    # the process id keeps two writers (a killed run's leftover, a parallel worker) apart
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _tmp_name(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def fingerprint(obj: Any) -> str:
    """16 hex digits of SHA-256 over `obj` as canonical JSON (sorted keys): equal settings, equal print."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(marker: str | Path, expected: str) -> bool:
    """True when the JSON object in `marker` carries `"fingerprint": expected`."""
    try:
        found = json.loads(Path(marker).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("fingerprint") == expected


def mark_complete(marker: str | Path, fp: str, **contents: Any) -> None:
    """Write the marker last, atomically: `contents` plus the fingerprint that `is_complete` checks."""
    atomic_write_json(marker, {**contents, "fingerprint": fp})


def inside(folder: str | Path, name: object) -> Path | None:
    """`folder / name` for a name read from a file (a shard list, a checksum table), or None when it
    would lead out of `folder` (an absolute path, `..`, a link pointing elsewhere): a file a reader
    trusts must not send it to /etc/passwd or into another folder."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        return None
    path = Path(folder) / name
    return path if path.resolve().is_relative_to(Path(folder).resolve()) else None
