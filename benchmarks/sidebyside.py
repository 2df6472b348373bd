"""What the side-by-side training benchmarks (train_cpu.py, train_gpu.py) share: reading step
times out of nanoGPT's log and lmforge's metrics.jsonl the same way, and the steady-state median.

A step's time is each program's own: nanoGPT's printed `time ...ms` per iteration, lmforge's
cumulative `train_time_s` per step (train.log_interval=1). The first steps of a process (warm-up:
first allocations, compilation) and steps that include an evaluation are left out of the median.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

WARMUP_STEPS = 5  # as nanoGPT's own MFU estimate skips its first 5 iterations

NANOGPT_ITER = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", re.MULTILINE)
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", re.MULTILINE)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nanogpt_iter_seconds(text: str) -> dict[int, float]:
    """Iteration number -> seconds, from nanoGPT's `iter k: loss ..., time ...ms` lines.

    nanoGPT's iteration k that evaluates (k % eval_interval == 0) counts the evaluation in its time."""
    return {int(k): float(ms) / 1000 for k, ms in NANOGPT_ITER.findall(text)}


def nanogpt_val_losses(text: str) -> dict[int, float]:
    """Step -> validation loss (nats per token), from nanoGPT's `step k: train loss ..., val loss ...` lines."""
    return {int(k): float(v) for k, v in NANOGPT_EVAL.findall(text)}


def lmforge_step_seconds(metrics: Path) -> dict[int, float]:
    """Step -> seconds, from a run's metrics.jsonl logged every step (train_time_s is cumulative
    training time; evaluations and checkpoints are outside it)."""
    times, last = {}, 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "train_time_s" in record:
            times[record["step"]] = record["train_time_s"] - last
            last = record["train_time_s"]
    return times


def steady_step_s(times: dict[int, float], skip: set[int] = frozenset()) -> float:
    """Median step time after the first WARMUP_STEPS, without the steps in `skip` (evaluations)."""
    steps = sorted(times)[WARMUP_STEPS:]
    kept = [times[s] for s in steps if s not in skip]
    if not kept:
        raise SystemExit(f"{len(times)} step times logged: too few for a steady state past {WARMUP_STEPS} warm-up steps")
    return statistics.median(kept)


def warmup_s(times: dict[int, float]) -> float:
    """Seconds of the first WARMUP_STEPS steps, the part the steady state leaves out."""
    return sum(times[s] for s in sorted(times)[:WARMUP_STEPS])
