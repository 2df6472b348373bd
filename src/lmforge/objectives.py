"""Training objectives: how a window of tokens becomes inputs, targets and a summed loss.

An objective returns the *sum* of per-token losses and the number of target tokens, never a mean
(the model takes the targets and computes the loss itself, so a compiled model compiles it too):
the training step divides by the number of targets across all micro-batches and ranks, so
gradient accumulation and data parallelism give the same update as one large batch.

Two objectives share the model and the token shards:

    causal  next-token prediction; causal attention; every position is a target
    masked  missing-token prediction (BERT, Devlin et al. 2019); bidirectional attention; a share
            of each sequence is selected, of which 80% becomes <|mask|>, 10% a random token and
            10% stays; only the selected positions are targets

Masking is random, and a resumed run must draw the same masks: every micro-batch takes its own
generator, seeded from (seed, step, rank, micro-batch) by `mask_generator`, so no RNG state
has to be saved and the masks do not depend on what ran before.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.model import IGNORE_INDEX

EVAL_MASK_SEED = 20191011  # validation masks are the same for every run and every evaluation


def mask_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a hash of `keys` (e.g. seed, step, rank, micro-batch)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class CausalLM:
    """Next-token prediction: position t sees tokens <= t and predicts token t+1."""

    name = "causal"
    causal_attention = True

    def batch(self, window: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # window: (B, T+1) -> inputs (B, T), targets (B, T); nothing random
        return window[:, :-1], window[:, 1:]

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model(inputs, causal=self.causal_attention, targets=targets), targets.numel()


class MaskedLM:
    """Missing-token prediction over bidirectional attention.

    Per sequence, round(mask_prob x n) of its n ordinary tokens are selected (at least one;
    special tokens such as <|endoftext|> are never selected). Each selected token independently
    becomes <|mask|> with probability `replace`, a uniformly drawn ordinary token with
    probability `random`, and stays itself otherwise. The targets are the original tokens at
    the selected positions.

    Whole-word masking selects words instead of tokens: a token continues the previous word when
    its first byte is a word character (an ASCII letter or digit, or any byte of a non-ASCII
    character) and the previous token ends with one or is a lone space (see
    `tokenizer.vocab_tables`), so " serialization" split as "Ġserial" + "ization" is one word. Words are taken in a random order until
    the next one would pass the budget of round(mask_prob x n) tokens, so a sequence can fall
    short of the budget by less than one word.
    """

    name = "masked"
    causal_attention = False

    def __init__(self, mask_id: int, special_ids: list[int], vocab_size: int, mask_prob: float = 0.15,
                 replace: float = 0.8, random: float = 0.1, whole_word: bool = False,
                 starts_word: np.ndarray | None = None, joins_next: np.ndarray | None = None):
        self.mask_id, self.mask_prob, self.replace, self.random = mask_id, mask_prob, replace, random
        self.whole_word = whole_word
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[list(special_ids)] = True
        self.ordinary_ids = torch.nonzero(~self.is_special).squeeze(1)  # random replacements come from here
        if whole_word and (starts_word is None or joins_next is None):
            raise ValueError("whole-word masking needs the starts_word and joins_next tables")
        self.starts_word = torch.as_tensor(starts_word, dtype=torch.bool) if starts_word is not None else None
        self.joins_next = torch.as_tensor(joins_next, dtype=torch.bool) if joins_next is not None else None

    def words(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) ids -> (B, T) index of the word each token belongs to (every token its own
        word unless whole-word masking is on)."""
        if self.whole_word:
            prev_ends = F.pad(self.joins_next[x[:, :-1]], (1, 0), value=False)
            continues = self.starts_word[x] & prev_ends & ~self.is_special[x]
        else:
            continues = torch.zeros_like(x, dtype=torch.bool)
        return (~continues).long().cumsum(1) - 1

    def select(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x (B, T) ids -> (B, T) bool, the positions to predict."""
        B, T = x.shape
        special = self.is_special[x]
        n = (~special).sum(1)
        budget = (n.double() * self.mask_prob).round().long().clamp(min=1).minimum(n)  # (B,)
        word = self.words(x)
        # one random score per word; special tokens last. A stable sort keeps a word's tokens together.
        score = torch.rand(B, T, generator=generator, dtype=torch.float64).gather(1, word)
        score = score.masked_fill(special, float("inf"))
        order = score.argsort(dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(T).expand(B, T).contiguous())
        # a word is taken when its last token still falls inside the budget
        last = torch.zeros_like(rank).scatter_reduce(1, word, rank, "amax", include_self=False)
        return last.gather(1, word) < budget[:, None]

    def batch(self, window: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # window: (B, T+1) on the CPU -> inputs (B, T) with masks applied, targets (B, T)
        x = window[:, :-1]
        selected = self.select(x, generator)
        u = torch.rand(x.shape, generator=generator)
        random_ids = self.ordinary_ids[torch.randint(len(self.ordinary_ids), x.shape, generator=generator)]
        to_mask = selected & (u < self.replace)
        to_random = selected & (u >= self.replace) & (u < self.replace + self.random)
        inputs = torch.where(to_mask, self.mask_id, torch.where(to_random, random_ids, x))
        targets = x.masked_fill(~selected, IGNORE_INDEX)
        return inputs, targets

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # every position goes through the head, the unselected ones as IGNORE_INDEX: a fixed shape
        # that one compiled graph covers, where selecting the rows first would not be
        loss = model(inputs, causal=self.causal_attention, targets=targets)
        return loss, (targets != IGNORE_INDEX).sum()


def build_objective(train_cfg, vocab: dict | None = None):
    """The objective a TrainConfig names; `vocab` is `tokenizer.vocab_tables(tok)` (masked only)."""
    if train_cfg.objective == "causal":
        return CausalLM()
    return MaskedLM(**vocab, mask_prob=train_cfg.mask_prob, replace=train_cfg.mask_replace,
                    random=train_cfg.mask_random, whole_word=train_cfg.whole_word_mask)
