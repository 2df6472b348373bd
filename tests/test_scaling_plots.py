"""The sweep's pictures (lmforge/scaling/plots.py), read through matplotlib's own objects before saving:
each panel holds something, the law's title is the form that was chosen, no tick labels overlap."""

import itertools

import matplotlib
import pytest

from lmforge.scaling import fitting, plots

matplotlib.use("Agg")


def law_points(sizes, token_counts) -> list[dict]:
    return [{"params": n, "tokens": d, "flops": 6 * n * d, "loss": 1.8 + 400 / n ** 0.34 + 2000 / d ** 0.37}
            for n, d in itertools.product(sizes, token_counts)]


# a sweep spanning under one decade in N and in D (as a small CPU sweep does), and one spanning two
SWEEPS = {"narrow": law_points([1e5, 1.3e5, 1.7e5, 2.2e5, 3e5], [1e6, 1.5e6, 2e6, 3e6]),
          "wide": law_points([1e5, 3e5, 1e6, 3e6, 1e7], [1e6, 3e6, 1e7, 3e7])}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def fits():
    return {(name, form): fitting.fit_points(points, bootstrap=3, form=form)
            for name, points in SWEEPS.items() for form in ("additive", "kaplan")}


def figures(fit, points):
    return {"isoflop": plots.isoflop_figure(fit, points), "law": plots.law_figure(fit, points),
            "extrapolation": plots.extrapolation_figure(fit, points)}


def overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in axis.get_ticklabels(which="both")
                     if t.get_visible() and t.get_text()]
            pairs += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    return pairs


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("form", ("additive", "kaplan"))
def test_no_tick_labels_overlap_and_every_panel_holds_data(fits, name, form):
    """Issue 28: the residual plot's labels 3x10^11 and 4x10^11 ran into each other (minor ticks of a
    log axis under a decade wide are labelled too)."""
    for what, fig in figures(fits[name, form], SWEEPS[name]).items():
        assert not overlapping_tick_labels(fig), (what, overlapping_tick_labels(fig))
        for ax in fig.axes:
            assert ax.collections or ax.lines, f"{what}: an empty panel {ax.get_title()!r}"


def test_law_png_is_titled_with_the_chosen_form(fits):
    """Issue 28: the title was the additive formula whatever the form chosen."""
    kaplan = figures(fits["wide", "kaplan"], SWEEPS["wide"])["law"].axes[0].get_title()
    additive = figures(fits["wide", "additive"], SWEEPS["wide"])["law"].axes[0].get_title()
    law = fitting.law_of(fits["wide", "kaplan"])
    assert kaplan.startswith("Kaplan's form") and f"^(1/{law.beta:.3f})" in kaplan, kaplan
    assert additive.startswith("additive form") and "^(1/" not in additive, additive


def test_isoflop_has_no_empty_second_panel(fits):
    """Issue 28: profiles that gave no allocation (too few compute levels) left the right panel empty."""
    fit = dict(fits["narrow", "additive"])
    assert len(plots.isoflop_figure(fit, SWEEPS["narrow"]).axes) == 2  # the allocation, beside the profiles
    fit["isoflop"] = {k: v for k, v in fit["isoflop"].items() if k not in ("a", "b", "k_n", "k_d")}
    fig = plots.isoflop_figure(fit, SWEEPS["narrow"])
    assert [ax.get_title() for ax in fig.axes] == ["IsoFLOP profiles"]


def test_plot_fit_writes_the_three_pictures(fits, tmp_path):
    paths = plots.plot_fit(fits["wide", "kaplan"], SWEEPS["wide"], tmp_path)
    assert [p.rsplit("/", 1)[1] for p in paths] == list(plots.PLOTS)
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
