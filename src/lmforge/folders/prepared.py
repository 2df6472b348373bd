"""The prepared folder: its file names, shard naming, report.json, and reading its shards
(written by lmforge/data/prepare.py).

    PREP/
      clean/shard_00000.jsonl.gz        kept documents: {"id", "source", "kind", "text", ..., "edits"}; "edits"
                                        (when any) lists what was changed, by rule: removed line numbers or counts
      rejected/filter_00000.jsonl.gz    removed while reading or filtering: {"id", "source", "stage", "reason", "text"},
                                        "text" exactly as read, before any repair or edit
      rejected/dedup_00000.jsonl.gz     duplicates: ... plus "duplicate_of" (the kept id) and "jaccard"
      report.json                       counts in / kept / rejected, per stage, reason and filter step, examples,
                                        redactions per kind, what a byte cap left unread, peak memory per
                                        step (PrepareReport);
                                        written last, with the fingerprint of the inputs and settings
      work/                             per-shard intermediate files and completion markers (`work/fingerprint`
                                        while a prepare is under way; `work/partitions.json`, the number of
                                        key partitions the shards' keys are split into and of bucket
                                        partitions each MinHash band is split into, kept by a resumed
                                        run), removed once report.json is written
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmforge.errors import LmforgeError
from lmforge.files import OutputKind, json_format_is, mark_complete, naming, open_new, read_own_bytes
from lmforge.folders.record import Record

CLEAN = "clean"
REJECTED = "rejected"
WORK = "work"
REPORT = "report.json"
WORK_FINGERPRINT = "fingerprint"  # in work/: a prepare under way
FORMAT = "lmforge-prepared-v1"
SHARD_SUFFIX = ".jsonl.gz"


def clean_shard(index: int) -> str:
    return f"shard_{index:05d}{SHARD_SUFFIX}"


def rejected_shard(stage: str, index: int) -> str:
    """`filter` (removed while reading or filtering) or `dedup` (duplicates)."""
    return f"{stage}_{index:05d}{SHARD_SUFFIX}"


def work_shard(index: int) -> str:
    """The stem of one shard's files in work/ (.done, .written, .sig.npy, .hassig.npy, .keys (split by key partition),
    .drop.json, .kept.jsonl.gz)."""
    return f"shard_{index:05d}"


def write_jsonl_gz(path: Path, records: list[dict], compresslevel: int = 6) -> None:
    """Atomically: a shard file is either complete or absent."""
    tmp = path.with_name(path.name + ".tmp")
    with naming(path), os.fdopen(open_new(tmp), "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as f:
        for r in records:  # mtime=0: the same records give the same bytes, run after run
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(tmp, path)


def read_jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


@dataclass
class PrepareReport(Record):
    """PREP/report.json: what cleaning read, kept and removed, and why."""

    format: str = FORMAT
    documents_in: int = 0
    documents_kept: int = 0
    documents_rejected: int = 0
    bytes_in: int = 0  # kept bytes counted after repairs and redaction, rejected as read
    bytes_kept: int = 0
    bytes_rejected: int = 0
    # documents read (reader skips aside) and kept, per kind (clean.kind_of: prose, web, code)
    documents_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected_by_stage: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids of the first documents removed
    duplicate_clusters: int = 0
    largest_duplicate_cluster: int = 0
    candidate_pairs_checked: int = 0  # near-duplicate checks, by true Jaccard
    repairs_and_redactions: dict[str, int] = field(default_factory=dict)
    redaction_examples: dict[str, list[str]] = field(default_factory=dict)  # pii:<kind> -> ids of documents redacted
    boilerplate_lines_removed: int = 0
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # per filter step: documents, dropped, edited
    reader: dict[str, Any] = field(default_factory=dict)  # what the source reader read, skipped and left unread
    shards: int = 0
    # the most resident memory any process that cleaned or wrote a shard reached (with one worker,
    # the main process itself); bounded by prepare.shard_bytes and data.max_document_bytes
    worker_peak_rss_bytes: int = 0
    # the peak resident memory of each step, the largest of its tasks: filter (phase 1, per shard), keys
    # (id, exact-key and line partitions), buckets (MinHash bands, by bucket partition), decisions (the candidates' verification,
    # in the main process), write (phase 3, per shard), and parent (the main process over the whole run:
    # reading the input, and with one worker every step). Each task's own peak on Linux (its process's
    # high-water mark reset as it starts), the process's so far elsewhere
    peak_rss_by_step: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    fingerprint: str = ""  # of the inputs and settings: the folder is complete for these only


class PreparedDir:
    """A prepared folder: its parts, its report, its shards."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def clean_dir(self) -> Path:
        return self.path / CLEAN

    @property
    def rejected_dir(self) -> Path:
        return self.path / REJECTED

    @property
    def work_dir(self) -> Path:
        return self.path / WORK

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    def clean_files(self) -> list[Path]:
        return sorted(self.clean_dir.glob(f"*{SHARD_SUFFIX}"))

    def rejected_files(self) -> list[Path]:
        """In name order: dedup_* before filter_*."""
        return sorted(self.rejected_dir.glob(f"*{SHARD_SUFFIX}"))

    def report(self) -> PrepareReport | None:
        """report.json, or None where there is none; a damaged one is refused in one line."""
        if not self.report_path.is_file():
            return None
        try:
            data = json.loads(self.report_path.read_text())
        except (UnicodeDecodeError, ValueError) as e:
            raise LmforgeError(f"{self.report_path} is damaged ({e}): prepare the folder again") from None
        if not isinstance(data, dict):
            raise LmforgeError(f"{self.report_path} is damaged (not a JSON object): prepare the folder again")
        return PrepareReport.from_dict(data)

    def write_report(self, report: PrepareReport, folder: Path | None = None) -> None:
        """The completion marker, written last (into `folder`, the building sibling, when given)."""
        data = report.to_dict()
        fp = data.pop("fingerprint")
        mark_complete((folder or self.path) / REPORT, fp, data)

    def is_own(self) -> bool:
        """A finished prepare (its report.json), or one under way (work/fingerprint)."""
        return (json_format_is(self.path, REPORT, FORMAT)
                or read_own_bytes(self.work_dir / WORK_FINGERPRINT) is not None)


PREPARED = OutputKind("prepared folder", (CLEAN, REJECTED, WORK, REPORT), REPORT, lambda f: PreparedDir(f).is_own())
