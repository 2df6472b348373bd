"""Validation loss, perplexity and bits per byte; the unigram baseline they are judged against;
multiple-choice cloze tasks (`evaluate_tasks`).

For a masked model the same figures are taken over the masked positions only (15% of the
validation tokens, masked with a fixed seed), and `accuracy` is the share of them predicted first.

Bits per byte is tokenizer-independent: the summed negative log-likelihood (in bits) of the
validation targets divided by the UTF-8 bytes those targets stand for. Document-boundary
tokens stand for no bytes and are left out of it, as in nanochat; they do count in the loss.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.config import read_config, tokens_folder
from lmforge.errors import LmforgeError
from lmforge.cloze import MARK, Scorer, check_choices, split_blank
from lmforge.objectives import EVAL_MASK_SEED, IGNORE_INDEX, CausalLM, build_objective, mask_generator
from lmforge.tokenizer import load_shards, token_byte_lengths, vocab_tables
from lmforge.training.checkpoint import load_run, require_objective
from lmforge.training.data import eval_batches
from lmforge.training.device import autocast, resolve_dtype


@torch.no_grad()
def evaluate_loss(model, shards: list[np.ndarray], seq_len: int, batch_size: int, token_bytes: np.ndarray,
                  device: torch.device, autocast_ctx, max_tokens: int = 0, objective=None) -> dict:
    """Loss over the validation targets of `objective` (default causal): every next token, or, for
    the masked objective, the positions masked with a fixed seed (the same for every evaluation).
    Also the share of targets the model ranks first (`accuracy`)."""
    objective = objective or CausalLM()
    was_training = model.training
    model.eval()
    token_bytes_t = torch.as_tensor(token_bytes, device=device)
    nll = nll_with_bytes = 0.0
    n_tokens = n_bytes = n_correct = 0
    for i, window in enumerate(eval_batches(shards, seq_len, batch_size, max_tokens)):
        inputs, targets = objective.batch(window, mask_generator(EVAL_MASK_SEED, i))
        inputs, targets = inputs.to(device), targets.to(device).reshape(-1)
        with autocast_ctx:
            logits = model(inputs, causal=objective.causal_attention)
        logits = logits.reshape(-1, logits.size(-1))  # (B*T, V)
        if objective.name != "causal":  # only the masked positions are targets
            keep = targets != IGNORE_INDEX
            logits, targets = logits[keep], targets[keep]
        losses = F.cross_entropy(logits, targets, reduction="none")
        nbytes = token_bytes_t[targets]
        nll += losses.sum().item()
        nll_with_bytes += (losses * (nbytes > 0)).sum().item()
        n_tokens += losses.numel()
        n_bytes += int(nbytes.sum().item())
        n_correct += int((logits.argmax(dim=-1) == targets).sum().item())
    model.train(was_training)
    if n_tokens == 0:
        return {"val_loss": float("nan"), "perplexity": float("nan"), "bits_per_byte": float("nan"),
                "accuracy": float("nan"), "tokens": 0, "bytes": 0}
    loss = nll / n_tokens
    return {
        "val_loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nll_with_bytes / (math.log(2) * max(n_bytes, 1)),
        "accuracy": n_correct / n_tokens,
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


def evaluate_run(run_dir, max_tokens: int = 0, device: str = "cpu", batch_size: int = 16,
                 objective: str | None = None) -> dict:
    """Validation figures of a run's newest checkpoint on its own validation split, under the
    objective it was trained with (naming another `objective` is refused): next-token loss, or
    the masked-token loss and accuracy of a masked model."""
    if objective is not None:
        feature = "masked-token evaluation" if objective == "masked" else "next-token evaluation"
        require_objective(run_dir, objective, feature)
    model, tok, ckpt = load_run(run_dir, device)
    cfg = read_config(Path(run_dir) / "config.yaml")
    dev = torch.device(device)
    token_bytes = token_byte_lengths(tok)
    token_bytes = np.pad(token_bytes, (0, model.cfg.vocab_size - len(token_bytes)))
    val = load_shards(tokens_folder(cfg, Path(run_dir)), "val")
    result = evaluate_loss(model, val, model.cfg.seq_len, batch_size, token_bytes, dev,
                           autocast(dev, resolve_dtype(cfg.train.dtype, dev)), max_tokens,
                           build_objective(cfg.train, vocab_tables(tok)))
    result["objective"] = cfg.train.objective
    result["checkpoint"] = str(ckpt)
    return result


# ---------------------------------------------------------------- cloze / multiple-choice tasks

BUILTIN_TASKS = "builtin"  # `--tasks builtin`: the task file shipped with lmforge (lmforge/tasks/)
BUILTIN_TASKS_FILE = "builtin_cloze.jsonl"


def tasks_path(tasks: str | Path) -> Path:
    if str(tasks) == BUILTIN_TASKS:
        return Path(str(resources.files("lmforge.tasks") / BUILTIN_TASKS_FILE))
    return Path(tasks)


def read_tasks(tasks: str | Path) -> list[dict]:
    """Lines {"context": "... [MASK] ...", "choices": [...], "answer": index}; a bad line is refused
    with its file and line number."""
    path = tasks_path(tasks)
    if not path.is_file():
        raise LmforgeError(f"task file {path} not found: give a JSONL file of "
                           '{"context": "... [MASK] ...", "choices": [...], "answer": index} lines, or builtin')
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            task = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(task, dict) or not {"context", "choices", "answer"} <= set(task):
            raise LmforgeError(f'{where}: each line needs "context", "choices" and "answer"')
        context, choices, answer = task["context"], task["choices"], task["answer"]
        if not isinstance(context, str):
            raise LmforgeError(f'{where}: "context" must be a string holding one {MARK}')
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise LmforgeError(f'{where}: "choices" must be a list of at least two strings')
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise LmforgeError(f'{where}: "answer" must be the index (0 to {len(choices) - 1}) of the right choice')
        try:
            split_blank(context)
            check_choices(choices)
        except LmforgeError as e:
            raise LmforgeError(f"{where}: {e}") from None
        out.append({"context": context, "choices": choices, "answer": answer})
    if not out:
        raise LmforgeError(f"task file {path} holds no tasks")
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval for a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_tasks(run_dir, tasks: str | Path = BUILTIN_TASKS, device: str = "cpu") -> dict:
    """Accuracy on multiple-choice cloze tasks, scored as `lmforge fill --choices` scores (see
    lmforge.cloze): `accuracy` picks the highest summed log-probability; `accuracy_norm` the highest
    log-probability per UTF-8 byte of the scored tokens (the choice's tokens for a masked model,
    the completed sentence's for a causal one). Each with a 95% Wilson interval."""
    items = read_tasks(tasks)
    scorer = Scorer(run_dir, device)
    right = right_norm = truncated = 0
    scoring = ""
    for task in items:
        scoring, scored = scorer.score_choices(task["context"], task["choices"])
        raw = [s.score for s in scored]
        norm = [s.score / max(s.scored_bytes, 1) for s in scored]
        right += raw.index(max(raw)) == task["answer"]
        right_norm += norm.index(max(norm)) == task["answer"]
        truncated += any(s.truncated for s in scored)
    n = len(items)
    return {
        "tasks_file": str(tasks_path(tasks)), "tasks": n, "scoring": scoring, "model": scorer.objective,
        "accuracy": right / n, "accuracy_ci95": list(wilson_interval(right, n)),
        "accuracy_norm": right_norm / n, "accuracy_norm_ci95": list(wilson_interval(right_norm, n)),
        "normalisation": "log-probability per UTF-8 byte of the scored tokens",
        "chance": sum(1 / len(t["choices"]) for t in items) / n, "truncated": truncated,
        "checkpoint": str(scorer.checkpoint),
    }
