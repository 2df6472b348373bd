"""The report's page model: what `read` makes of a run or sweep and `render` draws. Plain data, no I/O.

A section's blocks are tuples, by kind:
    ("table", header, rows)   header None for a two-column list of facts (drawn without a header row)
    ("token_table", header, rows)   a table whose cells, but the first column's, are tokens
    ("funnel", [(label, n)])  the corpus from documents read to documents kept
    ("chart", Chart)          ("png", bytes, alt)   ("tokens", [str])   ("p", text)   ("pre", text)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Chart:
    """A line chart: series of (x, y) against steps and, when known, wall-clock seconds. `y_bounds`
    are limits the quantity cannot pass (MFU lies in [0, 1]): the axis never extends beyond them."""

    key: str
    title: str
    y_label: str
    series: list[dict]  # {"name", "steps": [...], "seconds": [...], "values": [...], "dashed": bool}
    y_bounds: tuple[float | None, float | None] = (None, None)


@dataclass
class Section:
    title: str
    explanation: str
    blocks: list = field(default_factory=list)


@dataclass
class Page:
    title: str
    intro: str  # one line under the title: what kind of folder this page tells about
    sections: list[Section]
