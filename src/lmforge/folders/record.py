"""A JSON object lmforge writes, read back as a dataclass: one place spells its keys.

Every field has a default, so a file written before a field existed still reads; keys a reader does
not know (a newer lmforge's) are kept in `extra` and written back, so an older lmforge rewriting a
file never drops them. Keys are written in field order, as they always were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass
class Record:
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # fields written only when set (added by a later stage, or by some runs only)
    WRITTEN_WHEN_SET: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in fields(cls)} - {"extra"}
        record = cls(**{k: v for k, v in data.items() if k in names})
        record.extra = {k: v for k, v in data.items() if k not in names}
        return record

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v is not None or k not in self.WRITTEN_WHEN_SET}
        return {**out, **self.extra}
