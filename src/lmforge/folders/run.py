"""The run folder as one object: every file of a run is named here (lmforge/folders/ names the others').

    RUN/
      config.yaml            the fully resolved config (a resumed run must match it)
      tokenizer.json         copied from the tokenized folder, so the run is self-contained
      metrics.jsonl          one JSON object per log or eval event (TrainRecord, ValRecord)
      summary.json           final validation figures, throughput, model size; `complete` (Summary)
      checkpoints/step-N/    model.safetensors, state.safetensors, state.json (training/checkpoint.py)
      checkpoints/latest     name of the newest complete checkpoint
      prepared/              lmforge run's cleaned sources (a PREP folder)
      tokens/                the tokenized folder, when the run tokenized its own sources
      inspect/               lmforge inspect's pictures
      tensorboard/           TensorBoard event files, when tensorboard is installed (training/events.py)
      report.html            lmforge report: the run on one page (report.md + report-files/ with --format md)
      diverged.json          a sweep run that diverged: the reason (lmforge scale)
      error.txt              a sweep run that failed: the error (lmforge scale)
      train.log              a sweep run's log (lmforge scale)
      .lock                  held by the one process writing the run (lmforge/locks.py)

Relative paths. `data.tokenized` in a saved RUN/config.yaml, when relative, is relative to the run
folder (so a run and its tokens can be moved together; the sweep runner writes `../../tokens`).
Paths a user gives on the command line or to `train()` are relative to the current directory;
`tokenized_for_config` turns such a path into the run-relative form once, before the config is saved.

    run = RunDir("runs/tiny")
    run.config.train.objective; run.objective; run.tokens_dir; run.summary().val_loss; run.metrics()
    tok = run.tokenizer()

Nothing here imports torch: opening a run's model is lmforge/open_run.py's (`open_run(run)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from lmforge import figures
from lmforge.config import Config, read_config, save_config
from lmforge.errors import LmforgeError
from lmforge.files import append_text, atomic_write_text, inside, refuse_link
from lmforge.folders.prepared import PreparedDir
from lmforge.folders.record import Record
from lmforge.folders.tokenized import TOKENIZER_FILE
from lmforge.locks import FolderLock

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
TOKENS = "tokens"
PREPARED = "prepared"
INSPECT = "inspect"
TENSORBOARD = "tensorboard"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_FILES = "report-files"
DIVERGED_FILE = "diverged.json"
ERROR_FILE = "error.txt"
TRAIN_LOG = "train.log"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"\d+")  # a complete one: no .tmp, no other suffix
LOCK_FILE = ".lock"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def looks_like(folder: Path) -> str:
    """What another lmforge folder is, by the file that marks it, for a refusal that names it."""
    from lmforge.folders import prepared, sweep, tokenized

    # a run keeps its weights in checkpoints/; an exported model folder (lmforge export) at the top
    marks = [(tokenized.META, "a tokenized folder"), (prepared.REPORT, "a prepared folder"),
             (sweep.SWEEP_FILE, "a sweep folder"), (MODEL_FILE, "an exported model folder")]
    found = next((f"it looks like {kind}: it holds {name}" for name, kind in marks if (folder / name).is_file()), None)
    return found or f"it holds none of {CONFIG_FILE}, {METRICS_FILE}, {SUMMARY_FILE}, {CHECKPOINTS}/"


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder that `path` is, or lies inside (links resolved), or None. A run folder is known
    by its checkpoints/ beside its config.yaml or metrics.jsonl."""
    for folder in (Path(path).resolve(), *Path(path).resolve().parents):
        if (folder / CHECKPOINTS).is_dir() and ((folder / CONFIG_FILE).is_file() or (folder / METRICS_FILE).is_file()):
            return folder
    return None


def warn(message: str) -> None:
    print(f"lmforge: warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class CheckpointDir:
    """One RUN/checkpoints/step-N/ folder (its contents are written by training/checkpoint.py)."""

    path: Path

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def state_tensors(self) -> Path:
        return self.path / STATE_TENSORS

    @property
    def state_json(self) -> Path:
        return self.path / STATE_JSON

    @property
    def step(self) -> int:
        return int(self.path.name.removeprefix(CHECKPOINT_PREFIX).removesuffix(".tmp"))

    def state(self) -> dict:
        """state.json, refused in one line when missing or damaged."""
        try:
            info = json.loads(self.state_json.read_text())
        except FileNotFoundError:
            raise LmforgeError(f"checkpoint {self.path} is incomplete: {STATE_JSON} is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise LmforgeError(f"checkpoint {self.path} is damaged: {STATE_JSON} is not valid JSON ({e})") from None
        if not isinstance(info, dict):
            raise LmforgeError(f"checkpoint {self.path} is damaged: {STATE_JSON} is not a JSON object")
        step = info.get("step")
        if step != self.step or isinstance(step, bool):  # training would resume at it; -5 is no step
            raise LmforgeError(f"checkpoint {self.path} is damaged: {STATE_JSON} says step {step!r}, "
                               f"its folder step {self.step}")
        # the data-loader position and the token count are counts: a negative one would resume nowhere
        loader = info.get("loader")
        counts = {"tokens": info.get("tokens", 0),
                  **{f"loader.{k}": v for k, v in (loader.items() if isinstance(loader, dict) else ())}}
        bad = next((k for k, v in counts.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0), None)
        if bad is not None:
            raise LmforgeError(f"checkpoint {self.path} is damaged: {STATE_JSON} {bad} is {counts[bad]!r}, "
                               "not a count")
        return info

    def objective(self) -> str | None:
        """The objective this checkpoint was trained with (state.json keeps the run's config), or
        None where it does not say."""
        config = self.state().get("config")
        train = config.get("train") if isinstance(config, dict) else None
        return train.get("objective") if isinstance(train, dict) else None

    def check_objective(self, objective: str, said_by: str) -> None:
        """Refuse to read (or resume) this checkpoint under another objective than it was trained with:
        a causal model scored as masked gives figures that look fine and mean nothing."""
        trained = self.objective()
        if trained is not None and trained != objective:
            raise LmforgeError(f"{said_by} says train.objective {objective}, but {self} was trained {trained}: "
                               f"set train.objective: {trained} back in it")

    def problem(self) -> str | None:
        """Why this checkpoint cannot be used (a file missing, a checksum that does not match), or None.
        Checkpoints written before checksums were recorded are checked for their files only."""
        if not self.model_file.is_file():
            return f"{MODEL_FILE} is missing"
        try:
            info = self.state()
        except LmforgeError as e:
            return str(e).split(": ", 1)[1]
        files = info.get("files")
        if not isinstance(files, dict):
            return None if self.state_tensors.is_file() else f"{STATE_TENSORS} is missing"
        for name, digest in files.items():
            path = inside(self.path, name)
            if path is None:
                return f"{STATE_JSON} names {name!r}, which is not a file inside the checkpoint"
            if not path.is_file():
                return f"{name} is missing"
            try:
                intact = file_sha256(path) == digest
            except PermissionError:  # another user's run: not damaged, and no older checkpoint would read either
                raise LmforgeError(f"cannot read {path}: permission denied; ask the run's owner to make its files "
                                   f"readable (chmod -R a+rX {self.path.parent.parent}), or copy the run") from None
            if not intact:
                return f"{name} does not match its checksum (truncated or overwritten)"
        return None

    def __str__(self) -> str:
        return str(self.path)


class RunDir:
    """A run folder: its paths, config, objective, tokenizer, tokens, metrics, summary and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- paths

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def prepared_dir(self) -> Path:
        return self.path / PREPARED

    @property
    def inspect_dir(self) -> Path:
        return self.path / INSPECT

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def prepared(self) -> PreparedDir:
        """RUN/prepared/: lmforge run's cleaned sources."""
        return PreparedDir(self.prepared_dir)

    def report_path(self, fmt: str = "html") -> Path:
        return self.path / (REPORT_MD if fmt == "md" else REPORT_HTML)

    @property
    def report_files_dir(self) -> Path:
        return self.path / REPORT_FILES

    @property
    def diverged_path(self) -> Path:
        return self.path / DIVERGED_FILE

    def write_diverged(self, reason: str) -> None:
        """diverged.json: a sweep run whose loss went non-finite, and why (written instead of summary.json)."""
        atomic_write_text(self.diverged_path, json.dumps({"reason": reason}))

    def diverged_reason(self) -> str:
        return json.loads(self.diverged_path.read_text())["reason"]

    @property
    def error_path(self) -> Path:
        return self.path / ERROR_FILE

    @property
    def train_log_path(self) -> Path:
        return self.path / TRAIN_LOG

    def checkpoint(self, step: int, temporary: bool = False) -> CheckpointDir:
        name = f"{CHECKPOINT_PREFIX}{step:06d}" + (".tmp" if temporary else "")
        return CheckpointDir(self.checkpoints_dir / name)

    def is_run(self) -> bool:
        """Whether the folder holds something only lmforge writes into a run (its tokenizer.json and
        config.yaml alone could be anyone's)."""
        return any(os.path.lexists(self.path / name) for name in
                   (CHECKPOINTS, METRICS_FILE, SUMMARY_FILE, LOCK_FILE, TRAIN_LOG, ERROR_FILE, DIVERGED_FILE,
                    PREPARED, f".{PREPARED}.lock", TOKENS))

    def claim(self) -> None:
        """A writer's check before anything is written: the run folder is new, empty or a run; never
        a user's folder, whose config.yaml or metrics.jsonl a run would replace."""
        refuse_link(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise LmforgeError(f"run folder {self.path} is a file: give a new or empty --out")
        if self.path.is_dir() and not self.is_run() and any(self.path.iterdir()):
            raise LmforgeError(f"run folder {self.path} is not empty and holds no lmforge run: give a new or empty "
                               f"--out (lmforge never writes among your files)")

    def refuse_links(self) -> None:
        """Training's check: the folders it writes files into are real folders, never links to elsewhere
        (its files themselves are replaced, or appended to, without following links)."""
        for folder in (self.checkpoints_dir, self.tensorboard_dir):
            refuse_link(folder)

    def lock(self) -> FolderLock:
        """The writer's lock: a second `lmforge train` on this folder is refused, naming the first."""
        return FolderLock(self.path / LOCK_FILE, f"run folder {self.path}")

    def written_paths(self) -> list[Path]:
        """Every entry lmforge writes in a run folder: a run folder that is also a source
        (`train --data F --out F`) is read without them."""
        names = (CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINTS, TOKENS, PREPARED, INSPECT,
                 TENSORBOARD, REPORT_HTML, REPORT_MD, REPORT_FILES, DIVERGED_FILE, ERROR_FILE, TRAIN_LOG, LOCK_FILE)
        return [self.path / name for name in names]

    def require(self) -> "RunDir":
        if not self.path.is_dir():
            raise LmforgeError(f"run folder {self.path} does not exist: train first (lmforge train or lmforge run)")
        if not (self.is_run() or (self.path / CONFIG_FILE).is_file()):  # a reader may name what a config lacks
            raise LmforgeError(f"{self.path} is not a run folder ({looks_like(self.path)}): give the --out "
                               f"of lmforge train or lmforge run")
        return self

    # ---------------------------------------------------------------- config

    @cached_property
    def config(self) -> Config | None:
        """RUN/config.yaml, or None for a folder without one (weights copied by hand)."""
        return read_config(self.config_path) if self.config_path.is_file() else None

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.config_path)
        self.__dict__.pop("config", None)

    def require_config(self, feature: str) -> Config:
        """config.yaml, refused in one line where a folder has none (weights copied by hand)."""
        if self.config is None:
            raise LmforgeError(f"{self.path} has no {CONFIG_FILE}: {feature} needs the config the run was trained "
                               f"with; copy it back (each checkpoint's {STATE_JSON} holds it under `config`)")
        return self.config

    @property
    def objective(self) -> str:
        """"causal" or "masked" (config.yaml's train.objective; causal without a config). It decides
        the attention every reader must use: causal, or bidirectional for "masked"."""
        return self.config.train.objective if self.config is not None else "causal"

    def require_objective(self, wanted: str, feature: str) -> None:
        """Refuse `feature` on a run trained with another objective, in one line."""
        have = self.objective
        if have != wanted:
            hint = ("train one with --objective masked" if wanted == "masked"
                    else "it reads text left to right, so train one with --objective causal; lmforge fill works with both")
            raise LmforgeError(f"{self.path} was trained with the {have} objective: {feature} needs a {wanted} model ({hint})")

    def tokens_dir_for(self, cfg: Config) -> Path:
        """The tokenized folder `cfg` trains on: data.tokenized (relative to this folder), or RUN/tokens."""
        path = Path(cfg.data.tokenized) if cfg.data.tokenized else Path(TOKENS)
        return path if path.is_absolute() else self.path / path

    @property
    def tokens_dir(self) -> Path | None:
        return self.tokens_dir_for(self.config) if self.config is not None else None

    def tokenized_for_config(self, user_path: str | Path) -> str:
        """A tokenized folder named by a user (relative to the current directory) as config.yaml
        stores it: relative to the run folder."""
        return os.path.relpath(Path(user_path).resolve(), self.path.resolve())

    # ---------------------------------------------------------------- tokenizer and model

    def tokenizer(self):
        from lmforge.tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer_path)

    def latest_checkpoint(self, report=warn) -> CheckpointDir | None:
        """The newest verified checkpoint. A damaged or incomplete newer one is reported (one line)
        and skipped, so a reader falls back to the previous checkpoint rather than failing."""
        pointer = self.checkpoints_dir / LATEST
        # a damaged pointer only loses its say in the order: every candidate is verified anyway
        named = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
        candidates = self.checkpoints()
        # the one `latest` names first (a run resumed from an older step overwrites newer ones in turn)
        candidates.sort(key=lambda c: (c.path.name == named, c.step), reverse=True)
        for ckpt in candidates:
            problem = ckpt.problem()
            if problem is None:
                return ckpt
            report(f"checkpoint {ckpt} is unusable ({problem}); trying the one before it")
        return None

    def checkpoints(self) -> list[CheckpointDir]:
        """Complete checkpoint folders, oldest first."""
        return [CheckpointDir(p) for p in sorted(self.checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*"))
                if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]

    def point_latest(self, ckpt: CheckpointDir) -> None:
        atomic_write_text(self.checkpoints_dir / LATEST, ckpt.path.name)

    # ---------------------------------------------------------------- metrics and summary

    def summary(self) -> Summary | None:
        if not self.summary_path.is_file():
            return None
        try:
            data = json.loads(self.summary_path.read_text())
        except (UnicodeDecodeError, ValueError) as e:
            raise LmforgeError(f"{self.summary_path} is damaged ({e}): delete it and resume the run with --resume") from None
        if not isinstance(data, dict):
            raise LmforgeError(f"{self.summary_path} is damaged (not a JSON object): delete it and resume the run "
                               f"with --resume")
        return Summary.from_dict(data)

    def write_summary(self, summary: Summary) -> None:
        atomic_write_text(self.summary_path, figures.dumps(summary.to_dict(), indent=2))

    @property
    def is_complete(self) -> bool:
        summary = self.summary()
        return bool(summary and summary.complete)

    def steps_done(self) -> int:
        """The last step logged (a run being written may end in a cut-short line: it is skipped)."""
        records = self.metrics(quiet=True)
        return records[-1].step if records else 0

    def metrics(self, quiet: bool = False) -> list[TrainRecord | ValRecord]:
        """metrics.jsonl's records; `quiet`: a cut-short line is skipped without a warning (a run being
        written, read by a sweep's progress line)."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for number, line in enumerate(self.metrics_path.read_text(errors="replace").splitlines(), 1):
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a kill mid-write: the rest of the file still reads
                if line.strip() and not quiet:
                    warn(f"{self.metrics_path}:{number} is not JSON (a write cut short?); skipped")
        return [metrics_record(r) for r in records if isinstance(r, dict)]

    def append_metrics(self, record: TrainRecord | ValRecord) -> None:
        append_text(self.metrics_path, figures.dumps(record.to_dict()) + "\n")

    def has_validation_at(self, step: int) -> bool:
        return any(isinstance(r, ValRecord) and r.step == step for r in self.metrics())

    def truncate_metrics(self, step: int) -> None:
        """Drop events logged after `step` (the checkpoint a run resumes from), so the file reads as one run."""
        if self.metrics_path.is_file():
            kept = [r for r in self.metrics() if r.step <= step]
            atomic_write_text(self.metrics_path, "".join(figures.dumps(r.to_dict()) + "\n" for r in kept))

    def clear_metrics(self) -> None:
        self.metrics_path.unlink(missing_ok=True)


@dataclass
class Summary(Record):
    """RUN/summary.json: the final validation figures, throughput and model size (the trainer writes
    it when training ends); lmforge run adds samples, cloze, neighbours and map."""

    objective: str = "causal"
    val_loss: float | None = None
    perplexity: float | None = None
    bits_per_byte: float | None = None
    val_accuracy: float | None = None
    val_tokens: int = 0
    unigram_val_loss: float | None = None
    steps: int = 0
    tokens_trained: int = 0
    params: int = 0
    flops_per_token: int = 0
    train_time_s: float = 0.0
    # steady state: the steps after each start's first warm-up steps (compilation and warm-up)
    tokens_per_s: float | None = None
    # PaLM's model and hardware FLOPs utilisation: they differ by what train.recompute runs again
    mfu: float | None = None
    hfu: float | None = None
    warmup_s: float = 0.0
    warmup_steps: int = 0
    skipped_steps: int = 0
    peak_flops: float | None = None
    device: str = "cpu"
    dtype: str | None = None
    device_name: str = "cpu"
    threads: int | None = None
    world_size: int = 1
    # this start's steps by thread count: fewer while other processes held cores
    steps_by_threads: dict[str, int] = field(default_factory=dict)
    checkpoint: str | None = None
    complete: bool = False
    run_dir: str = ""
    # the peak lr each group trained at: under muP they differ by group and follow the width
    parametrization: str = "standard"
    param_groups: list[dict] = field(default_factory=list)
    mup_base_width: int | None = None
    val_reason: str | None = None  # why there are no validation figures
    schedule_steps: int | None = None  # the steps the lr schedule spans (a run extended past them continued it)
    extended_schedule: str | None = None  # "continued": trained past schedule_steps at the schedule's final lr
    samples: list[str] | None = None  # lmforge run: continuations of the prompts
    cloze: dict | None = None  # lmforge run: accuracy on the built-in cloze tasks
    neighbours: dict | None = None  # lmforge run: nearest words of a few frequent ones
    map: dict | None = None  # lmforge run: the word map's files

    WRITTEN_WHEN_SET: ClassVar[frozenset[str]] = frozenset(
        {"mup_base_width", "val_reason", "schedule_steps", "extended_schedule", "samples", "cloze", "neighbours", "map"})


@dataclass
class TrainRecord(Record):
    """A metrics.jsonl line of training, every train.log_interval steps."""

    step: int = 0
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None  # before clipping
    tokens: int = 0  # seen so far
    tokens_per_s: float | None = None
    mfu: float | None = None
    hfu: float | None = None
    train_time_s: float | None = None
    skipped_steps: int = 0  # non-finite steps skipped so far
    threads: int | None = None


@dataclass
class ValRecord(Record):
    """A metrics.jsonl line of validation (the last one is the final evaluation, summary.json's figures)."""

    step: int = 0
    val_loss: float | None = None
    val_bpb: float | None = None
    val_tokens: int = 0
    train_time_s: float | None = None
    val_accuracy: float | None = None  # masked runs: the share of masked tokens predicted

    WRITTEN_WHEN_SET: ClassVar[frozenset[str]] = frozenset({"val_accuracy"})


def metrics_record(data: dict[str, Any]) -> TrainRecord | ValRecord:
    """A metrics.jsonl line as its record: a validation line is the one with `val_loss`."""
    return ValRecord.from_dict(data) if "val_loss" in data else TrainRecord.from_dict(data)
