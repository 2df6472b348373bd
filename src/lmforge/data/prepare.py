"""`lmforge prepare`: read -> repair -> filter -> redact -> deduplicate -> write, nothing lost.

    PREP/  clean/, rejected/, report.json (the format: lmforge/folders/prepared.py)

The input stream is cut into shards of at most `shard_documents` items and `shard_bytes` bytes of text
(a longer document alone), in a fixed order: the text that workers and the main process hold follows
these settings, not the documents' sizes (report.json's `worker_peak_rss_bytes` says what it came to).
Three phases:
  1. per shard, in a process pool: repair, filter, redact; exact key, MinHash signature and
     line statistics of what survives (`work/shard_N.kept.jsonl.gz`, `.sig.npy`, then marker `.done`);
  2. once: exact and near-duplicate decisions, and the set of boilerplate lines (`work/dedup.json`);
  3. per shard, in the pool: drop duplicates and boilerplate lines (never from code), write clean/ and rejected/.
A killed run started again skips every shard whose marker exists; since every output is a
function of its shard's input alone (and of phase 2), it ends with exactly the same files, whatever
the number of workers or the executor (neither is in the fingerprint).
PREP must be new, empty or a prepared folder (files.claim_output). A finished PREP of other
settings is rebuilt in a sibling, `.PREP.prepare-building/`, whose entries then replace only
lmforge's own (clean/, rejected/, report.json, the report last).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from typing import Callable, Iterable, Iterator

import numpy as np

from lmforge.config import DataConfig, PrepareConfig
from lmforge.data import FILTERS, clean
from lmforge.data.classifiers import export_models
from lmforge.data.clean import Doc, kind_of
from lmforge.data.dedup import MinHasher, band_keys, exact_key, jaccard, shingle_hashes
from lmforge.data.pii import RedactPII, redacted
from lmforge.data.sources import (Document, Inputs, Skip, SourceStats, batched,
                                  iter_documents, list_inputs, skip_hint)
from lmforge.errors import LmforgeError
from lmforge.figures import plural, size
from lmforge.files import (atomic_write_json, atomic_write_text, building_folder, claim_output, fingerprint, install,
                           is_complete, json_format_is, output_errors, read_own_bytes, refuse_inside_sources,
                           refuse_link, remove, remove_own)
from lmforge.folders.prepared import (FORMAT, PREPARED, REPORT, SHARD_SUFFIX, WORK_FINGERPRINT, PrepareReport,
                                      PreparedDir, clean_shard, read_jsonl_gz, rejected_shard, work_shard,
                                      write_jsonl_gz)
from lmforge.hardware import usable_cpus
from lmforge.locks import FolderLock
from lmforge.processes import end_with_parent, peak_rss_bytes
from lmforge.progress import Meter

EXAMPLES_PER_REASON = 3


def _line_key(line: str) -> str:
    return hashlib.blake2b(line.encode(), digest_size=8).hexdigest()


def boilerplate_candidates(text: str) -> set[str]:
    """Keys of the distinct lines that could be boilerplate: five words or more (shorter lines,
    like a heading, repeat across documents for honest reasons)."""
    return {_line_key(s) for s in (l.strip() for l in text.split("\n")) if len(s.split()) >= 5}


# ---------------------------------------------------------------- phase 1: filters, per shard

class FilterStack:
    """The configured repairs and filters, built once per worker process: repair, then the chosen
    filters in registry order (data.FILTERS: language first), then PII redaction."""

    def __init__(self, cfg: PrepareConfig):
        self.repair = clean.Repair() if cfg.repair else None
        self.pii = RedactPII() if cfg.pii else None
        chosen = [clean.REGISTRY[name].from_config(cfg) for name in FILTERS if name in cfg.filters]
        self.filters = [f for f in chosen if f is not None]

    def __call__(self, doc: Doc) -> tuple[str, str] | None:
        return self.run([doc])[0]

    def steps(self) -> list[clean.Filter]:
        return [s for s in (self.repair, *self.filters, self.pii) if s is not None]

    def run(self, docs: list[Doc]) -> list[tuple[str, str] | None]:
        """Per document: None if it stays (its text possibly edited), else (stage, reason).
        Step by step over the whole batch, so a step with a per-call cost (the classifier) pays it once."""
        verdicts: list[tuple[str, str] | None] = [None] * len(docs)
        for step in self.steps():
            alive = [i for i, d in enumerate(docs) if verdicts[i] is None and d.kind in step.kinds]
            if step is self.repair:  # it also counts invalid bytes in code, which it does not edit
                alive = [i for i, d in enumerate(docs) if verdicts[i] is None]
            if not alive:
                continue
            for i, reason in zip(alive, step.run([docs[i] for i in alive])):
                if reason:
                    verdicts[i] = (step.name, reason)
        return verdicts

    def counts(self) -> dict[str, int]:
        """Repairs and redactions by kind, as report.json's repairs_and_redactions."""
        out: Counter = Counter()
        for step in (self.repair, self.pii):
            if step is not None:
                out.update({f"{step.name}:{k}": v for k, v in step.counts.items()})
        return dict(out)

    def step_stats(self) -> dict[str, dict[str, int]]:
        return {step.name: dict(step.stats) for step in self.steps()}

    def reset(self) -> None:
        for step in self.steps():
            step.stats.clear()
            if getattr(step, "counts", None) is not None:
                step.counts.clear()


_STACKS: dict[str, FilterStack] = {}


def _stack(cfg: PrepareConfig) -> FilterStack:
    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _STACKS:
        _STACKS.clear()
        _STACKS[key] = FilterStack(cfg)
    stack = _STACKS[key]
    stack.reset()  # each shard's counts on their own: a resumed run adds up the same numbers
    return stack


def _reject(item, stage: str, reason: str, text: str, **extra) -> dict:
    return {"id": item.id, "source": item.source, "stage": stage, "reason": reason, "text": text, **extra}


def filter_shard(index: int, items: list, cfg: PrepareConfig, work: Path, rejected_dir: Path) -> None:
    """Phase 1 for one shard. `items` are Documents and reader Skips, in stream order."""
    stack = _stack(cfg)
    hasher = MinHasher(cfg.minhash_bands * cfg.minhash_rows, cfg.seed)
    kept, rejected, keys, signatures, has_sig = [], [], [], [], []
    lines: Counter = Counter()
    redacted: dict[str, list[str]] = defaultdict(list)  # pii kind -> a few document ids, for report.json
    docs = [Doc(i.id, i.text, i.source, kind_of(i.source, i.kind, i.text)) for i in items if not isinstance(i, Skip)]
    verdicts = iter(stack.run(docs))
    docs_iter = iter(docs)
    for item in items:
        if isinstance(item, Skip):
            rejected.append(_reject(item, "read", item.reason, item.text))
            continue
        doc, verdict = next(docs_iter), next(verdicts)
        if verdict is not None:
            rejected.append(_reject(doc, verdict[0], f"{verdict[0]}:{verdict[1]}", doc.original))
            continue
        record = {"id": doc.id, "source": doc.source, "kind": doc.kind, "text": doc.text, **doc.meta}
        if doc.edits:
            record["edits"] = doc.edits
        if doc.text != doc.original:
            record["original"] = doc.original  # phase 3 files this under rejected/ if the document goes there
            for edit in doc.edits:
                if edit["rule"].startswith("pii:") and len(redacted[edit["rule"]]) < EXAMPLES_PER_REASON:
                    redacted[edit["rule"]].append(doc.id)
        kept.append(record)
        keys.append(exact_key(doc.text))
        sig = hasher.signature(shingle_hashes(doc.text, cfg.ngram_words)) if cfg.near_dedup else None
        has_sig.append(sig is not None)
        signatures.append(sig if sig is not None else np.zeros(hasher.a.shape, dtype=np.uint32))
        if cfg.boilerplate and doc.kind != "code":  # a line repeated across source files is code, not boilerplate
            lines.update(boilerplate_candidates(doc.text))
    base = work / work_shard(index)
    write_jsonl_gz(base.with_suffix(".kept" + SHARD_SUFFIX), kept, compresslevel=1)  # work/: read once more, then gone
    write_jsonl_gz(rejected_dir / rejected_shard("filter", index), rejected)
    np.save(base.with_suffix(".sig.npy"), np.array(signatures, dtype=np.uint32).reshape(len(kept), len(hasher.a)))
    stats = {"items": len(items), "kept": len(kept), "rejected": len(rejected), "ids": [r["id"] for r in kept],
             "rejected_tally": tally_rejected(rejected),
             "exact_keys": keys, "has_signature": has_sig, "lines": dict(lines), "repairs": stack.counts(),
             "steps": stack.step_stats(), "redaction_examples": dict(redacted), "peak_rss_bytes": peak_rss_bytes(),
             "kinds_in": dict(Counter(d.kind for d in docs))}
    atomic_write_json(base.with_suffix(".done"), stats)  # the completion marker, written last


# ---------------------------------------------------------------- phase 2: global decisions

def decide_duplicates(work: Path, n_shards: int, cfg: PrepareConfig) -> dict:
    """Exact groups, LSH candidates verified by true Jaccard, boilerplate lines."""
    ids: list[str] = []  # stream order
    location: dict[str, tuple[int, int]] = {}
    exact_first: dict[str, str] = {}
    dropped: dict[str, dict] = {}
    buckets: dict[bytes, list[str]] = defaultdict(list)
    line_docs: Counter = Counter()
    for shard in range(n_shards):
        stats = json.loads((work / f"{work_shard(shard)}.done").read_text())
        sigs = np.load(work / f"{work_shard(shard)}.sig.npy")
        line_docs.update(stats["lines"])
        for row, doc_id in enumerate(stats["ids"]):  # the ids, not the texts: those only of candidates, later
            if doc_id in location:  # two sources gave the same id: keep ids unique in the output
                doc_id = f"{doc_id}@{shard}:{row}"
            ids.append(doc_id)
            location[doc_id] = (shard, row)
            key = stats["exact_keys"][row]
            if cfg.exact_dedup and key in exact_first:
                dropped[doc_id] = {"reason": "exact_duplicate", "duplicate_of": exact_first[key], "jaccard": 1.0}
                continue
            exact_first.setdefault(key, doc_id)
            if cfg.near_dedup and stats["has_signature"][row]:
                for band in band_keys(sigs[row], cfg.minhash_bands, cfg.minhash_rows):
                    buckets[band].append(doc_id)

    candidates_checked = 0
    if cfg.near_dedup:
        # Stream order; a document is checked only against the *kept* earlier members of its buckets,
        # earliest first: a cluster of k copies costs about k checks (each against the kept copy), not
        # the k^2/2 pairs of its bucket.
        bands_of: dict[str, list[bytes]] = defaultdict(list)
        for key, members in buckets.items():
            if len(members) > 1:
                for doc_id in members:
                    bands_of[doc_id].append(key)
        texts = _load_texts(work, set(bands_of), location)
        shingles = {d: shingle_hashes(t, cfg.ngram_words) for d, t in texts.items()}
        del texts
        position = {d: i for i, d in enumerate(ids)}
        kept_in: dict[bytes, list[str]] = defaultdict(list)
        for doc_id in sorted(bands_of, key=position.get):
            if doc_id in dropped:  # an exact copy
                continue
            earlier = sorted({m for key in bands_of[doc_id] for m in kept_in[key]}, key=position.get)
            for other in earlier:
                candidates_checked += 1
                score = jaccard(shingles[doc_id], shingles[other])
                if score >= cfg.near_dedup_threshold:
                    dropped[doc_id] = {"reason": "near_duplicate", "duplicate_of": other, "jaccard": round(score, 4)}
                    break
            else:
                for key in bands_of[doc_id]:
                    kept_in[key].append(doc_id)
    threshold = max(cfg.boilerplate_min_documents, cfg.boilerplate_min_fraction * max(len(ids), 1))
    boilerplate = sorted(k for k, n in line_docs.items() if n >= threshold) if cfg.boilerplate else []
    return {"ids": ids, "dropped": dropped, "boilerplate_lines": boilerplate, "candidate_pairs_checked": candidates_checked}


def _load_texts(work: Path, wanted: set[str], location: dict[str, tuple[int, int]]) -> dict[str, str]:
    by_shard: dict[int, dict[int, str]] = defaultdict(dict)
    for doc_id in wanted:
        shard, row = location[doc_id]
        by_shard[shard][row] = doc_id
    texts = {}
    for shard, rows in by_shard.items():
        for row, record in enumerate(read_jsonl_gz(work / f"{work_shard(shard)}.kept{SHARD_SUFFIX}")):
            if row in rows:
                texts[rows[row]] = record["text"]
    return texts


# ---------------------------------------------------------------- phase 3: write, per shard

def write_shard(index: int, work: Path, out: Path, decisions_path: Path) -> None:
    decisions = json.loads(decisions_path.read_text())
    boilerplate = set(decisions["boilerplate_lines"])
    dropped = decisions["dropped"]
    ids = decisions["ids"]
    offset = json.loads((work / f"{work_shard(index)}.done").read_text())["offset"]
    kept, rejected = [], []
    removed_lines = 0
    for row, record in enumerate(read_jsonl_gz(work / f"{work_shard(index)}.kept{SHARD_SUFFIX}")):
        record["id"] = ids[offset + row]
        original = record.pop("original", record["text"])
        if record["id"] in dropped:
            d = dropped[record["id"]]
            rejected.append({"id": record["id"], "source": record["source"], "stage": "dedup", "reason": d["reason"],
                             "duplicate_of": d["duplicate_of"], "jaccard": d["jaccard"], "text": original})
            continue
        if boilerplate and record["kind"] != "code":
            lines = record["text"].split("\n")
            gone = [i for i, l in enumerate(lines) if l.strip() and _line_key(l.strip()) in boilerplate]
            if gone:
                removed_lines += len(gone)
                text = "\n".join(l for i, l in enumerate(lines) if i not in set(gone))
                if not text.strip():
                    rejected.append({"id": record["id"], "source": record["source"], "stage": "boilerplate",
                                     "reason": "boilerplate:only_boilerplate_lines", "text": original})
                    continue
                record["text"] = text.strip() if record["kind"] == "web" else text
                record["edits"] = record.get("edits", []) + [{"rule": "boilerplate", "lines": [i + 1 for i in gone]}]
        kept.append(record)
    write_jsonl_gz(PreparedDir(out).rejected_dir / rejected_shard("dedup", index), rejected)
    write_jsonl_gz(PreparedDir(out).clean_dir / clean_shard(index), kept)
    atomic_write_json(work / f"{work_shard(index)}.written", {
        "kept": len(kept), "kept_bytes": sum(len(r["text"].encode("utf-8")) for r in kept), "rejected": len(rejected),
        "rejected_tally": tally_rejected(rejected), "boilerplate_lines_removed": removed_lines,
        "peak_rss_bytes": peak_rss_bytes(), "kinds_kept": dict(Counter(r["kind"] for r in kept))})


def tally_rejected(records: list[dict]) -> dict:
    """What report.json counts of a shard's rejected records, taken as they are written: the report then
    adds shards up instead of reading rejected/ (and clean/) again. Reasons in the order first met."""
    reasons: Counter = Counter()
    stages: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    clusters: Counter = Counter()
    for r in records:
        reasons[r["reason"]] += 1
        stages[r["stage"]] += 1
        if len(examples[r["reason"]]) < EXAMPLES_PER_REASON:  # an id read from a record is its content too
            examples[r["reason"]].append(redacted(r["id"]))
        if "duplicate_of" in r:
            clusters[r["duplicate_of"]] += 1
    return {"reasons": dict(reasons), "stages": dict(stages), "examples": dict(examples), "clusters": dict(clusters),
            "bytes": sum(len(r["text"].encode("utf-8")) for r in records)}


# ---------------------------------------------------------------- driver

HOW_NOT_WHAT = ("workers", "executor")  # how the shards are run: the same files either way


def prepare_fingerprint(inputs: Inputs, cfg: PrepareConfig, data: DataConfig) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in HOW_NOT_WHAT}
    return fingerprint({"sources": inputs.sources, "inputs": inputs.identity(), "prepare": settings,  # kinds in inputs
                        "text_field": data.text_field, "max_bytes": data.max_bytes,
                        "max_document_bytes": data.max_document_bytes})


def written_paths(out: Path) -> list[Path]:
    """What prepare writes in `out`: all it may delete there, and never read as input."""
    return [out / name for name in PREPARED.entries]


def list_prepare_inputs(sources: list[str], out: Path, exclude: Iterable[Path] = (), kinds: list[str] = ()) -> Inputs:
    """The files prepare reads: never its own output (`prepare X --out X/prep` reads the user's files
    only), nor `exclude`, what the caller writes (lmforge run's run folder); `kinds`: data.kinds."""
    return list_inputs(sources, [*written_paths(out), *exclude], kinds)


def _items(inputs: Inputs, data: DataConfig, stats: SourceStats) -> Iterator[Document | Skip]:
    """The input stream: documents and the reader's skips, in order."""
    for doc in iter_documents(inputs, stats, data.text_field, data.max_bytes, data.max_document_bytes):
        yield from _skipped(stats)
        yield doc
    yield from _skipped(stats)


def _skipped(stats: SourceStats) -> list[Skip]:
    skips = stats.pending[:]
    stats.pending.clear()
    return skips


def _shards(inputs: Inputs, data: DataConfig, cfg: PrepareConfig, stats: SourceStats) -> Iterator[list]:
    """The input stream cut into shards of at most `shard_documents` items and `shard_bytes` bytes of text."""
    return batched(_items(inputs, data, stats), cfg.shard_documents, cfg.shard_bytes)


class LocalExecutor:
    """A process pool (or, with one worker, this process) with a bounded number of tasks in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        # spawn: workers import only the cleaning code, not whatever the parent holds (torch, a model);
        # they end with this process, even when it is SIGKILLed (lmforge/processes.py)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent,
                                        initargs=(os.getpid(),)) if workers > 1 else None
        self.pending: list[Future] = []

    def submit(self, fn, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) >= 2 * self.workers:
            self.pending.pop(0).result()

    def wait(self) -> None:
        for f in self.pending:
            f.result()
        self.pending.clear()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class RayExecutor:
    """The same shard tasks on a Ray cluster (`pip install lmforge[ray]`): `ray.init()` joins the
    cluster named by RAY_ADDRESS or starts a local one. Workers read and write the prepared
    folder, so it must be on storage every node sees."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise LmforgeError("--executor ray needs Ray: pip install 'lmforge[ray]'") from None
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.pending: list = []
        self.limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn, *args) -> None:
        self.pending.append(self.ray.remote(fn).remote(*args))
        if len(self.pending) >= self.limit:  # bounded memory: wait for the oldest task
            self.ray.get(self.pending.pop(0))

    def wait(self) -> None:
        self.ray.get(self.pending)
        self.pending.clear()

    def close(self) -> None:
        if self.owns:
            self.ray.shutdown()


def make_executor(name: str, workers: int):
    if name == "ray":
        return RayExecutor(num_cpus=workers or None)
    if name != "local":
        raise LmforgeError(f"prepare.executor={name!r}: choose local or ray")
    return LocalExecutor(workers or len(usable_cpus()))


def prepared_otherwise(sources: list[str], out: str | Path, cfg: PrepareConfig, data: DataConfig,
                       exclude: Iterable[Path] = ()) -> bool:
    """Whether `out` holds a finished prepare (report.json is written last) of other settings or
    other inputs (sources edited or gone since)."""
    report = PreparedDir(out).report_path
    if not report.is_file():
        return False
    try:
        inputs = list_prepare_inputs(sources, Path(out), exclude, data.kinds)
    except LmforgeError:
        return True
    return not is_complete(report, prepare_fingerprint(inputs, cfg, data))


def prepare(sources: list[str], out: str | Path, cfg: PrepareConfig, data: DataConfig,
            log: Callable[[str], None] = print, executor=None, progress: bool = True,
            exclude: Iterable[Path] = (), force: bool = False) -> dict:
    """Clean `sources` into `out` (see the module docstring) and return the report. `out` must be new,
    empty or an earlier prepared folder (`force`: any folder, lmforge's entries added beside the others).
    `exclude`: paths the caller writes, never read as input."""
    out = Path(out)
    log(f"prepare: listing {', '.join(sources)}")
    inputs = list_prepare_inputs(sources, out, exclude, data.kinds)  # first: a missing source is refused before anything is written
    refuse_inside_sources(out, sources)
    claim_output(out, PREPARED, force)
    # beside the folder, not in it: the lock must outlive a rebuild of the folder's contents
    with output_errors("prepare", out), FolderLock(out.parent / f".{out.name}.lock", f"prepare output folder {out}"):
        return _prepare(inputs, out, cfg, data, log, executor, progress)


def _prepare(inputs: Inputs, out: Path, cfg: PrepareConfig, data: DataConfig,
             log: Callable[[str], None], executor, progress: bool) -> dict:
    sources = inputs.sources
    fp = prepare_fingerprint(inputs, cfg, data)
    folder = PreparedDir(out)
    if is_complete(folder.report_path, fp):
        report = folder.report()
        _remove_work(folder.work_dir)  # left by a prepare killed just after its report
        log(f"prepare: {out} is complete, skipping")
        return report.to_dict()
    export_models(cfg.filters)
    # a finished prepare of other settings stays whole (and usable) until the new one replaces it
    build = PreparedDir(building_folder(out, "prepare") if json_format_is(out, REPORT, FORMAT) else out)
    work = build.work_dir
    marker_fp = work / WORK_FINGERPRINT
    for part in (build.path, build.clean_dir, build.rejected_dir, work):  # a resumed build's shards go into them
        refuse_link(part)
    if (read_own_bytes(marker_fp) or b"").decode(errors="replace") != fp:
        remove_own(build.path, PREPARED)  # a different config (or none yet): earlier shard results do not apply
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker_fp, fp)  # first: from now on the folder is recognisably lmforge's
    for part in (build.clean_dir, build.rejected_dir):
        part.mkdir(exist_ok=True)

    started = time.perf_counter()
    stats = SourceStats(record_skips=True)
    owns_executor = executor is None
    executor = executor or make_executor(cfg.executor, cfg.workers)
    n_shards = 0
    log(f"prepare: reading and filtering {plural(sum(1 for _ in inputs.all_files()), 'file')}, "
        f"{cfg.shard_documents:,} documents a shard")
    meter = Meter("prepare: read", "document", log, enabled=progress)  # read and handed to the workers
    try:
        for index, items in enumerate(_shards(inputs, data, cfg, stats)):
            n_shards = index + 1
            if not (work / f"{work_shard(index)}.done").is_file():
                executor.submit(filter_shard, index, items, cfg, work, build.rejected_dir)
            meter.update(len(items))
        meter.close()
        log(f"prepare: waiting for the last shards' filters ({_seconds(started)} so far)")
        executor.wait()
        if stats.capped:
            log(f"prepare: {stats.cap_note()}")
        if n_shards == 0:
            raise LmforgeError(f"no documents found in {', '.join(sources)}: give text, JSONL, Parquet or WARC files")
        offset = 0  # each shard's first row in stream order, for phase 3
        for index in range(n_shards):
            path = work / f"{work_shard(index)}.done"
            shard_stats = json.loads(path.read_text())
            shard_stats["offset"] = offset
            offset += shard_stats["kept"]
            atomic_write_json(path, shard_stats)
        decisions_path = work / "dedup.json"
        if not decisions_path.is_file():
            log(f"prepare: deciding exact and near duplicates and boilerplate lines ({_seconds(started)} so far)")
            atomic_write_json(decisions_path, decide_duplicates(work, n_shards, cfg))
        log(f"prepare: writing clean/ and rejected/, {plural(n_shards, 'shard')} ({_seconds(started)} so far)")
        for index in range(n_shards):
            if not (work / f"{work_shard(index)}.written").is_file():
                executor.submit(write_shard, index, work, build.path, decisions_path)
        executor.wait()
    finally:
        if owns_executor:
            executor.close()
    log(f"prepare: counting the report ({_seconds(started)} so far)")
    report = build_report(build.path, n_shards, stats, fp, time.perf_counter() - started)
    build.write_report(report)
    _remove_work(work)
    log(summary_text(report, out))  # before an error too: what was rejected, and why
    if report.documents_kept == 0:
        reason, n = next(iter(report.rejected_by_reason.items()), ("", 0))
        raise LmforgeError(f"nothing usable remains in {', '.join(sources)}: every document was rejected, "
                           f"{n:,} as {reason!r}{skip_hint(reason)} (see {build.report_path}); loosen the "
                           f"prepare.* filters or give other text")
    if build.path != out:
        install(build.path, out, PREPARED)
    return report.to_dict()


def _seconds(started: float) -> str:
    return f"{time.perf_counter() - started:.0f}s"


def _remove_work(work: Path) -> None:
    """Once report.json is written nothing reads work/ (at 300 MB it was half the folder's disk); only
    prepare's own, the one holding its fingerprint marker, goes."""
    if work.is_dir() and not work.is_symlink() and (work / WORK_FINGERPRINT).is_file():
        remove(work)


def build_report(out: Path, n_shards: int, stats: SourceStats, fp: str, seconds: float) -> PrepareReport:
    work = PreparedDir(out).work_dir
    done = [json.loads((work / f"{work_shard(i)}.done").read_text()) for i in range(n_shards)]
    written = [json.loads((work / f"{work_shard(i)}.written").read_text()) for i in range(n_shards)]
    reasons: Counter = Counter()
    stages: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    bytes_in = 0
    clusters: Counter = Counter()
    # rejected/'s files in name order, dedup_* before filter_*: examples and tied reasons come out as they are met there
    for tally in [w["rejected_tally"] for w in written] + [d["rejected_tally"] for d in done]:
        reasons.update(tally["reasons"])
        stages.update(tally["stages"])
        bytes_in += tally["bytes"]
        clusters.update(tally["clusters"])
        for reason, ids in tally["examples"].items():
            examples[reason] = (examples[reason] + ids)[:EXAMPLES_PER_REASON]
    kept = sum(w["kept"] for w in written)
    bytes_kept = sum(w["kept_bytes"] for w in written)
    repairs: Counter = Counter()
    steps: dict[str, Counter] = defaultdict(Counter)
    redaction_examples: dict[str, list[str]] = defaultdict(list)
    boiler = peak_rss = 0
    kinds_in: Counter = Counter()
    kinds_kept: Counter = Counter()
    for shard_done, shard_written in zip(done, written):
        kinds_in.update(shard_done["kinds_in"])
        kinds_kept.update(shard_written["kinds_kept"])
        repairs.update(shard_done["repairs"])
        for name, counts in shard_done["steps"].items():
            steps[name].update(counts)
        for rule, ids in shard_done["redaction_examples"].items():
            redaction_examples[rule] = (redaction_examples[rule] + [redacted(i) for i in ids])[:EXAMPLES_PER_REASON]
        boiler += shard_written["boilerplate_lines_removed"]
        peak_rss = max(peak_rss, shard_done["peak_rss_bytes"], shard_written["peak_rss_bytes"])
    decisions = json.loads((work / "dedup.json").read_text())
    rejected = sum(reasons.values())
    return PrepareReport(
        documents_in=kept + rejected, documents_kept=kept, documents_rejected=rejected,
        bytes_in=bytes_kept + bytes_in, bytes_kept=bytes_kept, bytes_rejected=bytes_in,
        rejected_by_stage=dict(stages.most_common()), rejected_by_reason=dict(reasons.most_common()),
        documents_by_kind={k: {"in": n, "kept": kinds_kept[k]} for k, n in kinds_in.most_common()},
        examples=dict(examples), duplicate_clusters=len(clusters),
        largest_duplicate_cluster=max(clusters.values(), default=0) + (1 if clusters else 0),
        candidate_pairs_checked=decisions["candidate_pairs_checked"],
        repairs_and_redactions=dict(sorted(repairs.items())), redaction_examples=dict(sorted(redaction_examples.items())),
        boilerplate_lines_removed=boiler, steps={name: dict(steps[name]) for name in steps},
        reader=stats.reader_report(), shards=n_shards, worker_peak_rss_bytes=peak_rss, seconds=round(seconds, 2),
        fingerprint=fp)


def summary_text(report: PrepareReport, out: Path) -> str:
    lines = [f"prepare: {plural(report.documents_in, 'document')} ({size(report.bytes_in)}) in -> "
             f"{report.documents_kept:,} kept "
             f"({size(report.bytes_kept)}), {report.documents_rejected:,} rejected, "
             f"in {report.seconds:.0f}s -> {PreparedDir(out).clean_dir}"]
    lines.append("  kinds: " + ", ".join(f"{k} {c['kept']:,} of {c['in']:,} kept"
                                         for k, c in report.documents_by_kind.items()))
    for reason, n in list(report.rejected_by_reason.items())[:12]:
        lines.append(f"  {n:>8,}  {reason}   e.g. {report.examples[reason][0]}{skip_hint(reason)}")
    if report.duplicate_clusters:
        lines.append(f"  duplicate clusters: {report.duplicate_clusters:,} (largest {report.largest_duplicate_cluster})")
    for k, v in report.repairs_and_redactions.items():
        if k.rpartition(":")[2] not in ("documents", "edited"):  # the step's own tallies, not a repair
            lines.append(f"  {k}: {v:,}")
    # line rules edit the documents they keep: said here, not only in report.json's steps
    edited = {name: c["edited"] for name, c in report.steps.items() if c.get("edited") and name not in ("repair", "pii")}
    if edited:
        web = " (the rules for web pages: give --kind prose for books or stories)" if "web" in report.documents_by_kind else ""
        lines.append("  lines removed from kept documents: " + ", ".join(f"{name} in {plural(n, 'document')}"
                                                                         for name, n in edited.items()) + web)
    if report.boilerplate_lines_removed:
        lines.append(f"  boilerplate lines removed: {report.boilerplate_lines_removed:,}")
    reader = report.reader
    if reader.get("capped"):
        lines.append(f"  byte cap data.max_bytes={reader['max_bytes']:,}: {plural(reader['unread_files'], 'file')} "
                     f"({reader['unread_bytes'] / 1e6:,.1f} MB) left unread")
    lines.append(f"  peak memory per worker: {report.worker_peak_rss_bytes / 1e6:,.0f} MB")
    return "\n".join(lines)
