"""How wide will a sweep's forecast intervals be, before it trains? A parametric simulation.

    python benchmarks/design_intervals.py SWEEP [SWEEP ...] --truth FIT.json --targets REGISTERED.json
        [--draws 6] [--noise 0.0067] [--seed 0]

For each sweep folder's design (its sweep.yaml: every run's N and D, repeats included) the losses
are drawn from a known law (--truth, a fit.json: the last instance's fit) times log-normal run-to-run
noise (--noise, measured from repeats), fitted by the same `lmforge scale fit` code (lmforge.scaling.
fitting.fit_points: the form chosen by backtest, the bootstrap intervals), and each target's forecast
interval read as `scale verify` reads it. Printed per design and target: the half-width's median and
largest over --draws, and the mean |error| of the forecast against the truth.

Why: the plan's "identifiability before training" is the delta method under the prior, which cannot
see E and has no bootstrap; at the 2026-12-07 muP instance it gave a 2.5% half-width at wider-10x
where the fit gave 7.2%. This simulation runs the fit itself, so it answers "would more points, or
other ones, shrink the intervals at 30x?" before any of them is trained (docs/LOG.md, 2026-12-07).
A fit takes ~10 s on one thread; draws run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from lmforge.folders.sweep import SweepDir
from lmforge.scaling.fitting import fit_points, law_of, predict


def simulate(design: list[tuple[float, float]], truth, targets: dict, draws: int, noise: float, seed: int) -> list[dict]:
    """One fit per draw of the design's losses; each target's half-width and error against the truth."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        points = [{"name": f"p{i}", "params": n, "tokens": d, "flops": 6 * n * d,
                   "loss": float(truth.loss(n, d) * np.exp(rng.normal(0, noise)))} for i, (n, d) in enumerate(design)]
        fit = fit_points(points)
        fit["largest_flops"] = max(p["flops"] for p in points)
        row = {"form": fit["form"]}
        for label, (n, d) in targets.items():
            p = predict(fit, params=n, tokens=d)
            row[label] = {"half_width": p["half_width"], "error": p["loss"] / float(truth.loss(n, d)) - 1}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+", help="sweep folders (their sweep.yaml is the design)")
    ap.add_argument("--truth", required=True, help="fit.json whose law draws the losses")
    ap.add_argument("--targets", required=True, help="registered.json of a scaling benchmark (label, params, tokens)")
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--noise", type=float, default=0.0067, help="run-to-run noise of log loss (0.67%% measured)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    truth = law_of(json.loads(Path(args.truth).read_text()))
    targets = {f["label"]: (f["params"], f["tokens"]) for f in json.loads(Path(args.targets).read_text())["forecasts"]}
    print(f"threads {os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}; truth {truth}")
    for sweep in args.sweeps:
        _, plan = SweepDir(Path(sweep)).load()
        design = [(r["params"], r["tokens"]) for r in plan["runs"]]
        t = time.time()
        rows = simulate(design, truth, targets, args.draws, args.noise, args.seed)
        print(f"\n{sweep}: {len(design)} runs, {plan['total_flops']:.3g} FLOPs; forms {[r['form'] for r in rows]}; "
              f"{time.time() - t:.0f} s")
        for label in targets:
            hw = [r[label]["half_width"] for r in rows]
            err = [abs(r[label]["error"]) for r in rows]
            print(f"  {label:11s} half-width median {100 * np.median(hw):5.1f}%  largest {100 * max(hw):5.1f}%  "
                  f"mean |error| {100 * np.mean(err):4.1f}%")


if __name__ == "__main__":
    main()
