"""The training loop: tokens on disk in, checkpoints, metrics and a summary out.

    RUN/config.yaml      the fully resolved config (a resumed run must match it)
    RUN/tokenizer.json   copied from the tokenized folder, so the run is self-contained
    RUN/metrics.jsonl    one JSON object per log or eval event
    RUN/checkpoints/     see training/checkpoint.py
    RUN/summary.json     final validation figures, throughput, model size

One optimizer step (`train_step`) takes `grad_accum` micro-batches. Their summed losses are
divided by the number of target tokens in *all* of them, across ranks, so the update equals
that of one large batch whatever the split (and masked batches with varying target counts are
weighted per token, not per micro-batch).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lmforge.config import Config, read_config, save_config, tokens_folder
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.evaluation import evaluate_loss, unigram_baseline
from lmforge.model import GPT, GPTConfig
from lmforge.objectives import IGNORE_INDEX, build_objective, mask_generator
from lmforge.tokenizer import (TOKENIZER_FILE, load_shards, load_tokenizer, read_meta, token_byte_lengths, tokenize_corpus,
                               vocab_tables)
from lmforge.training import distributed
from lmforge.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lmforge.training.data import TrainLoader
from lmforge.training.device import (autocast, keep_freed_memory, peak_flops, remeasured_peak, resolve_device,
                                     resolve_dtype, set_threads)
from lmforge.training.optim import build_optimizers, lr_factor, set_lr

# Keys that may differ between a run and its resumption: they change logging, not the math.
RESUMABLE_CHANGES = {
    "train.progress", "train.log_interval", "train.eval_interval", "train.eval_tokens", "train.checkpoint_interval",
    "train.keep_checkpoints", "train.threads", "train.final_eval_tokens",
}


def model_config(cfg: Config, vocab_size: int) -> GPTConfig:
    m = cfg.model
    return GPTConfig(
        vocab_size=m.vocab_size or vocab_size, n_layer=m.n_layer, n_head=m.n_head, n_kv_head=m.n_kv_head,
        n_embd=m.n_embd, seq_len=m.seq_len, mlp_hidden=m.mlp_hidden, tie_embeddings=m.tie_embeddings,
        rope_theta=m.rope_theta, norm_eps=m.norm_eps,
    )


def prepare_tokens(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> Path:
    """The tokenized folder this run trains on, tokenizing `data.sources` into RUN/tokens if needed."""
    folder = tokens_folder(cfg, run_dir)
    if cfg.data.tokenized:
        read_meta(folder)  # a named tokenized folder must already exist
        return folder
    tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log)
    return folder


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resumable(saved: Config, current: Config) -> None:
    a, b = _flat(saved.to_dict()), _flat(current.to_dict())
    diff = [k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES and not k.startswith("run.")]
    if diff:
        k = diff[0]
        raise LmforgeError(
            f"cannot resume: {k} was {a[k]!r} in the saved run but is {b[k]!r} now; "
            f"resume with the saved config or start a new run in another --out folder"
        )


def checkpoint_to_resume(run_dir: Path, cfg: Config, resume: bool) -> Path | None:
    """The checkpoint to continue from (None for a fresh run); refuses to mix two runs in one folder."""
    ckpt = latest_checkpoint(run_dir)
    if not resume:
        if ckpt is not None:
            raise LmforgeError(f"{run_dir} already holds a run: add --resume to continue it, or choose another --out")
        return None
    if ckpt is None:
        raise LmforgeError(f"--resume: {run_dir} holds no checkpoint to resume from; drop --resume to start afresh")
    if (run_dir / "config.yaml").is_file():
        check_resumable(read_config(run_dir / "config.yaml"), cfg)
    return ckpt


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step, with a checkpoint."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train_step(model, objective, windows: list[torch.Tensor], device, amp, dist_info, ddp: bool,
               step: int = 0, seed: int = 0) -> torch.Tensor:
    """Forward and backward over the micro-batches of one step; returns the mean loss per target token.

    Batches are made on the CPU; a random objective (masking) draws from a generator seeded by
    (seed, step, rank, micro-batch), so a resumed run draws the same masks."""
    batches = []
    for i, w in enumerate(windows):
        inputs, targets = objective.batch(w, mask_generator(seed, step, dist_info.rank, i))
        batches.append((inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)))
    n_targets = sum((targets != IGNORE_INDEX).sum() for _, targets in batches).float()
    distributed.all_reduce_sum(n_targets, dist_info)
    # DDP averages gradients over ranks; scaling by world size turns that average back into a sum
    scale = dist_info.world_size / n_targets
    total = torch.zeros((), dtype=torch.float32, device=device)
    sharded = hasattr(model, "set_requires_gradient_sync")  # FSDP2
    for i, (inputs, targets) in enumerate(batches):
        last = i == len(batches) - 1
        if sharded:  # accumulate unsharded gradients locally; reduce-scatter once, after the last micro-batch
            model.set_requires_gradient_sync(last)
        sync = contextlib.nullcontext() if (not ddp or last) else model.no_sync()
        with sync:
            with amp:
                loss_sum, _ = objective.loss(model, inputs, targets)
            (loss_sum * scale).backward()
        total += loss_sum.detach()
    distributed.all_reduce_sum(total, dist_info)
    return total / n_targets


def apply_update(model, optimizers: list[torch.optim.Optimizer], loss: torch.Tensor, grad_clip: float,
                 step: int) -> float:
    """Clip, refuse a non-finite loss (before it reaches the weights), step, clear gradients."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise TrainingDiverged(
            f"training diverged at step {step}: loss is {loss_value}; lower train.lr or raise "
            f"train.warmup_steps, then start again or resume from the last checkpoint"
        )
    for opt in optimizers:
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss_value


def _eval_record(step: int, ev: dict, elapsed: float, objective: str) -> dict:
    record = {"step": step, "val_loss": ev["val_loss"], "val_bpb": ev["bits_per_byte"], "train_time_s": round(elapsed, 3)}
    if objective == "masked":
        record["val_accuracy"] = ev["accuracy"]
    return record


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop events logged after the checkpoint we resume from, so the file reads as one run."""
    if path.is_file():
        lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
        path.write_text("".join(l + "\n" for l in lines))


def train(cfg: Config, data: list[str] | None = None, resume: bool = False, stop_at: int | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train `cfg` (tokenizing its sources first if needed) and return the summary.

    data: raw sources, or one tokenized folder (holding meta.json), overriding cfg.data.
    resume: continue from the newest checkpoint in cfg.run.out.
    stop_at: stop after this step with a checkpoint, as an interrupted run would.
    """
    run_dir = Path(cfg.run.out)
    if data:
        if len(data) == 1 and (Path(data[0]) / "meta.json").is_file():
            cfg = replace(cfg, data=replace(cfg.data, tokenized=str(Path(data[0]).resolve())))
        else:
            cfg = replace(cfg, data=replace(cfg.data, sources=list(data), tokenized=""))
    tc = cfg.train
    threads = set_threads(tc.threads)
    device = resolve_device(tc.device)
    if device.type == "cpu":
        keep_freed_memory()
    dist_info, device = distributed.setup(device)
    log_main = log if dist_info.is_main else (lambda *_: None)

    ckpt = checkpoint_to_resume(run_dir, cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        prepare_tokens(cfg, run_dir, log_main)
    distributed.barrier(dist_info)
    tokens_dir = tokens_folder(cfg, run_dir)
    meta = read_meta(tokens_dir)
    tokenizer = load_tokenizer(tokens_dir)
    if dist_info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        shutil.copyfile(tokens_dir / TOKENIZER_FILE, run_dir / TOKENIZER_FILE)

    torch.manual_seed(tc.seed)
    dtype = resolve_dtype(tc.dtype, device)
    amp = autocast(device, dtype)
    mcfg = model_config(cfg, meta["vocab_size"])
    if mcfg.vocab_size < meta["vocab_size"]:
        raise LmforgeError(f"model.vocab_size={mcfg.vocab_size} is smaller than the tokenizer's {meta['vocab_size']}")
    train_shards, val_shards = load_shards(tokens_dir, "train"), load_shards(tokens_dir, "val")
    loader = TrainLoader(train_shards, mcfg.seq_len, tc.batch_size, tc.seed, dist_info.rank, dist_info.world_size)
    model = GPT(mcfg).to(device)
    fsdp = dist_info.enabled and tc.data_parallel == "fsdp"
    if fsdp:  # before the optimizers: they must hold the sharded parameters
        distributed.shard_model(model)
    objective = build_objective(tc, vocab_tables(tokenizer))
    optimizers = build_optimizers(model, tc, device)

    step, tokens_seen, elapsed = 0, 0, 0.0
    metrics_path = run_dir / "metrics.jsonl"
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizers)
        loader.load_state_dict(state["loader"])
        step, tokens_seen, elapsed = state["step"], state["tokens"], state.get("train_time_s", 0.0)
        if dist_info.is_main:
            _truncate_metrics(metrics_path, step)
        log_main(f"train: resumed from {ckpt} at step {step}")
    elif dist_info.is_main and metrics_path.exists():
        metrics_path.unlink()

    train_model = model
    if dist_info.enabled and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        train_model = torch.compile(train_model)
    token_bytes = token_byte_lengths(tokenizer)
    token_bytes = np.pad(token_bytes, (0, mcfg.vocab_size - len(token_bytes)))  # a padded vocabulary's extra ids: 0 bytes
    tokens_per_step = tc.batch_size * mcfg.seq_len * tc.grad_accum * dist_info.world_size
    flops_per_token = model.flops_per_token()
    peak = peak_flops(device, dtype) * dist_info.world_size
    log_main(
        f"train: {tc.objective} objective, {model.num_params():,} parameters ({mcfg.n_layer} layers, width {mcfg.n_embd}, context {mcfg.seq_len}), "
        f"{tokens_per_step:,} tokens/step, {tc.max_steps} steps, device {device}, {dtype}, {threads} threads, "
        f"{dist_info.world_size} process(es){' (FSDP2)' if fsdp else ''}; run folder {run_dir}"
    )

    def run_eval(max_tokens: int) -> dict:
        return evaluate_loss(model, val_shards, mcfg.seq_len, tc.batch_size, token_bytes, device, amp, max_tokens,
                             objective)

    def checkpoint(at_step: int) -> None:
        if dist_info.is_main or fsdp:  # FSDP: every rank gathers its shards, the main one writes
            save_checkpoint(run_dir, at_step, model, optimizers,
                            {"tokens": tokens_seen, "loader": loader.state_dict(), "train_time_s": elapsed,
                             "config": cfg.to_dict()}, tc.keep_checkpoints, write=dist_info.is_main)
        distributed.barrier(dist_info)

    last_stop = min(tc.max_steps, stop_at) if stop_at is not None else tc.max_steps
    bar = None
    if tc.progress and dist_info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.max_steps, initial=step, unit="step", dynamic_ncols=True, leave=True, mininterval=1.0)
    window_t, window_tokens = 0.0, 0
    model.train()
    with StopFlag() as stop:
        while step < last_stop:
            t0 = time.perf_counter()
            set_lr(optimizers, lr_factor(step, tc))
            windows = [loader.next_batch() for _ in range(tc.grad_accum)]
            loss = train_step(train_model, objective, windows, device, amp, dist_info, dist_info.enabled and not fsdp,
                              step, tc.seed)
            loss_value = apply_update(model, optimizers, loss, tc.grad_clip, step + 1)
            step += 1
            tokens_seen += tokens_per_step
            dt = time.perf_counter() - t0
            elapsed += dt
            window_t += dt
            window_tokens += tokens_per_step

            if step % tc.log_interval == 0 or step == last_stop:
                tps = window_tokens / window_t
                peak = remeasured_peak(device, dtype, tps * flops_per_token / dist_info.world_size,
                                       peak / dist_info.world_size) * dist_info.world_size
                mfu = tps * flops_per_token / peak
                record = {"step": step, "loss": round(loss_value, 5), "lr": optimizers[0].param_groups[0]["lr"],
                          "tokens": tokens_seen, "tokens_per_s": round(tps, 1), "mfu": round(mfu, 4),
                          "train_time_s": round(elapsed, 3)}
                if dist_info.is_main:
                    _append_jsonl(metrics_path, record)
                if bar is not None:
                    bar.set_postfix_str(f"loss {loss_value:.3f} | {tps / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}%")
                window_t, window_tokens = 0.0, 0
            if bar is not None:
                bar.update(1)
            if tc.eval_interval and step % tc.eval_interval == 0 and step < tc.max_steps:
                ev = run_eval(tc.eval_tokens)
                if dist_info.is_main:
                    _append_jsonl(metrics_path, _eval_record(step, ev, elapsed, objective.name))
                msg = f"step {step}: val loss {ev['val_loss']:.4f}, {ev['bits_per_byte']:.4f} bits/byte"
                if objective.name == "masked":
                    msg += f", masked-token accuracy {ev['accuracy']:.3f}"
                (bar.write if bar is not None else log_main)(msg)
            if tc.checkpoint_interval and step % tc.checkpoint_interval == 0 and step < last_stop:
                checkpoint(step)
            if stop.requested:
                log_main(f"train: stop requested; saving step {step} (continue with --resume)")
                break
    if bar is not None:
        bar.close()
    checkpoint(step)
    if step < tc.max_steps:
        distributed.teardown(dist_info)
        return {"step": step, "complete": False, "run_dir": str(run_dir)}

    final = run_eval(tc.final_eval_tokens)
    baseline = unigram_baseline(train_shards, val_shards, mcfg.vocab_size, mcfg.seq_len)
    summary = {
        "objective": tc.objective,
        "val_loss": final["val_loss"], "perplexity": final["perplexity"], "bits_per_byte": final["bits_per_byte"],
        "val_accuracy": final["accuracy"], "val_tokens": final["tokens"], "unigram_val_loss": baseline,
        "steps": step, "tokens_trained": tokens_seen, "params": model.num_params(),
        "flops_per_token": flops_per_token, "train_time_s": round(elapsed, 2),
        "tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed else None,
        "mfu": round(tokens_seen / elapsed * flops_per_token / peak, 4) if elapsed else None,
        "peak_flops": peak, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "threads": threads,
        "world_size": dist_info.world_size, "checkpoint": str(latest_checkpoint(run_dir)), "complete": True,
        "run_dir": str(run_dir),
    }
    if dist_info.is_main:
        _append_jsonl(metrics_path, _eval_record(step, final, elapsed, objective.name))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log_main(
        f"train: done in {elapsed:.0f}s ({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%); "
        f"{'masked-token ' if objective.name == 'masked' else ''}val loss {final['val_loss']:.4f} "
        f"(unigram baseline {baseline:.4f}), {final['bits_per_byte']:.4f} bits/byte"
        + (f", accuracy {final['accuracy']:.3f}" if objective.name == "masked" else "")
    )
    distributed.teardown(dist_info)
    return summary
