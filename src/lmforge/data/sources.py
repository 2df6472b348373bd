"""Read text sources as a stream of documents.

A source is a file, a folder (read recursively, in sorted order), a glob, or `builtin`: the
default corpus that exists wherever Python does (see `builtin_corpus`). Formats:

- text, markdown, source code: one document per file (files longer than
  `max_document_bytes` are cut at line boundaries into several documents, so no file is ever
  held whole);
- `.jsonl`: one document per line, text in a configurable field, id from an `id` field if any;
- `.parquet`: one document per row (same text field and id rule), read in record batches;
- `.warc` / `.warc.gz`: one document per HTML response, its main text extracted by resiliparse;
- `.html`, `.htm`, `.xhtml` (a saved web page): one document, its main text extracted the same way;
- text and JSONL files may be gzip (`.gz`) or zstandard (`.zst`) compressed.

Text that is not UTF-8 but reads cleanly as Windows-1252 (Latin-1 files) is decoded so and counted.
Binary files, unreadable or truncated files, entries that are not regular files (a broken link),
invalid or over-long JSON lines and empty documents are skipped and counted, never fatal, and so are
folders that cannot be listed and links to folders (not followed); with `record_skips` each skip is
also kept (file, line, reason, the raw text when there is any) so the cleaning stage can file it under
rejected/.

What a folder holds is listed once (`list_inputs`), before anything is read: hidden entries, the
paths the running command writes, and the folders lmforge wrote are left out (a prepared folder
named as a source is read as its clean/ only, and only when complete; found inside a source folder
it is skipped, as tokenized and run folders are). The listing's `identity` (path, size, modification
time of each file) goes into each stage's fingerprint, so a rerun after the corpus changed redoes it.

Documents carry a stable id (`path`, `path:line`, `path#part` or the record's own id) and their
source path.
"""

from __future__ import annotations

import ast
import glob
import gzip
import io
import hashlib
import json
import os
import re
import sys
import sysconfig
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Protocol, TypeVar

from lmforge.config import BUILTIN_SOURCE, KIND_NAMES, KINDS
from lmforge.folders import prepared, run, tokenized
from lmforge.errors import LmforgeError
from lmforge.figures import plural


@dataclass
class Document:
    id: str
    text: str
    source: str
    # what the reader knows of its kind (clean.kind_of decides): one of KINDS (data.kinds, a record's own
    # "kind", "web" for a page), RECORD (a record naming none: its layout decides), "" (the file's suffix)
    kind: str = ""


@dataclass
class Skip:
    """An item the reader could not turn into a document."""

    id: str
    reason: str
    source: str
    text: str = ""


class HasText(Protocol):
    text: str


Texted = TypeVar("Texted", bound=HasText)

MAX_SKIPPED_TEXT = 10_000  # raw text kept with a skipped item (enough to audit it)
MISSING_FIELD = "records without a '{}' string"
RECORD = "record"  # Document.kind of a JSONL or Parquet record that names no kind of its own
# fields that name a record's file (The Stack's "max_stars_repo_path"): its suffix tells code from text
PATH_FIELDS = ("path", "file_path", "filepath", "filename", "file_name", "max_stars_repo_path")


def skip_hint(reason: str) -> str:
    """What to do about a kind of skipped item, where there is something to do."""
    if reason.startswith(MISSING_FIELD.split("'")[0]):
        return " (is the text in another field? set data.text_field=NAME)"
    return ""


@dataclass
class SourceStats:
    """What the reader saw: kept documents and every skipped file or line, by reason."""

    files: int = 0
    documents: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, str] = field(default_factory=dict)
    record_skips: bool = False
    pending: list[Skip] = field(default_factory=list)
    # a byte cap (max_bytes) that stopped the reading, and what it left: never a silent truncation
    max_bytes: int = 0
    capped: bool = False
    unread_files: int = 0
    unread_bytes: int = 0  # on disk (compressed files count as stored)
    stopped_in: str = ""  # the file being read when the cap was reached (the rest of it unread too)
    opened: set[str] = field(default_factory=set)  # files opened so far, tracked only under a cap

    # the shards of prepared folders read as sources, and how many of the user's files they were cleaned from:
    # a summary counts those files, not the shards lmforge wrote (`lmforge run` reads its RUN/prepared)
    prepared_shards: set[str] = field(default_factory=set)
    prepared_from: int = 0
    shards_read: int = 0

    def open_file(self, path: Path) -> None:
        self.files += 1
        if str(path) in self.prepared_shards:
            self.shards_read += 1
        if self.max_bytes:
            self.opened.add(str(path))
            self.stopped_in = str(path)
    decoded: Counter = field(default_factory=Counter)  # text files read in a legacy encoding, by encoding

    def skip(self, reason: str, where: str, source: str = "", raw: str = "") -> None:
        self.skipped[reason] += 1
        self.skipped_examples.setdefault(reason, where)
        if self.record_skips:
            self.pending.append(Skip(where, reason, source or where, raw[:MAX_SKIPPED_TEXT]))

    def add_prepared(self, folder: Path, shards: list[Path]) -> None:
        """A prepared folder read as a source: its clean/ `shards`, and the files its report says it read."""
        try:
            self.prepared_from += int(prepared.PreparedDir(folder).report().reader["files"])
        except (OSError, LmforgeError, AttributeError, KeyError, TypeError, ValueError):
            return  # an older report without the reader's count: its shards are counted as files
        self.prepared_shards.update(map(str, shards))

    def files_read(self) -> str:
        if not self.shards_read:
            return plural(self.files, "file")
        return (f"{plural(self.files - self.shards_read + self.prepared_from, 'file')} (cleaned into "
                f"{plural(self.shards_read, 'shard')} by lmforge prepare)")

    def summary(self) -> str:
        parts = [f"{plural(self.documents, 'document')}, {self.bytes / 1e6:,.1f} MB from {self.files_read()}"]
        if self.decoded:
            parts.append(", ".join(f"{plural(n, 'file')} read as {enc} (not UTF-8)" for enc, n in self.decoded.items()))
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n:,} {r}{skip_hint(r)}" for r, n in self.skipped.most_common()))
        if self.capped:
            parts.append(self.cap_note())
        return "; ".join(parts)

    def cap_note(self) -> str:
        return (f"stopped at data.max_bytes={self.max_bytes:,}: {plural(self.unread_files, 'file')} "
                f"({self.unread_bytes / 1e6:,.1f} MB) left unread, and the rest of {self.stopped_in}; "
                "set data.max_bytes=0 to read everything")

    def reader_report(self) -> dict:
        out = {"files": self.files, "documents": self.documents, "bytes": self.bytes, "skipped": dict(self.skipped),
               "max_bytes": self.max_bytes, "capped": self.capped}
        if self.capped:
            out.update(unread_files=self.unread_files, unread_bytes=self.unread_bytes, stopped_in=self.stopped_in)
        return out

    def count_unread(self, files: Iterator[Path]) -> None:
        self.capped = True
        for path in files:
            if str(path) not in self.opened:
                self.unread_files += 1
                try:
                    self.unread_bytes += path.stat().st_size
                except OSError:
                    pass


BINARY_SNIFF_BYTES = 8192
MAX_INVALID_FRACTION = 0.05  # more replacement characters than this in the sniffed head: binary


COMPRESSED = {".gz", ".zst"}
# zlib.error: a .gz whose header reads but whose compressed body is damaged
CORRUPT: tuple[type[BaseException], ...] = (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, zlib.error)
try:
    import zstandard

    CORRUPT += (zstandard.ZstdError,)  # a garbage or truncated .zst
except ImportError:  # pragma: no cover - zstandard is a dependency
    pass
LEGACY_ENCODING = "cp1252"  # Windows-1252, a superset of Latin-1's printable characters


def _open_bytes(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        return io.BufferedReader(_ZstdFrames(open(path, "rb")))
    return open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """Zstandard frames one after another, failing (EOFError) when the file ends inside a frame:
    zstandard's stream_reader reads a cut-short file as a shorter one, silently losing its tail."""

    def __init__(self, f: IO[bytes]):
        import zstandard

        self._zstd, self._f, self._dobj, self._out = zstandard, f, None, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._out:
            chunk = self._f.read(1 << 16)
            if not chunk:
                if self._dobj is not None:
                    raise EOFError("the compressed stream ends inside a zstd frame (truncated)")
                return 0
            while chunk:
                self._dobj = self._dobj or self._zstd.ZstdDecompressor().decompressobj()
                self._out += self._dobj.decompress(chunk)
                chunk = self._dobj.unused_data if self._dobj.eof else b""
                if self._dobj.eof:
                    self._dobj = None
        n = min(len(b), len(self._out))
        b[:n], self._out = self._out[:n], self._out[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _base_suffix(path: Path) -> str:
    """'.jsonl' for 'x.jsonl.gz'."""
    return Path(path.stem).suffix if path.suffix in COMPRESSED else path.suffix


def text_encoding(head: bytes) -> str | None:
    """utf-8; cp1252 for a legacy 8-bit text file (Latin-1 prose is not valid UTF-8); None for binary."""
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace")[:-1]  # a character cut by the sniff window is no evidence
    invalid = text.count("\ufffd")
    mostly_utf8 = invalid <= MAX_INVALID_FRACTION * max(len(text), 1)
    if invalid == 0 or (mostly_utf8 and sum(ord(c) > 127 for c in text) > 2 * invalid):  # real UTF-8, a few bad bytes
        return "utf-8"
    legacy = head.decode(LEGACY_ENCODING, errors="replace")
    unprintable = sum(not (c.isprintable() or c in "\n\r\t\f") for c in legacy)
    if unprintable <= MAX_INVALID_FRACTION * len(legacy):
        return LEGACY_ENCODING
    return "utf-8" if mostly_utf8 else None


def _read_text_file(path: Path, stats: SourceStats, max_doc_bytes: int) -> Iterator[Document]:
    part, buf, size = 0, [], 0
    try:
        with _open_bytes(path) as raw:
            head = raw.read(BINARY_SNIFF_BYTES)
            encoding = text_encoding(head)
            if encoding is None:
                stats.skip("binary files", str(path), str(path))
                return
            if encoding != "utf-8":
                stats.decoded[encoding] += 1
            # newline="": the text exactly as stored (CRLF too), so a rejected record can be compared byte for byte
            stream = io.TextIOWrapper(io.BufferedReader(_Prepend(head, raw)), encoding=encoding, errors="replace",
                                      newline="")
            # readline's limit cuts even a single 100 MB line into bounded pieces
            while line := stream.readline(max_doc_bytes):
                buf.append(line)
                size += len(line)
                if size >= max_doc_bytes:
                    piece = "".join(buf)
                    if piece.strip():
                        yield Document(f"{path}#{part}", piece, str(path))
                    else:  # a run of blank lines is no document; counted, with its bytes, not dropped silently
                        stats.skip("blank pieces of long files", f"{path}#{part}", str(path), piece)
                    part, buf, size = part + 1, [], 0
    except CORRUPT as e:
        stats.skip("unreadable or truncated files", f"{path}: {e}", str(path), "".join(buf))
        return
    text = "".join(buf)
    if text.strip():
        yield Document(f"{path}#{part}" if part else str(path), text, str(path))
    elif part == 0:
        stats.skip("empty files", str(path), str(path))


class _Prepend(io.RawIOBase):
    """A byte stream that first replays the sniffed head, then the rest of the file."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        chunk = self.rest.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


# JSON's \uXXXX escapes can spell half of a UTF-16 pair alone: such a string has no UTF-8 form
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _record_document(record, where: str, path: Path, stats: SourceStats, text_field: str) -> Document | None:
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        stats.skip(MISSING_FIELD.format(text_field), where, str(path), json.dumps(record, default=str))
        return None
    if not text.strip():
        stats.skip("empty documents", where, str(path), text)
        return None
    doc_id = record.get("id")
    doc_id = str(doc_id) if doc_id is not None else where
    if LONE_SURROGATE.search(text) or LONE_SURROGATE.search(doc_id):
        stats.skip("records with a lone surrogate escape (not UTF-8)", where, str(path), json.dumps(record))
        return None
    return Document(doc_id, text, str(path), _record_kind(record))


def _record_kind(record: dict) -> str:
    """A record's own kind (prepare's clean/ writes one), its file name's suffix (`path` and the like:
    ".py" is code), else RECORD: its text's layout decides."""
    if record.get("kind") in KINDS:
        return record["kind"]
    name = next((record[f] for f in PATH_FIELDS if isinstance(record.get(f), str)), "")
    if Path(name).suffix.lower() in CODE_SUFFIXES:
        return "code"
    return RECORD


def _read_jsonl(path: Path, stats: SourceStats, text_field: str, max_line_bytes: int) -> Iterator[Document]:
    lineno = 0
    try:
        with _open_bytes(path) as raw:
            stream = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
            while line := stream.readline(max_line_bytes):
                lineno += 1
                where = f"{path}:{lineno}"
                if not line.endswith(b"\n") and len(line) >= max_line_bytes:
                    while (rest := stream.readline(max_line_bytes)) and not rest.endswith(b"\n"):
                        pass  # drain the over-long line without holding it
                    stats.skip("over-long lines", where, str(path), line[:MAX_SKIPPED_TEXT].decode("utf-8", "replace"))
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                # ValueError: also an integer of more digits than Python converts (sys.get_int_max_str_digits);
                # RecursionError: arrays or objects nested deeper than the parser's stack
                except (ValueError, RecursionError):
                    stats.skip("invalid JSON lines", where, str(path), line.decode("utf-8", "replace"))
                    continue
                doc = _record_document(record, where, path, stats, text_field)
                if doc is not None:
                    yield doc
    except CORRUPT as e:
        stats.skip("unreadable or truncated files", f"{path}:{lineno + 1}: {e}", str(path))


def _read_parquet(path: Path, stats: SourceStats, text_field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        if text_field not in names:
            stats.skip(f"parquet files without a '{text_field}' column", str(path), str(path))
            return
        columns = [text_field] + [c for c in ("id", "kind", *PATH_FIELDS) if c in names and c != text_field]
        row = 0
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            for record in batch.to_pylist():
                row += 1
                doc = _record_document(record, f"{path}:{row}", path, stats, text_field)
                if doc is not None:
                    yield doc
    except (OSError, pa.ArrowException) as e:
        stats.skip("unreadable or truncated files", f"{path}: {e}", str(path))


def _read_warc(path: Path, stats: SourceStats) -> Iterator[Document]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    try:
        for record in ArchiveIterator(open(path, "rb"), record_types=WarcRecordType.response, parse_http=True):
            url = record.headers.get("WARC-Target-URI", "")
            where = record.headers.get("WARC-Record-ID", "") or f"{path}:{url}"
            content_type = record.http_headers.get("Content-Type", "") if record.http_headers else ""
            if "html" not in content_type.lower():
                stats.skip("non-HTML web records", where, str(path))
                continue
            doc = _web_page(record.reader.read(), where, url or str(path), stats)
            if doc is not None:
                yield doc
    except CORRUPT as e:
        stats.skip("unreadable or truncated files", f"{path}: {e}", str(path))


def _read_html_file(path: Path, stats: SourceStats) -> Iterator[Document]:
    """A saved web page (.html, .htm, .xhtml, maybe compressed): its main text, as a WARC record's."""
    try:
        with _open_bytes(path) as raw:
            body = raw.read()
    except CORRUPT as e:
        stats.skip("unreadable or truncated files", f"{path}: {e}", str(path))
        return
    doc = _web_page(body, str(path), str(path), stats)
    if doc is not None:
        yield doc


def _web_page(body: bytes, where: str, source: str, stats: SourceStats) -> Document | None:
    """The main text of an HTML page (menus, footers and scripts left out), or None, counted."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    html = bytes_to_str(body, detect_encoding(body))
    text = extract_plain_text(html, main_content=True)
    if not text.strip():
        stats.skip("web pages without text", where, source, html)
        return None
    return Document(where, text, source, "web")


WEB_SUFFIXES = {".html", ".htm", ".xhtml"}  # a saved web page: its main text is the document
CODE_SUFFIXES = {  # a source file: cleaned as code (clean.kind_of)
    ".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb", ".php", ".sh", ".pl",
    ".lua", ".scala", ".kt", ".swift", ".cs", ".m", ".r", ".sql", ".el", ".hs", ".ml", ".jl", ".tex", ".css",
}


def _read_path(path: Path, stats: SourceStats, text_field: str, max_doc_bytes: int) -> Iterator[Document]:
    stats.open_file(path)
    suffix = _base_suffix(path)
    if not path.is_file():  # opening a pipe would wait forever
        stats.skip("not regular files (broken links, pipes, devices)", str(path), str(path))
    elif suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, stats, text_field, max_doc_bytes)
    elif suffix == ".parquet":
        yield from _read_parquet(path, stats, text_field)
    elif suffix == ".warc" or path.name.endswith((".warc.gz", ".warc.zst")):
        yield from _read_warc(path, stats)
    elif suffix in WEB_SUFFIXES:
        yield from _read_html_file(path, stats)
    else:
        yield from _read_text_file(path, stats, max_doc_bytes)


# ---------------------------------------------------------------- listing the files a source names

# Folders lmforge writes, recognised by their layout (lmforge/folders/ names their entries).
HALF_WRITTEN_PARTS = (prepared.CLEAN, prepared.REJECTED)  # work/ goes when report.json is written, and may be gone before it
SKIPPED_FOLDERS = {"prepared": "lmforge prepared folders inside a source (name one as a source to read "
                               "its clean/)",
                   "tokenized": "lmforge tokenized folders (token ids, not text)",
                   "tokenizing": "lmforge tokenized folders (token ids, not text)",
                   "run": "lmforge run folders (a model and its logs, not text)"}
REFUSED_SOURCES = {  # named as a source itself: what to give instead
    "tokenized": "is a tokenized folder (token ids, not text): give it alone to train --data to train on its "
                 "tokens, or give text sources",
    "tokenizing": f"is a half-written tokenized folder (no {tokenized.META}): finish it by running the same lmforge "
                  "tokenize again",
    "run": "is an lmforge run folder, not text: give the sources it was trained on (its saved config names them)"}


class _Lister:
    """Lists the files of one source in reading order, never inside `exclude` (the paths the running
    command writes) and never inside a folder lmforge wrote: a prepared folder named as a source (or
    matched by a glob) gives its clean/ only, and only when complete; found inside another folder it is
    derived data, like a tokenized or run folder. What it does not read (such a folder, an unreadable
    folder, a link to a folder) is kept in `skipped`, for the reader to count."""

    def __init__(self, exclude: Iterable[str | Path] = ()):
        self.exclude = {os.path.realpath(p) for p in exclude}
        self.skipped: list[tuple[str, str]] = []  # (reason, where)
        self.prepared: list[Path] = []  # prepared folders whose clean/ is read
        self._kinds: dict[str, str] = {}  # real path -> kind: a glob asks about the same folders for every match

    def source(self, source: str) -> list[Path]:
        if any(ch in source for ch in "*?["):
            return self._glob(source)
        path = Path(source)
        if path.is_file():
            return [path]
        if path.is_dir():
            kind = self._kind(path)
            if kind in REFUSED_SOURCES:
                raise LmforgeError(f"source {source} {REFUSED_SOURCES[kind]}")
            return self._folder(path)
        raise LmforgeError(f"source {source!r} does not exist: give a file, folder or glob (or 'builtin')")

    def _glob(self, pattern: str) -> list[Path]:
        """A glob's folders are read as folder sources are (a tokenized or run one skipped, counted); a matched
        file inside a folder that the walk would not read is left out too. Each file once."""
        files: list[Path] = []
        top = _fixed_part(pattern)
        for match in sorted(Path(p) for p in glob.glob(pattern, recursive=True)):
            if self._read_within(match, top):
                files.extend(self._folder(match) if match.is_dir() else [match])
        files = list(dict.fromkeys(files))  # `**` matches a folder and the files in it
        if not files:
            raise LmforgeError(f"source {pattern!r} matches no files: check the pattern")
        return files

    def _read_within(self, path: Path, top: Path) -> bool:
        """Whether the folders from `top` down to `path` let the walk read `path`."""
        inside = path.relative_to(top).parents if path.is_relative_to(top) else ()
        for folder in (top / p for p in reversed(inside)):
            real = os.path.realpath(folder)
            kind = self._kind(folder, real)
            if real in self.exclude:
                return False
            if kind == "prepared":  # as if the glob named it: its clean/ only
                if not path.is_relative_to(folder / prepared.CLEAN):
                    return False
                self.prepared.append(folder)
            elif kind in SKIPPED_FOLDERS:
                return False
        return os.path.realpath(path) not in self.exclude

    def _kind(self, folder: Path, real: str = "") -> str:
        real = real or os.path.realpath(folder)
        if real not in self._kinds:
            self._kinds[real] = self._layout(folder, real)
        return self._kinds[real]

    def _layout(self, folder: Path, real: str) -> str:
        """'prepared', 'tokenized', 'tokenizing', 'run' or '' (the user's); a half-written prepared folder
        is refused. An entry this command writes is no evidence: `prepare X --out X` reads X as the user's."""

        def has(name: str, is_dir: bool) -> bool:
            path = os.path.join(real, name)
            return path not in self.exclude and (os.path.isdir(path) if is_dir else os.path.isfile(path))

        if has(tokenized.TOKENIZER_FILE, False) and has(tokenized.META, False):
            return "tokenized"
        if has(tokenized.TOKENIZER_FILE, False) and folder.name.endswith((".tmp", ".tokenize-building")):
            return "tokenizing"  # a tokenize still writing (or killed) in its building folder (OUT.tmp before 0.2)
        if has(prepared.REPORT, False) and has(prepared.CLEAN, True):
            return "prepared"
        if all(has(name, False) for name in (run.CONFIG_FILE, run.METRICS_FILE)):
            return "run"
        if all(has(name, True) for name in HALF_WRITTEN_PARTS):
            raise LmforgeError(f"{folder} is a half-written prepared folder (no {prepared.REPORT}): finish it by "
                               f"running the same lmforge prepare again, or give its sources instead")
        return ""

    def _folder(self, folder: Path) -> list[Path]:
        """The files of a folder the user named (as a source, or by a glob)."""
        files: list[Path] = []
        real = os.path.realpath(folder)
        kind = self._kind(folder, real)
        if kind == "prepared":  # its kept documents, not rejected/ or work/
            self.prepared.append(folder)
            folder, real = folder / prepared.CLEAN, os.path.join(real, prepared.CLEAN)
        elif folder.name == prepared.CLEAN and (folder.parent / prepared.REPORT).is_file():  # as `lmforge run` names it
            self.prepared.append(folder.parent)
        elif kind in SKIPPED_FOLDERS:
            self.skipped.append((SKIPPED_FOLDERS[kind], str(folder)))
            return []
        self._walk(folder, real, files, real)
        return sorted(files)

    def _walk(self, folder: Path, real: str, files: list[Path], root: str) -> None:
        """The files under `folder` (`real` its resolved path), never through a link out of `root`, the
        folder the user named: a link in a corpus to /etc/passwd would otherwise be read, and its text
        kept in rejected/ and shown in the report."""
        try:
            with os.scandir(real) as it:
                entries = list(it)
        except OSError as e:
            self.skipped.append(("unreadable folders", f"{folder}: {e.strerror}"))
            return
        for entry in entries:
            path, entry_real = folder / entry.name, os.path.join(real, entry.name)
            if entry.name.startswith(".") or entry_real in self.exclude:
                continue  # hidden (lmforge's lock files among them), or written by this command
            if entry.is_dir(follow_symlinks=False):
                kind = self._kind(path, entry_real)
                if kind in SKIPPED_FOLDERS:
                    self.skipped.append((SKIPPED_FOLDERS[kind], str(path)))
                else:
                    self._walk(path, entry_real, files, root)
            elif entry.is_symlink() and path.is_dir():  # not followed: a link can loop back
                self.skipped.append(("links to folders (not followed)", str(path)))
            elif entry.is_symlink() and os.path.commonpath([root, os.path.realpath(entry_real)]) != root:
                self.skipped.append(("links out of the source folder (not followed)", str(path)))
            else:
                files.append(path)


def _fixed_part(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard."""
    parts = Path(pattern).parts
    return Path(*parts[:next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))])


@dataclass
class Inputs:
    """The files the sources name, listed once: the reader reads exactly these, and `identity`
    (which a stage's fingerprint holds) stats exactly these, so the two cannot disagree."""

    sources: list[str]
    files: list[list[Path]]  # per source, in reading order (the built-in corpus lists its own)
    skipped: list[list[tuple[str, str]]]  # per source: (reason, where) of what the listing could not read
    kinds: list[str]  # per source: its documents' kind from data.kinds, "" = guessed per document
    prepared: list[Path] = field(default_factory=list)  # prepared folders among the sources (their clean/ is read)

    def all_files(self) -> Iterator[Path]:
        for source, files in zip(self.sources, self.files):
            yield from _builtin_files() if source == BUILTIN_SOURCE else files

    def identity(self) -> dict:
        """Path, size and modification time of every file (stat only: cheap for thousands) and what
        was skipped: an edited, added or removed file changes it, so a rerun redoes the stage."""
        digest = hashlib.sha256()

        def record(*fields) -> None:  # surrogateescape: a file name need not be UTF-8
            digest.update(("\t".join(map(str, fields)) + "\n").encode("utf-8", "surrogateescape"))

        count = size = 0
        for source, skipped, kind in zip(self.sources, self.skipped, self.kinds):
            record("source", source, sys.version if source == BUILTIN_SOURCE else "", *([kind] if kind else []))
            for reason, where in skipped:
                record("skipped", reason, where)
        for path in self.all_files():
            try:
                st = path.stat()
            except OSError as e:
                record("file", path, e.strerror)
                continue
            record("file", path, st.st_size, st.st_mtime_ns)
            count, size = count + 1, size + st.st_size
        return {"files": count, "bytes": size, "digest": digest.hexdigest()[:16]}


def list_inputs(sources: list[str], exclude: Iterable[str | Path] = (), kinds: list[str] = ()) -> Inputs:
    """The files `sources` name, never inside `exclude` (the paths the running command writes), with
    each source's kind from `kinds` (data.kinds). Fails fast, before any work, on a source that does
    not exist or is no text."""
    per_source = source_kinds(sources, kinds)
    files, skipped, prepared_folders = [], [], []
    for source in sources:
        lister = _Lister(exclude)
        files.append([] if source == BUILTIN_SOURCE else lister.source(source))
        skipped.append(lister.skipped)
        prepared_folders += [p for p in dict.fromkeys(lister.prepared) if p not in prepared_folders]
    return Inputs(list(sources), files, skipped, per_source, prepared_folders)


def source_kinds(sources: list[str], kinds: list[str]) -> list[str]:
    """Each source's kind from data.kinds' entries ("" where none is set): "SOURCE=KIND" for one
    source (written as in data.sources, or the same path otherwise written), "KIND" for every other."""
    every, named = "", {}
    for entry in kinds:
        source, _, name = entry.rpartition("=")
        if name not in KIND_NAMES:
            raise LmforgeError(f"data.kinds: {entry!r}: give SOURCE=KIND or KIND, the kind one of {', '.join(KIND_NAMES)}")
        kind = KIND_NAMES[name]
        if not source:
            every = kind
            continue
        match = [s for s in sources if os.path.normpath(s) == os.path.normpath(source)]
        if not match:
            raise LmforgeError(f"data.kinds: {entry!r} names no source of this command ({', '.join(sources)}): "
                               "write the source as the sources are written")
        named[match[0]] = kind
    return [named.get(s, every) for s in sources]


# ---------------------------------------------------------------- the built-in corpus

DOC_SUFFIXES = {"", ".txt", ".md", ".rst", ".text"}


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _pydoc_topics() -> Iterator[Document]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        return
    for name in sorted(topics):
        yield Document(f"pydoc_data.topics:{name}", topics[name], "pydoc_data.topics")


def _stdlib_files() -> list[Path]:
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(_stdlib_dir()):
        subfolders[:] = [name for name in subfolders if name not in skip]  # never walked: site-packages is large
        files.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return sorted(files)


def _docstrings(path: Path, source: str) -> str:
    """Module, class and function docstrings of one file as prose, in source order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    parts = []
    for node in nodes:
        doc = ast.get_docstring(node)
        if doc and len(doc) > 40:
            parts.append(doc if node is tree else f"{node.name}: {doc}")
    return "\n\n".join(parts)


def _usr_share_doc() -> list[Path]:
    root = Path("/usr/share/doc")
    if not root.is_dir():
        return []
    files = []
    for p in sorted(root.rglob("*")):
        suffix = _base_suffix(p) if p.suffix == ".gz" else p.suffix
        if p.is_file() and not p.is_symlink() and suffix in DOC_SUFFIXES:
            files.append(p)
    return files


def builtin_corpus(stats: SourceStats, max_doc_bytes: int) -> Iterator[Document]:
    """Text on every machine with Python, read in place, interleaved so any prefix is a mix.

    Three kinds: the Python documentation topics (prose about code), the standard library's
    docstrings (prose) and its source files (code), and the plain-text docs in /usr/share/doc
    (changelogs, READMEs, licences). The streams are interleaved by bytes, so a byte cap
    (`data.max_bytes`) takes a prefix that holds the kinds in equal shares while each lasts.
    """
    docs = (d for p in _usr_share_doc() for d in _read_path(p, stats, "text", max_doc_bytes))
    # balanced by bytes, not documents: one changelog can outweigh a hundred source files
    streams = {"topics": _pydoc_topics(), "code": _stdlib_stream(stats), "docs": docs}
    emitted = dict.fromkeys(streams, 0)
    while streams:
        name = min(streams, key=emitted.__getitem__)
        doc = next(streams[name], None)
        if doc is None:
            del streams[name]
        else:
            emitted[name] += len(doc.text)
            yield doc


def _stdlib_stream(stats: SourceStats) -> Iterator[Document]:
    for path in _stdlib_files():
        stats.open_file(path)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            stats.skip("unreadable or truncated files", str(path), str(path))
            continue
        rel = path.relative_to(_stdlib_dir())
        doc = _docstrings(path, source)
        if doc:
            yield Document(f"stdlib-docstrings:{rel}", doc, f"{path}#docstrings")  # prose, not code
        if source.strip():
            yield Document(f"stdlib:{rel}", source, str(path))


# ---------------------------------------------------------------- the entry point

def iter_documents(
    sources: list[str] | Inputs,
    stats: SourceStats | None = None,
    text_field: str = "text",
    max_bytes: int = 0,
    max_document_bytes: int = 8_000_000,
) -> Iterator[Document]:
    """Stream documents from `sources` (or the files already listed for them) in a fixed order; stop
    after `max_bytes` of text (0: all), and then count in `stats` the files left unread."""
    stats = stats if stats is not None else SourceStats()
    stats.max_bytes = max_bytes
    inputs = sources if isinstance(sources, Inputs) else list_inputs(sources)
    for folder in inputs.prepared:
        stats.add_prepared(folder, [p for listed in inputs.files for p in listed if p.is_relative_to(folder / prepared.CLEAN)])

    def stream() -> Iterator[Document]:
        for source, files, skipped, kind in zip(inputs.sources, inputs.files, inputs.skipped, inputs.kinds):
            for reason, where in skipped:
                stats.skip(reason, where)
            if source == BUILTIN_SOURCE:
                docs = builtin_corpus(stats, max_document_bytes)
            else:
                docs = (d for path in files for d in _read_path(path, stats, text_field, max_document_bytes))
            for doc in docs:
                doc.kind = kind or doc.kind  # the user's word over the reader's guess
                yield doc

    docs = stream()
    for doc in docs:
        n = len(doc.text.encode("utf-8"))
        stats.documents += 1
        stats.bytes += n
        yield doc
        if max_bytes and stats.bytes >= max_bytes:
            pending = len(stats.pending)
            if next(docs, None) is not None:  # the cap cut something off (not merely reached the end)
                stats.count_unread(inputs.all_files())
            del stats.pending[pending:]  # what the look-ahead skipped lies beyond the cap too
            return


def batched(items: Iterable[Texted], max_items: int, max_bytes: int) -> Iterator[list[Texted]]:
    """Consecutive runs of `items` (each with a `.text`: documents, skips, pieces of documents) of at
    most `max_items` items and `max_bytes` bytes of text (UTF-8), so that what a run holds in memory
    follows the settings, not the documents: an item larger than `max_bytes` goes alone. A run is
    handed on as soon as it is full."""
    batch: list[Texted] = []
    size = 0
    for item in items:
        n = len(item.text.encode("utf-8"))
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
        if len(batch) == max_items or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _builtin_files() -> list[Path]:
    return _stdlib_files() + _usr_share_doc()
