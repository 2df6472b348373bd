"""The trainer: tokens on disk in, checkpoints, metrics and a summary out (files: lmforge/run_dir.py).

It runs in phases, each a method small enough to read alone:

    setup()       threads, device, processes; the run folder checked, tokens made, config saved
    build()       data loader, model, objective, optimizers, validation; state of a resumed run
    train_step()  forward and backward over the micro-batches of one optimizer step
    update()      clip, refuse a non-finite loss (TrainingDiverged), step the optimizers
    validate()    the validation split under the run's objective (training/loss_eval.py)
    checkpoint()  weights, optimizer, RNG and loader position (training/checkpoint.py)
    finish()      final evaluation, unigram baseline, summary.json

One optimizer step takes `grad_accum` micro-batches. Their summed losses are divided by the
number of target tokens in *all* of them, across ranks, so the update equals that of one large
batch whatever the split (and masked batches with varying target counts are weighted per
token, not per micro-batch).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lmforge.config import Config, with_data
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.locks import describe_holder
from lmforge.model import GPT, model_config
from lmforge.figures import fmt
from lmforge.objectives import IGNORE_INDEX, build_objective, mask_generator
from lmforge.run_dir import RunDir
from lmforge.tokenizer import TOKENIZER_FILE, load_tokenizer, token_byte_lengths, vocab_tables
from lmforge.tokens import META, load_shards, read_meta, tokenize_corpus
from lmforge.training import distributed
from lmforge.training.checkpoint import load_checkpoint, save_checkpoint
from lmforge.training.data import TrainLoader
from lmforge.training.events import MetricsLog
from lmforge.training.device import (autocast, keep_freed_memory, peak_flops, remeasured_peak, resolve_device,
                                     resolve_dtype, set_threads)
from lmforge.training.loss_eval import Validator, unigram_baseline
from lmforge.training.optim import build_optimizers, lr_factor, set_lr

# Keys that may differ between a run and its resumption: they change logging, not the math.
RESUMABLE_CHANGES = {
    "train.progress", "train.log_interval", "train.eval_interval", "train.eval_tokens", "train.checkpoint_interval",
    "train.keep_checkpoints", "train.threads", "train.final_eval_tokens", "train.init_from",
}


def with_training_data(cfg: Config, data: list[str] | None, run: RunDir) -> Config:
    """`cfg` reading `data`: one tokenized folder (holding meta.json), stored relative to the run
    folder as config.yaml keeps it, or raw sources (relative to the current directory)."""
    if not data:
        return cfg
    if len(data) == 1 and (Path(data[0]) / META).is_file():
        return with_data(cfg, tokenized=run.tokenized_for_config(data[0]))
    return with_data(cfg, sources=list(data), tokenized="")


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


def checkpoint_to_resume(run: RunDir, cfg: Config, resume: bool):
    """The checkpoint to continue from (None for a fresh run); refuses to mix two runs in one folder."""
    ckpt = run.latest_checkpoint()
    if not resume:
        if ckpt is not None:
            raise LmforgeError(f"{run} already holds a run: add --resume to continue it, or choose another --out")
        return None
    if ckpt is None:
        raise LmforgeError(f"--resume: {run} holds no checkpoint to resume from; drop --resume to start afresh")
    if run.config is not None:
        check_resumable(run.config, cfg)
    return ckpt


def check_memory(mcfg, batch_size: int, params: int, device: torch.device) -> None:
    """Refuse, before the first step, a context or batch whose activations cannot fit: with
    model.seq_len=100000 the first forward would otherwise be killed by the OS, or swap for hours."""
    from lmforge.cost import Shape, activation_bytes

    shape = Shape(layers=mcfg.n_layer, width=mcfg.n_embd, heads=mcfg.n_head, vocab=mcfg.vocab_size,
                  context=mcfg.seq_len, params=params)
    # activations as fused attention keeps them (no context^2 term), in fp32; logits and their gradient; 16 B/param
    need = 2 * activation_bytes(shape, batch_size, "selective") + 8 * batch_size * mcfg.seq_len * mcfg.vocab_size \
        + 16 * params
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise LmforgeError(
            f"model.seq_len={mcfg.seq_len} with train.batch_size={batch_size} needs about {need / 1e9:,.0f} GB for one "
            f"step, and {device.type} memory is {have / 1e9:,.0f} GB: lower model.seq_len or train.batch_size "
            f"(raise train.grad_accum to keep the tokens per step)")


def prepare_tokens(cfg: Config, run: RunDir, log: Callable[[str], None]) -> Path:
    """The tokenized folder this run trains on, tokenizing `data.sources` into RUN/tokens if needed."""
    folder = run.tokens_dir_for(cfg)
    if cfg.data.tokenized:
        read_meta(folder)  # a named tokenized folder must already exist
        return folder
    tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log)
    return folder


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
        # A second Ctrl-C stops at once. A repeated SIGTERM is the same request: a sweep worker's
        # parent-death SIGTERM comes once for each thread of the dying parent it is handed on to.
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def forward_backward(model, objective, windows: list[torch.Tensor], device: torch.device, amp,
                     dist: distributed.DistInfo, fsdp: bool = False, step: int = 0, seed: int = 0) -> torch.Tensor:
    """Forward and backward over the micro-batches of one step; returns the mean loss per target token.

    Batches are made on the CPU; a random objective (masking) draws from a generator seeded by
    (seed, step, rank, micro-batch), so a resumed run draws the same masks."""
    batches = []
    for i, w in enumerate(windows):
        inputs, targets = objective.batch(w, mask_generator(seed, step, dist.rank, i))
        batches.append((inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)))
    n_targets = sum((targets != IGNORE_INDEX).sum() for _, targets in batches).float()
    distributed.all_reduce_sum(n_targets, dist)
    # DDP averages gradients over ranks; scaling by world size turns that average back into a sum
    scale = dist.world_size / n_targets
    total = torch.zeros((), dtype=torch.float32, device=device)
    ddp = dist.enabled and not fsdp
    for i, (inputs, targets) in enumerate(batches):
        last = i == len(batches) - 1
        if fsdp:  # accumulate unsharded gradients locally; reduce-scatter once, after the last micro-batch
            model.set_requires_gradient_sync(last)
        sync = contextlib.nullcontext() if (not ddp or last) else model.no_sync()
        with sync:
            with amp:
                loss_sum, _ = objective.loss(model, inputs, targets)
            (loss_sum * scale).backward()
        total += loss_sum.detach()
    distributed.all_reduce_sum(total, dist)
    return total / n_targets


def apply_update(model, optimizers: list[torch.optim.Optimizer], loss: torch.Tensor, grad_clip: float,
                 step: int) -> float:
    """Clip, refuse a non-finite loss or gradient norm (before either reaches the weights), step,
    clear gradients. The norm is checked too: a finite loss can still back-propagate an infinite
    gradient, which clipping turns into NaN weights."""
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded norm
        grad_norm = grad_norm.full_tensor()
    loss_value, norm_value = loss.item(), float(grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        what = f"loss is {loss_value}" if not math.isfinite(loss_value) else f"gradient norm is {norm_value}"
        raise TrainingDiverged(
            f"training diverged at step {step}: {what}; lower train.lr or raise "
            f"train.warmup_steps, then start again or resume from the last checkpoint"
        )
    for opt in optimizers:
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss_value


class Trainer:
    """One training run of `cfg` in RUN = cfg.run.out; `Trainer(cfg).fit()` returns the summary."""

    def __init__(self, cfg: Config, resume: bool = False, stop_at: int | None = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.tc = cfg, cfg.train
        self.run = RunDir(cfg.run.out)
        self.resume, self.log = resume, log
        self.last_stop = min(self.tc.max_steps, stop_at) if stop_at is not None else self.tc.max_steps
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.dist, self.writer_lock = None, None

    # ---------------------------------------------------------------- phases: set up and build

    def setup(self) -> None:
        """Threads, device and processes; the run folder checked; the tokens made; the config saved."""
        tc = self.tc
        self.threads = set_threads(tc.threads)
        device = resolve_device(tc.device)
        if device.type == "cpu":
            keep_freed_memory()
        self.dist, self.device = distributed.setup(device)
        self.log_main = self.log if self.dist.is_main else (lambda *_: None)
        if self.dist.is_main:  # before anything is read or written: one writer per run folder
            self.writer_lock = self.run.lock().acquire()
            if self.writer_lock.taken_over:
                self.log_main(f"train: {self.run} was left locked by {describe_holder(self.writer_lock.taken_over)}, "
                              f"which is gone; taking it over")
        self.resume_from = checkpoint_to_resume(self.run, self.cfg, self.resume)
        self.run.path.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            prepare_tokens(self.cfg, self.run, self.log_main)
        distributed.barrier(self.dist)
        self.tokens_dir = self.run.tokens_dir_for(self.cfg)
        self.meta = read_meta(self.tokens_dir)
        self.tokenizer = load_tokenizer(self.tokens_dir)
        if self.dist.is_main:
            self.run.save_config(self.cfg)
            shutil.copyfile(self.tokens_dir / TOKENIZER_FILE, self.run.tokenizer_path)
        self.log_metrics = MetricsLog(self.run, write=self.dist.is_main)

    def build(self) -> None:
        """Data, model, objective, optimizers and validation; a resumed run's state restored."""
        tc, device = self.tc, self.device
        torch.manual_seed(tc.seed)
        self.dtype = resolve_dtype(tc.dtype, device)
        self.amp = autocast(device, self.dtype)
        self.mcfg = mcfg = model_config(self.cfg, self.meta["vocab_size"])
        if mcfg.vocab_size < self.meta["vocab_size"]:
            raise LmforgeError(f"model.vocab_size={mcfg.vocab_size} is smaller than the tokenizer's {self.meta['vocab_size']}")
        self.train_shards = load_shards(self.tokens_dir, "train")
        self.val_shards = load_shards(self.tokens_dir, "val")
        self.loader = TrainLoader(self.train_shards, mcfg.seq_len, tc.batch_size, tc.seed, self.dist.rank,
                                  self.dist.world_size)
        with torch.device("meta"):  # counted, not allocated
            check_memory(mcfg, tc.batch_size, GPT(mcfg).num_params(), device)
        self.model = GPT(mcfg).to(device)
        if tc.init_from and self.resume_from is None:
            from lmforge.export import init_from

            init_from(self.model, tc.init_from)
            self.log_main(f"train: weights from {tc.init_from}")
        self.fsdp = self.dist.enabled and tc.data_parallel == "fsdp"
        if self.fsdp:  # before the optimizers: they must hold the sharded parameters
            distributed.shard_model(self.model)
        self.objective = build_objective(tc, vocab_tables(self.tokenizer))
        self.optimizers = build_optimizers(self.model, tc, device)
        if self.resume_from is not None:
            self._restore(self.resume_from)
        elif self.dist.is_main:
            self.run.clear_metrics()
        self.train_model = self._wrap(self.model)
        token_bytes = token_byte_lengths(self.tokenizer)
        token_bytes = np.pad(token_bytes, (0, mcfg.vocab_size - len(token_bytes)))  # a padded vocabulary's extra ids: 0 bytes
        self.validator = Validator(self.val_shards, mcfg.seq_len, tc.batch_size, token_bytes, device, self.amp,
                                   self.objective)
        self.tokens_per_step = tc.batch_size * mcfg.seq_len * tc.grad_accum * self.dist.world_size
        self.flops_per_token = self.model.flops_per_token()
        self.peak = peak_flops(device, self.dtype) * self.dist.world_size

    def _restore(self, ckpt) -> None:
        state = load_checkpoint(ckpt, self.model, self.optimizers)
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens_seen, self.elapsed = state["step"], state["tokens"], state.get("train_time_s", 0.0)
        if self.dist.is_main:
            self.run.truncate_metrics(self.step)
        self.log_main(f"train: resumed from {ckpt} at step {self.step}")

    def _wrap(self, model: GPT) -> torch.nn.Module:
        """The module the steps call: DDP around the model (FSDP2 shards it in place), compiled if asked."""
        wrapped: torch.nn.Module = model
        if self.dist.enabled and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(wrapped) if self.tc.compile else wrapped

    # ---------------------------------------------------------------- phases: one step

    def train_step(self, windows: list[torch.Tensor]) -> torch.Tensor:
        return forward_backward(self.train_model, self.objective, windows, self.device, self.amp, self.dist,
                                self.fsdp, self.step, self.tc.seed)

    def update(self, loss: torch.Tensor) -> float:
        return apply_update(self.model, self.optimizers, loss, self.tc.grad_clip, self.step + 1)

    def optimizer_step(self) -> float:
        """One whole step: schedule, batches, train_step, update; the step counter advances."""
        set_lr(self.optimizers, lr_factor(self.step, self.tc))
        windows = [self.loader.next_batch() for _ in range(self.tc.grad_accum)]
        loss_value = self.update(self.train_step(windows))
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return loss_value

    # ---------------------------------------------------------------- phases: evaluate, checkpoint, finish

    def validate(self, max_tokens: int) -> dict:
        return self.validator(self.model, max_tokens)

    def checkpoint(self) -> None:
        if self.dist.is_main or self.fsdp:  # FSDP: every rank gathers its shards, the main one writes
            save_checkpoint(self.run, self.step, self.model, self.optimizers,
                            {"tokens": self.tokens_seen, "loader": self.loader.state_dict(),
                             "train_time_s": self.elapsed, "config": self.cfg.to_dict()},
                            self.tc.keep_checkpoints, write=self.dist.is_main)
        distributed.barrier(self.dist)

    def finish(self) -> dict:
        """Final figures on the validation split, the unigram baseline, summary.json."""
        final = self.validate(self.tc.final_eval_tokens)
        if final["val_loss"] is not None and not math.isfinite(final["val_loss"]):
            raise TrainingDiverged(f"training diverged: the final validation loss is {final['val_loss']}; no summary "
                                   f"written. Lower train.lr or raise train.warmup_steps and train again")
        baseline = unigram_baseline(self.train_shards, self.val_shards, self.mcfg.vocab_size, self.mcfg.seq_len)
        elapsed, tokens = self.elapsed, self.tokens_seen
        summary = {
            "objective": self.tc.objective,
            "val_loss": final["val_loss"], "perplexity": final["perplexity"], "bits_per_byte": final["bits_per_byte"],
            "val_accuracy": final["accuracy"], "val_tokens": final["tokens"], "unigram_val_loss": baseline,
            "steps": self.step, "tokens_trained": tokens, "params": self.model.num_params(),
            "flops_per_token": self.flops_per_token, "train_time_s": round(elapsed, 2),
            "tokens_per_s": round(tokens / elapsed, 1) if elapsed else None,
            "mfu": round(tokens / elapsed * self.flops_per_token / self.peak, 4) if elapsed else None,
            "peak_flops": self.peak, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            "threads": self.threads, "world_size": self.dist.world_size,
            "checkpoint": str(self.run.latest_checkpoint()), "complete": True, "run_dir": str(self.run),
        }
        if "reason" in final:
            summary["val_reason"] = final["reason"]
        if not self.run.has_validation_at(self.step):  # a run killed after this line and resumed
            self.log_metrics(Validator.record(self.step, final, elapsed, self.objective.name))
        if self.dist.is_main:
            self.run.write_summary(summary)
        masked = self.objective.name == "masked"
        self.log_main(
            f"train: done in {elapsed:.0f}s ({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}%); "
            f"{'masked-token ' if masked else ''}val loss {fmt(final['val_loss'])} "
            f"(unigram baseline {fmt(baseline)}), {fmt(final['bits_per_byte'])} bits/byte"
            + (f", accuracy {fmt(final['accuracy'], '.3f')}" if masked else "")
            + (f" ({final['reason']})" if "reason" in final else "")
        )
        return summary

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict:
        """Set up, build, train to max_steps (or stop_at), checkpoint, finish; the summary."""
        try:
            self.setup()
            self.build()
            self._announce()
            # the stop checkpoint is written under the handler too: a repeated SIGTERM (see StopFlag)
            # may come after the loop has ended, and the default action would kill the write
            with StopFlag() as stop:
                self._loop(stop)
                self.checkpoint()
            if self.step < self.tc.max_steps:
                return {"step": self.step, "complete": False, "run_dir": str(self.run)}
            return self.finish()
        finally:
            if hasattr(self, "log_metrics"):
                self.log_metrics.close()
            if self.writer_lock is not None:
                self.writer_lock.release()
            if self.dist is not None:
                distributed.teardown(self.dist)

    def _announce(self) -> None:
        m, tc = self.mcfg, self.tc
        self.log_main(
            f"train: {tc.objective} objective, {self.model.num_params():,} parameters ({m.n_layer} layers, width {m.n_embd}, "
            f"context {m.seq_len}), {self.tokens_per_step:,} tokens/step, {tc.max_steps} steps, device {self.device}, "
            f"{self.dtype}, {self.threads} threads, {self.dist.world_size} process(es){' (FSDP2)' if self.fsdp else ''}; "
            f"run folder {self.run}"
        )

    def _loop(self, stop: "StopFlag") -> None:
        tc = self.tc
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, unit="step", dynamic_ncols=True, leave=True, mininterval=1.0)
        meter = ThroughputMeter()
        self.model.train()
        while self.step < self.last_stop:
            t0 = time.perf_counter()
            loss_value = self.optimizer_step()
            dt = time.perf_counter() - t0
            self.elapsed += dt
            meter.add(dt, self.tokens_per_step)
            if self.step % tc.log_interval == 0 or self.step == self.last_stop:
                self._log_step(loss_value, meter, bar)
            if bar is not None:
                bar.update(1)
            if tc.eval_interval and self.step % tc.eval_interval == 0 and self.step < tc.max_steps:
                self._log_validation(bar)
            if tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0 and self.step < self.last_stop:
                self.checkpoint()
            if stop.requested:
                self.log_main(f"train: stop requested; saving step {self.step} (continue with --resume)")
                break
        if bar is not None:
            bar.close()

    def _log_step(self, loss_value: float, meter: "ThroughputMeter", bar) -> None:
        world = self.dist.world_size
        tps = meter.take()
        self.peak = remeasured_peak(self.device, self.dtype, tps * self.flops_per_token / world, self.peak / world) * world
        mfu = tps * self.flops_per_token / self.peak
        record = {"step": self.step, "loss": round(loss_value, 5), "lr": self.optimizers[0].param_groups[0]["lr"],
                  "tokens": self.tokens_seen, "tokens_per_s": round(tps, 1), "mfu": round(mfu, 4),
                  "train_time_s": round(self.elapsed, 3)}
        self.log_metrics(record)
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_value:.3f} | {tps / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}%")

    def _log_validation(self, bar) -> None:
        ev = self.validate(self.tc.eval_tokens)
        self.log_metrics(Validator.record(self.step, ev, self.elapsed, self.objective.name))
        msg = f"step {self.step}: val loss {fmt(ev['val_loss'])}, {fmt(ev['bits_per_byte'])} bits/byte"
        if self.objective.name == "masked":
            msg += f", masked-token accuracy {fmt(ev['accuracy'], '.3f')}"
        (bar.write if bar is not None else self.log_main)(msg)


class ThroughputMeter:
    """Tokens per second over the steps since the last reading."""

    def __init__(self):
        self.seconds, self.tokens = 0.0, 0

    def add(self, seconds: float, tokens: int) -> None:
        self.seconds += seconds
        self.tokens += tokens

    def take(self) -> float:
        tps = self.tokens / self.seconds if self.seconds else 0.0
        self.seconds, self.tokens = 0.0, 0
        return tps


def train(cfg: Config, data: list[str] | None = None, resume: bool = False, stop_at: int | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train `cfg` (tokenizing its sources first if needed) and return the summary.

    data: raw sources, or one tokenized folder (holding meta.json), overriding cfg.data.
    resume: continue from the newest checkpoint in cfg.run.out.
    stop_at: stop after this step with a checkpoint, as an interrupted run would.
    """
    cfg = with_training_data(cfg, data, RunDir(cfg.run.out))
    return Trainer(cfg, resume, stop_at, log).fit()


def measure_step_seconds(cfg: Config, vocab_size: int, steps: int = 3) -> float:
    """Seconds per optimizer step of `cfg`'s model and batch on random tokens, on the CPU with the
    current thread count (best of `steps`, after one warm-up step): the calibration `lmforge scale
    plan` uses, stepped by the same functions as a real run."""
    device = torch.device("cpu")
    model = GPT(model_config(cfg, vocab_size))
    optimizers = build_optimizers(model, cfg.train, device)
    objective = build_objective(cfg.train, random_token_vocab(vocab_size))
    x = torch.randint(0, vocab_size, (cfg.train.batch_size, cfg.model.seq_len + 1))
    times = []
    for step in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        loss = forward_backward(model, objective, [x] * cfg.train.grad_accum, device, contextlib.nullcontext(),
                                distributed.DistInfo())
        apply_update(model, optimizers, loss, cfg.train.grad_clip, step + 1)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def random_token_vocab(vocab_size: int) -> dict:
    """Vocabulary tables (tokenizer.vocab_tables' keys) for random tokens: the last id is the mask."""
    return {"mask_id": vocab_size - 1, "special_ids": [vocab_size - 1], "vocab_size": vocab_size,
            "starts_word": np.ones(vocab_size, dtype=bool), "joins_next": np.ones(vocab_size, dtype=bool)}
