"""Validation loss, perplexity and bits per byte; the unigram baseline they are judged against.

Bits per byte is tokenizer-independent: the summed negative log-likelihood (in bits) of the
validation targets divided by the UTF-8 bytes those targets stand for. Document-boundary
tokens stand for no bytes and are left out of it, as in nanochat; they do count in the loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.config import read_config, tokens_folder
from lmforge.tokenizer import load_shards, token_byte_lengths
from lmforge.training.checkpoint import load_run
from lmforge.training.data import eval_batches
from lmforge.training.device import autocast, resolve_dtype


@torch.no_grad()
def evaluate_loss(model, shards: list[np.ndarray], seq_len: int, batch_size: int, token_bytes: np.ndarray,
                  device: torch.device, autocast_ctx, max_tokens: int = 0, causal: bool = True) -> dict:
    was_training = model.training
    model.eval()
    token_bytes_t = torch.as_tensor(token_bytes, device=device)
    nll = nll_with_bytes = 0.0
    n_tokens = n_bytes = 0
    for window in eval_batches(shards, seq_len, batch_size, max_tokens):
        window = window.to(device)
        inputs, targets = window[:, :-1], window[:, 1:]
        with autocast_ctx:
            logits = model(inputs, causal=causal)
        losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        nbytes = token_bytes_t[targets.reshape(-1)]
        nll += losses.sum().item()
        nll_with_bytes += (losses * (nbytes > 0)).sum().item()
        n_tokens += losses.numel()
        n_bytes += int(nbytes.sum().item())
    model.train(was_training)
    if n_tokens == 0:
        return {"val_loss": float("nan"), "perplexity": float("nan"), "bits_per_byte": float("nan"),
                "tokens": 0, "bytes": 0}
    loss = nll / n_tokens
    return {
        "val_loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nll_with_bytes / (math.log(2) * max(n_bytes, 1)),
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


def unigram_baseline(train_shards: list[np.ndarray], val_shards: list[np.ndarray], vocab_size: int,
                     seq_len: int, max_tokens: int = 50_000_000) -> float:
    """Cross-entropy (nats/token) on the validation targets of a model that ignores context and
    predicts each token by its training frequency (add-one smoothed): the bar any LM must clear."""
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
    total, n = 0.0, 0
    for window in eval_batches(val_shards, seq_len, 64):
        targets = window[:, 1:].numpy().reshape(-1)
        total -= logp[targets].sum()
        n += len(targets)
    return float(total / n) if n else float("nan")


def evaluate_run(run_dir, max_tokens: int = 0, device: str = "cpu", batch_size: int = 16) -> dict:
    """Validation figures of a run's newest checkpoint on its own validation split."""
    model, tok, ckpt = load_run(run_dir, device)
    cfg = read_config(Path(run_dir) / "config.yaml")
    dev = torch.device(device)
    token_bytes = token_byte_lengths(tok)
    token_bytes = np.pad(token_bytes, (0, model.cfg.vocab_size - len(token_bytes)))
    val = load_shards(tokens_folder(cfg, Path(run_dir)), "val")
    result = evaluate_loss(model, val, model.cfg.seq_len, batch_size, token_bytes, dev,
                           autocast(dev, resolve_dtype(cfg.train.dtype, dev)), max_tokens)
    result["checkpoint"] = str(ckpt)
    return result
