"""Loss evaluation, below the trainer: validation loss, perplexity and bits per byte, and the
unigram baseline they are judged against. (Task scoring, above training, is lmforge/tasks/.)

For a masked model the same figures are taken over the masked positions only (15% of the
validation tokens, masked with a fixed seed), and `accuracy` is the share of them predicted first.

Bits per byte is tokenizer-independent: the summed negative log-likelihood (in bits) of the
validation targets divided by the UTF-8 bytes those targets stand for. Document-boundary
tokens stand for no bytes and are left out of it, as in nanochat; they do count in the loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmforge.folders.run import ValRecord
from lmforge.objectives import EVAL_MASK_SEED, IGNORE_INDEX, CausalLM, mask_generator
from lmforge.tokenizer import token_byte_lengths
from lmforge.training.data import WindowIndex, eval_batches, rank_eval_batches
from lmforge.training.distributed import DistInfo, all_reduce_sum


def token_bytes_for(tokenizer, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each of the model's `vocab_size` ids stands for, the denominator of bits per byte:
    the ids a vocabulary padded past the tokenizer's (model.vocab_size) adds stand for 0 bytes."""
    lengths = token_byte_lengths(tokenizer)
    return np.pad(lengths, (0, vocab_size - len(lengths)))


@torch.no_grad()
def evaluate_loss(model, shards: list[np.ndarray], seq_len: int, batch_size: int, token_bytes: np.ndarray,
                  device: torch.device, autocast_ctx, max_tokens: int = 0, objective=None,
                  dist: DistInfo = DistInfo(), meter=None) -> dict:
    """Loss over the validation targets of `objective` (default causal): every next token, or, for
    the masked objective, the positions masked with a fixed seed (the same for every evaluation).
    Also the share of targets the model ranks first (`accuracy`). Under torchrun each rank scores
    its share of the batches and the sums are added over the ranks: the same figures as one process.
    `meter` (lmforge/progress.py), where given, counts the windows scored."""
    objective = objective or CausalLM()
    was_training = model.training
    model.eval()
    token_bytes_t = torch.as_tensor(token_bytes, device=device)
    # (nll, nll of byte-bearing targets, targets, bytes, first choices right), summed on the device
    # and read once at the end: no wait for the device per batch
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    for number, window, scored in rank_eval_batches(shards, seq_len, batch_size, max_tokens, dist.rank, dist.world_size):
        # the masks depend on the batch's number, not on the rank that scores it
        inputs, targets = objective.batch(window, mask_generator(EVAL_MASK_SEED, number))
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast_ctx:  # per-token losses (0 where no target) and first choices, the head taken chunk by chunk
            losses, first = model(inputs, causal=objective.causal_attention, targets=targets, reduction="none")
        if not scored:
            continue
        if meter is not None:
            meter.update(len(window))
        keep = targets != IGNORE_INDEX  # a masked batch scores only its masked positions
        nbytes = token_bytes_t[targets.clamp(min=0)] * keep
        sums += torch.stack([losses.sum(), (losses * (nbytes > 0)).sum(), keep.sum(), nbytes.sum(),
                             (first & keep).sum()]).double()
    nll, nll_with_bytes, n_tokens, n_bytes, n_correct = all_reduce_sum(sums, dist).tolist()
    n_tokens, n_bytes, n_correct = int(n_tokens), int(n_bytes), int(n_correct)
    model.train(was_training)
    if n_tokens == 0:  # no figure exists: None and the reason, never NaN (lmforge/figures.py)
        n_val = sum(len(s) for s in shards)
        return {"val_loss": None, "perplexity": None, "bits_per_byte": None, "accuracy": None, "tokens": 0,
                "bytes": 0, "reason": f"no validation targets: the split holds {n_val:,} tokens, fewer than one "
                                      f"window of {seq_len + 1} (raise data.val_fraction or give more text)"}
    loss = nll / n_tokens
    return {
        "val_loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nll_with_bytes / (math.log(2) * max(n_bytes, 1)),
        "accuracy": n_correct / n_tokens,
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


def final_eval_tokens(tc) -> int:
    """Validation tokens the final evaluation scores (0 = the whole split): `train.final_eval_tokens`,
    raised where the periodic evaluations score more. Every evaluation takes the split's first
    windows, so the final set then holds each window the curve measured; the final evaluation is
    the curve's last point, and no point of the curve rests on more tokens than the final figure."""
    if not tc.eval_interval:
        return tc.final_eval_tokens
    if 0 in (tc.eval_tokens, tc.final_eval_tokens):
        return 0
    return max(tc.eval_tokens, tc.final_eval_tokens)


def unigram_baseline(train_shards: list[np.ndarray], val_shards: list[np.ndarray], vocab_size: int,
                     seq_len: int, max_tokens: int = 50_000_000, eval_tokens: int = 0,
                     token_bytes: np.ndarray | None = None) -> dict:
    """Cross-entropy on the validation targets of a model that ignores context and predicts each
    token by its training frequency (add-one smoothed): the bar any LM must clear. Taken over the
    windows an evaluation of `eval_tokens` scores (0 = the whole split), the same targets as the
    figures it is set beside: `val_loss` in nats/token, and with `token_bytes` `bits_per_byte` as
    `evaluate_loss` counts it (the targets that stand for text, over their bytes). None where the
    validation split holds no window."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    seen = 0
    for shard in train_shards:
        for start in range(0, len(shard), 10_000_000):
            chunk = np.asarray(shard[start:min(start + 10_000_000, len(shard), start + max_tokens - seen)])
            counts += np.bincount(chunk, minlength=vocab_size)[:vocab_size]
            seen += len(chunk)
            if seen >= max_tokens:
                break
    logp = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    total, n, with_bytes, n_bytes = 0.0, 0, 0.0, 0
    for window in eval_batches(val_shards, seq_len, 64, eval_tokens):
        targets = window[:, 1:].numpy().reshape(-1)
        total -= logp[targets].sum()
        n += len(targets)
        if token_bytes is not None:
            nbytes = token_bytes[targets]
            with_bytes -= logp[targets][nbytes > 0].sum()
            n_bytes += int(nbytes.sum())
    return {"val_loss": float(total / n) if n else None,
            "bits_per_byte": float(with_bytes / (math.log(2) * n_bytes)) if n_bytes else None}


class Validator:
    """The validation split of a run, scored under its objective: `validator(model, max_tokens)`;
    during training every `interval` steps before the last (`until`), the end scoring its own."""

    def __init__(self, val_shards: list[np.ndarray], seq_len: int, batch_size: int, token_bytes: np.ndarray,
                 device: torch.device, autocast_ctx, objective, dist: DistInfo = DistInfo(), interval: int = 0,
                 until: int = 0):
        self.shards, self.seq_len, self.batch_size = val_shards, seq_len, batch_size
        self.token_bytes, self.device, self.autocast_ctx, self.objective = token_bytes, device, autocast_ctx, objective
        self.dist, self.interval, self.until = dist, interval, until

    def due(self, step: int) -> bool:
        return bool(self.interval) and step % self.interval == 0 and step < self.until

    def windows(self, max_tokens: int = 0) -> int:
        """Windows an evaluation of `max_tokens` scores (0: the whole split)."""
        n = len(WindowIndex(self.shards, self.seq_len))
        return min(n, max(1, max_tokens // self.seq_len)) if max_tokens else n

    def __call__(self, model, max_tokens: int = 0, meter=None) -> dict:
        return evaluate_loss(model, self.shards, self.seq_len, self.batch_size, self.token_bytes, self.device,
                             self.autocast_ctx, max_tokens, self.objective, self.dist, meter)

    @staticmethod
    def record(step: int, ev: dict, elapsed: float, objective: str) -> ValRecord:
        """The metrics.jsonl line of one evaluation."""
        return ValRecord(step=step, val_loss=ev["val_loss"], val_bpb=ev["bits_per_byte"], val_tokens=ev["tokens"],
                         train_time_s=round(elapsed, 3), val_accuracy=ev["accuracy"] if objective == "masked" else None)
