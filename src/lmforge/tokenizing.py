"""The tokenize stage: a corpus in, token shards on disk out (the folder's format: lmforge/folders/tokenized.py).

TOK must be new, empty or a tokenized folder (files.claim_output). It is built in a sibling,
`.TOK.tokenize-building/`, whose entries then replace only lmforge's own (meta.json last).

Every document is preceded by one `<|endoftext|>` token, so the stream reads
`EOT doc EOT doc ...` and a model always sees where a document begins.

Two passes over the corpus: one draws the tokenizer's sample (`TokenizerSample`) and learns from it;
the second cuts the stream into pieces of at most tokenizer.encode_batch_documents documents and
encode_batch_bytes of text, as prepare cuts its shards, and hands each to a task on prepare's
executor (lmforge/executors.py: a local process pool or Ray; prepare.workers, prepare.executor). A
task writes its piece's train and val tokens to `work/` in the building folder (`encode_piece`); the
parent appends the pieces, in order and one at a time, to the shards, so the shards are the same
whatever the number of workers or the executor (neither is in the fingerprint), and memory follows
the settings: the parent holds the text of 2 x workers pieces (and the next one) and the tokens of one.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import heapq
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lmforge.config import DataConfig, TokenizerConfig
from lmforge.executors import LocalExecutor, make_executor
from lmforge.data.clean import kind_of
from lmforge.data.sources import Document, Inputs, SourceStats, batched, iter_documents, list_inputs
from lmforge import files
from lmforge.figures import plural, size
from lmforge.errors import LmforgeError
from lmforge.locks import FolderLock
from lmforge.processes import peak_rss_bytes
from lmforge.progress import Meter
from lmforge.folders.tokenized import (FORMAT, META, SPLITS, TOKENIZER_FILE, TOKENS, TRAIN, VAL, read_meta,
                                       shard_name)
from lmforge.tokenizer import EOT, SPECIAL_TOKENS, load_tokenizer, train_tokenizer



def is_validation(doc_id: str, val_fraction: float) -> bool:
    """Stable split by document: the same id always lands on the same side."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return h / 2**64 < val_fraction


def split_document(ids: np.ndarray, n_bytes: int, val_fraction: float) -> tuple[tuple[np.ndarray, int], ...]:
    """(train tokens, bytes), (val tokens, bytes) of a long document: its last val_fraction held out,
    its bytes shared out by tokens."""
    cut = len(ids) - round(val_fraction * len(ids))
    train_bytes = round(n_bytes * cut / len(ids))
    return (ids[:cut], train_bytes), (ids[cut:], n_bytes - train_bytes)


def source_prefixes(sources: list[str]) -> list[str]:
    """The folder part of each source (a folder itself, a file's parent, a glob's fixed part), longest
    first: a file's document id without it is the same wherever the corpus is copied."""
    prefixes = set()
    for source in sources:
        path = Path(source)
        folder = files.glob_root(source) or (path if path.is_dir() else path.parent)
        prefixes.add(str(folder).rstrip(os.sep) + os.sep)
    return sorted(prefixes, key=len, reverse=True)


def split_key(doc_id: str, prefixes: list[str]) -> str:
    return next((doc_id[len(p):] for p in prefixes if doc_id.startswith(p)), doc_id)


SAMPLE_KEY = b"lmforge tokenizer sample"  # keys the sample's hash apart from the train/val split's


def sample_rank(key: str) -> int:
    """A stable hash of a document's split key; keyed, so the lowest ranks are not the val documents."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=SAMPLE_KEY).digest()
    return int.from_bytes(digest, "little")


def document_kind(doc: Document) -> str:
    """prepare's classification (prose, web, code); a record of a prepared clean/ says its own."""
    return kind_of(doc.source, doc.kind, doc.text)


SAMPLE_PIECE_CHARS = 1 << 16


def pieces(text: str, size: int = SAMPLE_PIECE_CHARS) -> list[str]:
    """`text` cut at line ends into pieces of about `size` characters (a longer line stays whole)."""
    if len(text) <= size:
        return [text]
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


class TokenizerSample:
    """The text the tokenizer learns from: of the whole corpus, the pieces whose id hashes lowest, just
    enough of them to reach `train_bytes` (0: every document). A piece is a document, or ~64K characters
    of a longer one (id `ID#N`, cut at a line end).

    A prefix of the stream is whatever sorts first (at 300 MB: 7.6 MB of books, no docs); a hash of
    the id draws from every source in proportion to its size, wherever it lies in reading order. In
    pieces, because whole documents made a lumpy sample: 8 MB of /usr/share/doc was 121 documents, a
    few changelogs a large share of it. The hash is of the id relative to its source folder, so the
    same corpus, even copied elsewhere, gives the same sample and the same tokenizer. One pass over
    the corpus; the lowest hashes are known only at its end, so the sample (train_bytes of text, what
    the trainer reads anyway) is held until then.
    """

    def __init__(self, train_bytes: int, prefixes: list[str]):
        self.train_bytes, self.prefixes = train_bytes, prefixes
        self.corpus: dict[str, Counter] = defaultdict(Counter)  # kind -> documents, bytes
        self.taken: dict[str, Counter] = defaultdict(Counter)

    def texts(self, docs: Iterable[Document]) -> Iterator[str]:
        """The sample's texts in reading order, for the trainer; `report` is complete once they are read."""
        if not self.train_bytes:
            for doc in docs:
                kind, n = document_kind(doc), len(doc.text.encode("utf-8"))
                self.corpus[kind].update(documents=1, bytes=n)
                self.taken[kind].update(documents=1, bytes=n)
                yield doc.text
            return
        heap: list[tuple[int, int, int, str, str, int]] = []  # (-rank, position, piece, kind, text, bytes)
        held = 0
        for position, doc in enumerate(docs):
            kind, key = document_kind(doc), split_key(doc.id, self.prefixes)
            self.corpus[kind]["documents"] += 1
            for i, piece in enumerate(pieces(doc.text)):
                n = len(piece.encode("utf-8"))
                self.corpus[kind]["bytes"] += n
                heapq.heappush(heap, (-sample_rank(f"{key}#{i}" if i else key), position, i, kind, piece, n))
                held += n
                while held - heap[0][5] >= self.train_bytes:  # the highest rank is not needed to reach train_bytes
                    held -= heapq.heappop(heap)[5]
        heap.sort(key=lambda item: item[1:3])  # reading order
        for kind, position in {(item[3], item[1]) for item in heap}:
            self.taken[kind]["documents"] += 1
        for item in heap:
            self.taken[item[3]]["bytes"] += item[5]
        for item in heap:
            yield item[4]

    def report(self) -> dict:
        """meta.json's `tokenizer_sample`: what the tokenizer learned from, per kind, against the corpus."""
        def total(counts: dict[str, Counter], key: str) -> int:
            return sum(c[key] for c in counts.values())

        return {
            "rule": "lowest hash of the id, in pieces of 64K characters" if self.train_bytes else "every document",
            "train_bytes": self.train_bytes,
            "documents": total(self.taken, "documents"), "bytes": total(self.taken, "bytes"),
            "corpus_documents": total(self.corpus, "documents"), "corpus_bytes": total(self.corpus, "bytes"),
            "by_kind": {kind: {"documents": self.taken[kind]["documents"], "bytes": self.taken[kind]["bytes"],
                               "corpus_documents": c["documents"], "corpus_bytes": c["bytes"]}
                        for kind, c in sorted(self.corpus.items())},
        }


def sample_summary(sample: dict) -> str:
    """One line: how much of the corpus, and of which kinds, the tokenizer learned from."""
    kinds = ", ".join(f"{k} {v['documents']:,} of {v['corpus_documents']:,} ({size(v['bytes'])} of "
                      f"{size(v['corpus_bytes'])})" for k, v in sample["by_kind"].items())
    return (f"{size(sample['bytes'])} of {size(sample['corpus_bytes'])}, {sample['documents']:,} of "
            f"{plural(sample['corpus_documents'], 'document')} ({sample['rule']}); by kind, documents: {kinds}")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ShardWriter:
    """Appends token arrays to numbered shard files of at most `shard_tokens` tokens."""

    def __init__(self, folder: Path, dtype: np.dtype, shard_tokens: int):
        self.folder, self.dtype, self.shard_tokens = folder, dtype, shard_tokens
        folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self.tokens = self.documents = self.bytes = 0
        self._file = None
        self._in_shard = 0

    def _roll(self) -> None:
        if self._file is not None:
            self._file.close()
        name = shard_name(len(self.shards))
        self._file = open(self.folder / name, "wb")
        self.shards.append({"file": name, "tokens": 0})
        self._in_shard = 0

    def write(self, ids: np.ndarray, n_bytes: int, documents: int = 1) -> None:
        """Append `ids` (an array or a memory map), which hold `n_bytes` of text and the start of `documents`."""
        self.documents += documents  # a document counts where it starts
        self.bytes += n_bytes
        while len(ids):
            if self._file is None or self._in_shard >= self.shard_tokens:
                self._roll()
            take = ids[: self.shard_tokens - self._in_shard]
            np.asarray(take, dtype=self.dtype).tofile(self._file)
            self._in_shard += len(take)
            self.shards[-1]["tokens"] += len(take)
            self.tokens += len(take)
            ids = ids[len(take):]

    def close(self) -> dict:
        if self._file is not None:
            self._file.close()
        return {"tokens": self.tokens, "documents": self.documents, "bytes": self.bytes, "shards": self.shards}


# how documents are grouped to be encoded sets memory and speed, never the tokens: a change of these
# alone leaves a tokenized folder complete
BATCHING_KEYS = ("encode_batch_documents", "encode_batch_bytes")


def fingerprint(data: DataConfig, tk: TokenizerConfig, inputs: Inputs) -> str:
    tokenizer = {k: v for k, v in asdict(tk).items() if k not in BATCHING_KEYS}
    return files.fingerprint({"data": asdict(data), "tokenizer": tokenizer, "inputs": inputs.identity()})


def list_tokenize_inputs(data: DataConfig, out: Path, exclude: Iterable[Path] = ()) -> Inputs:
    """The files tokenize reads: never its own output or temporary folder (`tokenize SRC --out
    SRC/tok`), nor `exclude`, what the caller writes (the run folder around RUN/tokens)."""
    return list_inputs(data.sources, [out, files.building_folder(out, "tokenize"), *exclude], data.kinds)


def is_complete(folder: Path, data: DataConfig, tk: TokenizerConfig, exclude: Iterable[Path] = ()) -> bool:
    """Whether `folder` holds the tokens of these settings and of the sources as they are now."""
    try:
        inputs = list_tokenize_inputs(data, Path(folder), exclude)
    except LmforgeError:  # a source gone: not what the folder was made from
        return False
    return files.is_complete(Path(folder) / META, fingerprint(data, tk, inputs))


PIECE_CHARS = 1 << 16  # a longer document is encoded in pieces of about this many characters
# Where the byte-level pre-tokenizer (the GPT-2 pattern) ends a pre-token whether or not the text goes on,
# so that pieces cut there encode to the ids of the whole (BPE never merges across pre-tokens):
# - before the last character of a whitespace run: `\s+(?!\S)` takes the run but its last character,
#   which starts the next pre-token (" word", "\nword"); a piece ending there takes the same run at its end;
# - after a newline standing alone between two non-spaces: the newline is a pre-token of its own.
# The characters named are ASCII (the pattern's \s and Python's agree on them); any other \s stays uncut.
SAFE_CUT = re.compile(r"(?<=[ \t\n\r])(?=[ \t\n\r]\S)|(?<=\S\n)(?=\S)")


def text_pieces(text: str, max_chars: int) -> list[str]:
    """`text` cut at SAFE_CUT places into pieces of at most `max_chars` characters where a place allows
    (a piece runs on to the next place otherwise), which encode, one after another, to the whole's ids."""
    if len(text) <= max_chars:
        return [text]
    cuts = [m.start() for m in SAFE_CUT.finditer(text)]
    pieces: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        cut = _next_cut(cuts, start, max_chars)
        if cut is None:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _next_cut(cuts: list[int], start: int, max_chars: int) -> int | None:
    """The last of the sorted `cuts` within `max_chars` after `start`, else the first one beyond."""
    last_fitting = bisect.bisect_right(cuts, start + max_chars) - 1
    if last_fitting >= 0 and cuts[last_fitting] > start:
        return cuts[last_fitting]
    first_after = bisect.bisect_right(cuts, start)
    return cuts[first_after] if first_after < len(cuts) else None


@dataclass
class _Piece:
    text: str
    document: Document
    last: bool  # the document's last piece: its ids are complete


def _pieces(docs: Iterable[Document], max_chars: int) -> Iterator[_Piece]:
    for doc in docs:
        parts = text_pieces(doc.text, max_chars)
        for i, part in enumerate(parts):
            yield _Piece(part, doc, last=i == len(parts) - 1)


def encoded_documents(tok, docs: Iterable[Document], max_documents: int, max_bytes: int
                      ) -> Iterator[tuple[Document, np.ndarray]]:
    """Each document with its ids, in order. Encodings hold ~40x their text in memory while a batch is
    encoded, so a batch holds at most `max_documents` documents or pieces
    and `max_bytes` of text, and a document longer than PIECE_CHARS is encoded in pieces (`text_pieces`,
    the batch encodes them in parallel): memory follows the settings, not the longest document."""
    held: list[np.ndarray] = []  # the ids of a document's pieces so far
    for batch in batched(_pieces(docs, min(PIECE_CHARS, max_bytes)), max_documents, max_bytes):
        for piece, enc in zip(batch, tok.encode_batch_fast([p.text for p in batch], add_special_tokens=False)):
            held.append(np.asarray(enc.ids, dtype=np.int64))
            if piece.last:
                yield piece.document, np.concatenate(held)
                held = []


def _counted(docs: Iterator[Document], meter: Meter) -> Iterator[Document]:
    for doc in docs:
        meter.update(1)
        yield doc


def tokenize_corpus(data: DataConfig, tk: TokenizerConfig, out: str | Path, log=print,
                    exclude: Iterable[Path] = (), force: bool = False, progress: bool = True,
                    workers: int = 0, executor: str = "local") -> dict:
    """Train the tokenizer on a sample of the whole stream (`TokenizerSample`), then encode the stream into shards.

    The folder is built in a sibling and moved into place at the end, so an interrupted run never
    leaves something that looks complete. One tokenize per folder at a time (a lock beside it).
    `exclude`: paths the caller writes, never read as input. `force`: write into a non-empty folder
    that is not a tokenized one, beside (never over) what is there. `progress`: count the documents
    (a bar on a terminal, else a dated line every 30 s). `workers` and `executor`: prepare.workers
    and prepare.executor, where the pieces are encoded (0 workers: one per core).
    """
    out = Path(out)
    inputs = list_tokenize_inputs(data, out, exclude)  # first: a missing source is refused before anything is written
    files.refuse_inside_sources(out, data.sources)
    files.claim_output(out, TOKENS, force)
    # beside the folder, not in it: the lock must outlive a rebuild of the folder's contents
    with FolderLock(out.parent / f".{out.name}.lock", f"tokenize output folder {out}"):
        return _tokenize(data, tk, out, log, inputs, progress, (executor, workers))


def _tokenize(data: DataConfig, tk: TokenizerConfig, out: Path, log, inputs: Inputs, progress: bool,
              processes: tuple[str, int]) -> dict:
    fp = fingerprint(data, tk, inputs)
    if files.is_complete(out / META, fp):
        try:
            meta = read_meta(out)
            log(f"tokenize: {out} is complete, skipping")
            return meta
        except LmforgeError as e:  # made with this config, but its files have changed since
            log(f"tokenize: {out} no longer reads ({e}); tokenizing again")

    def docs(stats: SourceStats) -> Iterator[Document]:
        # both passes read the one listing: a file that appears meanwhile (our own shards) is not read
        return iter_documents(inputs, stats, data.text_field, data.max_bytes, data.max_document_bytes)

    prefixes = source_prefixes(data.sources)  # the split and the sample key on ids relative to their source folder
    started = time.perf_counter()
    log(f"tokenize: reading the corpus for the tokenizer's "
        f"{f'sample of {tk.train_bytes:,} bytes' if tk.train_bytes else 'text (all of it: tokenizer.train_bytes=0)'}")
    train_stats = SourceStats()
    sample = TokenizerSample(tk.train_bytes, prefixes)
    meter = Meter("tokenize: read", "document", log, enabled=progress)
    texts: Iterable[str] = sample.texts(_counted(docs(train_stats), meter))
    if tk.train_bytes:  # the sample is known once the whole corpus is read: say what it is before learning
        texts = list(texts)
        meter.close()
        log(f"tokenize: learning {tk.vocab_size:,} tokens from {sample_summary(sample.report())}")
    tok = train_tokenizer(texts, tk.vocab_size, tk.min_frequency)
    meter.close()
    if train_stats.documents == 0:
        raise LmforgeError(f"no text found in {', '.join(data.sources)} ({train_stats.summary()}): give text files")
    drawn = sample.report()
    said_before = bool(tk.train_bytes)  # a drawn sample is described before learning begins
    log(f"tokenize: learned {tok.get_vocab_size():,} tokens{'' if said_before else ' from ' + sample_summary(drawn)} "
        f"in {time.perf_counter() - started:.0f}s")
    tmp = files.building_folder(out, "tokenize")
    files.refuse_link(tmp)
    files.remove(tmp)  # a killed run's leftover: lmforge's own, by its name
    stats = SourceStats()
    log(f"tokenize: encoding {plural(train_stats.documents, 'document')} into {tmp}, in pieces of at most "
        f"{tk.encode_batch_documents:,} documents and {size(tk.encode_batch_bytes)}")
    meter = Meter("tokenize: encoded", "document", log, enabled=progress, total=train_stats.documents)
    with files.output_errors("tokenize", out):
        with files.discarded_on_error(tmp):
            meta = _write_tokens(data, tk, tok, tmp, docs(stats), stats, fp, prefixes, drawn, processes, meter, log)
        files.install(tmp, out, TOKENS)
    splits = meta["splits"]
    log(f"tokenize: {stats.summary()} -> {splits['train']['tokens']:,} train / {splits['val']['tokens']:,} val tokens "
        f"({meta['bytes_per_token']['train']:.2f} bytes/token) in {out} ({time.perf_counter() - started:.0f}s; "
        f"peak memory per worker {meta['worker_peak_rss_bytes'] / 1e6:,.0f} MB)")
    return meta


WORK = "work"  # in the building folder: the pieces' tokens until the parent has appended them to the shards


@dataclass(frozen=True)
class EncodeSettings:
    """What a task needs to encode a piece, beside its documents (sent to every task: small)."""
    tokenizer: str  # path of tokenizer.json, in the building folder (storage every Ray node sees)
    tokenizer_digest: str  # its sha256: a worker reuses the tokenizer it loaded only for the same file
    dtype: str
    eot: int
    long_document_tokens: int
    val_fraction: float
    prefixes: tuple[str, ...]
    batch_documents: int
    batch_bytes: int


@functools.lru_cache(maxsize=1)
def _worker_tokenizer(path: str, digest: str):
    """One load per worker process, not per piece (parsing a 4,096-token tokenizer.json took 29 ms at load ~10)."""
    del digest  # the cache key only: a later tokenize may write another tokenizer at the same path
    return load_tokenizer(path)


def piece_name(index: int) -> str:
    return f"piece_{index:06d}"


def encode_piece(index: int, docs: list[Document], settings: EncodeSettings, work: Path) -> None:
    """A task: encode one piece of the stream into `work/piece_N.train.bin` and `.val.bin` (the split's
    tokens in order) and `piece_N.json` (per split: tokens, bytes, documents starting; written last,
    the piece's completion marker)."""
    tok = _worker_tokenizer(settings.tokenizer, settings.tokenizer_digest)
    dtype = np.dtype(settings.dtype)
    counts = {s: {"tokens": 0, "documents": 0, "bytes": 0} for s in SPLITS}
    long_documents = 0
    name = piece_name(index)
    with open(work / f"{name}.{TRAIN}.bin", "wb") as train, open(work / f"{name}.{VAL}.bin", "wb") as val:
        streams = {TRAIN: train, VAL: val}

        def put(split: str, ids: np.ndarray, n_bytes: int, documents: int = 1) -> None:
            ids.astype(dtype).tofile(streams[split])
            counts[split]["tokens"] += len(ids)
            counts[split]["documents"] += documents  # a document counts where it starts
            counts[split]["bytes"] += n_bytes

        for doc, doc_ids in encoded_documents(tok, docs, settings.batch_documents, settings.batch_bytes):
            ids = np.empty(len(doc_ids) + 1, dtype=np.int64)
            ids[0] = settings.eot
            ids[1:] = doc_ids
            n_bytes = len(doc.text.encode("utf-8"))
            if len(ids) > settings.long_document_tokens:
                (train_ids, train_bytes), (val_ids, val_bytes) = split_document(ids, n_bytes, settings.val_fraction)
                put(TRAIN, train_ids, train_bytes)
                put(VAL, val_ids, val_bytes, documents=0)
                long_documents += 1
            else:
                held_out = is_validation(split_key(doc.id, list(settings.prefixes)), settings.val_fraction)
                put(VAL if held_out else TRAIN, ids, n_bytes)
    files.atomic_write_json(work / f"{name}.json", {**counts, "input_documents": len(docs),
                                                    "long_documents": long_documents,
                                                    "peak_rss_bytes": peak_rss_bytes()})


class PieceAssembler:
    """Appends the encoded pieces to the shard writers in stream order, each as soon as it and those
    before it are done, and removes its files: the parent maps one piece's tokens at a time and
    `work/` holds only the pieces in flight."""

    def __init__(self, work: Path, writers: dict[str, ShardWriter], dtype: np.dtype, meter: Meter):
        self.work, self.writers, self.dtype, self.meter = work, writers, dtype, meter
        self.next = 0  # the first piece not yet appended
        self.long_documents = self.peak_rss = 0

    def take(self, submitted: int, all_done: bool = False) -> None:
        """Append the done pieces among the first `submitted`; `all_done`: every one of them must be."""
        while self.next < submitted:
            marker = self.work / f"{piece_name(self.next)}.json"
            if not marker.is_file():
                if all_done:
                    raise LmforgeError(f"tokenize: the task of {marker.stem} ended without writing {marker}")
                return
            self._append(self.next, json.loads(marker.read_text()))
            self.next += 1

    def _append(self, index: int, piece: dict) -> None:
        for split in SPLITS:
            path = self.work / f"{piece_name(index)}.{split}.bin"
            counts = piece[split]
            ids = np.memmap(path, dtype=self.dtype, mode="r") if counts["tokens"] else np.empty(0, self.dtype)
            self.writers[split].write(ids, counts["bytes"], counts["documents"])
            del ids  # unmapped before the file goes
            path.unlink()
        (self.work / f"{piece_name(index)}.json").unlink()
        self.long_documents += piece["long_documents"]
        self.peak_rss = max(self.peak_rss, piece["peak_rss_bytes"])
        self.meter.update(piece["input_documents"])


def _last_marked(items: Iterable) -> Iterator[tuple[object, bool]]:
    """Each item with whether it is the last."""
    it = iter(items)
    held = next(it, _NONE)
    while held is not _NONE:
        following = next(it, _NONE)
        yield held, following is _NONE
        held = following


_NONE = object()


def _write_tokens(data: DataConfig, tk: TokenizerConfig, tok, tmp: Path, docs: Iterator[Document],
                  stats: SourceStats, fp: str, prefixes, drawn: dict, processes: tuple[str, int], meter: Meter,
                  log) -> dict:
    """Encode `docs` (read with `stats`) into `tmp`, made here: tokenizer.json, train/, val/, meta.json."""
    vocab = tok.get_vocab_size()
    eot = tok.token_to_id(EOT)
    dtype = token_dtype(vocab)
    tmp.mkdir(parents=True)
    tokenizer_json = tok.to_str(pretty=True)
    files.atomic_write_text(tmp / TOKENIZER_FILE, tokenizer_json)
    work = tmp / WORK
    work.mkdir()
    settings = EncodeSettings(str(tmp / TOKENIZER_FILE), hashlib.sha256(tokenizer_json.encode()).hexdigest(),
                              dtype.name, eot, data.long_document_tokens, data.val_fraction, tuple(prefixes),
                              tk.encode_batch_documents, tk.encode_batch_bytes)
    writers = {s: ShardWriter(tmp / s, dtype, tk.shard_tokens) for s in SPLITS}
    assembler = PieceAssembler(work, writers, dtype, meter)
    executor, submitted = None, 0
    try:
        for piece, last in _last_marked(batched(docs, tk.encode_batch_documents, tk.encode_batch_bytes)):
            if executor is None:  # a corpus of one piece is encoded here: a pool would only add its start-up
                executor = LocalExecutor(1) if last else make_executor(*processes)
            executor.submit(encode_piece, submitted, piece, settings, work)
            submitted += 1
            assembler.take(submitted)
        if executor is not None:
            log(f"tokenize: read all {plural(submitted, 'piece')}; waiting for the last to be encoded")
            executor.wait()
    finally:
        if executor is not None:
            executor.close()
    assembler.take(submitted, all_done=True)
    meter.close()
    files.remove(work)
    splits = {s: w.close() for s, w in writers.items()}
    val_split = _hold_out_tail(tmp, splits, data.val_fraction, eot, dtype, tk.shard_tokens, assembler.long_documents)
    if val_split["rule"] == "tail":
        log(f"tokenize: {val_split['detail']}")
    meta = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "eot_id": eot,
        "sources": data.sources,
        "reader": {"files": stats.files, "documents": stats.documents, "bytes": stats.bytes,
                   "skipped": dict(stats.skipped), "skipped_examples": stats.skipped_examples},
        "splits": splits,
        "val_split": val_split,
        "bytes_per_token": {s: (v["bytes"] / v["tokens"] if v["tokens"] else 0.0) for s, v in splits.items()},
        "tokenizer_sample": drawn,
        "worker_peak_rss_bytes": assembler.peak_rss,
    }
    if stats.documents == 0:
        raise LmforgeError(f"no text found in {', '.join(data.sources)} ({stats.summary()}): give text files")
    files.mark_complete(tmp / META, fp, meta, indent=2)
    return {**meta, "fingerprint": fp}


def _hold_out_tail(folder: Path, splits: dict, val_fraction: float, eot: int, dtype: np.dtype,
                   shard_tokens: int, long_documents: int = 0) -> dict:
    """When whole documents cannot give a quarter of `val_fraction` (one file is one document; a few
    documents may all hash to train), move the tail of the training stream to val, as nanoGPT holds
    out the last 10% of its file. The cut moves forward to a document start when one lies within half the
    held-out length of it (whole documents where they allow), else it falls inside a document.
    Returns the rule, for meta.json."""
    train, val = splits["train"], splits["val"]
    total = train["tokens"] + val["tokens"]
    want = round(val_fraction * total) - val["tokens"]
    if val_fraction <= 0 or want <= 0 or val["tokens"] >= val_fraction * total / 4 or train["tokens"] < 2:
        return {"rule": "hash", "detail": f"whole documents by a hash of their id, and the last val_fraction of each "
                                          f"of {plural(long_documents, 'long one')} (val_fraction {val_fraction})"}
    want = min(want, train["tokens"] - 1)
    stream = np.concatenate([np.fromfile(folder / TRAIN / s["file"], dtype=dtype) for s in train["shards"]])
    cut = len(stream) - want
    starts = np.flatnonzero(stream[cut:cut + want // 2 + 1] == eot)
    at_document = bool(len(starts))
    cut += int(starts[0]) if at_document else 0
    tail = stream[cut:]
    moved_docs = int(np.count_nonzero(tail == eot))  # a document counts where it starts
    # the bytes of one document are not kept per document; split them by token share
    moved_bytes = round(train["bytes"] * len(tail) / train["tokens"])
    shutil.rmtree(folder / TRAIN)
    kept = ShardWriter(folder / TRAIN, dtype, shard_tokens)
    kept.write(stream[:cut], 0)
    shards = kept.close()["shards"]
    train.update(tokens=cut, documents=train["documents"] - moved_docs, bytes=train["bytes"] - moved_bytes,
                 shards=shards)
    name = shard_name(len(val['shards']))
    (folder / VAL).mkdir(exist_ok=True)
    tail.tofile(folder / VAL / name)
    val["shards"].append({"file": name, "tokens": len(tail)})
    val.update(tokens=val["tokens"] + len(tail), documents=val["documents"] + moved_docs,
               bytes=val["bytes"] + moved_bytes)
    return {"rule": "tail", "detail": f"whole documents gave {total - train['tokens'] - len(tail):,} val tokens, "
            f"under a quarter of val_fraction {val_fraction}: the last {len(tail):,} tokens of the stream were held "
            f"out, cut {'at a document start' if at_document else 'inside a document'}"}
