"""Windows of tokens from memory-mapped shards, in an order that can be saved and resumed.

The training stream is cut into non-overlapping windows of `seq_len + 1` tokens (stride
`seq_len`, so every token is a target exactly once per epoch); windows never cross a shard
boundary. Each epoch visits them in a fresh permutation drawn from (seed, epoch), and rank r of
W takes every W-th window of that permutation. The whole position is two integers
(epoch, cursor): saving them and the seed is enough to resume bit for bit.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lmforge.errors import LmforgeError


class WindowIndex:
    """Maps a global window number to (shard, start offset)."""

    def __init__(self, shards: list[np.ndarray], seq_len: int):
        self.shards, self.seq_len = shards, seq_len
        counts = [max(len(s) - 1, 0) // seq_len for s in shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def gather(self, windows: np.ndarray) -> torch.Tensor:
        """(B,) window numbers -> (B, seq_len + 1) int64 tokens."""
        shard_ids = np.searchsorted(self.offsets, windows, side="right") - 1
        out = np.empty((len(windows), self.seq_len + 1), dtype=np.int64)
        for row, (w, s) in enumerate(zip(windows, shard_ids)):
            start = int(w - self.offsets[s]) * self.seq_len
            out[row] = self.shards[s][start:start + self.seq_len + 1]
        return torch.from_numpy(out)


class TrainLoader:
    def __init__(self, shards: list[np.ndarray], seq_len: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.index = WindowIndex(shards, seq_len)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.per_rank = len(self.index) // world_size
        total = sum(len(s) for s in shards)
        if self.per_rank < batch_size:
            need = batch_size * world_size * seq_len + 1
            raise LmforgeError(
                f"corpus too small for one batch: {total:,} training tokens, one batch of "
                f"train.batch_size={batch_size} x model.seq_len={seq_len} needs about {need:,}; "
                f"add text or lower train.batch_size / model.seq_len"
            )
        self.epoch, self.cursor = 0, 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _rank_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))
            self._order = perm[self.rank::self.world][: self.per_rank]
            self._order_epoch = self.epoch
        return self._order

    def next_batch(self) -> torch.Tensor:
        """(batch_size, seq_len + 1) int64; the epoch's leftover windows (< one batch) are skipped."""
        if self.cursor + self.batch_size > self.per_rank:
            self.epoch, self.cursor = self.epoch + 1, 0
        order = self._rank_order()
        windows = order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return self.index.gather(windows)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "windows": len(self.index),
                "world_size": self.world}

    def load_state_dict(self, state: dict) -> None:
        """Resume where the saved loader stopped, on any number of ranks: the ranks move in step,
        so W ranks at cursor c have used the epoch's first c x W windows, whatever W is now (a
        number of them that the new W does not divide leaves under W windows to be seen again)."""
        if state["windows"] != len(self.index):
            raise LmforgeError("checkpoint was saved with different training data: resume with the same data")
        self.epoch, self.seed = state["epoch"], state["seed"]
        self.cursor = state["cursor"] * state["world_size"] // self.world


def eval_batches(shards: list[np.ndarray], seq_len: int, batch_size: int, max_tokens: int = 0) -> Iterator[torch.Tensor]:
    """Validation windows in file order, each target seen once; stops after `max_tokens` targets."""
    for _, batch, _ in rank_eval_batches(shards, seq_len, batch_size, max_tokens):
        yield batch


def rank_eval_batches(shards: list[np.ndarray], seq_len: int, batch_size: int, max_tokens: int = 0,
                      rank: int = 0, world_size: int = 1) -> Iterator[tuple[int, torch.Tensor, bool]]:
    """This rank's share of the validation batches: (batch number, batch, scored). Rank r scores
    batches r, r + W, ...; every rank runs as many forwards as the busiest one, because a sharded
    model gathers its parameters collectively in each, so a rank one batch short runs its last
    batch again unscored (scored False)."""
    index = WindowIndex(shards, seq_len)
    n = len(index)
    if max_tokens:
        n = min(n, max(1, max_tokens // seq_len))
    n_batches = -(-n // batch_size)
    for number in range(rank, -(-n_batches // world_size) * world_size, world_size):
        scored = number < n_batches
        start = (number if scored else n_batches - 1) * batch_size
        yield number, index.gather(np.arange(start, min(start + batch_size, n))), scored
