"""Small file helpers every stage shares: the rule for writers, atomic writes, completion by fingerprint.

The rule for every writer: lmforge writes only inside folders it made or that are empty. An output
folder is claimed first (`claim_output`): a symbolic link, a file, or a non-empty folder that holds
no earlier output of the same kind is refused in one line; `--force` lets lmforge add its own
entries beside a user's files, and never replaces one of them. Replacing lmforge's own earlier
output builds the new one in a temporary sibling and moves in only lmforge's own entries
(`install`); nothing else in the folder is touched. Files are written without following symbolic
links (`O_NOFOLLOW`, or a fresh name and a rename, which replaces a link rather than its target).

A stage's output folder is complete when its marker file (a JSON object) holds the fingerprint
of the inputs and settings that made it; any other state (absent, half written, another
fingerprint) means "redo". Writes go to a temporary name and are renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lmforge.errors import LmforgeError

NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _tmp_name(path: Path) -> Path:
    # the process id keeps two writers (a killed run's leftover, a parallel worker) apart
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def open_new(path: Path) -> int:
    """A file descriptor on a new, empty `path`: never a file (or a link) that was there before."""
    try:
        os.unlink(path)  # a leftover of a killed writer, or a link: unlinking removes the link, not its target
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`path` replaced by `data` in one rename; a symbolic link at `path` is replaced, never followed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with naming(path), os.fdopen(open_new(tmp), "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """A failed write names no file (disk full, a file size limit): name `path` for the one-line error."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def append_text(path: str | Path, text: str) -> None:
    """Append to lmforge's own file `path`, refusing one that a symbolic link stands for."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LmforgeError(f"{path} is a symbolic link and lmforge never writes through one: "
                               f"remove the link (or move the run) and run again") from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


def read_own_bytes(path: str | Path) -> bytes | None:
    """The bytes of the regular file `path`, or None when it is missing or a symbolic link: what
    lmforge embeds or copies from its own folders never comes from elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read() if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_readable_as_any(path: str | Path) -> None:
    """Give a file written by a library that creates 0600 files (safetensors) the mode every other
    file gets (0644 under the usual umask), so whoever may read the rest of a folder may read it."""
    os.chmod(path, 0o666 & ~_umask())


# ---------------------------------------------------------------- output folders

@dataclass(frozen=True)
class OutputKind:
    """What one stage writes into its output folder: its top-level `entries` (nothing else there is
    lmforge's), the `marker` among them that is written last, and how to recognise the folder as
    one this stage wrote (`is_own`, from its marker or format file)."""

    name: str
    entries: tuple[str, ...]
    marker: str
    is_own: Callable[[Path], bool]


def json_format_is(folder: Path, name: str, fmt: str) -> bool:
    """Whether `folder/name` is a regular file holding a JSON object with `"format": fmt`."""
    data = read_own_bytes(folder / name)
    try:
        found = json.loads(data) if data is not None else None
    except ValueError:
        return False
    return isinstance(found, dict) and found.get("format") == fmt


def refuse_link(path: Path, what: str = "folder") -> None:
    if path.is_symlink():
        raise LmforgeError(f"{path} is a symbolic link and lmforge never writes through one: give the {what} "
                           f"it points to, or remove the link")


def claim_output(folder: str | Path, kind: OutputKind, force: bool = False, option: str = "--out") -> bool:
    """May `kind` be written into `folder`? Returns whether the folder already holds lmforge's output
    of this kind (to be replaced or reused); refuses, in one line, anything else that is not new or empty."""
    folder = Path(folder)
    refuse_link(folder)
    if not folder.exists():
        nearest = next((p for p in folder.parents if p.exists()), None)
        if nearest is not None and not nearest.is_dir():
            raise LmforgeError(f"{option} {folder}: {nearest} is a file, not a folder: choose another {option}")
        return False
    if not folder.is_dir():
        raise LmforgeError(f"{option} {folder} is a file, not a folder: give a new or empty folder")
    if kind.is_own(folder):
        return True
    if not any(folder.iterdir()):
        return False
    if not force:
        raise LmforgeError(f"{option} {folder} is not empty and holds no {kind.name} written by lmforge: give a new "
                           f"or empty folder, or add --force to write lmforge's files beside yours (never over them)")
    clash = next((name for name in kind.entries if os.path.lexists(folder / name)), None)
    if clash is not None:
        raise LmforgeError(f"{folder / clash} is in the way and is not lmforge's; --force never replaces your files: "
                           f"move it away or give another {option}")
    return False


def glob_root(source: str) -> Path | None:
    """The fixed folder part of a glob source ('data/**/*.txt' -> data), or None for a plain path."""
    parts = Path(source).parts
    magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    return Path(*parts[:magic]) if magic is not None else None


def refuse_inside_sources(out: Path, sources: list[str], option: str = "--out") -> None:
    """An output folder that is a source folder (or the root of a recursive glob) is refused: lmforge
    would write among the files it reads. A folder *inside* a source is allowed: the listing leaves
    out what the command writes (data/sources.py), so `tokenize SRC --out SRC/tok` reads your files only."""
    for source in sources:
        folder = glob_root(source) if "**" in source else Path(source)
        if folder is not None and folder.is_dir() and Path(out).resolve() == folder.resolve():
            raise LmforgeError(f"{option} {out} is the source folder {folder}: lmforge never writes among the files "
                               f"it reads; give an {option} outside it, or a new folder inside it")


def building_folder(folder: Path, stage: str) -> Path:
    """The temporary sibling a stage builds its output in before `install` moves it into place."""
    folder = folder.absolute()  # '.' has no name to build a sibling's from
    return folder.with_name(f".{folder.name}.{stage}-building")


@contextmanager
def discarded_on_error(build: Path) -> Iterator[Path]:
    """The temporary sibling `build`, removed when building it fails: a failed build leaves nothing."""
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def remove(path: Path) -> None:
    """Remove lmforge's own entry `path`: a link itself (never what it points to), a file or a folder."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def remove_own(folder: Path, kind: OutputKind) -> None:
    """Remove what `kind` wrote into `folder`, its marker first (so it never looks complete), and
    nothing else."""
    for name in (kind.marker, *kind.entries):
        remove(folder / name)


def install(build: Path, folder: Path, kind: OutputKind) -> None:
    """Move `kind`'s entries from the sibling `build` into `folder`, replacing lmforge's earlier ones:
    the old marker goes first and the new one comes last, so an interruption never leaves a folder
    that looks complete; every other entry of `folder` stays as it was."""
    folder.mkdir(parents=True, exist_ok=True)
    remove(folder / kind.marker)
    for name in (*[n for n in kind.entries if n != kind.marker], kind.marker):
        old, new = folder / name, build / name
        if os.path.lexists(old):
            aside = folder / f".{name}.old{os.getpid()}"
            os.replace(old, aside)
            remove(aside)
        if os.path.lexists(new):
            os.replace(new, old)
    shutil.rmtree(build)


@contextmanager
def output_errors(stage: str, folder: str | Path) -> Iterator[None]:
    """A full disk or an unwritable folder while `stage` writes `folder`: one line naming the file and
    what to do, not a traceback. Other errors pass through unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno not in NO_SPACE | NOT_ALLOWED:
            raise
        where = e.filename or folder
        todo = ("free disk space (or choose another --out) and run it again" if e.errno in NO_SPACE
                else f"make {folder} writable or choose another --out")
        raise LmforgeError(f"{stage}: cannot write {where}: {e.strerror}; {todo}") from None


# ---------------------------------------------------------------- completion

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


def mark_complete(marker: str | Path, fp: str, contents: dict[str, Any], indent: int = 1) -> None:
    """Write the marker last, atomically: `contents` plus the fingerprint that `is_complete` checks
    (as its last key, where every marker lmforge wrote has kept it)."""
    atomic_write_text(marker, json.dumps({**contents, "fingerprint": fp}, indent=indent))


def inside(folder: str | Path, name: object) -> Path | None:
    """`folder / name` for a name read from a file (a shard list, a checksum table), or None when it
    would lead out of `folder` (an absolute path, `..`, a link pointing elsewhere): a file a reader
    trusts must not send it to /etc/passwd or into another folder."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        return None
    path = Path(folder) / name
    return path if path.resolve().is_relative_to(Path(folder).resolve()) else None
