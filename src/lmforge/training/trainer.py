"""The trainer: tokens on disk in, checkpoints, metrics and a summary out (files: lmforge/folders/run.py).

It runs in phases, each small enough to read alone:

    session()       threads, device, processes; the run folder locked, tokens made, config saved
    Trainer()       data loader, model, objective, optimizers, validation; a resumed run's TrainState
    train_step()    one whole step: the schedule's lr, forward and backward over its micro-batches,
                    then the optimizer update (apply_update: clip; skip a step whose loss or gradient
                    norm is not finite, decided on the device; TrainingDiverged is raised by
                    NonFiniteGuard.check after several in a row)
    _steps()        the loop: the step log, the validator and the checkpointer each say when
                    they are `due`
    finish()        final evaluation (the curve's last point), unigram baseline on its windows, summary.json

Where the run stands (step, tokens, time, data position, RNG, optimizers, the schedule's length)
is one TrainState (training/state.py): what a checkpoint saves and a resumed run loads.

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
import dataclasses
import glob
import math
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmforge.config import BUILTIN_SOURCE, Config, load_config, with_data
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.files import atomic_write_bytes
from lmforge.locks import describe_holder
from lmforge.model import GPT, head_skips_untargeted_rows, model_config
from lmforge.model_counts import TokenFlops, loss_chunk_rows, training_flops
from lmforge.figures import fmt, plural
from lmforge.objectives import IGNORE_INDEX, build_objective, mask_generator
from lmforge.folders.run import CheckpointDir, RunDir, Summary, TrainRecord
from lmforge.folders.tokenized import META, TOKENIZER_FILE, load_shards, read_meta
from lmforge.processes import keep_freed_memory
from lmforge.progress import Meter, on_terminal
from lmforge.tokenizer import load_tokenizer, vocab_tables
from lmforge.tokenizing import is_complete, tokenize_corpus
from lmforge.training import distributed
from lmforge.training.checkpoint import load_checkpoint, save_checkpoint
from lmforge.training.data import TrainLoader
from lmforge.training.events import MetricsLog
from lmforge.training.device import (autocast, peak_flops, remeasured_peak, resolve_device, resolve_dtype,
                                     set_threads, ThreadGovernor)
from lmforge.training.loss_eval import Validator, final_eval_tokens, token_bytes_for, unigram_baseline
from lmforge.training.optim import build_optimizers, describe_groups
from lmforge.training.state import TrainState

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
    """Refuse to resume a run under a config that changes its math. train.max_steps may be raised
    (the run is extended); data.sources are compared as the paths they name."""
    run = RunDir(current.run.out)
    a, b = _flat(saved.to_dict()), _flat(current.to_dict())
    a["data.sources"] = [os.path.abspath(p) for p in sources_from_disk(saved.data.sources, run)]
    b["data.sources"] = [os.path.abspath(p) for p in current.data.sources]
    diff = [k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES and k != "train.max_steps"
            and not k.startswith("run.")]
    if diff:
        k = diff[0]
        raise LmforgeError(
            f"cannot resume: {k} was {a[k]!r} in the saved run but is {b[k]!r} now; "
            f"resume with the saved config or start a new run in another --out folder"
        )
    if b["train.max_steps"] < a["train.max_steps"]:
        raise LmforgeError(
            f"cannot resume: train.max_steps was {a['train.max_steps']} in the saved run and is {b['train.max_steps']} "
            f"now; it can only be raised (to extend the run): resume with --max-steps {a['train.max_steps']} or more")


def checkpoint_to_resume(run: RunDir, cfg: Config, resume: bool, more_steps: int | None = None):
    """The config to train and the checkpoint to continue from (None for a fresh run); refuses to
    mix two runs in one folder. `more_steps` sets train.max_steps that many steps past the checkpoint."""
    ckpt = run.latest_checkpoint()
    if more_steps is not None and not (resume and ckpt is not None):
        raise LmforgeError(f"--more-steps extends a run that has a checkpoint: {run} holds none to extend"
                           if resume else "--more-steps extends a trained run: add --resume")
    if not resume:
        if ckpt is not None:
            raise LmforgeError(f"{run} already holds a run: add --resume to continue it, or choose another --out")
        return cfg, None
    if ckpt is None:
        raise LmforgeError(f"--resume: {run} holds no checkpoint to resume from; drop --resume to start afresh")
    if more_steps is not None:
        if more_steps < 1:
            raise LmforgeError(f"--more-steps {more_steps}: give a number of steps above 0")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=ckpt.step + more_steps))
    if run.config is not None:
        check_resumable(run.config, cfg)
    ckpt.check_objective(cfg.train.objective, f"the config resuming {run}")
    return cfg, ckpt


def sources_for_disk(sources: list[str], run: RunDir) -> list[str]:
    """data.sources as config.yaml keeps them: relative to the run folder (absolute ones stay so, but
    for those inside the run folder, as `lmforge run`'s RUN/prepared/clean), so a run folder moved with
    its data, or resumed from another directory, still names them."""
    root = run.path.resolve()

    def on_disk(p: str) -> str:
        if p == BUILTIN_SOURCE or (os.path.isabs(p) and not Path(p).resolve().is_relative_to(root)):
            return p
        return os.path.relpath(os.path.abspath(p), root)

    return [on_disk(p) for p in sources]


def sources_from_disk(sources: list[str], run: RunDir) -> list[str]:
    """config.yaml's data.sources as this process reads them. Configs saved before they were kept
    relative to the run folder hold them relative to the directory `lmforge` ran in: a path that
    names nothing from the run folder but something from here is read so."""
    def read(p: str) -> str:
        if p == BUILTIN_SOURCE or os.path.isabs(p):
            return p
        from_run = os.path.normpath(os.path.join(run.path, p))
        return from_run if glob.glob(from_run) or not glob.glob(p) else p

    return [read(p) for p in sources]


def kinds_renamed(kinds: list[str], before: list[str], after: list[str]) -> list[str]:
    """data.kinds with each SOURCE=KIND entry's source written as `after` writes it where `before` had it:
    an entry names its source as data.sources does, so the two move together."""
    renamed = {os.path.normpath(b): a for b, a in zip(before, after)}
    out = []
    for entry in kinds:
        source, eq, kind = entry.rpartition("=")
        out.append(f"{renamed.get(os.path.normpath(source), source)}={kind}" if eq and source else entry)
    return out


def with_sources(cfg: Config, sources: list[str]) -> Config:
    return with_data(cfg, sources=sources, kinds=kinds_renamed(cfg.data.kinds, cfg.data.sources, sources))


def config_for_disk(cfg: Config, run: RunDir) -> Config:
    return with_sources(cfg, sources_for_disk(cfg.data.sources, run))


def saved_run_config(out: str | Path, overrides: list[str] | None = None) -> Config:
    """RUN/config.yaml with `overrides`, its paths as this process reads them: what `lmforge train
    --out RUN --resume` continues when no other config is named."""
    run = RunDir(out)
    run.require_config("lmforge train --resume without --config")  # one line where the folder has none
    cfg = load_config(None, run.config_path, overrides)
    cfg = with_sources(cfg, sources_from_disk(cfg.data.sources, run))
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(out)))


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
    tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log, exclude=written, progress=cfg.train.progress,
                    workers=cfg.prepare.workers, executor=cfg.prepare.executor)
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


@dataclass
class Session:
    """What a run trains in, made before its model: the config it trains (a resumed run's, extended
    by --more-steps), threads, device and processes, the run folder claimed and locked (one writer),
    the checkpoint to resume from, the tokens and their tokenizer, metrics.jsonl. `session()` makes it."""
    cfg: Config
    run: RunDir
    dist: distributed.DistInfo
    device: torch.device
    threads: int
    governor: ThreadGovernor | None
    log: Callable[[str], None]  # prints on the main process only
    resume_from: CheckpointDir | None
    tokens_dir: Path
    meta: dict
    tokenizer: Any
    metrics: MetricsLog


@contextlib.contextmanager
def session(cfg: Config, resume: bool, log: Callable[[str], None], more_steps: int | None = None):
    """A Session, released on leaving: metrics closed, the lock freed, the process group left."""
    tc = cfg.train
    threads = set_threads(tc.threads)
    device = resolve_device(tc.device)
    # train.threads=0 on a CPU: as many threads as the cores other processes leave free
    governor = ThreadGovernor(threads) if tc.threads == 0 and device.type == "cpu" else None
    if device.type == "cpu":
        keep_freed_memory()
    run = RunDir(cfg.run.out)
    dist, device = distributed.setup(device)
    log_main = log if dist.is_main else (lambda *_: None)
    lock = metrics = None
    finished = False
    try:
        if dist.is_main:  # before anything is read or written: one writer per run folder
            run.claim()
            lock = run.lock().acquire()
            if lock.taken_over:
                log_main(f"train: {run} was left locked by {describe_holder(lock.taken_over)}, which is gone; taking it over")
        run.refuse_links()
        cfg, resume_from = checkpoint_to_resume(run, cfg, resume, more_steps)
        run.path.mkdir(parents=True, exist_ok=True)
        distributed.main_first(dist, lambda: prepare_tokens(cfg, run, log_main, resume_from is not None), "lmforge/tokens")
        tokens_dir = run.tokens_dir_for(cfg)
        meta = read_meta(tokens_dir)
        tokenizer = load_tokenizer(tokens_dir)
        if dist.is_main:
            run.save_config(config_for_disk(cfg, run))
            atomic_write_bytes(run.tokenizer_path, (tokens_dir / TOKENIZER_FILE).read_bytes())
        metrics = MetricsLog(run, write=dist.is_main)
        yield Session(cfg, run, dist, device, threads, governor, log_main, resume_from, tokens_dir, meta, tokenizer,
                      metrics)
        finished = True
    finally:
        if metrics is not None:
            metrics.close()
        if lock is not None:
            lock.release()
        distributed.teardown(dist, finished)


class Trainer:
    """One training run in a Session: built here, trained by `fit()`, which returns the summary."""

    def __init__(self, s: Session, stop_at: int | None = None, allow_new_tokenizer: bool = False):
        cfg, tc, device = s.cfg, s.cfg.train, s.device
        self.cfg, self.tc, self.run, self.dist, self.device, self.log = cfg, tc, s.run, s.dist, device, s.log
        self.threads, self.governor, self.steps_by_threads = s.threads, s.governor, Counter()
        self.last_stop = min(tc.max_steps, stop_at) if stop_at is not None else tc.max_steps
        self.interrupted = False  # stopped by a signal, as opposed to reaching stop_at or max_steps
        torch.manual_seed(tc.seed)
        self.dtype = resolve_dtype(tc.dtype, device)
        self.amp = autocast(device, self.dtype)
        self.mcfg = mcfg = model_config(cfg, s.meta["vocab_size"])
        if mcfg.vocab_size < s.meta["vocab_size"]:
            raise LmforgeError(f"model.vocab_size={mcfg.vocab_size} is smaller than the tokenizer's {s.meta['vocab_size']}")
        self.train_shards = load_shards(s.tokens_dir, "train")
        self.val_shards = load_shards(s.tokens_dir, "val")
        self.micro_batches = micro_batches_per_rank(tc.grad_accum, self.dist.world_size)
        loader = TrainLoader(self.train_shards, mcfg.seq_len, tc.batch_size, tc.seed, self.dist.rank, self.dist.world_size)
        self.fsdp = self.dist.enabled and tc.data_parallel == "fsdp"
        check_memory(mcfg, tc.batch_size, device, tc.recompute, self.dtype, self.fsdp)
        self.model = GPT(mcfg).to(device)
        self.model.recompute = tc.recompute
        if tc.init_from and s.resume_from is None:
            from lmforge.hf_llama import init_from

            changed = init_from(self.model, tc.init_from, s.tokens_dir / TOKENIZER_FILE, allow_new_tokenizer)
            self.log(f"train: weights from {tc.init_from}" + (f"; {changed}" if changed else ""))
        if self.fsdp:  # before the optimizers: they must hold the sharded parameters
            distributed.shard_model(self.model, self.dtype, compile_blocks=tc.compile)
        self.objective = build_objective(tc, vocab_tables(s.tokenizer))
        optimizers = build_optimizers(self.model, tc)
        self.param_groups = describe_groups(optimizers)  # before a resumed run's groups replace these
        self.state = TrainState(optimizers, loader, schedule_steps=tc.max_steps)
        if s.resume_from is not None:
            self._restore(s.resume_from)
        elif self.dist.is_main:
            self.run.clear_metrics()
        self.train_model = self._wrap(self.model)
        self.validator = Validator(self.val_shards, mcfg.seq_len, tc.batch_size, token_bytes_for(s.tokenizer, mcfg.vocab_size),
                                   device, self.amp, self.objective, self.dist, tc.eval_interval, tc.max_steps)
        self.checkpointer = Checkpointer(self.run, tc.checkpoint_interval, tc.keep_checkpoints, self.last_stop,
                                         self.dist, self.fsdp)
        self.steplog = StepLog(s.metrics, tc.log_interval, self.last_stop, tc.max_steps, tc.progress and self.dist.is_main,
                               self.log)
        self.tokens_per_step = cfg.tokens_per_step()
        self.guard = NonFiniteGuard(device)
        # the masked objective's CPU loss takes only the rows with a target through the head: MFU
        # counts the head FLOPs that ran, by the share of targets among the tokens of this start
        self.flops = FlopsCount(mcfg, tc.recompute, self.objective.name == "masked" and head_skips_untargeted_rows(
            device.type, tc.compile and not self.fsdp, tc.batch_size * mcfg.seq_len, loss_chunk_rows(mcfg.vocab_size)))
        self.peak = peak_flops(device, self.dtype) * self.dist.world_size
        self.clock = StepClock(device, self.state.step, self.state.step + WARMUP_STEPS)

    def _restore(self, ckpt) -> None:
        self.state.load_state_dict(load_checkpoint(ckpt, self.model, self.state.optimizers))
        if self.dist.is_main:
            self.run.truncate_metrics(self.state.step)
        self.log(f"train: resumed from {ckpt} at step {self.state.step}")
        schedule, max_steps = self.state.schedule_steps, self.tc.max_steps
        if max_steps > schedule:
            final = "the same lr" if self.tc.schedule == "constant" else f"its final lr ({self.tc.min_lr_ratio:g} x train.lr)"
            self.log(f"train: extending the run to {max_steps} steps; the lr schedule ({self.tc.schedule}, laid out over "
                     f"{schedule} steps) is continued, not decayed again: steps after {schedule} train at {final}")

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

    # ---------------------------------------------------------------- one step, a checkpoint, the end

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One whole step: the schedule's lr, the batches, forward and backward over them, the
        optimizer update; the step counter advances. The loss and the gradient norm stay on the
        device (reading them would make the host wait)."""
        state = self.state
        state.set_lr(self.tc)
        windows = [state.loader.next_batch() for _ in range(self.micro_batches)]
        loss, targets = forward_backward(self.train_model, self.objective, windows, self.device, self.amp, self.dist,
                                         self.fsdp, state.step, self.tc.seed)
        norm = apply_update(self.model, state.optimizers, loss, self.tc.grad_clip, self.guard)
        state.advance(self.tokens_per_step)
        self.flops.add(targets, self.tokens_per_step)
        return loss, norm

    def _lap(self) -> None:
        self.state.train_time_s += self.clock.lap(self.state.step)

    def checkpoint(self) -> None:
        self._lap()  # train_time_s up to this step, saved with it
        self.checkpointer.save(self.model, self.state, self.cfg.to_dict())

    def validate(self, max_tokens: int, meter: Meter | None = None) -> dict:
        return self.validator(self.model, max_tokens, meter)

    def finish(self) -> dict:
        """Final figures on the validation split, the unigram baseline, summary.json."""
        scored = final_eval_tokens(self.tc)
        step, elapsed, tokens = self.state.step, self.state.train_time_s, self.state.tokens_seen
        windows = self.validator.windows(scored)
        # train.final_eval_tokens is a cap: a small validation split holds fewer
        self.log(f"train: final evaluation on {plural(windows, 'window')} of {self.mcfg.seq_len} tokens "
                 f"({windows * self.mcfg.seq_len:,} validation tokens), then the unigram baseline")
        meter = Meter("train: final evaluation", "window", self.log, enabled=self.tc.progress and self.dist.is_main,
                      total=windows)
        try:
            final = self.validate(scored, meter)
        finally:
            meter.close()
        if final["val_loss"] is not None and not math.isfinite(final["val_loss"]):
            raise TrainingDiverged(f"training diverged: the final validation loss is {final['val_loss']}; no summary "
                                   f"written. Lower train.lr or raise train.warmup_steps and train again")
        unigram = unigram_baseline(self.train_shards, self.val_shards, self.mcfg.vocab_size, self.mcfg.seq_len,
                                   eval_tokens=scored, token_bytes=self.validator.token_bytes)
        baseline = unigram["val_loss"]
        steady_s, steady_tokens = self.clock.steady_s, self.clock.steady_steps * self.tokens_per_step
        if not steady_tokens:  # a run too short for a steady state: all of it
            steady_s, steady_tokens = elapsed, tokens
        tps = steady_tokens / steady_s if steady_s else None
        flops = self.flops.per_token()
        summary = Summary(
            objective=self.tc.objective,
            val_loss=final["val_loss"], perplexity=final["perplexity"], bits_per_byte=final["bits_per_byte"],
            val_accuracy=final["accuracy"], val_tokens=final["tokens"], unigram_val_loss=baseline,
            steps=step, tokens_trained=tokens, params=int(self.mcfg.shape().params),
            flops_per_token=round(flops.model), train_time_s=round(elapsed, 3),
            # steady state: the steps after each start's first WARMUP_STEPS (compilation and warm-up)
            tokens_per_s=round(tps, 1) if tps else None,
            mfu=round(tps * flops.model / self.peak, 4) if tps else None,
            hfu=round(tps * flops.hardware / self.peak, 4) if tps else None,
            warmup_s=round(self.clock.warmup_s, 3), warmup_steps=self.clock.warmup_steps,
            skipped_steps=self.guard.check(step),
            peak_flops=self.peak, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            threads=self.threads, world_size=self.dist.world_size,
            # this start's steps by thread count: fewer while other processes held cores (ThreadGovernor)
            steps_by_threads={str(k): v for k, v in sorted(self.steps_by_threads.items())},
            checkpoint=str(self.run.latest_checkpoint()), complete=True, run_dir=str(self.run),
            parametrization=self.mcfg.parametrization, param_groups=self.param_groups,
            mup_base_width=self.mcfg.mup_base_width if self.mcfg.parametrization == "mup" else None,
            val_reason=final.get("reason"),
            schedule_steps=self.state.schedule_steps,
            # a run extended past its schedule continued it at its final lr, not decayed again
            extended_schedule="continued" if step > self.state.schedule_steps else None,
        )
        if not self.run.has_validation_at(step):  # a run killed after this line and resumed
            self.steplog.metrics(Validator.record(step, final, elapsed, self.objective.name))
        if self.dist.is_main:
            self.run.write_summary(summary)
        summary = summary.to_dict()
        masked = self.objective.name == "masked"
        self.log(
            f"train: done in {elapsed:.0f}s ({summary['tokens_per_s']:,.0f} tokens/s, MFU {100 * summary['mfu']:.1f}% "
            f"steady state; {summary['warmup_s']:.1f}s of warm-up{' and compilation' if self.tc.compile else ''} apart); "
            # a masked run's loss over its hidden tokens' bytes reads like a causal run's bits per byte and
            # does not compare with it: its accuracy is said instead
            + (f"masked-token loss {fmt(final['val_loss'])} nats/token (unigram baseline {fmt(baseline)} nats/token), "
               f"masked-token accuracy {fmt(final['accuracy'], '.3f')}" if masked else
               f"val loss {fmt(final['val_loss'])} nats/token, {fmt(final['bits_per_byte'])} bits/byte (unigram "
               f"baseline {fmt(baseline)} nats/token, {fmt(unigram['bits_per_byte'])} bits/byte)")
            + (f" ({final['reason']})" if "reason" in final else "")
            + (f"; {plural(summary['skipped_steps'], 'step')} skipped: loss or gradient not finite (lower train.lr)"
               if summary["skipped_steps"] else "")
        )
        if final["val_loss"] is not None and baseline is not None and final["val_loss"] >= baseline:
            # a model worse than counting tokens has memorised its training text or not learned yet
            split = sum(len(shard) for shard in self.train_shards)
            self.log(f"train: warning: the validation loss {fmt(final['val_loss'])} is no better than the unigram "
                     f"baseline {fmt(baseline)}: {tokens:,} tokens trained from a split of {split:,}, so the model "
                     + ("has memorised its training text (give more text, or train fewer steps)" if tokens > 4 * split
                        else "has not learned yet (train more steps, or raise train.lr)"))
        return summary

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict:
        """Train to max_steps (or stop_at), checkpoint, finish; the summary."""
        self._announce()
        # the stop checkpoint is written under the handler too: a repeated SIGTERM (see StopFlag)
        # may come after the loop has ended, and the default action would kill the write
        with StopFlag() as stop:
            self._loop(stop)
            self.checkpoint()
        if self.state.step < self.tc.max_steps:
            return {"step": self.state.step, "complete": False, "run_dir": str(self.run), "interrupted": self.interrupted}
        return self.finish()

    def _announce(self) -> None:
        m, tc = self.mcfg, self.tc
        self.log(
            f"train: {tc.objective} objective, {int(m.shape().params):,} parameters ({plural(m.n_layer, 'layer')}, "
            f"width {m.n_embd}, context {m.seq_len}), {self.tokens_per_step:,} tokens/step, "
            f"{plural(tc.max_steps, 'step')}, device {self.device}, {self.dtype}, {plural(self.threads, 'thread')}, "
            f"{plural(self.dist.world_size, 'process', 'processes')}{' (FSDP2)' if self.fsdp else ''}; "
            f"run folder {self.run}"
        )
        if tc.compile:  # minutes on a large model, with nothing else to show for them
            self.log("train: compiling the model: the first steps wait for it (timed apart, as warm-up)")

    def _loop(self, stop: "StopFlag") -> None:
        self.steplog.open(self.state.step)
        self.clock.restart(self.state.step)
        self.model.train()
        try:
            self._steps(stop)
        finally:  # a second Ctrl-C ends the loop at once: the next line printed starts a line of its own
            self.steplog.close()
        if self.interrupted:  # told after the bar has closed, or it would end the bar's line
            # how to go on depends on the caller (train --resume, a rerun of lmforge run or scale run): it says
            self.log(f"train: stop requested; saving step {self.state.step}")

    def _steps(self, stop: "StopFlag") -> None:
        """Each of logging, validation and checkpoints says when it is due; the clock is read
        (`_lap`) before them and restarted after, so their time is not training time."""
        state = self.state
        self._follow_free_cores(now=True)
        while state.step < self.last_stop:
            loss, norm = self.train_step()
            self.steps_by_threads[torch.get_num_threads()] += 1
            self._follow_free_cores()
            if state.step == self.clock.warmup_until:
                self._lap()
            if self.steplog.due(state.step):
                self._log_step(loss, norm)
            self.steplog.advance()
            if self.validator.due(state.step):
                self._lap()
                self._log_validation()
                self.clock.restart(state.step)
            if self.checkpointer.due(state.step):
                self.checkpoint()
                self.clock.restart(state.step)
            if stop.agreed(self.dist):
                self.interrupted = True
                break
        self._lap()
        self.guard.check(state.step)

    def _follow_free_cores(self, now: bool = False) -> None:
        threads = self.governor.poll(now) if self.governor is not None else None
        if threads is not None:
            self.steplog.say(f"train: {threads} of {self.governor.most} threads: other processes keep "
                             f"{self.governor.others:.1f} cores busy")

    def _log_step(self, loss: torch.Tensor, norm: torch.Tensor) -> None:
        world, step = self.dist.world_size, self.state.step
        loss_value = loss.item()  # waits for the step: the one host synchronisation per log interval
        skipped = self.guard.check(step)
        self._lap()
        tps = self.clock.take_tokens_per_s(self.tokens_per_step)
        flops = self.flops.per_token()
        self.peak = remeasured_peak(self.device, self.dtype, tps * flops.hardware / world, self.peak / world,
                                    self.threads) * world
        mfu = tps * flops.model / self.peak
        record = TrainRecord(step=step, loss=round(loss_value, 5), lr=self.state.optimizers[0].param_groups[0]["lr"],
                             grad_norm=round(norm.item(), 5), tokens=self.state.tokens_seen, tokens_per_s=round(tps, 1),
                             mfu=round(mfu, 4), hfu=round(tps * flops.hardware / self.peak, 4),
                             train_time_s=round(self.state.train_time_s, 3), skipped_steps=skipped,
                             threads=torch.get_num_threads())
        warming = step <= self.clock.warmup_until and not tps
        self.steplog.write(record, mfu, warming)

    def _log_validation(self) -> None:
        ev = self.validate(self.tc.eval_tokens)
        self.steplog.metrics(Validator.record(self.state.step, ev, self.state.train_time_s, self.objective.name))
        if self.objective.name == "masked":
            msg = (f"step {self.state.step}: masked-token loss {fmt(ev['val_loss'])}, "
                   f"masked-token accuracy {fmt(ev['accuracy'], '.3f')}")
        else:
            msg = f"step {self.state.step}: val loss {fmt(ev['val_loss'])}, {fmt(ev['bits_per_byte'])} bits/byte"
        self.steplog.step_line(msg)


class Checkpointer:
    """Writes the weights and the TrainState every `interval` steps before `last_stop` (the loop's
    end writes its own), keeping the newest `keep` (training/checkpoint.py)."""

    def __init__(self, run: RunDir, interval: int, keep: int, last_stop: int, dist: distributed.DistInfo, fsdp: bool):
        self.run, self.interval, self.keep, self.last_stop = run, interval, keep, last_stop
        self.dist, self.fsdp = dist, fsdp

    def due(self, step: int) -> bool:
        return bool(self.interval) and step % self.interval == 0 and step < self.last_stop

    def save(self, model: GPT, state: TrainState, config: dict) -> None:
        if self.dist.is_main or self.fsdp:  # FSDP: every rank gathers its shards, the main one writes
            save_checkpoint(self.run, model, state.state_dict(), config, self.keep, write=self.dist.is_main)
        distributed.barrier(self.dist)


class StepLog:
    """The training log, every `interval` steps and at `last_stop`: a metrics.jsonl record, and on
    screen a progress bar on a terminal, else (a log file, CI) one plain dated line per record, as
    nanoGPT's `iter N: loss ...` (`progress` False: neither). Other lines go above the bar."""

    def __init__(self, metrics: MetricsLog, interval: int, last_stop: int, max_steps: int, progress: bool,
                 log: Callable[[str], None]):
        self.metrics, self.interval, self.last_stop, self.max_steps = metrics, interval, last_stop, max_steps
        self.progress, self.log = progress, log
        self.bar = None

    def due(self, step: int) -> bool:
        return step % self.interval == 0 or step == self.last_stop

    def open(self, step: int) -> None:
        if self.progress and on_terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.max_steps, initial=step, unit="step", dynamic_ncols=True, leave=True,
                            mininterval=1.0)

    def write(self, record: TrainRecord, mfu: float, warming: bool) -> None:
        self.metrics(record)
        if not self.progress:
            return
        speed = f"{record.tokens_per_s / 1e3:.1f}k tok/s | MFU {100 * mfu:.1f}%{' (warming up)' if warming else ''}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {record.loss:.3f} | {speed}")
        else:
            self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {record.step}/{self.max_steps}: loss "
                     f"{record.loss:.4f} | lr {record.lr:.3g} | {speed} | {record.train_time_s:.1f}s")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def say(self, line: str) -> None:
        (self.bar.write if self.bar is not None else self.log)(line)

    def step_line(self, line: str) -> None:
        """A line about a step (an evaluation's figures), dated as the step records are in a log file."""
        self.say(line if self.bar is not None or not self.progress else f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class FlopsCount:
    """FLOPs per token of the steps run since this start (`model_counts.training_flops`); where the
    head takes only the rows with a target (`head_filtered`), by the share of such rows."""

    def __init__(self, mcfg, recompute: str, head_filtered: bool):
        self.shape, self.recompute, self.head_filtered = mcfg.shape(), recompute, head_filtered
        self.targets, self.tokens = 0.0, 0

    def add(self, targets: torch.Tensor, tokens: int) -> None:
        self.tokens += tokens
        if self.head_filtered:  # a CPU tensor: adding it costs no wait
            self.targets += targets

    def per_token(self) -> TokenFlops:
        head_rows = float(self.targets / self.tokens) if self.head_filtered and self.tokens else 1.0
        return training_flops(self.shape, self.recompute, head_rows)


class StepClock:
    """Training time, taken between points where the host has waited for the device (`lap`, which
    returns the seconds since the last), so that on a GPU it is the device's time and not the time
    to queue work. Time up to step `warmup_until` is warm-up (compilation, first allocations), kept
    apart from the steady state; evaluation and checkpoints between a `lap` and a `restart` are not
    training time."""

    def __init__(self, device: torch.device, step: int, warmup_until: int):
        self.device, self.warmup_until = device, warmup_until
        self.warmup_s, self.warmup_steps = 0.0, 0
        self.steady_s, self.steady_steps = 0.0, 0
        self.window_s, self.window_steps = 0.0, 0  # steady time since the last log record
        self.mark, self.mark_step = time.perf_counter(), step

    def restart(self, step: int) -> None:
        self.mark, self.mark_step = time.perf_counter(), step

    def lap(self, step: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        seconds, steps = now - self.mark, step - self.mark_step
        if step <= self.warmup_until:
            self.warmup_s += seconds
            self.warmup_steps += steps
        else:
            self.steady_s += seconds
            self.steady_steps += steps
            self.window_s += seconds
            self.window_steps += steps
        self.mark, self.mark_step = now, step
        return seconds

    def take_tokens_per_s(self, tokens_per_step: int) -> float:
        """Steady tokens per second since the last reading (0 while only warming up)."""
        tps = self.window_steps * tokens_per_step / self.window_s if self.window_s else 0.0
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
          log: Callable[[str], None] = print, more_steps: int | None = None, allow_new_tokenizer: bool = False) -> dict:
    """Train `cfg` (tokenizing its sources first if needed) and return the summary.

    data: raw sources, or one tokenized folder (holding meta.json), overriding cfg.data.
    resume: continue from the newest checkpoint in cfg.run.out; a raised train.max_steps, or
    `more_steps` past the checkpoint, extends the run (the lr schedule continues at its final lr).
    stop_at: stop after this step with a checkpoint, as an interrupted run would.
    allow_new_tokenizer: train.init_from may name a model of another tokenizer (hf_llama.init_from).
    A run stopped by SIGINT/SIGTERM saves a checkpoint and returns {"complete": False,
    "interrupted": True, "step": ...}; one stopped at stop_at the same with "interrupted": False.
    """
    cfg = with_training_data(cfg, data, RunDir(cfg.run.out))
    with session(cfg, resume, log, more_steps) as s:
        return Trainer(s, stop_at, allow_new_tokenizer).fit()


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
