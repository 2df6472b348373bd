"""Sweep design: which models, on how many tokens, within a compute budget, and how long it takes here.

One size knob makes every model (`scale.knob`):
- width: `scale.depth` layers, width = the knob value;
- depth: the knob value layers, width = `scale.aspect` x depth.
The rest follows the width by fixed rules, so that only N and D vary between runs:
- heads = width / `scale.head_dim` (constant head size, as in GPT-3's and Chinchilla's families);
- lr = train.lr * (model.n_embd / width) ** `scale.lr_exponent` (AdamW lr ~ 1/sqrt(width), as in
  nanochat; model.n_embd of the base config is the width at which train.lr was tuned); under muP
  (model.parametrization=mup) lr = train.lr, as each run's optimizer scales its groups' lr by the
  width itself (training/optim.py), from model.mup_base_width;
- batch: train.batch_size x model.seq_len tokens per step for every run;
- schedule: train.schedule decayed over each run's own steps, warmup a fixed share of them but
  at least `scale.min_warmup_steps` (at most a quarter of the run).

Three designs (`scale.design`):
- isoflop: compute levels C_top / r^k; at each, every size trains on D = C / (6 N) tokens
  (Chinchilla's approach 2);
- grid: sizes x token counts D_top / r^k;
- optimal: from the candidates sizes x token counts D_0 r^k (no run above `scale.max_run_flops`),
  the runs that shrink the joint uncertainty of alpha and beta most per FLOP (greedy Ds-optimal
  design under a prior law and the run-to-run noise `scale.noise`): cheap small models trained long
  pin beta, the largest sizes pin alpha.
Runs outside [min, max] tokens per parameter or shorter than `scale.min_steps` are left out; for
isoflop and grid the top level is the largest whose runs' exact training FLOPs
(model_counts' FLOPs per token x D) fit the budget. `scale.repeats` of the cheapest runs train once more
with other seeds, so that the fit measures run-to-run noise instead of assuming it.

Cooldowns (`scale.cooldowns`, train.schedule=wsd): `separate` trains every run on its own; `branched`
trains per size one trunk at constant lr and branches each run's cooldown off it at the run's decay
start (Hagele et al. 2024), every run of the size warmed up as its shortest is, so that each branch
is, bit for bit, the run it stands for: the same points for the trunk's steps plus each run's decay
instead of every run's steps (`with_branched_cooldowns`; the folder: lmforge/folders/sweep.py).

Every plan reports its identifiability before anything is trained: the 95% interval each constant
would have, and the forecast interval at each of `scale.targets`, from the design's Fisher
information under the prior law (the delta method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from lmforge.config import Config, ScaleConfig
from lmforge.errors import LmforgeError
from lmforge.figures import plural
from lmforge.folders.sweep import repeat_name, run_name, trunk_name
from lmforge.model_counts import model_config, training_flops


@dataclass
class Size:
    """One model of the family: its knob value, shape, lr and what it costs per token."""

    knob: int
    n_layer: int
    n_embd: int
    n_head: int
    lr: float
    params: int  # all unique parameters, the tied embedding included (Chinchilla's N)
    flops_per_token: int  # exact training FLOPs per token (model_counts.training_flops)


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
    lr = cfg.train.lr
    if cfg.model.parametrization == "standard":
        lr *= (cfg.model.n_embd / width) ** cfg.scale.lr_exponent
    return replace(cfg, model=replace(cfg.model, n_layer=layers, n_embd=width, n_head=heads, n_kv_head=0),
                   train=replace(cfg.train, lr=lr))


def make_size(cfg: Config, knob: int, vocab: int) -> Size:
    """The model at `knob`, counted as training counts it."""
    sized = size_config(cfg, knob)
    shape = model_config(sized, vocab).shape()
    m = sized.model
    return Size(knob, m.n_layer, m.n_embd, m.n_head, sized.train.lr, int(shape.params), int(training_flops(shape).model))


def warmup_steps(sc: ScaleConfig, steps: int) -> int:
    """Warmup of a run of `steps`: `warmup_fraction` of them, at least `min_warmup_steps`, at most a
    quarter of the run (the rest of it still decays)."""
    if not (sc.warmup_fraction or sc.min_warmup_steps):
        return 0
    share = round(sc.warmup_fraction * steps)
    return max(1, min(max(share, sc.min_warmup_steps), steps // 4))


def _run_entry(cfg: Config, s: Size, steps: int, tag: str, level: int, level_value: float) -> dict:
    tps = cfg.tokens_per_step()
    d = steps * tps
    return {
        "name": run_name(cfg.scale.knob, s.knob, f"{tag}{level}"), "knob": s.knob, "level": level, "level_value": level_value,
        "n_layer": s.n_layer, "n_embd": s.n_embd, "n_head": s.n_head, "lr": s.lr, "steps": steps,
        "warmup_steps": warmup_steps(cfg.scale, steps),
        "params": s.params, "tokens": d, "flops": 6 * s.params * d, "flops_exact": s.flops_per_token * d,
    }


def _allowed(cfg: Config, s: Size, steps: int) -> bool:
    sc = cfg.scale
    return steps >= sc.min_steps and sc.min_tokens_per_param <= steps * cfg.tokens_per_step() / s.params <= sc.max_tokens_per_param


def sweep_flops(cfg: Config, runs: list[dict], step_overhead_flops: float = 0.0) -> float:
    """Exact training FLOPs of `runs` as the sweep trains them, so that --budget is what is spent: each
    run on its own, or (scale.cooldowns=branched) per size and seed one trunk to the latest decay start
    and each run's cooldown beyond it. step_overhead_flops: added per step trained (see `design`)."""
    if cfg.scale.cooldowns != "branched":
        return float(sum(r["flops_exact"] + step_overhead_flops * r["steps"] for r in runs))
    from lmforge.training.optim import wsd_decay_start

    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["knob"], r.get("seed")), []).append(r)
    total = 0.0
    for group in groups.values():
        starts = [wsd_decay_start(r["steps"], cfg.train.decay_fraction) for r in group]
        per_step = group[0]["flops_exact"] / group[0]["steps"] + step_overhead_flops  # one size: one cost per step
        total += per_step * (max(starts) + sum(r["steps"] - b for r, b in zip(group, starts)))
    return total


def _runs_at(cfg: Config, sizes: list[Size], top: float) -> list[dict]:
    """The runs of the design whose largest level is `top` (6ND FLOPs for isoflop, tokens for grid)."""
    sc, tps = cfg.scale, cfg.tokens_per_step()
    count = sc.levels if sc.design == "isoflop" else sc.points_per_size
    runs = []
    for k in range(count):
        level = top / sc.level_ratio ** (count - 1 - k)
        for s in sizes:
            tokens = level / (6 * s.params) if sc.design == "isoflop" else level
            steps = round(tokens / tps)
            if _allowed(cfg, s, steps):
                runs.append(_run_entry(cfg, s, steps, "c" if sc.design == "isoflop" else "d", k, level))
    return runs


def design(cfg: Config, budget: float, vocab: int, step_overhead_flops: float = 0.0) -> list[dict]:
    """The runs of `cfg.scale`'s design within `budget` exact training FLOPs. step_overhead_flops: the
    fixed time of one optimizer step, in FLOPs at the measured rate (the optimal design ranks runs
    by their wall-clock, which for tiny models is mostly this overhead)."""
    sizes = sweep_sizes(cfg, vocab)
    runs = (optimal_design(cfg, sizes, budget, step_overhead_flops) if cfg.scale.design == "optimal"
            else _largest_design(cfg, sizes, budget))
    return with_repeats(cfg, runs)


def _too_small(cfg: Config, small: Size, budget: float) -> LmforgeError:
    tps = cfg.tokens_per_step()
    d = max(cfg.scale.min_steps * tps, math.ceil(cfg.scale.min_tokens_per_param * small.params / tps) * tps)
    need = small.flops_per_token * d
    return LmforgeError(
        f"--budget {budget:.3g} FLOPs is too small for the smallest model ({cfg.scale.knob} {small.knob}, "
        f"{small.params:,} parameters): its shortest run ({d:,} tokens) needs {need:.3g} FLOPs; "
        f"raise --budget or choose smaller --sizes")


def _largest_design(cfg: Config, sizes: list[Size], budget: float) -> list[dict]:
    """isoflop or grid: the largest top level whose runs, and the repeats of the cheapest, fit the budget."""
    if cfg.scale.repeats:
        first = _largest_design(replace(cfg, scale=replace(cfg.scale, repeats=0)), sizes, budget)
        budget -= sweep_flops(cfg, sorted(first, key=lambda r: r["flops_exact"])[: cfg.scale.repeats])
    tps = cfg.tokens_per_step()
    # The top level grows in small geometric steps until the next one would overspend; the run set
    # changes as sizes enter and leave the tokens-per-parameter window, so the total is not monotone.
    small = sizes[0]
    lo = (6 * small.params if cfg.scale.design == "isoflop" else 1.0) * cfg.scale.min_steps * tps / 4
    best: list[dict] = []
    top = lo
    for _ in range(2000):
        runs = _runs_at(cfg, sizes, top)
        total = sweep_flops(cfg, runs)
        if total > budget:
            if sweep_flops(cfg, [r for r in runs if r["level"] == max(x["level"] for x in runs)]) > budget:
                break
        elif runs:
            best = runs
        top *= 1.02
    if not best:
        raise _too_small(cfg, small, budget)
    return best


def candidate_runs(cfg: Config, sizes: list[Size], max_run_flops: float) -> list[dict]:
    """Every size on every token count D_0 r^k (D_0 = scale.min_steps steps) that the family's rules
    allow and whose 6ND is at most `max_run_flops` (one token grid for all sizes), and each size's
    longest run within `max_run_flops` (named -dmax)."""
    sc, tps = cfg.scale, cfg.tokens_per_step()
    runs = []
    for s in sizes:
        k, grid_longest = 0, 0
        while True:
            steps = round(sc.min_steps * sc.level_ratio**k)
            if 6 * s.params * steps * tps > max_run_flops or steps * tps > sc.max_tokens_per_param * s.params:
                break
            if _allowed(cfg, s, steps):
                runs.append(_run_entry(cfg, s, steps, "d", k, steps * tps))
                grid_longest = steps
            k += 1
        longest = min(math.floor(max_run_flops / (6 * s.params * tps)), math.floor(sc.max_tokens_per_param * s.params / tps))
        # not when the grid's last run is within 10% of it already
        if longest > 1.1 * grid_longest and _allowed(cfg, s, longest):
            runs.append({**_run_entry(cfg, s, longest, "d", k, longest * tps), "name": run_name(sc.knob, s.knob, "dmax")})
    return runs


DEFAULT_PRIOR = (1.92, 63.6, 27.3, 0.39, 0.18)  # E, A, B, alpha, beta: this lab's first CPU sweep (docs/LOG.md)


def prior_law(cfg: Config):
    """The law a design is judged under: scale.prior (a published name, fit.json or sweep), or a
    rough CPU-scale law when none is given (a starting guess for the design, never a result)."""
    from lmforge.scaling.law import ScalingLaw, load_law

    if cfg.scale.prior:
        return load_law(cfg.scale.prior)
    return ScalingLaw("lmforge's first CPU sweep", *DEFAULT_PRIOR)  # "under the prior <name>" reads right


def _alpha_beta_logdet(info: np.ndarray) -> float:
    cov = np.linalg.inv(info)
    return float(np.linalg.slogdet(cov[3:, 3:])[1])


def optimal_design(cfg: Config, sizes: list[Size], budget: float, step_overhead_flops: float = 0.0) -> list[dict]:
    """Greedy Ds-optimal design for (alpha, beta): start from the corners (every size's shortest run,
    the smallest and largest sizes' longest), then add the candidate that lowers log det Cov(alpha,
    beta) most per FLOP until the budget (less the repeats) is spent, each candidate priced at what it
    adds to the sweep as trained (`sweep_flops`: under branched cooldowns, its cooldown and any
    lengthening of its size's trunk). The information is the prior's
    form's: under Kaplan's, whose data term grows with N, long runs of the middle sizes earn their
    cost; under the additive law, which has no such term, they never would (docs/LOG.md, 2026-12-02)."""
    from lmforge.scaling.fitting import log_loss_jacobian, theta_of

    sc = cfg.scale
    cap = sc.max_run_flops or budget / 4
    cands = candidate_runs(cfg, sizes, cap)
    if not cands:
        small = sizes[0]
        need = 6 * small.params * max(sc.min_steps * cfg.tokens_per_step(), sc.min_tokens_per_param * small.params)
        raise LmforgeError(f"scale.max_run_flops {cap:.3g} (6ND{', a quarter of --budget' if not sc.max_run_flops else ''}) "
                           f"is below the smallest model's shortest run ({need:.3g}): raise --max-run-flops or --budget")
    if len({c["knob"] for c in cands}) < 2:
        raise LmforgeError(f"scale: only one size has a run within scale.max_run_flops={cap:.3g}: raise it (or "
                           f"--budget), or choose smaller --sizes; a law in N needs at least 2 sizes")
    prior = prior_law(cfg)
    J = log_loss_jacobian(theta_of(prior), np.log([c["params"] for c in cands]), np.log([c["tokens"] for c in cands]),
                          prior.form) / sc.noise
    by_size: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        by_size.setdefault(c["knob"], []).append(i)
    knobs = sorted(by_size, key=lambda k: cands[by_size[k][0]]["params"])
    chosen = {ix[0] for ix in by_size.values()} | {by_size[knobs[0]][-1], by_size[knobs[-1]][-1]}

    def flops(ix) -> float:  # what these candidates cost trained as the sweep trains them
        return sweep_flops(cfg, [cands[i] for i in ix])

    repeat_cost = flops(sorted(range(len(cands)), key=lambda i: cands[i]["flops_exact"])[: sc.repeats]) if sc.repeats else 0.0
    spend = budget - repeat_cost
    if flops(chosen) > spend:
        raise LmforgeError(f"--budget {budget:.3g} FLOPs does not cover the design's corners ({flops(chosen):.3g} "
                           f"FLOPs: every size's shortest run, the smallest and largest sizes' longest): raise --budget "
                           f"or lower scale.max_run_flops")
    ridge = 1e-9 * np.eye(5)  # the corners alone may leave the information singular in a direction
    info = J[list(chosen)].T @ J[list(chosen)] + ridge
    while True:
        wall = sweep_flops(cfg, [cands[i] for i in chosen], step_overhead_flops)
        current = _alpha_beta_logdet(info)
        best, best_gain = None, 0.0
        for i in range(len(cands)):
            if i in chosen or flops(chosen | {i}) > spend:
                continue
            # ranked per unit of wall-clock added: under branched cooldowns a shorter point of a size
            # already trained long costs only its cooldown
            cost = sweep_flops(cfg, [cands[j] for j in chosen | {i}], step_overhead_flops) - wall
            gain = (current - _alpha_beta_logdet(info + np.outer(J[i], J[i]))) / cost
            if gain > best_gain:
                best, best_gain = i, gain
        if best is None:
            break
        chosen.add(best)
        info += np.outer(J[best], J[best])
    return sorted((cands[i] for i in chosen), key=lambda r: (r["params"], r["tokens"]))


def with_repeats(cfg: Config, runs: list[dict]) -> list[dict]:
    """The runs, and a copy of each of the `scale.repeats` cheapest with another seed (named -r1):
    identical settings but for the seed, so their spread is the run-to-run noise."""
    repeats = sorted(runs, key=lambda r: r["flops_exact"])[: cfg.scale.repeats]
    return runs + [{**r, "name": repeat_name(r["name"]), "seed": cfg.train.seed + 1} for r in repeats]


def with_branched_cooldowns(cfg: Config, runs: list[dict]) -> list[dict]:
    """The trunks of scale.cooldowns=branched, one per size and seed; each run gets its `trunk`, its
    `branch_step` (its WSD decay start), the `cooldown_flops` it costs beyond the trunk, and the
    warmup of its size's shortest run (the rule's warmup grows with a run's steps: the shortest's is
    within every run's cap, and where scale.min_warmup_steps sets it, it is every run's own)."""
    from lmforge.training.optim import wsd_decay_start

    tps = cfg.tokens_per_step()
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["knob"], r.get("seed")), []).append(r)
    trunks = []
    for (knob, seed), group in groups.items():
        group.sort(key=lambda r: r["steps"])
        warmup = warmup_steps(cfg.scale, group[0]["steps"])
        per_step = group[-1]["flops_exact"] / group[-1]["steps"]  # one size: the same FLOPs per step
        for r in group:
            r["warmup_steps"] = warmup
            r["branch_step"] = wsd_decay_start(r["steps"], cfg.train.decay_fraction)
            r["cooldown_flops"] = (r["steps"] - r["branch_step"]) * per_step
        longest = group[-1]
        name = trunk_name(cfg.scale.knob, knob)
        for r in group:
            r["trunk"] = name if seed is None else repeat_name(name)
        trunks.append({
            "name": group[0]["trunk"], "knob": knob, "n_layer": longest["n_layer"], "n_embd": longest["n_embd"],
            "n_head": longest["n_head"], "lr": longest["lr"], "steps": longest["steps"], "stop": longest["branch_step"],
            "warmup_steps": warmup, "params": longest["params"], "tokens": longest["branch_step"] * tps,
            "flops_exact": longest["branch_step"] * per_step, "branches": [r["name"] for r in group],
            **({} if seed is None else {"seed": seed}),
        })
    return sorted(trunks, key=lambda t: (t["params"], t["name"]))


def cooldown_costs(runs: list[dict], trunks: list[dict]) -> dict:
    """What the sweep's runs cost trained separately and branched (exact training FLOPs)."""
    separate = sum(r["flops_exact"] for r in runs)
    if not trunks:
        return {"flops_separate": separate, "flops_branched": None, "saving": None}
    branched = sum(t["flops_exact"] for t in trunks) + sum(r["cooldown_flops"] for r in runs)
    return {"flops_separate": separate, "flops_branched": branched, "saving": 1 - branched / separate}


def cooldowns_record(sweep: dict) -> dict:
    """How a sweep's points were made, for fit.json: `separate` runs, or cooldowns `branched` off
    trunks, with the training FLOPs that took and those separate runs would have."""
    if sweep.get("cooldowns") != "branched":
        return {"mode": "separate", "flops": sum(r["flops_exact"] for r in sweep["runs"])}
    costs = cooldown_costs(sweep["runs"], sweep["trunks"])
    return {"mode": "branched", "trunks": len(sweep["trunks"]), "flops": costs["flops_branched"],
            "flops_separate": costs["flops_separate"], "saving": costs["saving"]}


def parse_target(text: str) -> tuple[float, float]:
    """'348k:4M' -> (N, D)."""
    from lmforge.cost import parse_size

    if text.count(":") != 1:
        raise LmforgeError(f"scale.targets: {text!r} is not N:D (e.g. 350k:4M)")
    n, d = text.split(":")
    return parse_size(n, "scale.targets"), parse_size(d, "scale.targets")


def identifiability(cfg: Config, runs: list[dict], within_pct: float | None = None) -> dict:
    """What the design can tell before it is trained: the 95% interval of every constant and of the
    forecast at each target, from the Fisher information of its runs under the prior law and the
    run-to-run noise `scale.noise` (the target's own noise included)."""
    from lmforge.scaling.fitting import half_width, linear_covariance, log_loss_jacobian, theta_of, within_claim

    law = prior_law(cfg)
    theta = theta_of(law)
    noise = cfg.scale.noise
    cov = linear_covariance(theta, np.log([r["params"] for r in runs]), np.log([r["tokens"] for r in runs]), noise,
                            law.form)
    z = 1.959964
    sd = np.minimum(np.sqrt(np.maximum(np.diag(cov), 0)), 300 / z)  # unidentified: bounded, not infinite
    constants = {}
    for i, name in enumerate(("A", "B", "E")):
        value = getattr(law, name)
        constants[name] = [float(value * math.exp(-z * sd[i])), float(value * math.exp(z * sd[i]))]
    for i, name in ((3, "alpha"), (4, "beta")):
        constants[name] = [float(theta[i] - z * sd[i]), float(theta[i] + z * sd[i])]
    largest = max(r["flops"] for r in runs)
    targets = []
    for text in cfg.scale.targets:
        n, d = parse_target(text)
        g = log_loss_jacobian(theta, np.log([n]), np.log([d]), law.form)[0]
        s = math.sqrt(float(g @ cov @ g) + noise**2)
        loss = float(law.loss(n, d))
        interval = [loss * math.exp(-z * s), loss * math.exp(z * s)]
        hw = half_width(loss, interval)
        targets.append({"target": text, "params": n, "tokens": d, "times_largest_run": 6 * n * d / largest,
                        "prior_loss": loss, "interval": interval, "half_width": hw,
                        "within": within_claim(within_pct, hw)})
    # The delta method is local: at a prior whose E is ~0 the loss does not move with E there, so the
    # intervals cannot show how far a fitted E may move forecasts (0 to 2.3 on the CPU benchmark's sweep)
    small_loss = min(float(law.loss(r["params"], r["tokens"])) for r in runs)
    blind = (f"the prior's E ({law.E:.3g}) is under 1% of its smallest loss ({small_loss:.3g}): the delta method cannot "
             f"see E, so these intervals understate what a fit with E free will give") if law.E < 0.01 * small_loss else None
    return {"prior": {k: getattr(law, k) for k in ("E", "A", "B", "alpha", "beta", "form")}, "prior_name": law.name,
            "noise": noise, "ci": constants, "alpha_sd": float(sd[3]), "beta_sd": float(sd[4]), "targets": targets,
            "blind_to_e": blind}


# ---------------------------------------------------------------- wall-clock from a measured calibration

CALIBRATION_ROUNDS = 3  # each size timed once a round, keeping its fastest: a busy moment slows one round, not the plan
BUSY_CORES = 0.5  # other processes' load, in cores beyond those the sweep leaves free, that makes the machine busy


def calibrate(cfg: Config, sizes: list[Size], vocab: int, threads: int, steps: int = 3, parallel: int = 1,
              rounds: int = CALIBRATION_ROUNDS) -> dict:
    """Seconds per optimizer step of the smallest and largest model, measured here on random tokens
    with the sweep's batch and `threads` threads, the fastest of `rounds` rounds; a line through them
    in FLOPs per step gives the rest. The same command gave 94.6 and 9.9 minutes when one sample fell
    on a busy moment (issue 28): the fastest round is the machine's own speed, and the load other
    processes put on its cores meanwhile (/proc/stat) says whether the runs will get that speed."""
    import torch

    from lmforge.hardware import cpu_seconds
    from lmforge.training.trainer import measure_step_seconds

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    tps = cfg.tokens_per_step()
    ends = list({sizes[0].knob: sizes[0], sizes[-1].knob: sizes[-1]}.values())
    fastest = [math.inf] * len(ends)
    before = cpu_seconds()
    try:
        for _ in range(rounds):
            for i, s in enumerate(ends):
                fastest[i] = min(fastest[i], measure_step_seconds(size_config(cfg, s.knob), vocab, steps))
    finally:
        torch.set_num_threads(old)
    after = cpu_seconds()
    load = None
    if before is not None and after is not None:
        machine, own, wall = (b - a for a, b in zip(before, after))
        load = max(0.0, machine - own) / max(wall, 1e-3)  # cores other processes kept busy meanwhile
    cores = available_cpus()
    busy = load is not None and load > BUSY_CORES + max(0, cores - threads * parallel)
    points = [(s.flops_per_token * tps, t) for s, t in zip(ends, fastest)]
    (f0, t0), (f1, t1) = points[0], points[-1]
    if f1 > f0 and t1 > t0:
        per_flop = (t1 - t0) / (f1 - f0)
        fixed = max(0.0, t0 - per_flop * f0)
    else:  # one size only, or timings swamped by a busy machine: proportional to FLOPs
        per_flop, fixed = max(t0 / f0, t1 / f1), 0.0
    return {"threads": threads, "seconds_per_step_fixed": fixed, "seconds_per_flop": per_flop,
            "measured": [{"flops_per_step": f, "seconds_per_step": t} for f, t in points], "rounds": rounds,
            "other_load": None if load is None else round(load, 2), "cores": cores, "busy": busy}


SHORT_RUN_STEPS = 500  # below this the CPU lab's runs misfit the law (docs/LOG.md, 2026-11-29)
# below this a run may end no better than the unigram baseline, and `scale fit` leaves it out: a width-16
# model (the tests' corpus, lr 1.4e-2) was above it after 10, 20, 40 and 80 steps, below after 160; 2 of
# issue 28's 6 runs ended there (docs/LOG.md, 2026-12-07)
EARLY_STEPS = 100


def refuse_unfittable(runs: list[dict]) -> None:
    """Refuse a design that `scale fit` could not fit: it needs fitting.MIN_POINTS points of at least
    2 sizes and 2 token counts, and leaves out every run no better than the unigram baseline, which
    the shortest runs (under EARLY_STEPS steps) may be. So the design must hold that many runs
    besides those."""
    from lmforge.scaling.fitting import MIN_POINTS

    early = [r for r in runs if r["steps"] < EARLY_STEPS]
    safe = [r for r in runs if r["steps"] >= EARLY_STEPS]
    if len(safe) >= MIN_POINTS and len({r["params"] for r in safe}) >= 2 and len({r["tokens"] for r in safe}) >= 2:
        return
    what = (f"{len(runs)} runs, {len(early)} of them under {EARLY_STEPS} steps ({early[0]['name']}, ...), which may "
            f"end no better than the unigram baseline and be left out" if early else f"{len(runs)} runs")
    if len(safe) >= MIN_POINTS:
        need = "at least 2 model sizes and 2 token counts among them"
    else:
        need = f"at least {MIN_POINTS} points (L(N, D) has 5 constants)"
    raise LmforgeError(f"this design cannot be fitted: {what}; `scale fit` needs {need}: raise "
                       f"--budget, add --sizes or --levels, or raise scale.min_steps")


RUN_OVERHEAD_S = 4.0  # process start, model build, unigram baseline, checkpoint: measured ~3-5 s here


def run_seconds(run: dict, cfg: Config, calibration: dict, steps: int | None = None, final_eval: bool = True) -> float:
    """Estimated wall-clock of one run: its steps (or `steps` of them: a branch's cooldown, a trunk),
    its final evaluation (a forward pass, ~1/3 of a training step's FLOPs per token), and a fixed
    start-up cost."""
    per_token = run["flops_exact"] / run["tokens"]
    step_flops = per_token * cfg.tokens_per_step()
    step = calibration["seconds_per_step_fixed"] + calibration["seconds_per_flop"] * step_flops
    eval_tokens = cfg.train.final_eval_tokens or 1_000_000
    evaluation = calibration["seconds_per_flop"] * per_token / 3 * eval_tokens if final_eval else 0.0
    return (run["steps"] if steps is None else steps) * step + evaluation + RUN_OVERHEAD_S


def schedule_seconds(durations: list[float], parallel: int) -> float:
    """Wall-clock of running jobs on `parallel` workers, longest first (how the runner orders them)."""
    workers = [0.0] * max(1, parallel)
    for d in sorted(durations, reverse=True):
        workers[workers.index(min(workers))] += d
    return max(workers)


def sweep_sizes(cfg: Config, vocab: int) -> list[Size]:
    return sorted((make_size(cfg, k, vocab) for k in sorted(set(cfg.scale.sizes))), key=lambda s: s.params)


def plan_sweep(cfg: Config, budget: float, calibrate_steps: int = 3, within_pct: float | None = None) -> dict:
    """The sweep for `budget` FLOPs: its runs, their FLOPs and the estimated wall-clock on this machine."""
    for text in cfg.scale.targets:  # a malformed target is refused before the calibration's seconds
        parse_target(text)
    if cfg.scale.cooldowns == "branched" and cfg.train.schedule != "wsd":
        raise LmforgeError(f"scale.cooldowns=branched branches cooldowns off the stable phase of a WSD schedule: set "
                           f"train.schedule=wsd (it is {cfg.train.schedule}), or scale.cooldowns=separate")
    vocab = model_config(cfg).vocab_size
    parallel = cfg.scale.parallel
    threads = cfg.train.threads or max(1, available_cpus() // parallel)
    if cfg.scale.design != "optimal":  # its runs do not depend on the calibration: refused before it
        refuse_unfittable(design(cfg, budget, vocab))
    cal = calibrate(cfg, sweep_sizes(cfg, vocab), vocab, threads, calibrate_steps, parallel)
    runs = design(cfg, budget, vocab, cal["seconds_per_step_fixed"] / cal["seconds_per_flop"])
    refuse_unfittable(runs)
    branched = cfg.scale.cooldowns == "branched"
    trunks = with_branched_cooldowns(cfg, runs) if branched else []
    for r in runs:
        r["estimated_s"] = round(run_seconds(r, cfg, cal, r["steps"] - r["branch_step"] if branched else None), 1)
    by_name = {r["name"]: r for r in runs}
    for t in trunks:  # the steps of its longest run up to its stop
        t["estimated_s"] = round(run_seconds(by_name[t["branches"][-1]], cfg, cal, t["stop"], final_eval=False), 1)
    # a size's branches wait for its trunk: each size's work is one job in the estimate
    jobs = ([t["estimated_s"] + sum(r["estimated_s"] for r in runs if r["trunk"] == t["name"]) for t in trunks]
            if branched else [r["estimated_s"] for r in runs])
    warnings = []
    levels = sorted({r["level"] for r in runs}) if cfg.scale.design == "isoflop" else []
    for k in levels:
        n = sum(r["level"] == k for r in runs)
        if n < 3:
            warnings.append(f"level {k} has {plural(n, 'run')}: an IsoFLOP parabola needs 3 sizes there")
    left_out = [s for s in sweep_sizes(cfg, vocab) if not any(r["knob"] == s.knob for r in runs)]
    if left_out:
        sc = cfg.scale
        warnings.append(f"{', '.join(f'{sc.knob} {s.knob}' for s in left_out)}: left out, no run of the design "
                        f"within the budget has {sc.min_tokens_per_param:g}-{sc.max_tokens_per_param:g} tokens/parameter "
                        f"and >= {sc.min_steps} steps (scale.min_tokens_per_param, max_tokens_per_param, min_steps); "
                        f"change --budget or --sizes")
    short = [r["name"] for r in runs if r["steps"] < SHORT_RUN_STEPS]
    if short:
        warnings.append(f"{plural(len(short), 'run')} {'has' if len(short) == 1 else 'have'} fewer than "
                        f"{SHORT_RUN_STEPS} steps ({short[0]}, ...): such runs measure how "
                        f"far the optimizer got more than what the model can learn (docs/LOG.md); raise scale.min_steps")
    if cal["busy"]:
        warnings.append(f"the machine was busy (load {cal['other_load']:.1f} on {cal['cores']} cores, from other "
                        f"processes, while calibrating): times may be long")
    ident = identifiability(cfg, runs, within_pct)
    if ident["blind_to_e"]:
        warnings.append(ident["blind_to_e"])
    for t in ident["targets"]:
        if t["within"] and not t["within"]["allowed"]:
            warnings.append(f"target {t['target']}: this design's 95% forecast interval is +-{100 * t['half_width']:.1f}%, "
                            f"so it cannot support a within-{within_pct:g}% forecast; raise --budget or change the design")
    costs = cooldown_costs(runs, trunks)
    return {
        "budget_flops": budget, "design": cfg.scale.design, "knob": cfg.scale.knob, "vocab_size": vocab,
        "tokens_per_step": cfg.tokens_per_step(), "runs": runs,
        **({"cooldowns": "branched", "trunks": trunks, **costs} if branched else {}),
        "total_flops": costs["flops_branched"] if branched else costs["flops_separate"], "calibration": cal,
        "parallel": parallel, "threads_per_process": threads, "estimated_serial_s": round(sum(jobs), 1),
        "estimated_wall_s": round(schedule_seconds(jobs, parallel), 1),
        "identifiability": ident, "warnings": warnings,
    }


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    from lmforge.hardware import usable_cpus

    return len(usable_cpus())
