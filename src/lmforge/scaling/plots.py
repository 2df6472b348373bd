"""The sweep's pictures, drawn from a fit (`fitting.fit_points`) and its points:

    isoflop.png        IsoFLOP profiles; beside them the compute-optimal allocation, when the
                       profiles gave one (a panel of its own only then)
    law.png            the chosen law (its own form in the title) against the points; its residuals
    extrapolation.png  the compute-optimal loss from L(N, D) and L(C) beyond the sweep, 95% bands

Each figure is built by a function that returns it, so its axes can be read before it is saved.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lmforge.scaling.fitting import group_levels, law_from_theta, law_of

PLOTS = ("isoflop.png", "law.png", "extrapolation.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _arrays(points: list[dict]) -> dict:
    return {k: np.array([p[k] for p in points], dtype=float) for k in ("params", "tokens", "loss", "flops")}


def law_title(law) -> str:
    """The fitted law as the title of its plot, in the form that was chosen."""
    e, a, alpha, b, beta = law.E, f"{law.A:.3g}", f"{law.alpha:.3f}", f"{law.B:.3g}", f"{law.beta:.3f}"
    if law.form == "kaplan":
        return (f"Kaplan's form: L = {e:.3f} + (({a}/N^{alpha})^(1/{beta})\n"
                f"+ ({b}/D^{beta})^(1/{beta}))^{beta}")
    return f"additive form: L = {e:.3f} + {a}/N^{alpha}\n+ {b}/D^{beta}"


def _few_log_ticks(ax, axis: str) -> None:
    """A log axis spanning under a few decades gets labels on its minor ticks too (2x10^15,
    3x10^15, ...), which run into each other: label the decades and at most a few round values."""
    import matplotlib.ticker as mticker

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    target.set_major_formatter(mticker.LogFormatterSciNotation(labelOnlyBase=False))
    target.set_minor_locator(mticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0, numticks=12))
    target.set_minor_formatter(mticker.NullFormatter())


@np.errstate(divide="ignore", over="ignore", invalid="ignore")
def isoflop_figure(fit: dict, points: list[dict]):
    plt = _pyplot()
    P = _arrays(points)
    iso = fit["isoflop"]
    allocation = "a" in iso  # the profiles gave power laws for N_opt and D_opt
    fig, axes = plt.subplots(1, 2 if allocation else 1, figsize=(11 if allocation else 6.5, 4.2))
    ax = axes[0] if allocation else axes
    cmap = plt.get_cmap("viridis")
    labels = group_levels(P["flops"])
    for k in np.unique(labels):
        sel = labels == k
        ax.scatter(P["params"][sel], P["loss"][sel], color=cmap(k / max(1, labels.max())), s=18,
                   label=f"{np.exp(np.log(P['flops'][sel]).mean()):.2g} FLOPs")
    for lv in iso["levels"]:
        xs = np.linspace(math.log(lv["n_opt"]) - 1.5, math.log(lv["n_opt"]) + 1.5, 60)
        ax.plot(np.exp(xs), np.polyval(lv["coefficients"], xs), color="grey", lw=0.8)
        ax.scatter([lv["n_opt"]], [lv["loss_opt"]], marker="*", color="red", s=60, zorder=3)
    ax.set(xscale="log", xlabel="parameters N", ylabel="validation loss (nats/token)", title="IsoFLOP profiles")
    _few_log_ticks(ax, "x")
    if labels.max() < 10:  # a legend of dozens of levels would crowd out the plot
        ax.legend(fontsize=7)
    if allocation:
        ax2 = axes[1]
        law = law_of(fit)
        cs = np.array([lv["flops"] for lv in iso["levels"]])
        grid = np.geomspace(cs.min() / 2, cs.max() * 20, 50)
        ax2.scatter(cs, [lv["n_opt"] for lv in iso["levels"]], color="C0", label=f"N_opt ~ C^{iso['a']:.2f} (IsoFLOP)")
        ax2.scatter(cs, [lv["d_opt"] for lv in iso["levels"]], color="C1", label=f"D_opt ~ C^{iso['b']:.2f} (IsoFLOP)")
        ax2.plot(grid, iso["k_n"] * grid ** iso["a"], color="C0", lw=0.8)
        ax2.plot(grid, iso["k_d"] * grid ** iso["b"], color="C1", lw=0.8)
        opt = np.array([law.optimal(c) for c in grid])
        ax2.plot(grid, opt[:, 0], "C0--", lw=0.8, label=f"N_opt, L(N,D) fit (a={fit['a']:.2f})")
        ax2.plot(grid, opt[:, 1], "C1--", lw=0.8, label=f"D_opt, L(N,D) fit (b={fit['b']:.2f})")
        ax2.set(xscale="log", yscale="log", xlabel="compute C = 6ND (FLOPs)", title="compute-optimal allocation")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


@np.errstate(divide="ignore", over="ignore", invalid="ignore")
def law_figure(fit: dict, points: list[dict]):
    plt = _pyplot()
    P = _arrays(points)
    law = law_of(fit)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    cmap = plt.get_cmap("viridis")
    sizes = np.unique(P["params"])
    for i, n in enumerate(sizes):
        sel = P["params"] == n
        col = cmap(i / max(1, len(sizes) - 1))
        ax.scatter(P["tokens"][sel], P["loss"][sel], color=col, s=18, label=f"N={n:.3g}" if len(sizes) < 10 else None)
        ds = np.geomspace(P["tokens"].min() / 1.5, P["tokens"].max() * 1.5, 50)
        ax.plot(ds, [law.loss(n, d) for d in ds], color=col, lw=0.8)
    ax.set(xscale="log", xlabel="training tokens D", ylabel="validation loss")
    ax.set_title(law_title(law), fontsize=9)
    _few_log_ticks(ax, "x")
    if len(sizes) < 10:
        ax.legend(fontsize=7)
    fitted = np.array([law.loss(n, d) for n, d in zip(P["params"], P["tokens"])])
    ax2.scatter(P["flops"], 100 * (P["loss"] - fitted) / P["loss"], s=18)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xscale="log", xlabel="compute 6ND (FLOPs)", ylabel="residual, % of loss", title="fit residuals")
    _few_log_ticks(ax2, "x")
    fig.tight_layout()
    return fig


@np.errstate(divide="ignore", over="ignore", invalid="ignore")
def extrapolation_figure(fit: dict, points: list[dict], verified: list[dict] | None = None):
    plt = _pyplot()
    P = _arrays(points)
    law = law_of(fit)
    iso = fit["isoflop"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    c_top = fit["largest_flops"]
    grid = np.geomspace(P["flops"].min() / 2, c_top * 100, 60)
    boot = [law_from_theta(np.array(t), form=law.form) for t in fit["bootstrap_samples"]["theta"]]
    ax.scatter(P["flops"], P["loss"], s=14, color="grey", alpha=0.6, label="sweep runs")
    ax.plot(grid, [law.loss(*law.optimal(c)) for c in grid], "C0", label="L(N_opt, D_opt) from L(N, D)")
    if boot:
        band = np.array([[b.loss(*b.optimal(c)) for b in boot] for c in grid])
        ax.fill_between(grid, np.percentile(band, 2.5, axis=1), np.percentile(band, 97.5, axis=1), color="C0", alpha=0.2)
    lc = fit["loss_vs_compute"]
    if lc.get("a") is not None:
        ax.scatter([lv["flops"] for lv in iso["levels"]], [lv["loss_opt"] for lv in iso["levels"]], marker="*",
                   color="red", s=60, zorder=3, label="IsoFLOP minima")
        ax.plot(grid, lc["a"] * grid ** lc["b"] + lc["c"], "C3", lw=1, label=f"L(C) = {lc['a']:.3g} C^{lc['b']:.3f} + {lc['c']:.3f}")
        samples = fit["bootstrap_samples"]["loss_vs_compute"]
        if len(samples) >= 10:
            band = np.array([[a * c**b + cc for a, b, cc in samples] for c in grid])
            ax.fill_between(grid, np.percentile(band, 2.5, axis=1), np.percentile(band, 97.5, axis=1), color="C3", alpha=0.15)
    for v in verified or []:
        ax.errorbar([v["flops"]], [v["predicted"]], yerr=None, fmt="o", color="C0", mfc="none", ms=9, label="predicted target")
        ax.scatter([v["flops"]], [v["actual"]], marker="x", color="k", s=70, zorder=4,
                   label=f"actual target ({100 * v['relative_error']:+.2f}%)")
    ax.axvline(c_top, color="grey", ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="validation loss", title="extrapolation (95% bands)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_fit(fit: dict, points: list[dict], out_dir: Path, verified: list[dict] | None = None) -> list[str]:
    """isoflop.png, law.png, extrapolation.png in `out_dir`; returns their paths."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = (isoflop_figure(fit, points), law_figure(fit, points), extrapolation_figure(fit, points, verified))
    paths = []
    for name, fig in zip(PLOTS, figures):
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(str(out_dir / name))
    return paths
