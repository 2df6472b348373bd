"""Pictures and text of lmforge inspect: 2-D projection, PNG maps and heat-maps, the HTML map page,
terminal formatting and JSON."""

from __future__ import annotations

import html
import io
import math
import unicodedata
from pathlib import Path

import numpy as np

from lmforge import figures
from lmforge.errors import LmforgeError
from lmforge.files import atomic_write_bytes, atomic_write_text, output_errors

DPI = 100


def project_2d(x: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str]:
    """(n, d) -> (n, 2) and the method used: PCA (numpy SVD of the centred rows) or UMAP (if importable)."""
    if method not in ("auto", "pca", "umap"):
        raise LmforgeError(f"inspect: --method {method!r}: choose auto, pca or umap")
    if method in ("auto", "umap"):
        try:
            import umap  # optional: pip install umap-learn
        except ImportError:
            if method == "umap":
                raise LmforgeError("inspect: --method umap needs the umap-learn package (pip install umap-learn)") from None
        else:
            # spectral initialisation needs more points than a handful; seeded, hence one thread
            reducer = umap.UMAP(n_neighbors=max(2, min(15, len(x) - 1)), metric="cosine", random_state=0, n_jobs=1,
                                init="spectral" if len(x) > 10 else "random")
            return reducer.fit_transform(x), "umap"
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    # SVD signs are arbitrary: fix them so the same run always draws the same picture
    return xy * np.where(xy[np.abs(xy).argmax(0), [0, 1]] < 0, -1.0, 1.0), "pca"


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(c: str) -> str:
    """A character as drawn: control and format characters have no glyph in any font, so their code is shown."""
    if c in _NAMED:
        return _NAMED[c]
    if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def _short(token: str, width: int = 12) -> str:
    """A token as a plot label: control characters visible, long ones cut."""
    text = "".join(_visible(c) for c in token)
    return text if len(text) <= width else text[:width - 1] + "…"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


MAP_PIXELS = (1200, 900)


def save_figure(plt, fig, path: Path) -> None:
    """The figure as a PNG at `path`, replaced in one rename (a link there is replaced, never followed)."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI)
    plt.close(fig)
    with output_errors("inspect", path.parent):
        atomic_write_bytes(path, png.getvalue())


def plot_map(words: list[str], xy: np.ndarray, title: str, path: Path) -> Path:
    plt = _pyplot()
    with plt.rc_context({"text.parse_math": False}):
        fig, ax = plt.subplots(figsize=(MAP_PIXELS[0] / DPI, MAP_PIXELS[1] / DPI), dpi=DPI)
        ax.scatter(xy[:, 0], xy[:, 1], s=10, color="tab:blue", alpha=0.7)
        for w, (x, y) in zip(words, xy):
            ax.annotate(w, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=8)
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        save_figure(plt, fig, path)
    return path


def write_map_html(words: list[str], xy: np.ndarray, title: str, path: Path) -> Path:
    """A self-contained page: an inline SVG (hover a point for its word, wheel to zoom, drag to pan,
    type to highlight). Every word is HTML-escaped; nothing is loaded from elsewhere."""
    w, h, pad = 1000, 750, 40
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy - lo) / span * [w - 2 * pad, h - 2 * pad]
    px[:, 1] = h - px[:, 1]  # SVG's y grows downwards
    points = "\n".join(
        f'<g class="p" data-w="{html.escape(word.lower())}"><circle cx="{x:.1f}" cy="{y:.1f}" r="3"/>'
        f'<text x="{x + 4:.1f}" y="{y - 4:.1f}">{html.escape(word)}</text><title>{html.escape(word)}</title></g>'
        for word, (x, y) in zip(words, px))
    page = _MAP_PAGE.replace("{title}", html.escape(title)).replace("{w}", str(w)).replace("{h}", str(h))
    with output_errors("inspect", path.parent):
        atomic_write_text(path, page.replace("{points}", points))
    return path


_MAP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{font-family:sans-serif;margin:1em} svg{border:1px solid #ccc;cursor:grab;background:#fff}
circle{fill:#1f77b4;opacity:.7} text{font-size:11px;fill:#333} .hit circle{fill:#d62728;opacity:1}
.hit text{fill:#d62728;font-weight:bold;font-size:14px} .dim{opacity:.25}
</style></head><body>
<h3>{title}</h3>
<p><input id="q" placeholder="highlight words containing..." size="30"> wheel: zoom, drag: pan</p>
<svg id="map" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">
{points}
</svg>
<script>
(function () {
  var svg = document.getElementById("map"), box = [0, 0, {w}, {h}], drag = null;
  function show() { svg.setAttribute("viewBox", box.join(" ")); }
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    var f = e.deltaY > 0 ? 1.2 : 1 / 1.2, r = svg.getBoundingClientRect();
    var mx = box[0] + (e.clientX - r.left) / r.width * box[2], my = box[1] + (e.clientY - r.top) / r.height * box[3];
    box = [mx - (mx - box[0]) * f, my - (my - box[1]) * f, box[2] * f, box[3] * f]; show();
  });
  svg.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", function () { drag = null; });
  svg.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var r = svg.getBoundingClientRect();
    box[0] -= (e.clientX - drag[0]) / r.width * box[2]; box[1] -= (e.clientY - drag[1]) / r.height * box[3];
    drag = [e.clientX, e.clientY]; show();
  });
  document.getElementById("q").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    document.querySelectorAll("g.p").forEach(function (g) {
      var hit = q && g.getAttribute("data-w").indexOf(q) >= 0;
      g.classList.toggle("hit", !!hit); g.classList.toggle("dim", !!q && !hit);
    });
  });
})();
</script>
</body></html>
"""


def lens_pixels(n_tokens: int, n_rows: int) -> tuple[int, int]:
    """Heat-map size in pixels: a fixed margin plus one cell per (layer, position)."""
    cell = 64 if n_tokens <= 40 else 20
    return 220 + cell * n_tokens, 170 + 44 * n_rows


def plot_lens(tokens: list[str], top1: list[list[str]], prob: np.ndarray, predicts: str, path: Path) -> Path:
    """Heat-map of the top-1 probability per (layer, position), labelled with the top-1 token."""
    plt = _pyplot()
    n_rows, T = prob.shape
    w, h = lens_pixels(T, n_rows)
    with plt.rc_context({"text.parse_math": False}):
        fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
        ax = fig.add_axes((150 / w, 110 / h, 1 - 200 / w, 1 - 150 / h))
        im = ax.imshow(prob, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(n_rows), ["embedding"] + [f"layer {i}" for i in range(1, n_rows)])
        ax.set_xticks(range(T), [_short(t) for t in tokens], rotation=60, ha="right", fontsize=8)
        if T <= 40:
            for layer in range(n_rows):
                for t in range(T):
                    ax.text(t, layer, _short(top1[layer][t], 8), ha="center", va="center", fontsize=7,
                            color="white" if prob[layer, t] < 0.6 else "black")
        ax.set_title(f"logit lens: top-1 prediction ({predicts}) and its probability")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        save_figure(plt, fig, path)
    return path


def attention_pixels(n_tokens: int, n_heads: int) -> tuple[int, int]:
    panel = min(480, max(240, 12 * n_tokens))
    cols = math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / cols)
    return 60 + cols * (panel + 60), 60 + rows * (panel + 70)


def plot_attention(tokens: list[str], probs: np.ndarray, heads: list[int], layer: int, path: Path) -> Path:
    """probs (n_heads, T, T): one panel per head, queries down, keys across."""
    plt = _pyplot()
    w, h = attention_pixels(len(tokens), len(heads))
    cols = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / cols)
    with plt.rc_context({"text.parse_math": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(w / DPI, h / DPI), dpi=DPI, squeeze=False)
        for ax in axes.flat[len(heads):]:
            ax.axis("off")
        labels = [_short(t) for t in tokens] if len(tokens) <= 40 else []
        for ax, p, head in zip(axes.flat, probs, heads):
            ax.imshow(p, cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(len(tokens)) if labels else [], labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)) if labels else [], labels, fontsize=6)
        fig.subplots_adjust(left=0.12, right=0.98, bottom=0.12, top=0.93, wspace=0.6, hspace=0.6)
        save_figure(plt, fig, path)
    return path


# ---------------------------------------------------------------- terminal

def format_neighbours(result: dict) -> str:
    how = result["vectors"] + (f", layer {result['layer']}" if result.get("layer") is not None else "")
    rows = "\n".join(f"  {n['similarity']:7.4f}  {n['word']}" for n in result["neighbours"])
    return f"nearest to {result['word']!r} ({how} vectors, cosine):\n{rows}"


def format_lens(result: dict) -> str:
    """One row per position, one column per layer: the top-1 prediction and its probability."""
    n_rows = len(result["layers"])
    head = ["position", "token"] + ["embedding"] + [f"layer {i}" for i in range(1, n_rows)]
    body = []
    for t, token in enumerate(result["tokens"]):
        cells = [f"{result['layers'][l]['top'][t][0]['token']!r} {result['layers'][l]['top'][t][0]['prob']:.2f}"
                 for l in range(n_rows)]
        body.append([str(t), repr(token)] + cells)
    widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(wd) for cell, wd in zip(row, widths)).rstrip() for row in [head] + body]
    what = "next token" if result["predicts"] == "next" else "token at this position"
    change = ", ".join(f"{c['from']}->{c['to']} {c['cosine_distance']:.3f}" for c in result["layer_change"])
    return (f"logit lens (top-1 prediction of the {what} and its probability, after each layer):\n"
            + "\n".join(lines) + f"\ncosine distance between consecutive layers (mean over positions): {change}")


def to_json(result: dict) -> str:
    return figures.dumps(result, ensure_ascii=False)
