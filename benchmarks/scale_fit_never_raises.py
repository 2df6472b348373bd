"""`scale fit` on the planner's isoflop and grid designs with synthetic noisy losses: how many fits raise.

The runs are `lmforge scale plan`'s (scaling preset, widths 16 to 128, vocabulary 512), their losses
drawn from this lab's CPU law (scaling/design.py DEFAULT_PRIOR) with the measured run-to-run noise
(0.7%). Two counts per design: `--draws` noisy draws through the IsoFLOP and L(C) fits that each
bootstrap draw runs (before the fix, 2-3 of 2,000 raised: a near-flat level put the vertex
far outside the sizes, exp() of it overflowed or N_opt rounded to 0 and C / 6N divided by it, and took
the whole fit down: with 200 draws a fit, one fit in five), then `--fits` whole fits, bootstrap included.

    PYTHONPATH=src python benchmarks/scale_fit_never_raises.py [--draws 2000] [--fits 3] [--bootstrap 200] [--noise 0.007]
"""

from __future__ import annotations

import argparse
import collections
import math
import time

import numpy as np

from lmforge.config import load_config
from lmforge.scaling.law import ScalingLaw
from lmforge.errors import LmforgeError
from lmforge.scaling import design
from lmforge.scaling import fitting

LAW = ScalingLaw("lab", *design.DEFAULT_PRIOR)


def planned_runs(kind: str, budget: float) -> list[dict]:
    cfg = load_config("scaling", overrides={"tokenizer": {"vocab_size": 512}, "train": {"batch_size": 4},
                                            "scale": {"design": kind, "sizes": [16, 32, 48, 64, 96, 128], "repeats": 0}})
    return design.design(cfg, budget, 512)


def draw(runs: list[dict], noise: float, rng) -> list[dict]:
    return [{"name": r["name"], "params": r["params"], "tokens": r["tokens"], "flops": r["flops"],
             "loss": LAW.loss(r["params"], r["tokens"]) * math.exp(rng.normal(0, noise))} for r in runs]


def count_raised(attempts, call) -> collections.Counter:
    """Exceptions by kind over the attempts; a one-line refusal (LmforgeError) is an answer, not a crash."""
    raised = collections.Counter()
    for attempt in attempts:
        try:
            call(attempt)
        except LmforgeError as e:
            raised[f"refused: {e}"] += 1
        except Exception as e:  # noqa: BLE001 - counting them is the point
            raised[type(e).__name__] += 1
    return raised


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=2000, help="noisy draws through the profile fits, per design")
    ap.add_argument("--fits", type=int, default=3, help="whole fits (with --bootstrap draws each), per design")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.007, help="run-to-run noise of the loss (log-normal sigma)")
    ap.add_argument("--budget", type=float, default=4e14, help="the sweep's FLOPs")
    args = ap.parse_args()
    for kind in ("isoflop", "grid"):
        runs = planned_runs(kind, args.budget)
        start = time.time()
        rng = np.random.default_rng(0)
        raised = count_raised(range(args.draws), lambda _: fitting._profiles(fitting._arrays(draw(runs, args.noise, rng))))
        print(f"{kind} ({len(runs)} runs): {args.draws} profile fits, {sum(raised.values())} raised {dict(raised)} "
              f"({time.time() - start:.0f}s)")
        start = time.time()
        raised = count_raised(range(args.fits), lambda seed: fitting.fit_points(
            draw(runs, args.noise, np.random.default_rng(seed)), bootstrap=args.bootstrap, seed=seed))
        print(f"{kind} ({len(runs)} runs): {args.fits} whole fits with {args.bootstrap} bootstrap draws each, "
              f"{sum(raised.values())} raised {dict(raised)} ({time.time() - start:.0f}s)")


if __name__ == "__main__":
    main()
