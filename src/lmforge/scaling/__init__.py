"""The scaling-law lab: train small models first, fit how loss scales, predict the big one, check it.

    plan     design a sweep within a FLOP budget (design.py), with a measured wall-clock estimate
    run      train its runs as ordinary lmforge runs on one tokenized folder (runner.py)
    fit      L(N, D) by Chinchilla's approach 3, IsoFLOP profiles, L(C) (fitting.py); fit.json and plots,
             fit.json's `cooldowns` saying how the points were made (separate runs or branched cooldowns)
    predict  the loss at (N, D), or at the compute-optimal point of C, with its interval
    verify   train the target model and compare prediction and measurement
    coordcheck  activation scales across widths under the standard parameterisation and muP (coordcheck.py)
    tune     the best learning rate of a narrow proxy under muP, as a config overlay (tune.py); a sweep
             folder's SWEEP/tune/tuned.yaml is applied by plan and run

The sweep folder (SWEEP/sweep.yaml, tokens/, runs/<name>/, fit.json, ...) is lmforge/folders/sweep.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from lmforge.config import Config
from lmforge.errors import LmforgeError
from lmforge.folders.sweep import SWEEP_FILE, SweepDir


def plan(cfg: Config, budget: float, out: str | Path | None = None, within_pct: float | None = None) -> dict:
    """Design the sweep of `cfg.scale` within `budget` FLOPs, with what it can tell (identifiability:
    every constant's interval, and whether each of scale.targets can be forecast within `within_pct`
    percent); write SWEEP/sweep.yaml when `out` is given."""
    from lmforge.scaling.design import plan_sweep

    result = plan_sweep(cfg, budget, within_pct=within_pct)
    if out is not None:
        result["sweep"] = str(SweepDir(out).write(result, cfg))
    return result


def run(sweep_dir: str | Path, parallel: int | None = None, threads: int | None = None,
        log: Callable[[str], None] = print, interval: float = 30.0, device: str | None = None) -> list[dict]:
    from lmforge.scaling.runner import run_sweep
    from lmforge.scaling.tune import apply_to_sweep

    apply_to_sweep(sweep_dir, log)
    return run_sweep(sweep_dir, parallel, threads, log, interval, device)


def fit(source: str | Path, bootstrap: int | None = None, out: str | Path | None = None, plots: bool = True,
        seed: int = 0, interval: str | None = None, fixed_e: float | None = None, form: str | None = None) -> dict:
    """Fit a sweep folder (writing points.csv, fit.json, plots/ into it) or a CSV of points
    (writing into `out` when given)."""
    from lmforge.scaling import fitting
    from lmforge.scaling.runner import collect_points

    source = Path(source)
    if source.is_dir():
        if not SweepDir(source).is_sweep():
            raise LmforgeError(f"{source} is not a sweep (no {SWEEP_FILE}) and not a CSV of points")
        cfg, _ = SweepDir(source).load()
        points, excluded = collect_points(source)
        out_dir = Path(out or source)
    elif source.is_file():
        cfg = Config()
        points, excluded = fitting.read_points_csv(source)
        out_dir = Path(out) if out else None
    else:
        raise LmforgeError(f"{source}: no such sweep folder or CSV file")
    sc = cfg.scale
    result = fitting.fit_points(points, excluded, sc.huber_delta, sc.bootstrap if bootstrap is None else bootstrap,
                                seed, source=str(source), interval=interval or sc.interval,
                                fixed_e=sc.fixed_e if fixed_e is None else fixed_e, prior_noise=sc.noise,
                                form=form or sc.form)
    if source.is_dir():
        from lmforge.scaling.design import cooldowns_record

        result["cooldowns"] = cooldowns_record(SweepDir(source).load()[1])
    if out_dir is not None:
        folder = SweepDir(out_dir)  # a CSV's --out is laid out as a sweep's fit is
        out_dir.mkdir(parents=True, exist_ok=True)
        fitting.write_points_csv(points, folder.points_path)
        if plots:
            from lmforge.scaling.plots import plot_fit

            result["plots"] = plot_fit(result, points, folder.plots_dir, folder.verified())
        folder.fit_path.write_text(json.dumps(result, indent=1))
        result["fit_file"] = str(folder.fit_path)
    return result


def predict(source: str | Path, params: float | None = None, tokens: float | None = None,
            flops: float | None = None, within_pct: float | None = None) -> dict:
    from lmforge.scaling.fitting import load_fit, predict as predict_fit, within_claim

    result = predict_fit(load_fit(source), params, tokens, flops)
    result["within"] = within_claim(within_pct, result["half_width"])
    return result


def verify(sweep_dir: str | Path, params: float | None = None, tokens: float | None = None,
           flops: float | None = None, threads: int | None = None, log: Callable[[str], None] = print,
           device: str | None = None, within_pct: float | None = None) -> dict:
    """Train the target (the family's model nearest N, on D tokens; or the compute-optimal one for C)
    and compare its validation loss with the fit's prediction at the N and D actually trained."""
    from lmforge.scaling import fitting
    from lmforge.scaling.runner import train_target

    sweep_dir = Path(sweep_dir)
    fit_result = fitting.load_fit(sweep_dir)
    if flops is not None:
        if params is not None or tokens is not None:
            raise LmforgeError("verify: give --params and --tokens, or --flops, not both")
        params, tokens = fitting.law_of(fit_result).optimal(flops)
    elif params is None or tokens is None:
        raise LmforgeError("verify: give --params N --tokens D, or --flops C")
    summary = train_target(sweep_dir, params, tokens, threads, log, device)
    n, d, actual = summary.params, summary.tokens_trained, summary.val_loss
    pred = fitting.predict(fit_result, n, d)
    error = (pred["loss"] - actual) / actual
    result = {
        "run": summary.run_dir, "params": n, "tokens": d, "flops": 6 * n * d,
        "flops_exact": summary.flops_per_token * d, "times_largest_run": 6 * n * d / fit_result["largest_flops"],
        "predicted": pred["loss"], "interval": pred["interval"], "law_interval": pred["law_interval"],
        "half_width": pred["half_width"], "actual": actual, "relative_error": error,
        "within_interval": bool(pred["interval"] and pred["interval"][0] <= actual <= pred["interval"][1]),
        "within": fitting.within_claim(within_pct, pred["half_width"], error),
        "train_time_s": summary.train_time_s,
    }
    lc = fit_result.get("loss_vs_compute", {})
    if lc.get("a") is not None:
        result["predicted_loss_vs_compute"] = lc["a"] * result["flops"] ** lc["b"] + lc["c"]
    sweep = SweepDir(sweep_dir)
    with sweep.verify_lock():
        done = sweep.add_verified(result)
        if sweep.points_path.is_file():  # redraw with the target on the extrapolation plot
            points, _ = fitting.read_points_csv(sweep.points_path)
            from lmforge.scaling.plots import plot_fit

            plot_fit(fit_result, points, sweep.plots_dir, done)
    return result
