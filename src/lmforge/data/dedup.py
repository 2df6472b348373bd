"""Exact and near-duplicate detection, built to run shard by shard.

1. per shard (parallel): `exact_key` (hash of normalised text) and `minhash` signatures of
   word 5-gram shingles;
2. by partition (lmforge/data/prepare.py's phase 2): documents sharing an exact key, and the
   buckets of documents whose rows are equal in one MinHash `band` (b bands x r rows), one task a band;
3. each candidate pair is **verified** with the real Jaccard similarity of its shingle sets, so
   documents that merely collide in a bucket are never removed;
4. in stream order, a document is dropped when a verified-similar *kept* document precedes it,
   and that document is recorded as `duplicate_of` - so every removal is backed by a measured
   Jaccard >= threshold with the copy that was kept.

Documents with fewer words than one shingle have no shingles; they take part in exact
deduplication only (rather than all hashing to the same empty signature).

The MinHash is numpy multiply-add-shift hashing over crc32 shingle hashes: ~5x faster than
hashing every shingle with SHA-1 (datasketch's default) and equally good for Jaccard estimates.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from lmforge.data.clean import normalise_for_hash

MASK32 = np.uint64(0xFFFFFFFF)
# shingles hashed at once by MinHasher.signature: a table of 8,192 x num_perm uint64 (~7 MB at the
# default 112 permutations) per worker, whatever the document's length
SIGNATURE_CHUNK = 8_192


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalise_for_hash(text).encode(), digest_size=12).hexdigest()


def shingle_words(text: str) -> list[str]:
    return normalise_for_hash(text).split()


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """uint64 hashes (32 significant bits) of the distinct word n-grams of `text`."""
    words = shingle_words(text)
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    word_hashes = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    # polynomial combination of n consecutive word hashes, wrapping in 64 bits
    h = np.zeros(len(words) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * np.uint64(1_000_003) + word_hashes[i:len(words) - n + 1 + i]
    return np.unique((h ^ (h >> np.uint64(32))) & MASK32)


class MinHasher:
    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signature(self, shingles: np.ndarray) -> np.ndarray | None:
        """(num_perm,) uint32 minimum hash per permutation; None for a document without shingles.

        A minimum over shingles is the minimum of the chunks' minima, so the shingles are hashed
        SIGNATURE_CHUNK at a time: the same signature, in memory bounded by the chunk (one
        shingle x num_perm table of a whole book would take ~1 GB), not by the document."""
        if len(shingles) == 0:
            return None
        lowest = np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        table = np.empty((min(len(shingles), SIGNATURE_CHUNK), len(self.a)), dtype=np.uint64)  # reused by every chunk
        for start in range(0, len(shingles), SIGNATURE_CHUNK):
            chunk = shingles[start:start + SIGNATURE_CHUNK, None]
            values = table[:len(chunk)]
            with np.errstate(over="ignore"):
                np.multiply(chunk, self.a[None, :], out=values)
                values += self.b[None, :]
            values >>= np.uint64(32)
            np.minimum(lowest, values.min(axis=0), out=lowest)
        return lowest.astype(np.uint32)


def band(signatures: np.ndarray, index: int, rows: int) -> np.ndarray:
    """Band `index` of signatures (..., num_perm): two documents share its bucket when these rows are equal."""
    return signatures[..., index * rows:(index + 1) * rows]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
