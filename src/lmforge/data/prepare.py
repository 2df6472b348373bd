"""`lmforge prepare`: read -> repair -> filter -> redact -> deduplicate -> write, nothing lost.

    PREP/  clean/, rejected/, report.json (the format: lmforge/folders/prepared.py)

The input stream is cut into shards of at most `shard_documents` items and `shard_bytes` bytes of text
(a longer document alone), in a fixed order: the text that workers and the main process hold follows
these settings, not the documents' sizes (report.json's `worker_peak_rss_bytes` says what it came to,
`peak_rss_by_step` what each step below and the main process did).
Three phases:
  1. per shard, in a process pool: repair, filter, redact; exact key, MinHash signature and
     line statistics of what survives (`work/shard_N.kept.jsonl.gz`, `.sig.npy`, `.keys`: ids, exact
     keys and line counts already split by key partition, then marker `.done`);
  2. in partitions, in the pool: ids, exact keys and lines by hash (each partition reading only its
     part of each shard's `.keys`), MinHash buckets by band and bucket partition; then once,
     the verification of the near-duplicate candidates only: a removal list per shard
     (`work/shard_N.drop.json`), the boilerplate lines and the counts (`work/dedup.json`, last);
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
import os
from pathlib import Path
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from typing import Callable, Iterable, Iterator

import numpy as np

from lmforge.config import DataConfig, PrepareConfig
from lmforge.data import FILTERS, clean
from lmforge.data.classifiers import export_models
from lmforge.data.clean import Doc, kind_of
from lmforge.data.dedup import MinHasher, band, exact_key, jaccard, shingle_hashes
from lmforge.data.pii import RedactPII, redacted
from lmforge.data.sources import (Document, Inputs, Skip, SourceStats, batched,
                                  iter_documents, list_inputs, skip_hint)
from lmforge.errors import LmforgeError
from lmforge.executors import make_executor
from lmforge.figures import plural, size
from lmforge.files import (atomic_write_bytes, atomic_write_json, atomic_write_text, building_folder, claim_output,
                           fingerprint, install, is_complete, json_format_is, output_errors, read_own_bytes,
                           refuse_inside_sources, refuse_link, remove, remove_own)
from lmforge.folders.prepared import (FORMAT, PREPARED, REPORT, SHARD_SUFFIX, WORK_FINGERPRINT, PrepareReport,
                                      PreparedDir, clean_shard, read_jsonl_gz, rejected_shard, work_shard,
                                      write_jsonl_gz)
from lmforge.locks import FolderLock
from lmforge.processes import peak_rss_bytes, process_peak_rss_bytes, reset_peak_rss
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


def filter_shard(index: int, items: list, cfg: PrepareConfig, work: Path, rejected_dir: Path, partitions: int) -> None:
    """Phase 1 for one shard. `items` are Documents and reader Skips, in stream order; what phase 2's
    key partitions read is written split into `partitions` parts."""
    reset_peak_rss()  # a pool worker's earlier tasks (a parent's reading, with one worker) are not this one's
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
    np.save(base.with_suffix(".hassig.npy"), np.array(has_sig, dtype=bool))
    write_key_parts(base.with_suffix(".keys"), [r["id"] for r in kept], keys, lines, partitions)
    stats = {"items": len(items), "kept": len(kept), "rejected": len(rejected),
             "rejected_tally": tally_rejected(rejected), "repairs": stack.counts(),
             "steps": stack.step_stats(), "redaction_examples": dict(redacted), "peak_rss_bytes": peak_rss_bytes(),
             "kinds_in": dict(Counter(d.kind for d in docs))}
    atomic_write_json(base.with_suffix(".done"), stats)  # the completion marker, written last


# ---------------------------------------------------------------- phase 2: decisions, in partitions
#
# As datatrove's MinHash pipeline (signatures -> buckets -> clusters -> filter), each step a task on the
# executor, none holding the whole corpus:
#   keys_P.json  per hash partition of ids, exact keys and line keys (key_partitions() tasks): ids seen
#                earlier in the stream (renamed), exact copies of an earlier document, boilerplate lines;
#                phase 1 scatters them (shard_N.keys: one part per partition), so a task reads its own
#                part of each shard only, as datatrove's signature step writes one file per bucket;
#   band_B_Q.npy per MinHash band and bucket partition (minhash_bands x band_partitions() tasks): the
#                members of every bucket of two or more among the band's rows whose value hashes to
#                partition Q, found by streaming every shard's signatures and sorting those rows only;
#   one task     verification of those candidates only, by true Jaccard in stream order, and a removal
#                list per shard (shard_N.drop.json); dedup.json, written last, says it is done.
# A document is named by its stream position (shard offset + row) until a decision needs its id.

MIN_KEY_PARTITIONS = 8
KEY_PARTITIONS_PER_BAND_PARTITION = 64
PARTITIONS_FILE = "partitions.json"  # in work/: the counts a resumed run reads back (its .keys are split by one)
BAND_CHUNK_ROWS = 8_192  # signature rows a band task reads of a shard at a time (3.7 MB of a 112-value sig.npy)


def key_partitions(input_bytes: int, cfg: PrepareConfig) -> int:
    """ceil(input bytes / prepare.key_partition_bytes), at least 8: a key task holds the ids, exact keys
    and candidate boilerplate lines of about key_partition_bytes of input, whatever the corpus's size.
    The bytes are the listing's, known before any is read (a compressed file counts compressed, so a
    gzipped corpus's partitions hold a few times more text). No output depends on the count: a key lands
    in one partition whatever their number."""
    return max(MIN_KEY_PARTITIONS, -(-input_bytes // cfg.key_partition_bytes))


def band_partitions(partitions: int) -> int:
    """Bucket partitions of each band: one per 64 key partitions, so a band task holds the band rows of
    about 64 x key_partition_bytes of input (~2M rows, ~0.2 GB at 1 GB a key partition), whatever the
    corpus's size; one below 64 GB. Every task reads the band's signatures whole to pick its rows, so
    more partitions than memory asks for would only read more."""
    return -(-partitions // KEY_PARTITIONS_PER_BAND_PARTITION)


def bucket_partition(values: np.ndarray, partitions: int) -> np.ndarray:
    """(n, rows) uint32 band values -> (n,) partition of each: a multiply-xor hash of all its rows, stable
    across processes and machines (equal values, one partition; MinHash minima are small numbers, so
    no single row is used as it is)."""
    h = np.zeros(len(values), dtype=np.uint64)
    for column in values.T:
        h = (h ^ column.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    return ((h ^ (h >> np.uint64(32))) % np.uint64(partitions)).astype(np.int64)


def _partition(doc_id: str, partitions: int) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=4).digest(), "little") % partitions


def _hex_partition(key: str, partitions: int) -> int:
    """Of an exact or line key: hex digits of a hash already."""
    return int(key[:8], 16) % partitions


def write_key_parts(path: Path, ids: list[str], exact_keys: list[str], lines: Counter, partitions: int) -> None:
    """shard_N.keys: partitions + 1 byte offsets (little-endian uint64), then one JSON line per partition,
    part P from offset P to offset P + 1: {"ids": [[row, id]], "exact": [[row, key]], "lines": {key: documents}}.
    A key task reads 16 bytes of the header and its own part, whatever the number of partitions."""
    parts = [{"ids": [], "exact": [], "lines": {}} for _ in range(partitions)]
    for row, (doc_id, key) in enumerate(zip(ids, exact_keys)):
        parts[_partition(doc_id, partitions)]["ids"].append([row, doc_id])
        parts[_hex_partition(key, partitions)]["exact"].append([row, key])
    for key, n in lines.items():
        parts[_hex_partition(key, partitions)]["lines"][key] = n
    bodies = [json.dumps(part, separators=(",", ":")).encode() + b"\n" for part in parts]
    offsets = 8 * (partitions + 1) + np.cumsum([0] + [len(b) for b in bodies])
    atomic_write_bytes(path, offsets.astype("<u8").tobytes() + b"".join(bodies))


def read_key_part(path: Path, part: int) -> dict:
    """Partition `part`'s part of shard_N.keys, and no other byte of it but its two offsets."""
    with open(path, "rb", buffering=0) as f:
        f.seek(8 * part)
        start, end = np.frombuffer(f.read(16), "<u8").tolist()
        f.seek(start)
        return json.loads(f.read(end - start))


def key_partition(part: int, work: Path, offsets: list[int], documents: int, cfg: PrepareConfig) -> None:
    """Renamed ids, exact duplicates and boilerplate lines among the keys of partition `part`.

    An id met earlier in the stream becomes `id@shard:row`, as it always has (an id that itself has
    that form and equals an earlier rename keeps it: the rename is no longer looked up globally)."""
    reset_peak_rss()
    seen_ids: set[str] = set()
    exact_first: dict[str, int] = {}
    renamed, exact = [], []
    line_docs: Counter = Counter()
    for shard, offset in enumerate(offsets):
        keys = read_key_part(work / f"{work_shard(shard)}.keys", part)
        for row, doc_id in keys["ids"]:
            if doc_id in seen_ids:
                renamed.append([offset + row, f"{doc_id}@{shard}:{row}"])
            seen_ids.add(doc_id)
        for row, key in keys["exact"] if cfg.exact_dedup else ():
            first = exact_first.setdefault(key, offset + row)
            if first != offset + row:
                exact.append([offset + row, first])
        if cfg.boilerplate:
            line_docs.update(keys["lines"])
    threshold = max(cfg.boilerplate_min_documents, cfg.boilerplate_min_fraction * max(documents, 1))
    atomic_write_json(work / f"keys_{part:05d}.json", {
        "renamed": renamed, "exact": exact, "boilerplate": sorted(k for k, n in line_docs.items() if n >= threshold),
        "peak_rss_bytes": peak_rss_bytes()})


def band_buckets(index: int, part: int, parts: int, work: Path, offsets: list[int], cfg: PrepareConfig) -> None:
    """work/band_B_Q.npy: (bucket, position) for every member of a bucket of two or more in band `index`,
    among the rows whose band value is in bucket partition `part` of `parts`, by bucket then stream
    position. A bucket is a value of the band's rows (rows equal, not their hash), so it lies in one
    partition whole. Each shard's signatures are read BAND_CHUNK_ROWS at a time; the task holds its own
    rows only. Its peak memory goes beside it, in work/band_B_Q.json, written first (the .npy is the marker)."""
    reset_peak_rss()
    rows = cfg.minhash_rows
    values, positions = [], []
    for shard, offset in enumerate(offsets):
        has = np.load(work / f"{work_shard(shard)}.hassig.npy")
        sigs = np.load(work / f"{work_shard(shard)}.sig.npy", mmap_mode="r")
        for start in range(0, len(has), BAND_CHUNK_ROWS):
            signed = np.flatnonzero(has[start:start + BAND_CHUNK_ROWS]) + start
            value = np.ascontiguousarray(band(sigs[start:start + BAND_CHUNK_ROWS], index, rows))[signed - start]
            mine = bucket_partition(value, parts) == part
            values.append(value[mine])
            positions.append(offset + signed[mine])
        del sigs  # unmapped: its pages leave this task's memory
    value = np.concatenate(values) if values else np.zeros((0, rows), np.uint32)
    position = np.concatenate(positions).astype(np.int64) if positions else np.zeros(0, np.int64)
    order = np.lexsort(value.T[::-1])  # stable: positions ascend within a bucket
    value, position = value[order], position[order]
    new = np.ones(len(value), dtype=bool)
    new[1:] = np.any(value[1:] != value[:-1], axis=1)
    bucket = np.cumsum(new) - 1
    size = np.bincount(bucket)
    shared = size[bucket] > 1
    out = np.stack([bucket[shared], position[shared]], axis=1).astype(np.int64)
    name = band_file(index, part)
    tmp = work / f"{name}.tmp.npy"
    np.save(tmp, out)
    atomic_write_json(work / f"{name}.json", {"peak_rss_bytes": peak_rss_bytes()})
    os.replace(tmp, work / f"{name}.npy")


def band_file(index: int, part: int) -> str:
    return f"band_{index:05d}_{part:05d}"


def decide_duplicates(work: Path, offsets: list[int], partitions: int, bands_parts: int, cfg: PrepareConfig) -> dict:
    """Exact copies, and the near-duplicate candidates verified by true Jaccard in stream order: a
    document is checked only against the *kept* earlier members of its buckets, earliest first, so a
    cluster of k copies costs about k checks (each against the kept copy), not the k^2/2 pairs of its
    bucket. Holds the candidates and the duplicates, never every document. Writes shard_N.drop.json
    per shard and returns dedup.json's contents."""
    renamed: dict[int, str] = {}
    exact: dict[int, int] = {}
    boilerplate: list[str] = []
    for part in range(partitions):
        keys = json.loads((work / f"keys_{part:05d}.json").read_text())
        renamed.update((pos, new) for pos, new in keys["renamed"])
        exact.update((pos, first) for pos, first in keys["exact"])
        boilerplate += keys["boilerplate"]
    dropped: dict[int, dict] = {pos: {"reason": "exact_duplicate", "duplicate_of": first, "jaccard": 1.0}
                                for pos, first in exact.items()}
    candidates_checked = 0
    bands_of: dict[int, list[int]] = defaultdict(list)
    if cfg.near_dedup:
        copies = np.fromiter(exact, dtype=np.int64, count=len(exact))
        first_bucket = 0
        for index, part in np.ndindex(cfg.minhash_bands, bands_parts):  # a bucket is in one file whole
            members = np.load(work / f"{band_file(index, part)}.npy")
            members = members[~np.isin(members[:, 1], copies)]  # exact copies take no part
            shared = np.bincount(members[:, 0])[members[:, 0]] > 1 if len(members) else np.zeros(0, bool)
            for bucket, pos in members[shared].tolist():
                bands_of[pos].append(first_bucket + bucket)
            first_bucket += int(members[:, 0].max()) + 1 if len(members) else 0
        texts = _load_texts(work, offsets, set(bands_of))
        shingles = {pos: shingle_hashes(texts.pop(pos), cfg.ngram_words) for pos in list(texts)}  # a text goes once hashed
        kept_in: dict[int, list[int]] = defaultdict(list)
        for pos in sorted(bands_of):
            earlier = sorted({m for bucket in bands_of[pos] for m in kept_in[bucket]})
            for other in earlier:
                candidates_checked += 1
                score = jaccard(shingles[pos], shingles[other])
                if score >= cfg.near_dedup_threshold:
                    dropped[pos] = {"reason": "near_duplicate", "duplicate_of": other, "jaccard": round(score, 4)}
                    break
            else:
                for bucket in bands_of[pos]:
                    kept_in[bucket].append(pos)
    names = _ids_at(work, offsets, {d["duplicate_of"] for d in dropped.values()}, renamed)
    per_shard: dict[int, dict] = defaultdict(lambda: {"renamed": {}, "dropped": {}})
    for pos, new in sorted(renamed.items()):
        shard = _shard_of(offsets, pos)
        per_shard[shard]["renamed"][str(pos - offsets[shard])] = new
    for pos, d in sorted(dropped.items()):
        shard = _shard_of(offsets, pos)
        per_shard[shard]["dropped"][str(pos - offsets[shard])] = {**d, "duplicate_of": names[d["duplicate_of"]]}
    for shard in range(len(offsets)):
        atomic_write_json(work / f"{work_shard(shard)}.drop.json", per_shard[shard])
    return {"boilerplate_lines": sorted(boilerplate), "candidate_pairs_checked": candidates_checked,
            "candidate_documents": len(bands_of), "duplicates": len(dropped)}


def deduplicate(work: Path, n_shards: int, partitions: int, bands_parts: int, cfg: PrepareConfig, executor) -> None:
    """Phase 2: the partitions on the executor (those not done yet), then the decisions; dedup.json last."""
    offsets, documents = shard_offsets(work, n_shards)
    for part in range(partitions):
        if not (work / f"keys_{part:05d}.json").is_file():
            executor.submit(key_partition, part, work, offsets, documents, cfg)
    for index, part in np.ndindex(cfg.minhash_bands if cfg.near_dedup else 0, bands_parts):
        if not (work / f"{band_file(index, part)}.npy").is_file():
            executor.submit(band_buckets, index, part, bands_parts, work, offsets, cfg)
    executor.wait()
    reset_peak_rss()  # in this process: what the decisions alone hold (process_peak_rss_bytes keeps the rest)
    decisions = decide_duplicates(work, offsets, partitions, bands_parts, cfg)
    atomic_write_json(work / "dedup.json", {**decisions, "peak_rss_bytes": peak_rss_bytes()})  # after every drop.json


def shard_offsets(work: Path, n_shards: int) -> tuple[list[int], int]:
    """Each shard's first row in stream order, and the documents kept by phase 1 in all."""
    offsets, documents = [], 0
    for index in range(n_shards):
        offsets.append(documents)
        documents += json.loads((work / f"{work_shard(index)}.done").read_text())["kept"]
    return offsets, documents


def _shard_of(offsets: list[int], pos: int) -> int:
    return int(np.searchsorted(offsets, pos, side="right")) - 1


def _ids_at(work: Path, offsets: list[int], wanted: set[int], renamed: dict[int, str]) -> dict[int, str]:
    """The final ids of the documents at stream positions `wanted`."""
    by_shard: dict[int, list[int]] = defaultdict(list)
    for pos in wanted:
        by_shard[_shard_of(offsets, pos)].append(pos)
    names = {}
    for shard, positions in by_shard.items():
        ids = _shard_ids(work / f"{work_shard(shard)}.keys")
        for pos in positions:
            names[pos] = renamed.get(pos, ids[pos - offsets[shard]])
    return names


def _shard_ids(path: Path) -> dict[int, str]:
    """Row -> id of one shard, from every part of its .keys."""
    data = path.read_bytes()
    parts = data[int.from_bytes(data[:8], "little"):].split(b"\n")[:-1]  # the first offset: where the header ends
    return {row: doc_id for part in parts for row, doc_id in json.loads(part)["ids"]}


def _load_texts(work: Path, offsets: list[int], wanted: set[int]) -> dict[int, str]:
    """The kept texts at stream positions `wanted`, each shard read once."""
    by_shard: dict[int, set[int]] = defaultdict(set)
    for pos in wanted:
        shard = _shard_of(offsets, pos)
        by_shard[shard].add(pos - offsets[shard])
    texts = {}
    for shard, rows in sorted(by_shard.items()):
        for row, record in enumerate(read_jsonl_gz(work / f"{work_shard(shard)}.kept{SHARD_SUFFIX}")):
            if row in rows:
                texts[offsets[shard] + row] = record["text"]
    return texts


# ---------------------------------------------------------------- phase 3: write, per shard

def write_shard(index: int, work: Path, out: Path, decisions_path: Path) -> None:
    """Phase 3 for one shard: its own removals (shard_N.drop.json) and the boilerplate lines, nothing of
    the other shards'."""
    reset_peak_rss()
    boilerplate = set(json.loads(decisions_path.read_text())["boilerplate_lines"])
    decisions = json.loads((work / f"{work_shard(index)}.drop.json").read_text())
    renamed, dropped = decisions["renamed"], decisions["dropped"]
    kept, rejected = [], []
    removed_lines = 0
    for row, record in enumerate(read_jsonl_gz(work / f"{work_shard(index)}.kept{SHARD_SUFFIX}")):
        record["id"] = renamed.get(str(row), record["id"])
        original = record.pop("original", record["text"])
        if str(row) in dropped:
            d = dropped[str(row)]
            rejected.append({"id": record["id"], "source": record["source"], "stage": "dedup", "reason": d["reason"],
                             "duplicate_of": d["duplicate_of"], "jaccard": d["jaccard"], "text": original})
            continue
        if boilerplate and record["kind"] != "code":
            lines = record["text"].split("\n")
            gone = [i for i, l in enumerate(lines) if l.strip() and _line_key(l.strip()) in boilerplate]
            if gone:
                removed_lines += len(gone)
                gone_rows = set(gone)
                text = "\n".join(l for i, l in enumerate(lines) if i not in gone_rows)
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

HOW_NOT_WHAT = ("workers", "executor", "key_partition_bytes")  # how the work is split: the same files either way


def prepare_fingerprint(inputs: Inputs, cfg: PrepareConfig, data: DataConfig, identity: dict | None = None) -> str:
    """`identity`: inputs.identity(), when the caller has it (it stats every file)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in HOW_NOT_WHAT}
    return fingerprint({"sources": inputs.sources, "inputs": identity or inputs.identity(),  # kinds in inputs
                        "prepare": settings,
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
    identity = inputs.identity()
    fp = prepare_fingerprint(inputs, cfg, data, identity)
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
    # the listing's bytes (the reader's cap aside), known before any is read; a resumed run keeps its count
    partitions, bands_parts = _recorded_partitions(work, min(identity["bytes"], data.max_bytes or identity["bytes"]), cfg)

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
            if not _filtered(work, index):
                executor.submit(filter_shard, index, items, cfg, work, build.rejected_dir, partitions)
            meter.update(len(items))
        meter.close()
        log(f"prepare: waiting for the last shards' filters ({_seconds(started)} so far)")
        executor.wait()
        if stats.capped:
            log(f"prepare: {stats.cap_note()}")
        if n_shards == 0:
            raise LmforgeError(f"no documents found in {', '.join(sources)}: give text, JSONL, Parquet or WARC files")
        decisions_path = work / "dedup.json"
        # a work/ of a prepare from before the staged decisions has a dedup.json but no removal lists
        if not (decisions_path.is_file() and all((work / f"{work_shard(i)}.drop.json").is_file() for i in range(n_shards))):
            log(f"prepare: deciding exact and near duplicates and boilerplate lines ({_seconds(started)} so far)")
            deduplicate(work, n_shards, partitions, bands_parts, cfg, executor)
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


def _recorded_partitions(work: Path, input_bytes: int, cfg: PrepareConfig) -> tuple[int, int]:
    """The key partitions of this work/ (those its shards' .keys were split into, if any was written)
    and the bucket partitions of each band. A count not recorded is chosen now, and the files split by
    it another way (keys_P.json, band files) go."""
    path = work / PARTITIONS_FILE
    try:
        recorded = json.loads(path.read_text())
        partitions = int(recorded["partitions"])
    except (OSError, ValueError, KeyError, TypeError):
        for stale in work.glob("keys_*.json"):  # of a prepare that recorded no count: split another way
            stale.unlink()
        recorded, partitions = {"input_bytes": input_bytes}, key_partitions(input_bytes, cfg)
    if not isinstance(recorded.get("band_partitions"), int):
        for stale in work.glob("band_*"):  # of a prepare that split no band (band_B.npy) or recorded no count
            stale.unlink()
        recorded = {**recorded, "partitions": partitions, "band_partitions": band_partitions(partitions)}
        atomic_write_json(path, recorded)
    return partitions, recorded["band_partitions"]


def _filtered(work: Path, index: int) -> bool:
    """Phase 1 is done for shard `index` (its marker is written last; a work/ left by a version of
    prepare without the partitioned keys file is filtered again)."""
    return (work / f"{work_shard(index)}.done").is_file() and (work / f"{work_shard(index)}.keys").is_file()


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
    # a work/ left by a prepare without these readings counts 0 for its steps (a resumed run reads its files)
    partitions = [json.loads(p.read_text()) for p in sorted(work.glob("keys_*.json"))]
    bands = [json.loads(p.read_text()) for p in sorted(work.glob("band_*.json"))]
    peaks = {"filter": max(d["peak_rss_bytes"] for d in done),
             "keys": max((k.get("peak_rss_bytes", 0) for k in partitions), default=0),
             "buckets": max((b["peak_rss_bytes"] for b in bands), default=0),
             "decisions": decisions.get("peak_rss_bytes", 0),
             "write": max(w["peak_rss_bytes"] for w in written),
             "parent": process_peak_rss_bytes()}
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
        reader=stats.reader_report(), shards=n_shards, worker_peak_rss_bytes=peak_rss,
        peak_rss_by_step=peaks, seconds=round(seconds, 2),
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
    if report.peak_rss_by_step:
        lines.append("  peak memory by step: " + ", ".join(f"{step} {n / 1e6:,.0f} MB"
                                                            for step, n in report.peak_rss_by_step.items()))
    return "\n".join(lines)
