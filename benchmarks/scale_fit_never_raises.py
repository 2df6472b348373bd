"""`scale fit` on noisy synthetic sweeps, bootstrap included: how many fits raise.

Each fit refits the law and the IsoFLOP/L(C) profiles on every bootstrap draw (200 by default),
so `--fits 10` is 20 whole fits and 4,000 refits of random noise. Before the IsoFLOP bracketing
check came ahead of exp(vertex), a near-flat level in one draw raised ZeroDivisionError or
OverflowError and took the whole fit with it.

    PYTHONPATH=src python benchmarks/scale_fit_never_raises.py [--fits 10] [--bootstrap 200] [--noise 0.01]
"""

from __future__ import annotations

import argparse
import collections
import math
import time

import numpy as np

from lmforge.cost import LAWS
from lmforge.errors import LmforgeError
from lmforge.scaling.fitting import fit_points

LAW = LAWS["epoch2024"]


def sweep(design: str, noise: float, rng) -> list[dict]:
    """`isoflop`: 4 compute levels, 5 sizes a factor 2 apart around each optimum; `grid`: 7 sizes by 7 token counts."""
    if design == "isoflop":
        runs = [(n, c / (6 * n)) for c in np.geomspace(1e18, 1e21, 4) for n in LAW.optimal(c)[0] * np.geomspace(0.25, 4, 5)]
    else:
        runs = [(n, d) for n in np.geomspace(5e7, 5e9, 7) for d in np.geomspace(1e9, 1e12, 7)]
    return [{"params": n, "tokens": d, "flops": 6 * n * d, "loss": LAW.loss(n, d) * math.exp(rng.normal(0, noise))}
            for n, d in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fits", type=int, default=10, help="seeds per design")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.01, help="run-to-run noise of the loss (log-normal sigma)")
    args = ap.parse_args()
    for design in ("isoflop", "grid"):
        raised, draws, start = collections.Counter(), 0, time.time()
        for seed in range(args.fits):
            try:
                result = fit_points(sweep(design, args.noise, np.random.default_rng(seed)), bootstrap=args.bootstrap, seed=seed)
                draws += result["method"]["bootstrap"]
            except LmforgeError as e:  # a refusal in one line is an answer, not a crash
                raised[f"refused: {e}"] += 1
            except Exception as e:  # noqa: BLE001 - counting them is the point
                raised[type(e).__name__] += 1
        print(f"{design}: {args.fits} fits, {draws} bootstrap refits kept, {sum(raised.values())} raised "
              f"{dict(raised)} ({time.time() - start:.0f}s)")


if __name__ == "__main__":
    main()
