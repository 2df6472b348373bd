"""The trainer: tokens on disk in, checkpoints, metrics and a summary out (files: lmforge/folders/run.py).

It runs in phases, each a method small enough to read alone:

    setup()       threads, device, processes; the run folder checked, tokens made, config saved
    build()       data loader, model, objective, optimizers, validation; state of a resumed run
    train_step()  forward and backward over the micro-batches of one optimizer step
    update()      clip; skip a step whose loss or gradient norm is not finite (decided on the
                  device); step the optimizers. Several skipped in a row raise TrainingDiverged
                  where the host next reads the guard: a log line, or the loop's end
    validate()    the validation split under the run's objective (training/loss_eval.py)
    checkpoint()  weights, optimizer, RNG and loader position (training/checkpoint.py)
    finish()      final evaluation (the curve's last point), unigram baseline on its windows, summary.json

One optimizer step takes `grad_accum` micro-batches in all: under torchrun each of W ranks
runs grad_accum / W of them, so a config means the same batch on any number of processes.
Their summed losses are divided by the number of target tokens in *all* of them, across ranks,
so the update equals that of one large batch whatever the split (and masked batches with
varying target counts are weighted per token, not per micro-batch).

On a GPU nothing in a step waits for the device: the loss is read at log intervals, a
non-finite step is skipped by the optimizers themselves (`found_inf`, as under a GradScaler),
and the time is taken between those reads. The first WARMUP_STEPS steps (compilation,
allocator and cuBLAS warm-up) are timed apart from the steady state that tokens/s and MFU report.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lmforge.config import Config, with_data
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.files import atomic_write_bytes
from lmforge.locks import describe_holder
from lmforge.model import GPT, head_skips_untargeted_rows, model_config
from lmforge.model_counts import TokenFlops, loss_chunk_rows, training_flops
from lmforge.figures import fmt, plural
from lmforge.objectives import IGNORE_INDEX, build_objective, mask_generator
from lmforge.processes import keep_freed_memory
from lmforge.folders.run import RunDir, Summary, TrainRecord
from lmforge.tokenizer import load_tokenizer, token_byte_lengths, vocab_tables
from lmforge.folders.tokenized import META, TOKENIZER_FILE, load_shards, read_meta
from lmforge.tokens import is_complete, tokenize_corpus
from lmforge.training import distributed
from lmforge.training.checkpoint import load_checkpoint, save_checkpoint
from lmforge.training.data import TrainLoader
from lmforge.training.events import MetricsLog
from lmforge.training.device import (autocast, peak_flops, remeasured_peak, resolve_device, resolve_dtype,
                                     set_threads, ThreadGovernor)
from lmforge.training.loss_eval import Validator, final_eval_tokens, unigram_baseline
from lmforge.training.optim import build_optimizers, describe_groups, lr_factor, set_lr

WARMUP_STEPS = 3  # steps after a (re)start timed apart: compilation and warm-up, not training speed
MAX_SKIPPED_IN_A_ROW = 5  # non-finite steps skipped in a row before the run is stopped

# Keys that may differ between a run and its resumption: they change logging, not the math.
RESUMABLE_CHANGES = {
    "train.progress", "train.log_interval", "train.eval_interval", "train.eval_tokens", "train.checkpoint_interval",
    "train.keep_checkpoints", "train.threads", "train.final_eval_tokens", "train.init_from", "train.recompute",
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
    ckpt.check_objective(cfg.train.objective, f"the config resuming {run}")
    return ckpt


def check_memory(mcfg, batch_size: int, device: torch.device, recompute: str = "none",
                 dtype: torch.dtype = torch.float32, fsdp: bool = False) -> None:
    """Refuse, before the first step, a context or batch whose activations cannot fit: with
    model.seq_len=100000 the first forward would otherwise be killed by the OS, or swap for hours."""
    from lmforge.cost import activation_memory
    from lmforge.hardware import physical_memory_bytes

    shape = mcfg.shape()
    # FSDP gathers the weights in the compute dtype; otherwise autocast computes from float32 weights
    compute = dtype.itemsize
    activations = activation_memory(shape, batch_size, recompute, compute, compute if fsdp else 4)["peak"]
    need = activations + 16 * shape.params  # weights, gradients and AdamW's two moments in float32
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = physical_memory_bytes()
    if need > have:
        raise LmforgeError(
            f"model.seq_len={mcfg.seq_len} with train.batch_size={batch_size} needs about {need / 1e9:,.0f} GB for one "
            f"step, and {device.type} memory is {have / 1e9:,.0f} GB: lower model.seq_len or train.batch_size "
            f"(raise train.grad_accum to keep the tokens per step)"
            + ("" if recompute == "full" else ", or set train.recompute=full"))


def prepare_tokens(cfg: Config, run: RunDir, log: Callable[[str], None], resuming: bool = False) -> Path:
    """The tokenized folder this run trains on, tokenizing `data.sources` into RUN/tokens if needed.
    A run being resumed keeps the RUN/tokens it was trained on, even where this lmforge would
    tokenize otherwise (sources edited since, a newer version's defaults: another split)."""
    folder = run.tokens_dir_for(cfg)
    if cfg.data.tokenized:
        read_meta(folder)  # a named tokenized folder must already exist
        return folder
    written = run.written_paths()  # `train --data F --out F`: the run's own files are no input
    if resuming and (folder / META).is_file():
        if not is_complete(folder, cfg.data, cfg.tokenizer, written):
            log(f"tokenize: {folder} holds the tokens this run was trained on; resuming keeps them as they are")
        return folder
    tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log, exclude=written, progress=cfg.train.progress)
    return folder


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step, with a checkpoint.

    Under torchrun each rank catches its own signal, between different steps, or alone (a signal
    sent to one process): the ranks stop when any of them is asked (`agreed`), after the same step,
    so none is left in an all-reduce its peers never join."""

    def __init__(self):
        self.requested = False
        self._old = {}
        # torchrun's agent relays each signal it gets to every worker, so one Ctrl-C in a terminal
        # arrives twice; the agent itself kills workers that have not exited 30 s later
        self.relayed = "TORCHELASTIC_RUN_ID" in os.environ

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
        if self.requested and signum == signal.SIGINT and not self.relayed:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, dist: distributed.DistInfo) -> bool:
        return distributed.any_rank(self.requested, dist)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def forward_backward(model, objective, windows: list[torch.Tensor], device: torch.device, amp,
                     dist: distributed.DistInfo, fsdp: bool = False, step: int = 0,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward over the micro-batches of one step; returns the mean loss per target token
    and the number of targets (over all ranks).

    Batches are made on the CPU; a random objective (masking) draws from a generator seeded by
    (seed, step, rank, micro-batch), so a resumed run draws the same masks."""
    batches = []
    for i, w in enumerate(windows):
        inputs, targets = objective.batch(w, mask_generator(seed, step, dist.rank, i))
        batches.append((to_device(inputs, device), to_device(targets, device)))
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
    return total / n_targets, n_targets


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on `device`; to a GPU through pinned memory, so the copy is queued and the host
    goes on preparing the next micro-batches while the GPU computes."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class NonFiniteGuard:
    """Decides on the device whether a step is sound (its loss and gradient norm finite), so no
    step waits for the host; counts the skipped steps there and is read at log intervals."""

    def __init__(self, device: torch.device):
        self.skipped = torch.zeros((), device=device)  # all steps skipped so far
        self.streak = torch.zeros((), device=device)  # skipped in a row, up to the last step

    def found_inf(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """1.0 (skip) or 0.0 (step) on the device, the flag fused AdamW and Muon take."""
        bad = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
        self.skipped += bad
        self.streak = (self.streak + bad) * bad
        return bad

    def check(self, step: int) -> int:
        """Waits for the device; raises after MAX_SKIPPED_IN_A_ROW skipped steps in a row. The number
        of steps skipped in all."""
        streak, skipped = int(self.streak.item()), int(self.skipped.item())
        if streak >= MAX_SKIPPED_IN_A_ROW:
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss or gradient norm was not finite for {streak} steps "
                f"in a row ({skipped} skipped in all; none reached the weights); lower train.lr or raise "
                f"train.warmup_steps, then start again or resume from the last checkpoint"
            )
        return skipped


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients; with FSDP2 over every rank's shards, not just this one's."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return norm.full_tensor() if distributed.is_sharded(norm) else norm


def apply_update(model, optimizers: list[torch.optim.Optimizer], loss: torch.Tensor, grad_clip: float,
                 guard: NonFiniteGuard) -> torch.Tensor:
    """Clip; step, unless the loss or gradient norm is not finite (then the optimizers leave weights
    and state as they are, on the device's word); clear gradients. Returns the gradient norm before
    clipping, on the device."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = grad_norm(params)
    if grad_clip:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    found_inf = guard.found_inf(loss, norm)
    for opt in optimizers:
        opt.found_inf = found_inf  # read by fused AdamW and lmforge's Muon: skip this step when it is 1
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return norm


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
        self.interrupted = False  # stopped by a signal, as opposed to reaching stop_at or max_steps

    # ---------------------------------------------------------------- phases: set up and build

    def setup(self) -> None:
        """Threads, device and processes; the run folder checked; the tokens made; the config saved."""
        tc = self.tc
        self.threads = set_threads(tc.threads)
        device = resolve_device(tc.device)
        # train.threads=0 on a CPU: as many threads as the cores other processes leave free
        self.governor = ThreadGovernor(self.threads) if tc.threads == 0 and device.type == "cpu" else None
        self.steps_by_threads = Counter()
        if device.type == "cpu":
            keep_freed_memory()
        self.dist, self.device = distributed.setup(device)
        self.log_main = self.log if self.dist.is_main else (lambda *_: None)
        if self.dist.is_main:  # before anything is read or written: one writer per run folder
            self.run.claim()
            self.writer_lock = self.run.lock().acquire()
            if self.writer_lock.taken_over:
                self.log_main(f"train: {self.run} was left locked by {describe_holder(self.writer_lock.taken_over)}, "
                              f"which is gone; taking it over")
        self.run.refuse_links()
        self.resume_from = checkpoint_to_resume(self.run, self.cfg, self.resume)
        self.run.path.mkdir(parents=True, exist_ok=True)
        distributed.main_first(self.dist, lambda: prepare_tokens(self.cfg, self.run, self.log_main, self.resume_from is not None),
                                "lmforge/tokens")
        self.tokens_dir = self.run.tokens_dir_for(self.cfg)
        self.meta = read_meta(self.tokens_dir)
        self.tokenizer = load_tokenizer(self.tokens_dir)
        if self.dist.is_main:
            self.run.save_config(self.cfg)
            atomic_write_bytes(self.run.tokenizer_path, (self.tokens_dir / TOKENIZER_FILE).read_bytes())
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
        self.micro_batches = micro_batches_per_rank(tc.grad_accum, self.dist.world_size)
        self.loader = TrainLoader(self.train_shards, mcfg.seq_len, tc.batch_size, tc.seed, self.dist.rank,
                                  self.dist.world_size)
        self.fsdp = self.dist.enabled and tc.data_parallel == "fsdp"
        check_memory(mcfg, tc.batch_size, device, tc.recompute, self.dtype, self.fsdp)
        self.model = GPT(mcfg).to(device)
        self.model.recompute = tc.recompute
        if tc.init_from and self.resume_from is None:
            from lmforge.export import init_from

            init_from(self.model, tc.init_from, self.tokens_dir / TOKENIZER_FILE)
            self.log_main(f"train: weights from {tc.init_from}")
        if self.fsdp:  # before the optimizers: they must hold the sharded parameters
            distributed.shard_model(self.model, self.dtype, compile_blocks=tc.compile)
        self.objective = build_objective(tc, vocab_tables(self.tokenizer))
        self.optimizers = build_optimizers(self.model, tc)
        self.param_groups = describe_groups(self.optimizers)  # before a resumed run's groups replace these
        if self.resume_from is not None:
            self._restore(self.resume_from)
        elif self.dist.is_main:
            self.run.clear_metrics()
        self.train_model = self._wrap(self.model)
        token_bytes = token_byte_lengths(self.tokenizer)
        token_bytes = np.pad(token_bytes, (0, mcfg.vocab_size - len(token_bytes)))  # a padded vocabulary's extra ids: 0 bytes
        self.validator = Validator(self.val_shards, mcfg.seq_len, tc.batch_size, token_bytes, device, self.amp,
                                   self.objective, self.dist)
        self.tokens_per_step = tc.batch_size * mcfg.seq_len * self.micro_batches * self.dist.world_size
        self.guard = NonFiniteGuard(device)
        # the masked objective's CPU loss takes only the rows with a target through the head: MFU
        # counts the head FLOPs that ran, by the share of targets among the tokens of this start
        self.head_filtered = self.objective.name == "masked" and head_skips_untargeted_rows(
            device.type, tc.compile and not self.fsdp, tc.batch_size * mcfg.seq_len, loss_chunk_rows(mcfg.vocab_size))
        self.targets_run, self.tokens_run = 0.0, 0
        self.peak = peak_flops(device, self.dtype) * self.dist.world_size

    def _restore(self, ckpt) -> None:
        state = load_checkpoint(ckpt, self.model, self.optimizers)
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens_seen, self.elapsed = state["step"], state["tokens"], state.get("train_time_s", 0.0)
        if self.dist.is_main:
            self.run.truncate_metrics(self.step)
        self.log_main(f"train: resumed from {ckpt} at step {self.step}")

    def _wrap(self, model: GPT) -> torch.nn.Module:
        """The module the steps call: DDP around the model, compiled if asked (FSDP2 shards the model in
        place and compiles its blocks)."""
        wrapped: torch.nn.Module = model
        if self.dist.enabled and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.fsdp:  # its blocks were compiled one by one when sharded
            return wrapped
        return torch.compile(wrapped) if self.tc.compile else wrapped

    # ---------------------------------------------------------------- phases: one step

    def train_step(self, windows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_backward(self.train_model, self.objective, windows, self.device, self.amp, self.dist,
                                self.fsdp, self.step, self.tc.seed)

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        return apply_update(self.model, self.optimizers, loss, self.tc.grad_clip, self.guard)

    def optimizer_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One whole step: schedule, batches, train_step, update; the step counter advances. The
        loss and the gradient norm stay on the device (reading them would make the host wait)."""
        set_lr(self.optimizers, lr_factor(self.step, self.tc))
        windows = [self.loader.next_batch() for _ in range(self.micro_batches)]
        loss, targets = self.train_step(windows)
        norm = self.update(loss)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.tokens_run += self.tokens_per_step
        if self.head_filtered:  # a CPU tensor: adding it costs no wait
            self.targets_run += targets
        return loss, norm

    def token_flops(self) -> TokenFlops:
        """FLOPs per token of the steps run so far (`model_counts.training_flops`)."""
        head_rows = float(self.targets_run / self.tokens_run) if self.head_filtered and self.tokens_run else 1.0
        return training_flops(self.mcfg.shape(), self.tc.recompute, head_rows)

    # ---------------------------------------------------------------- phases: evaluate, checkpoint, finish

    def validate(self, max_tokens: int) -> dict:
        return self.validator(self.model, max_tokens)

    def checkpoint(self) -> None:
        self.clock.lap()  # train_time_s up to this step, saved with it
        if self.dist.is_main or self.fsdp:  # FSDP: every rank gathers its shards, the main one writes
            save_checkpoint(self.run, self.step, self.model, self.optimizers,
                            {"tokens": self.tokens_seen, "loader": self.loader.state_dict(),
                             "train_time_s": self.elapsed, "config": self.cfg.to_dict()},
                            self.tc.keep_checkpoints, write=self.dist.is_main)
        distributed.barrier(self.dist)

    def finish(self) -> dict:
        """Final figures on the validation split, the unigram baseline, summary.json."""
        scored = final_eval_tokens(self.tc)
        final = self.validate(scored)
        if final["val_loss"] is not None and not math.isfinite(final["val_loss"]):
            raise TrainingDiverged(f"training diverged: the final validation loss is {final['val_loss']}; no summary "
                                   f"written. Lower train.lr or raise train.warmup_steps and train again")
        unigram = unigram_baseline(self.train_shards, self.val_shards, self.mcfg.vocab_size, self.mcfg.seq_len,
                                   eval_tokens=scored, token_bytes=self.validator.token_bytes)
        baseline = unigram["val_loss"]
        elapsed, tokens = self.elapsed, self.tokens_seen
        steady_s, steady_tokens = self.clock.steady_s, self.clock.steady_steps * self.tokens_per_step
        if not steady_tokens:  # a run too short for a steady state: all of it
            steady_s, steady_tokens = elapsed, tokens
        tps = steady_tokens / steady_s if steady_s else None
        flops = self.token_flops()
        summary = Summary(
            objective=self.tc.objective,
            val_loss=final["val_loss"], perplexity=final["perplexity"], bits_per_byte=final["bits_per_byte"],
            val_accuracy=final["accuracy"], val_tokens=final["tokens"], unigram_val_loss=baseline,
            steps=self.step, tokens_trained=tokens, params=int(self.mcfg.shape().params),
            flops_per_token=round(flops.model), train_time_s=round(elapsed, 3),
            # steady state: the steps after each start's first WARMUP_STEPS (compilation and warm-up)
            tokens_per_s=round(tps, 1) if tps else None,
            mfu=round(tps * flops.model / self.peak, 4) if tps else None,
            hfu=round(tps * flops.hardware / self.peak, 4) if tps else None,
            warmup_s=round(self.clock.warmup_s, 3), warmup_steps=self.clock.warmup_steps,
            skipped_steps=self.guard.check(self.step),
            peak_flops=self.peak, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            threads=self.threads, world_size=self.dist.world_size,
            # this start's steps by thread count: fewer while other processes held cores (ThreadGovernor)
            steps_by_threads={str(k): v for k, v in sorted(self.steps_by_threads.items())},
            checkpoint=str(self.run.latest_checkpoint()), complete=True, run_dir=str(self.run),
            parametrization=self.mcfg.parametrization, param_groups=self.param_groups,
            mup_base_width=self.mcfg.mup_base_width if self.mcfg.parametrization == "mup" else None,
            val_reason=final.get("reason"),
        )
        if not self.run.has_validation_at(self.step):  # a run killed after this line and resumed
            self.log_metrics(Validator.record(self.step, final, elapsed, self.objective.name))
        if self.dist.is_main:
            self.run.write_summary(summary)
        summary = summary.to_dict()
        masked = self.objective.name == "masked"
        self.log_main(
            f"train: done in {elapsed:.0f}s ({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}% "
            f"steady state; {summary['warmup_s']:.1f}s of warm-up{' and compilation' if self.tc.compile else ''} apart); "
            f"{'masked-token ' if masked else ''}val loss {fmt(final['val_loss'])} nats/token, "
            f"{fmt(final['bits_per_byte'])} bits/byte (unigram baseline {fmt(baseline)} nats/token"
            + ("" if masked else f", {fmt(unigram['bits_per_byte'])} bits/byte")
            + ")"
            + (f", accuracy {fmt(final['accuracy'], '.3f')}" if masked else "")
            + (f" ({final['reason']})" if "reason" in final else "")
            + (f"; {plural(summary['skipped_steps'], 'step')} skipped: loss or gradient not finite (lower train.lr)"
               if summary["skipped_steps"] else "")
        )
        return summary

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict:
        """Set up, build, train to max_steps (or stop_at), checkpoint, finish; the summary."""
        finished = False
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
                result = {"step": self.step, "complete": False, "run_dir": str(self.run),
                          "interrupted": self.interrupted}
            else:
                result = self.finish()
            finished = True
            return result
        finally:
            if hasattr(self, "log_metrics"):
                self.log_metrics.close()
            if self.writer_lock is not None:
                self.writer_lock.release()
            if self.dist is not None:
                distributed.teardown(self.dist, finished)

    def _announce(self) -> None:
        m, tc = self.mcfg, self.tc
        self.log_main(
            f"train: {tc.objective} objective, {int(m.shape().params):,} parameters ({plural(m.n_layer, 'layer')}, "
            f"width {m.n_embd}, context {m.seq_len}), {self.tokens_per_step:,} tokens/step, "
            f"{plural(tc.max_steps, 'step')}, device {self.device}, {self.dtype}, {plural(self.threads, 'thread')}, "
            f"{plural(self.dist.world_size, 'process', 'processes')}{' (FSDP2)' if self.fsdp else ''}; "
            f"run folder {self.run}"
        )

    def _loop(self, stop: "StopFlag") -> None:
        tc = self.tc
        bar = None
        if tc.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, unit="step", dynamic_ncols=True, leave=True, mininterval=1.0)
        self.clock = StepClock(self, self.step + WARMUP_STEPS)
        self.model.train()
        try:
            self._steps(stop, bar)
        finally:  # a second Ctrl-C ends the loop at once: the next line printed starts a line of its own
            if bar is not None:
                bar.close()
        if self.interrupted:  # told after the bar has closed, or it would end the bar's line
            # how to go on depends on the caller (train --resume, a rerun of lmforge run or scale run): it says
            self.log_main(f"train: stop requested; saving step {self.step}")

    def _steps(self, stop: "StopFlag", bar) -> None:
        tc = self.tc
        self._follow_free_cores(bar, now=True)
        while self.step < self.last_stop:
            loss, norm = self.optimizer_step()
            self.steps_by_threads[torch.get_num_threads()] += 1
            self._follow_free_cores(bar)
            if self.step == self.clock.warmup_until:
                self.clock.lap()
            if self.step % tc.log_interval == 0 or self.step == self.last_stop:
                self._log_step(loss, norm, bar)
            if bar is not None:
                bar.update(1)
            if tc.eval_interval and self.step % tc.eval_interval == 0 and self.step < tc.max_steps:
                self.clock.lap()
                self._log_validation(bar)
                self.clock.restart()
            if tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0 and self.step < self.last_stop:
                self.checkpoint()
                self.clock.restart()
            if stop.agreed(self.dist):
                self.interrupted = True
                break
        self.clock.lap()
        self.guard.check(self.step)

    def _follow_free_cores(self, bar, now: bool = False) -> None:
        threads = self.governor.poll(now) if self.governor is not None else None
        if threads is not None:
            (bar.write if bar is not None else self.log_main)(
                f"train: {threads} of {self.governor.most} threads: other processes keep "
                f"{self.governor.others:.1f} cores busy")

    def _log_step(self, loss: torch.Tensor, norm: torch.Tensor, bar) -> None:
        world = self.dist.world_size
        loss_value = loss.item()  # waits for the step: the one host synchronisation per log interval
        skipped = self.guard.check(self.step)
        self.clock.lap()
        tps = self.clock.take_tokens_per_s()
        flops = self.token_flops()
        self.peak = remeasured_peak(self.device, self.dtype, tps * flops.hardware / world, self.peak / world,
                                    self.threads) * world
        mfu = tps * flops.model / self.peak
        record = TrainRecord(step=self.step, loss=round(loss_value, 5), lr=self.optimizers[0].param_groups[0]["lr"],
                             grad_norm=round(norm.item(), 5), tokens=self.tokens_seen, tokens_per_s=round(tps, 1),
                             mfu=round(mfu, 4), hfu=round(tps * flops.hardware / self.peak, 4),
                             train_time_s=round(self.elapsed, 3), skipped_steps=skipped, threads=torch.get_num_threads())
        self.log_metrics(record)
        if bar is not None:
            warm = " (warming up)" if self.step <= self.clock.warmup_until and not tps else ""
            bar.set_postfix_str(f"loss {loss_value:.3f} | {tps / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}%{warm}")

    def _log_validation(self, bar) -> None:
        ev = self.validate(self.tc.eval_tokens)
        self.log_metrics(Validator.record(self.step, ev, self.elapsed, self.objective.name))
        msg = f"step {self.step}: val loss {fmt(ev['val_loss'])}, {fmt(ev['bits_per_byte'])} bits/byte"
        if self.objective.name == "masked":
            msg += f", masked-token accuracy {fmt(ev['accuracy'], '.3f')}"
        (bar.write if bar is not None else self.log_main)(msg)


class StepClock:
    """Training time, taken between points where the host has waited for the device (`lap`), so
    that on a GPU it is the device's time and not the time to queue work. Time up to step
    `warmup_until` is warm-up (compilation, first allocations), kept apart from the steady state;
    evaluation and checkpoints between a `lap` and a `restart` are not training time."""

    def __init__(self, trainer: "Trainer", warmup_until: int):
        self.trainer, self.warmup_until = trainer, warmup_until
        self.warmup_s, self.warmup_steps = 0.0, 0
        self.steady_s, self.steady_steps = 0.0, 0
        self.window_s, self.window_steps = 0.0, 0  # steady time since the last log record
        self.restart()

    def restart(self) -> None:
        self.mark, self.mark_step = time.perf_counter(), self.trainer.step

    def lap(self) -> None:
        t = self.trainer
        if t.device.type == "cuda":
            torch.cuda.synchronize(t.device)
        now = time.perf_counter()
        seconds, steps = now - self.mark, t.step - self.mark_step
        t.elapsed += seconds
        if t.step <= self.warmup_until:
            self.warmup_s += seconds
            self.warmup_steps += steps
        else:
            self.steady_s += seconds
            self.steady_steps += steps
            self.window_s += seconds
            self.window_steps += steps
        self.mark, self.mark_step = now, t.step

    def take_tokens_per_s(self) -> float:
        """Steady tokens per second since the last reading (0 while only warming up)."""
        tps = self.window_steps * self.trainer.tokens_per_step / self.window_s if self.window_s else 0.0
        self.window_s, self.window_steps = 0.0, 0
        return tps


def micro_batches_per_rank(grad_accum: int, world_size: int) -> int:
    """train.grad_accum counts micro-batches over all ranks: each of W runs grad_accum / W."""
    if grad_accum % world_size:
        raise LmforgeError(
            f"train.grad_accum={grad_accum} micro-batches per step cannot be split over {world_size} processes: "
            f"make it a multiple of {world_size} (each process runs grad_accum / {world_size}), or change "
            f"train.batch_size and --nproc_per_node"
        )
    return grad_accum // world_size


def train(cfg: Config, data: list[str] | None = None, resume: bool = False, stop_at: int | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train `cfg` (tokenizing its sources first if needed) and return the summary.

    data: raw sources, or one tokenized folder (holding meta.json), overriding cfg.data.
    resume: continue from the newest checkpoint in cfg.run.out.
    stop_at: stop after this step with a checkpoint, as an interrupted run would.
    A run stopped by SIGINT/SIGTERM saves a checkpoint and returns {"complete": False,
    "interrupted": True, "step": ...}; one stopped at stop_at the same with "interrupted": False.
    """
    cfg = with_training_data(cfg, data, RunDir(cfg.run.out))
    return Trainer(cfg, resume, stop_at, log).fit()


def measure_step_seconds(cfg: Config, vocab_size: int, steps: int = 3) -> float:
    """Seconds per optimizer step of `cfg`'s model and batch on random tokens, on the CPU with the
    current thread count (best of `steps`, after one warm-up step): the calibration `lmforge scale
    plan` uses, stepped by the same functions as a real run."""
    device = torch.device("cpu")
    model = GPT(model_config(cfg, vocab_size))
    optimizers = build_optimizers(model, cfg.train)
    objective = build_objective(cfg.train, random_token_vocab(vocab_size))
    x = torch.randint(0, vocab_size, (cfg.train.batch_size, cfg.model.seq_len + 1))
    times = []
    for step in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        loss, _ = forward_backward(model, objective, [x] * cfg.train.grad_accum, device, contextlib.nullcontext(),
                                   distributed.DistInfo())
        apply_update(model, optimizers, loss, cfg.train.grad_clip, NonFiniteGuard(device))
        loss.item()  # wait for the step
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def random_token_vocab(vocab_size: int) -> dict:
    """Vocabulary tables (tokenizer.vocab_tables' keys) for random tokens: the last id is the mask."""
    return {"mask_id": vocab_size - 1, "special_ids": [vocab_size - 1], "vocab_size": vocab_size,
            "starts_word": np.ones(vocab_size, dtype=bool), "joins_next": np.ones(vocab_size, dtype=bool)}
