"""`lmforge report RUN|SWEEP [--open] [--format html|md]`: the run's story on one page.

    RUN/report.html                  one self-contained page: inline CSS, script, SVG charts and PNGs
    RUN/report.md + report-files/    --format md: Markdown with the charts as PNGs beside it

Imports go one way: `read` turns the folder into the page model (`model`), `render` draws that model
and never reads the folder; this module joins the two.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.files import atomic_write_text, output_errors
from lmforge.report.read import read_page
from lmforge.report.render import render_html, write_markdown
from lmforge.folders.run import RunDir

FORMATS = ("html", "md")


def report(path: str | Path, fmt: str = "html", open_page: bool = False) -> Path:
    """Write RUN/report.html (or report.md with report-files/) and return its path."""
    if fmt not in FORMATS:
        raise LmforgeError(f"report: unknown --format {fmt!r}; choose html or md")
    path = Path(path)
    if not path.is_dir():
        raise LmforgeError(f"report: {path} is not a run or sweep folder")
    page = read_page(path)
    if not page.sections:
        raise LmforgeError(f"report: {path} holds nothing to report yet (no metrics, summary or fit); train it first")
    run = RunDir(path)
    out = run.report_path(fmt)
    with output_errors("report", path):
        if fmt == "md":
            write_markdown(page, out, run.report_files_dir)
        else:
            atomic_write_text(out, render_html(page))
    if open_page:
        webbrowser.open(out.resolve().as_uri())
    return out
