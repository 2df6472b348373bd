"""Sweep design: which models, on how many tokens, within a compute budget, and how long it takes here.

One size knob makes every model (`scale.knob`):
- width: `scale.depth` layers, width = the knob value;
- depth: the knob value layers, width = `scale.aspect` x depth.
The rest follows the width by fixed rules, so that only N and D vary between runs:
- heads = width / `scale.head_dim` (constant head size, as in GPT-3's and Chinchilla's families);
- lr = train.lr * (model.n_embd / width) ** `scale.lr_exponent` (AdamW lr ~ 1/sqrt(width), as in
  nanochat; model.n_embd of the base config is the width at which train.lr was tuned);
- batch: train.batch_size x model.seq_len tokens per step for every run;
- schedule: train.schedule decayed over each run's own steps, warmup a fixed share of them.

Two designs (`scale.design`):
- isoflop: compute levels C_top / r^k; at each, every size trains on D = C / (6 N) tokens
  (Chinchilla's approach 2);
- grid: sizes x token counts D_top / r^k.
Runs outside [min, max] tokens per parameter or shorter than `scale.min_steps` are left out; the
top level is the largest whose runs' exact training FLOPs (model.flops_per_token() x D) fit the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lmforge.config import Config
from lmforge.errors import LmforgeError


@dataclass
class Size:
    """One model of the family: its knob value, shape, lr and what it costs per token."""

    knob: int
    n_layer: int
    n_embd: int
    n_head: int
    lr: float
    params: int  # all unique parameters, the tied embedding included (Chinchilla's N)
    flops_per_token: int  # exact training FLOPs per token (model.flops_per_token)


def shape_for(cfg: Config, knob: int) -> tuple[int, int, int]:
    """(n_layer, n_embd, n_head) of the model at knob value `knob`."""
    sc = cfg.scale
    layers, width = (sc.depth, knob) if sc.knob == "width" else (knob, sc.aspect * knob)
    if width % sc.head_dim or (sc.head_dim % 2):
        raise LmforgeError(f"scale: width {width} (knob {sc.knob}={knob}) must be a multiple of scale.head_dim="
                           f"{sc.head_dim}, which must be even; choose other --sizes")
    return layers, width, width // sc.head_dim


def size_config(cfg: Config, knob: int) -> Config:
    """`cfg` with the model shape and lr of knob value `knob`."""
    layers, width, heads = shape_for(cfg, knob)
    lr = cfg.train.lr * (cfg.model.n_embd / width) ** cfg.scale.lr_exponent
    return replace(cfg, model=replace(cfg.model, n_layer=layers, n_embd=width, n_head=heads, n_kv_head=0),
                   train=replace(cfg.train, lr=lr))


def make_size(cfg: Config, knob: int, vocab: int) -> Size:
    """The model at `knob`, counted by building it on the meta device (nothing allocated)."""
    import torch

    from lmforge.model import GPT, model_config

    sized = size_config(cfg, knob)
    with torch.device("meta"):
        model = GPT(model_config(sized, vocab))
    m = sized.model
    return Size(knob, m.n_layer, m.n_embd, m.n_head, sized.train.lr, model.num_params(), model.flops_per_token())


def tokens_per_step(cfg: Config) -> int:
    return cfg.train.batch_size * cfg.train.grad_accum * cfg.model.seq_len


def _runs_at(cfg: Config, sizes: list[Size], top: float) -> list[dict]:
    """The runs of the design whose largest level is `top` (6ND FLOPs for isoflop, tokens for grid)."""
    sc, tps = cfg.scale, tokens_per_step(cfg)
    count = sc.levels if sc.design == "isoflop" else sc.points_per_size
    runs = []
    for k in range(count):
        level = top / sc.level_ratio ** (count - 1 - k)
        for s in sizes:
            tokens = level / (6 * s.params) if sc.design == "isoflop" else level
            steps = round(tokens / tps)
            d = steps * tps
            if steps < sc.min_steps or not sc.min_tokens_per_param <= d / s.params <= sc.max_tokens_per_param:
                continue
            tag = "c" if sc.design == "isoflop" else "d"
            runs.append({
                "name": f"{sc.knob}{s.knob:03d}-{tag}{k}", "knob": s.knob, "level": k, "level_value": level,
                "n_layer": s.n_layer, "n_embd": s.n_embd, "n_head": s.n_head, "lr": s.lr, "steps": steps,
                "warmup_steps": max(1, round(sc.warmup_fraction * steps)) if sc.warmup_fraction else 0,
                "params": s.params, "tokens": d, "flops": 6 * s.params * d,
                "flops_exact": s.flops_per_token * d,
            })
    return runs


def design(cfg: Config, budget: float, vocab: int) -> list[dict]:
    """The largest sweep of `cfg.scale`'s design whose exact training FLOPs fit `budget`."""
    sizes = sweep_sizes(cfg, vocab)
    tps = tokens_per_step(cfg)
    # The top level grows in small geometric steps until the next one would overspend; the run set
    # changes as sizes enter and leave the tokens-per-parameter window, so the total is not monotone.
    small = sizes[0]
    lo = (6 * small.params if cfg.scale.design == "isoflop" else 1.0) * cfg.scale.min_steps * tps / 4
    best: list[dict] = []
    top = lo
    for _ in range(2000):
        runs = _runs_at(cfg, sizes, top)
        total = sum(r["flops_exact"] for r in runs)
        if total > budget:
            if sum(r["flops_exact"] for r in runs if r["level"] == max(x["level"] for x in runs)) > budget:
                break
        elif runs:
            best = runs
        top *= 1.02
    if not best:
        d = max(cfg.scale.min_steps * tps, math.ceil(cfg.scale.min_tokens_per_param * small.params / tps) * tps)
        need = small.flops_per_token * d
        raise LmforgeError(
            f"--budget {budget:.3g} FLOPs is too small for the smallest model ({cfg.scale.knob} {small.knob}, "
            f"{small.params:,} parameters): its shortest run ({d:,} tokens) needs {need:.3g} FLOPs; "
            f"raise --budget or choose smaller --sizes")
    return best


# ---------------------------------------------------------------- wall-clock from a measured calibration

def calibrate(cfg: Config, sizes: list[Size], vocab: int, threads: int, steps: int = 3) -> dict:
    """Seconds per optimizer step of the smallest and largest model, measured here on random tokens
    with the sweep's batch and `threads` threads; a line through them in FLOPs per step gives the rest."""
    import torch

    from lmforge.training.trainer import measure_step_seconds

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    tps = tokens_per_step(cfg)
    points = []
    try:
        for s in {sizes[0].knob: sizes[0], sizes[-1].knob: sizes[-1]}.values():
            points.append((s.flops_per_token * tps, measure_step_seconds(size_config(cfg, s.knob), vocab, steps)))
    finally:
        torch.set_num_threads(old)
    (f0, t0), (f1, t1) = points[0], points[-1]
    if f1 > f0 and t1 > t0:
        per_flop = (t1 - t0) / (f1 - f0)
        fixed = max(0.0, t0 - per_flop * f0)
    else:  # one size only, or timings swamped by a busy machine: proportional to FLOPs
        per_flop, fixed = max(t0 / f0, t1 / f1), 0.0
    return {"threads": threads, "seconds_per_step_fixed": fixed, "seconds_per_flop": per_flop,
            "measured": [{"flops_per_step": f, "seconds_per_step": t} for f, t in points]}


RUN_OVERHEAD_S = 4.0  # process start, model build, unigram baseline, checkpoint: measured ~3-5 s here


def run_seconds(run: dict, cfg: Config, calibration: dict) -> float:
    """Estimated wall-clock of one run: its steps, its final evaluation (a forward pass, ~1/3 of a
    training step's FLOPs per token), and a fixed start-up cost."""
    per_token = run["flops_exact"] / run["tokens"]
    step_flops = per_token * tokens_per_step(cfg)
    step = calibration["seconds_per_step_fixed"] + calibration["seconds_per_flop"] * step_flops
    eval_tokens = cfg.train.final_eval_tokens or 1_000_000
    return run["steps"] * step + calibration["seconds_per_flop"] * per_token / 3 * eval_tokens + RUN_OVERHEAD_S


def schedule_seconds(durations: list[float], parallel: int) -> float:
    """Wall-clock of running jobs on `parallel` workers, longest first (how the runner orders them)."""
    workers = [0.0] * max(1, parallel)
    for d in sorted(durations, reverse=True):
        workers[workers.index(min(workers))] += d
    return max(workers)


def sweep_sizes(cfg: Config, vocab: int) -> list[Size]:
    return sorted((make_size(cfg, k, vocab) for k in sorted(set(cfg.scale.sizes))), key=lambda s: s.params)


def plan_sweep(cfg: Config, budget: float, calibrate_steps: int = 3) -> dict:
    """The sweep for `budget` FLOPs: its runs, their FLOPs and the estimated wall-clock on this machine."""
    from lmforge.model import model_config

    vocab = model_config(cfg).vocab_size
    runs = design(cfg, budget, vocab)
    parallel = cfg.scale.parallel
    threads = cfg.train.threads or max(1, available_cpus() // parallel)
    cal = calibrate(cfg, sweep_sizes(cfg, vocab), vocab, threads, calibrate_steps)
    for r in runs:
        r["estimated_s"] = round(run_seconds(r, cfg, cal), 1)
    warnings = []
    levels = sorted({r["level"] for r in runs})
    for k in levels:
        n = sum(r["level"] == k for r in runs)
        if n < 3:
            warnings.append(f"level {k} has {n} run(s): an IsoFLOP parabola needs 3 sizes there")
    if len(runs) < 6:
        warnings.append(f"{len(runs)} runs: fitting L(N, D) needs at least 6; raise --budget or add --sizes")
    return {
        "budget_flops": budget, "design": cfg.scale.design, "knob": cfg.scale.knob, "vocab_size": vocab,
        "tokens_per_step": tokens_per_step(cfg), "runs": runs,
        "total_flops": sum(r["flops_exact"] for r in runs), "calibration": cal, "parallel": parallel,
        "threads_per_process": threads, "estimated_serial_s": round(sum(r["estimated_s"] for r in runs), 1),
        "estimated_wall_s": round(schedule_seconds([r["estimated_s"] for r in runs], parallel), 1),
        "warnings": warnings,
    }


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
