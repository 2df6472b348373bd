"""Scaling laws L(N, D): the published ones and the ones `lmforge scale fit` writes, their
compute-optimal allocation, and the one reader of fit.json. No torch, no numpy: `lmforge plan`
reads a law without the fitting machinery (fitting.py fits them; cost.plan_run plans with them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.folders.sweep import FIT_FILE, fit_path

FORMS = ("additive", "kaplan")


@dataclass
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (form "additive", Chinchilla's approach 3), or
    L(N, D) = E + ((A / N^alpha)^(1/beta) + (B / D^beta)^(1/beta))^beta (form "kaplan": Kaplan et
    al. 2020, eq. 1.5, with an irreducible loss E). Both have the same limits (D -> inf: E + A / N^alpha;
    N -> inf: E + B / D^beta); they differ where both terms matter: in Kaplan's the two add as a
    (1/beta)-norm, so the loss a model gains from more data grows with its size, which the
    additive form cannot express."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    form: str = "additive"

    def loss(self, n, d):
        if self.form == "kaplan":
            p = 1 / self.beta
            return self.E + ((self.A / n**self.alpha) ** p + (self.B / d**self.beta) ** p) ** self.beta
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def allocation(self) -> dict:
        """N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b. With the two terms x = A/N^alpha, y = B/D^beta
        combined as a p-norm, the optimum on 6ND = C has alpha x^p = beta y^p (Hoffmann et al. 2022,
        eq. 4, is p = 1), so x/y = (beta/alpha)^(1/p) whatever C, and both forms share the exponents."""
        s = self.alpha + self.beta
        p = 1 / self.beta if self.form == "kaplan" else 1.0
        ratio = (self.beta / self.alpha) ** (1 / p)
        return {"a": self.beta / s, "b": self.alpha / s, "G": (self.A / (ratio * self.B)) ** (1 / s)}

    def optimal(self, flops: float) -> tuple[float, float]:
        """N, D minimising L subject to 6·N·D = C."""
        alloc = self.allocation()
        n = alloc["G"] * (flops / 6) ** alloc["a"]
        return n, flops / (6 * n)

    def budget_for(self, params: float) -> float:
        """The budget C whose compute-optimal N is `params`: N = G (C/6)^a solved for C."""
        alloc = self.allocation()
        return 6 * (params / alloc["G"]) ** (1 / alloc["a"])

    @property
    def published(self) -> bool:
        """One of LAWS as its paper gives it, not a fit of the user's."""
        return LAWS.get(self.name) is self


LAWS = {
    # Hoffmann et al. 2022, approach 3, as published (rounded)
    "chinchilla": ScalingLaw("chinchilla", 1.69, 406.4, 410.7, 0.34, 0.28),
    # Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt"), their re-fit as the paper
    # rounds it, all five constants from the one fit: epoch-research/analyzing-chinchilla,
    # data_analysis.ipynb prints A 482.00572, B 2085.43420, E 1.81686, alpha 0.34781, beta 0.36585.
    # (E 1.8172 belongs to their refit by Chinchilla's recipe, whose A is 477.8 and B 2143.9.)
    "epoch2024": ScalingLaw("epoch2024", 1.8169, 482.01, 2085.43, 0.3478, 0.3658),
}


def read_fit(source: str | Path) -> dict:
    """The fit written by `lmforge scale fit` (SWEEP/fit.json; a sweep folder stands for its fit.json),
    checked to hold the law's five numbers. The one reader of that file: `load_law` and the scaling
    lab both come here."""
    path = fit_path(source)
    if not path.is_file():
        raise LmforgeError(f"{source}: no {FIT_FILE}; run lmforge scale fit {source} first")
    try:
        fit = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{path}: not readable as JSON ({e}); rerun lmforge scale fit") from None
    try:
        if not isinstance(fit, dict) or not all(math.isfinite(float(fit[k])) for k in ("E", "A", "B", "alpha", "beta")):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise LmforgeError(f"{path} is not a scaling-law fit (needs numbers E, A, B, alpha, beta)") from None
    if fit.get("form", "additive") not in FORMS:
        raise LmforgeError(f"{path}: unknown law form {fit['form']!r} (one of {', '.join(FORMS)}); rerun lmforge scale fit")
    return fit


def load_law(name: str) -> ScalingLaw:
    """A published law by name, or a fitted one (see `read_fit`)."""
    if name in LAWS:
        return LAWS[name]
    if not Path(name).exists():
        raise LmforgeError(f"--law {name!r}: choose one of {', '.join(LAWS)}, or give a {FIT_FILE} from lmforge scale fit")
    d = read_fit(name)
    return ScalingLaw(str(name), float(d["E"]), float(d["A"]), float(d["B"]), float(d["alpha"]), float(d["beta"]),
                      d.get("form", "additive"))
