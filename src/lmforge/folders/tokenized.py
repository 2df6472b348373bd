"""The tokenized folder: its file names, meta.json and how it is read back (written by lmforge/tokenizing.py).

    TOK/
      tokenizer.json        Hugging Face `tokenizers` file (byte-level BPE; lmforge/tokenizer.py)
      train/shard_00000.bin raw little-endian uint16 (vocab <= 65536) or uint32 token ids
      val/shard_00000.bin   same; documents are split between train and val by a hash of their id,
                            except that one longer than data.long_document_tokens holds out its own
                            last val_fraction (as nanoGPT holds out the end of its one file); when that
                            cannot give val_fraction, the tail of the stream is held out (meta.json
                            `val_split` says which)
      meta.json             dtype, vocab size, special ids, token/byte/document counts per split,
                            bytes per token, the shard list, the split rule, and a fingerprint of
                            the config used and of the input files (path, size, modification time),
                            and `tokenizer_sample`: the documents and bytes the tokenizer learned from,
                            per kind (prose, web, code), beside the corpus's, and `worker_peak_rss_bytes`:
                            the largest peak resident memory of a process that encoded a piece of the
                            corpus (the main process itself with one worker or a corpus of one piece;
                            the one key that differs between runs of the same settings)

meta.json is written last, as the folder's completion marker (files.mark_complete).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge import files
from lmforge.errors import LmforgeError

META = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "lmforge-tokens-v1"
TOKENS = files.OutputKind("tokenized folder", (TOKENIZER_FILE, "train", "val", META), META,
                          lambda folder: files.json_format_is(folder, META, FORMAT))
TRAIN, VAL = "train", "val"
SPLITS = (TRAIN, VAL)
TOKEN_DTYPES = ("uint16", "uint32")
ID_CHECK_TOKENS = 1 << 24  # tokens per slice of the largest-id scan: memory stays bounded on any shard


def read_meta(folder: str | Path) -> dict:
    """meta.json, checked against the folder (see `meta_problem`): every reader may trust its fields."""
    folder = Path(folder)
    path = folder / META
    if not path.is_file():
        raise LmforgeError(f"{folder} is not a tokenized folder (no {META}): run lmforge tokenize first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise damaged(folder, f"{META} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    problem = meta_problem(folder, meta)
    if problem:
        raise damaged(folder, problem)
    return meta


def damaged(folder: Path, problem: str) -> LmforgeError:
    return LmforgeError(f"tokenized folder {folder} is damaged: {problem}; make it again "
                        f"(lmforge tokenize SOURCES --out {folder})")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def meta_problem(folder: Path, meta) -> str | None:
    """What makes meta.json unusable with the files beside it, or None. Costs a stat per shard and
    one read of tokenizer.json; the ids themselves are checked where the shards are opened."""
    if not isinstance(meta, dict):
        return f"{META} is not a JSON object"
    return _vocabulary_problem(folder, meta) or _splits_problem(folder, meta)


def _vocabulary_problem(folder: Path, meta: dict) -> str | None:
    dtype, vocab, eot = meta.get("dtype"), meta.get("vocab_size"), meta.get("eot_id")
    if dtype not in TOKEN_DTYPES:
        return f"{META} dtype is {dtype!r}, not one of {', '.join(TOKEN_DTYPES)} (token ids are unsigned integers)"
    if not _count(vocab) or vocab == 0 or vocab > np.iinfo(dtype).max + 1:
        return f"{META} vocab_size {vocab!r} is not a size that {dtype} ids can hold"
    if not _count(eot) or eot >= vocab:
        return f"{META} eot_id {eot!r} is not an id below vocab_size {vocab}"
    have = _tokenizer_size(folder)
    if isinstance(have, str):
        return have
    if have > vocab:
        return f"{META} vocab_size {vocab} is smaller than its {TOKENIZER_FILE}'s {have} tokens"
    return None


def _tokenizer_size(folder: Path) -> int | str:
    """tokenizer.json's vocabulary size, or what is wrong with the file."""
    from tokenizers import Tokenizer  # the library only where a folder is checked (cleaning workers never do)

    path = folder / TOKENIZER_FILE
    if not path.is_file():
        return f"{TOKENIZER_FILE} is missing"
    try:
        return Tokenizer.from_file(str(path)).get_vocab_size()
    except Exception as e:  # the tokenizers library raises a bare Exception for a malformed file
        return f"{TOKENIZER_FILE} is damaged ({str(e).splitlines()[0][:120]})"


def _splits_problem(folder: Path, meta: dict) -> str | None:
    splits = meta.get("splits")
    if not isinstance(splits, dict) or any(not isinstance(splits.get(s), dict) for s in SPLITS):
        return f"{META} has no `splits` with {' and '.join(SPLITS)}"
    for split in SPLITS:
        shards = splits[split].get("shards")
        if not isinstance(shards, list) or not all(isinstance(s, dict) and _count(s.get("tokens")) for s in shards):
            return f"{META} splits.{split}.shards is not a list of {{file, tokens}}"
        if splits[split].get("tokens") != sum(s["tokens"] for s in shards):
            return f"{META} splits.{split}.tokens is not the sum of its shards' tokens"
        problem = next(filter(None, (_shard_problem(folder, split, s, meta["dtype"]) for s in shards)), None)
        if problem:
            return problem
    return None


def _shard_problem(folder: Path, split: str, shard: dict, dtype: str) -> str | None:
    path = files.inside(folder / split, shard.get("file"))
    if path is None:
        return f"{META} names shard {shard.get('file')!r}, which is not a file inside {folder / split}"
    if not path.is_file():
        return f"{split}/{shard['file']} is missing"
    size, want = path.stat().st_size, shard["tokens"] * np.dtype(dtype).itemsize
    if size != want:
        return (f"{split}/{shard['file']} holds {size:,} bytes, not the {shard['tokens']:,} {dtype} tokens "
                f"{META} lists (truncated or overwritten)")
    return None




def load_shards(folder: str | Path, split: str) -> list[np.ndarray]:
    """The shards of a split, memory-mapped, each checked once for an id the vocabulary does not have
    (an embedding lookup would fail on it mid-run, or on a GPU as an opaque device assert)."""
    folder = Path(folder)
    meta = read_meta(folder)
    shards = []
    for s in meta["splits"][split]["shards"]:
        if s["tokens"]:
            shard = np.memmap(folder / split / s["file"], dtype=meta["dtype"], mode="r")
            top = largest_id(shard)
            if top >= meta["vocab_size"]:
                raise damaged(folder, f"{split}/{s['file']} holds id {top}, outside vocab_size {meta['vocab_size']}")
            shards.append(shard)
    return shards


def largest_id(shard: np.ndarray) -> int:
    """One sequential read of the shard, a slice at a time."""
    return max(int(shard[i:i + ID_CHECK_TOKENS].max()) for i in range(0, len(shard), ID_CHECK_TOKENS))


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.bin"


def is_tokenized(folder: str | Path) -> bool:
    """Whether `folder` holds a meta.json (checked only when read: `read_meta`)."""
    return (Path(folder) / META).is_file()


def train_tokens(folder: str | Path) -> int:
    """The training split's token count, as meta.json says (its shards unchecked: a count to warn by)."""
    return json.loads((Path(folder) / META).read_text())["splits"]["train"]["tokens"]
