"""A JSON object lmforge writes, read back as a dataclass: one place spells its keys.

Every field has a default, so a file written before a field existed still reads; keys a reader does
not know (a newer lmforge's) are kept in `extra` and written back, so an older lmforge rewriting a
file never drops them. Keys are written in field order, as they always were.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
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
        record._absent = frozenset(names - data.keys())  # an older file's: written back without them
        return record

    def to_dict(self) -> dict[str, Any]:
        absent = getattr(self, "_absent", frozenset())
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in self.WRITTEN_WHEN_SET):
                continue
            if f.name in absent and value == (f.default if f.default is not MISSING else f.default_factory()):
                continue
            out[f.name] = value
        return {**out, **self.extra}
