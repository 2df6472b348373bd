"""`lmforge eval`: the validation figures of a run's newest checkpoint (training/loss_eval.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge import figures
from lmforge.objectives import build_objective
from lmforge.folders.run import RunDir
from lmforge.open_run import open_run
from lmforge.folders.tokenized import load_shards
from lmforge.tokenizer import vocab_tables
from lmforge.training.device import autocast, resolve_dtype
from lmforge.training.loss_eval import evaluate_loss, token_bytes_for


def evaluate_run(run_dir, max_tokens: int = 0, device: str = "cpu", batch_size: int = 16,
                 objective: str | None = None) -> dict:
    """Validation figures of a run's newest checkpoint on its own validation split, under the
    objective it was trained with (naming another `objective` is refused): next-token loss, or
    the masked-token loss and accuracy of a masked model."""
    run = RunDir(run_dir).require()
    if objective is not None:
        feature = "masked-token evaluation" if objective == "masked" else "next-token evaluation"
        run.require_objective(objective, feature)
    cfg = run.require_config("lmforge eval")  # it names the validation tokens and the precision
    opened = open_run(run, device)
    model, tok = opened.model, opened.tokenizer
    dev = torch.device(device)
    token_bytes = token_bytes_for(tok, model.cfg.vocab_size)
    val = load_shards(run.tokens_dir, "val")
    result = evaluate_loss(model, val, model.cfg.seq_len, batch_size, token_bytes, dev,
                           autocast(dev, resolve_dtype(cfg.train.dtype, dev)), max_tokens,
                           build_objective(cfg.train, vocab_tables(tok)))
    result["objective"] = cfg.train.objective
    result["checkpoint"] = str(opened.checkpoint)
    return result


@dataclass
class Evaluation(figures.Result):
    """What `lmforge eval RUN` shows of `evaluate_run`'s figures."""

    result: dict
    run_dir: str

    def lines(self) -> list[str]:
        r = self.result
        if "reason" in r:
            return [f"{self.run_dir}: no validation figures: {r['reason']}"]
        if r["objective"] == "masked":
            return [f"{self.run_dir}: masked-token loss {r['val_loss']:.4f}, accuracy {r['accuracy']:.4f}, "
                    f"perplexity {r['perplexity']:.2f} ({r['tokens']:,} masked tokens, {r['checkpoint']})"]
        return [f"{self.run_dir}: val loss {r['val_loss']:.4f}, perplexity {r['perplexity']:.2f}, "
                f"{r['bits_per_byte']:.4f} bits per byte ({r['tokens']:,} tokens, {r['checkpoint']})"]
