"""The report's two renderings of a `report.model.Page`: one self-contained HTML page (inline CSS, a
small hand-written SVG chart script, PNGs as data URIs; nothing fetched), and Markdown with PNGs beside it.

The page fits a phone's 375 px: charts scale down, a table wider than the column scrolls inside its own
box, long words in a cell wrap. Chart ticks sit at round values (1, 2 or 5 times a power of ten).

Everything user-derived goes through `html.escape` (HTML, and the Markdown tables, which renderers
read as HTML too); chart data is JSON inside <script type="application/json"> with '<', '>' and '&'
written as \\u escapes, so a text can never end the script element.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

from lmforge.files import atomic_write_bytes, atomic_write_text, refuse_link
from lmforge.report.model import Chart, Page

PICTURE_NAME = re.compile(r"\d\d+-.*\.png")  # what write_markdown names its pictures: all it ever removes
LONG_CELL = 60  # characters
# a token that is, or holds, white space or a control character would show as a blank box: the three
# common ones as symbols fonts carry (DejaVu has no U+240D, for one), any other as its escape
VISIBLE = {chr(c): f"\\x{c:02x}" for c in range(32)} | {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "\\r"}

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;overflow-wrap:anywhere}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
p.why{color:#444;background:#f6f8fa;border-left:4px solid #8ab;padding:.6em .9em}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.92em} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:normal}
td.long{overflow-wrap:anywhere;width:50%}
th{background:#f3f3f3} pre{background:#f6f8fa;padding:.7em;white-space:pre-wrap;word-break:break-word}
.tok{display:inline-block;white-space:pre;padding:0 .15em;margin:.1em .05em;border-radius:3px;font-family:monospace}
.tok:nth-child(odd){background:#dbe9f6}.tok:nth-child(even){background:#f6e3c7}
.tok .ws,.tokcell .ws{color:#888} .tokcell{font-family:monospace;white-space:pre}
.funnel{display:grid;grid-template-columns:minmax(0,max-content) minmax(4em,1fr);gap:3px .7em;align-items:center;margin:.6em 0}
.funnel .label{font-size:.9em} .funnel .bar{box-sizing:border-box;background:#8ab;height:1.1em;min-width:2px}
.chart{position:relative;display:inline-block;width:442px;max-width:100%;margin:.4em .6em .4em 0;vertical-align:top}
.chart h3{font-size:.95em;margin:.2em 0} .chart svg{display:block;box-sizing:border-box;width:100%;height:auto;background:#fff;border:1px solid #e3e3e3;cursor:crosshair}
.tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #999;padding:2px 6px;font-size:12px;display:none;white-space:pre}
img{box-sizing:border-box;max-width:100%;height:auto;border:1px solid #eee}
.legend span{margin-right:1em;font-size:.85em}
"""

SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var NS = 'http://www.w3.org/2000/svg', W = 440, H = 240, L = 58, R = 12, T = 10, B = 34;
  var COLORS = ['#1f77b4', '#d62728', '#7f7f7f', '#2ca02c', '#9467bd'];
  var axis = 'steps';
  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : String(+v.toPrecision(5));
  }
  // round tick values: 1, 2 or 5 times a power of ten, about n of them between lo and hi
  function ticks(lo, hi, n) {
    var raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    var step = (r <= 1.5 ? 1 : r <= 3 ? 2 : r <= 7 ? 5 : 10) * mag, out = [];
    for (var k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(+(k * step).toPrecision(12));
    return {values: out, step: step};
  }
  // one notation for a whole axis, with the decimals its step needs
  function tickLabels(t) {
    var big = Math.max.apply(null, t.values.map(Math.abs)), e = Math.floor(Math.log10(t.step) + 1e-9);
    if (big >= 1e5 || t.step < 1e-3) {
      var digits = Math.max(0, Math.floor(Math.log10(big || 1) + 1e-9) - e);
      return t.values.map(function (v) { return v === 0 ? '0' : v.toExponential(digits); });
    }
    return t.values.map(function (v) { return v.toFixed(Math.max(0, -e)); });
  }
  function points(s) {
    var out = [];
    for (var i = 0; i < s.values.length; i++) if (s[axis][i] !== null) out.push([s[axis][i], s.values[i]]);
    return out;
  }
  function draw(box) {
    var chart = data.charts[box.getAttribute('data-chart')];
    var old = box.querySelector('svg'); if (old) old.remove();
    var svg = el('svg', {viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-label': chart.title});
    box.insertBefore(svg, box.querySelector('.tip'));
    var all = chart.series.map(points), flat = [].concat.apply([], all);
    if (!flat.length) return;
    var xs = flat.map(function (p) { return p[0]; });
    var x0 = box.zoom ? box.zoom[0] : Math.min.apply(null, xs), x1 = box.zoom ? box.zoom[1] : Math.max.apply(null, xs);
    if (x1 === x0) x1 = x0 + 1;
    var vis = flat.filter(function (p) { return p[0] >= x0 && p[0] <= x1; }).map(function (p) { return p[1]; });
    if (!vis.length) vis = flat.map(function (p) { return p[1]; });
    var lo = Math.min.apply(null, vis), hi = Math.max.apply(null, vis), pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.1 || 1;
    // the margin around the data never passes a bound the quantity has (MFU 0.99 drew a tick at 1.038);
    // a value beyond it is still drawn, not hidden
    var lim = chart.y_bounds || [null, null];
    var y0 = lim[0] === null ? lo - pad : Math.min(lo, Math.max(lo - pad, lim[0]));
    var y1 = lim[1] === null ? hi + pad : Math.max(hi, Math.min(hi + pad, lim[1]));
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); }
    el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#ccc'}, svg);
    var yt = ticks(y0, y1, 4), xt = ticks(x0, x1, 5), ylab = tickLabels(yt), xlab = tickLabels(xt);
    yt.values.forEach(function (yv, i) {
      el('line', {x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), stroke: '#eee'}, svg);
      el('text', {x: L - 4, y: sy(yv) + 4, 'text-anchor': 'end', 'font-size': 10, 'class': 'tick y'}, svg).textContent = ylab[i];
    });
    xt.values.forEach(function (xv, i) {
      var label = el('text', {x: sx(xv), y: H - B + 14, 'text-anchor': 'middle', 'font-size': 10, 'class': 'tick x'}, svg);
      label.textContent = xlab[i];
      var half = label.getComputedTextLength() / 2;  // a label at either end is kept inside the picture
      if (sx(xv) + half > W - 1) { label.setAttribute('text-anchor', 'end'); label.setAttribute('x', W - 1); }
      else if (sx(xv) - half < 1) { label.setAttribute('text-anchor', 'start'); label.setAttribute('x', 1); }
    });
    el('text', {x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', 'font-size': 11}, svg).textContent =
      axis === 'steps' ? 'step' : 'training seconds';
    var clip = 'clip-' + box.getAttribute('data-chart');
    el('rect', {x: L, y: T, width: W - L - R, height: H - T - B}, el('clipPath', {id: clip}, el('defs', {}, svg)));
    all.forEach(function (pts, i) {
      if (!pts.length) return;
      var d = pts.map(function (p, j) { return (j ? 'L' : 'M') + sx(p[0]).toFixed(1) + ' ' + sy(p[1]).toFixed(1); }).join('');
      var attrs = {d: d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 1.6, 'clip-path': 'url(#' + clip + ')'};
      if (chart.series[i].dashed) attrs['stroke-dasharray'] = '5 4';
      el('path', attrs, svg);
    });
    var cursor = el('line', {y1: T, y2: H - B, stroke: '#888', visibility: 'hidden'}, svg);
    var band = el('rect', {y: T, height: H - T - B, fill: 'rgba(80,120,200,.15)', visibility: 'hidden'}, svg);
    var tip = box.querySelector('.tip'), dragFrom = null;
    function dataX(ev) {
      var r = svg.getBoundingClientRect(), px = (ev.clientX - r.left) * W / r.width;
      return {px: px, x: x0 + (px - L) / (W - L - R) * (x1 - x0)};
    }
    svg.addEventListener('mousemove', function (ev) {
      var p = dataX(ev);
      if (p.px < L || p.px > W - R) { tip.style.display = 'none'; cursor.setAttribute('visibility', 'hidden'); return; }
      var lines = [(axis === 'steps' ? 'step ' : 'second ') + fmt(p.x)];
      all.forEach(function (pts, i) {
        var best = null;
        pts.forEach(function (q) { if (best === null || Math.abs(q[0] - p.x) < Math.abs(best[0] - p.x)) best = q; });
        if (best) lines.push(chart.series[i].name + ': ' + fmt(best[1]) + ' (at ' + fmt(best[0]) + ')');
      });
      tip.textContent = lines.join('\n');
      tip.style.display = 'block';
      var scale = svg.getBoundingClientRect().width / W;  // the picture is drawn smaller on a narrow screen
      tip.style.left = Math.max(0, Math.min(p.px * scale + 12, box.clientWidth - tip.offsetWidth)) + 'px';
      tip.style.top = '30px';
      cursor.setAttribute('x1', p.px); cursor.setAttribute('x2', p.px); cursor.setAttribute('visibility', 'visible');
      if (dragFrom !== null) {
        band.setAttribute('x', Math.min(dragFrom.px, p.px)); band.setAttribute('width', Math.abs(p.px - dragFrom.px));
        band.setAttribute('visibility', 'visible');
      }
    });
    svg.addEventListener('mouseleave', function () { tip.style.display = 'none'; cursor.setAttribute('visibility', 'hidden'); });
    svg.addEventListener('mousedown', function (ev) { dragFrom = dataX(ev); ev.preventDefault(); });
    svg.addEventListener('mouseup', function (ev) {
      var to = dataX(ev);
      if (dragFrom !== null && Math.abs(to.px - dragFrom.px) > 5) { box.zoom = [Math.min(dragFrom.x, to.x), Math.max(dragFrom.x, to.x)]; draw(box); }
      dragFrom = null; band.setAttribute('visibility', 'hidden');
    });
    svg.addEventListener('dblclick', function () { box.zoom = null; draw(box); });
  }
  var boxes = document.querySelectorAll('.chart[data-chart]');
  boxes.forEach(draw);
  document.querySelectorAll('input[name=xaxis]').forEach(function (r) {
    r.addEventListener('change', function () { axis = r.value; boxes.forEach(function (b) { b.zoom = null; draw(b); }); });
  });
})();
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def script_json(value) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' can appear literally."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def visible(token: str) -> str:
    return "".join(VISIBLE.get(c, c) for c in token)


def _visible_html(token: str) -> str:
    return "".join(f"<span class=\"ws\">{VISIBLE[c]}</span>" if c in VISIBLE else esc(c) for c in token)


def _token_html(token: str) -> str:
    return f"<span class=\"tok\">{_visible_html(token)}</span>"


def _cell(text) -> str:
    """A long text (an example document) wraps anywhere, so one unbroken run of characters cannot
    widen the table past the page; a short one keeps its words whole."""
    text = str(text)
    if len(text) > LONG_CELL:
        return f"<td class=\"long\">{esc(text)}</td>"
    return "<td>" + re.sub(r"([:_/])", r"\1<wbr>", esc(text)) + "</td>"  # a filter's name may break after : or _


def _table_html(header, rows) -> str:
    out = "<div class=\"scroll\"><table>"
    if header is not None:
        out += "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>"
    out += "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return out + "</table></div>"


def _token_table_html(header, rows) -> str:
    def line(cells, tag):
        first, *tokens = cells
        return (f"<tr><{tag}>{esc(first)}</{tag}>"
                + "".join(f"<{tag} class=\"tokcell\">{_visible_html(t)}</{tag}>" for t in tokens) + "</tr>")

    return "<div class=\"scroll\"><table>" + line(header, "th") + "".join(line(r, "td") for r in rows) + "</table></div>"


def _block_html(block, charts: dict) -> str:
    kind = block[0]
    if kind == "table":
        return _table_html(block[1], block[2])
    if kind == "token_table":
        return _token_table_html(block[1], block[2])
    if kind == "p":
        return f"<p>{esc(block[1])}</p>"
    if kind == "pre":
        return f"<pre class=\"sample\">{esc(block[1])}</pre>"
    if kind == "tokens":
        return "<p class=\"tokens\">" + "".join(_token_html(t) for t in block[1]) + "</p>"
    if kind == "png":
        return f"<p><img src=\"{png_data_uri(block[1])}\" alt=\"{esc(block[2])}\"></p>"
    if kind == "funnel":  # the labels in a column of their own: a short bar cannot hide them
        top = max(n for _, n in block[1]) or 1
        return "<div class=\"funnel\">" + "".join(
            f"<div class=\"label\">{esc(label)}: {n:,}</div>"
            f"<div class=\"track\"><div class=\"bar\" style=\"width:{100 * n / top:.1f}%\"></div></div>"
            for label, n in block[1]) + "</div>"
    chart: Chart = block[1]
    charts[chart.key] = {"title": chart.title, "series": chart.series, "y_bounds": list(chart.y_bounds)}
    legend = "".join(f"<span style=\"color:{c}\">&#9632; {esc(s['name'])}</span>"
                     for s, c in zip(chart.series, ["#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd"]))
    return (f"<div class=\"chart\" data-chart=\"{esc(chart.key)}\"><h3>{esc(chart.title)} "
            f"<small>({esc(chart.y_label)})</small></h3><div class=\"tip\"></div><div class=\"legend\">{legend}</div></div>")


def render_html(page: Page) -> str:
    charts: dict = {}
    body = []
    for s in page.sections:
        inner = "".join(_block_html(b, charts) for b in s.blocks)
        toggle = ""
        if any(b[0] == "chart" for b in s.blocks):
            toggle = ("<p>x axis: <label><input type=\"radio\" name=\"xaxis\" value=\"steps\" checked> steps</label> "
                      "<label><input type=\"radio\" name=\"xaxis\" value=\"seconds\"> wall-clock seconds</label></p>")
        body.append(f"<section><h2>{esc(s.title)}</h2><p class=\"why\">{esc(s.explanation)}</p>{toggle}{inner}</section>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(page.title)} — lmforge report</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(page.title)}</h1>"
            f"<p>{esc(page.intro)} (written by <code>lmforge report</code>).</p>"
            + "".join(body)
            + f"<script type=\"application/json\" id=\"report-data\">{script_json({'charts': charts})}</script>"
            f"<script>{SCRIPT}</script></body></html>")


# ---------------------------------------------------------------- Markdown

def _md_cell(text) -> str:
    return esc(text).replace("|", "\\|").replace("\n", " ")


def _table_md(header, rows) -> str:
    if header is None:  # a list of facts: Markdown tables need a header row, a list does not
        return "\n".join("- " + ": ".join(_md_cell(c) for c in row) for row in rows)
    lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _chart_png(chart: Chart) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for s in chart.series:
        ax.plot(s["steps"], s["values"], "--" if s["dashed"] else "-", label=s["name"])
    ax.set_xlabel("step")
    ax.set_ylabel(chart.y_label)
    ax.set_title(chart.title)
    lo, hi = ax.get_ylim()  # the margin stops at the quantity's bounds; a value beyond one stays in view
    values = [v for s in chart.series for v in s["values"]]
    b_lo, b_hi = chart.y_bounds
    ax.set_ylim(lo if b_lo is None else min(min(values), max(lo, b_lo)),
                hi if b_hi is None else max(max(values), min(hi, b_hi)))
    if len(chart.series) > 1:
        ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    return png.getvalue()


def write_markdown(page: Page, out: Path, files: Path) -> None:
    """`out` and its pictures in `files`, whose earlier pictures (and nothing else) are replaced."""
    refuse_link(files)
    files.mkdir(parents=True, exist_ok=True)
    for old in files.iterdir():
        if PICTURE_NAME.fullmatch(old.name) and (old.is_file() or old.is_symlink()):
            old.unlink()
    parts = [f"# {_md_cell(page.title)}", "", f"{esc(page.intro)}.", ""]
    n = 0
    for s in page.sections:
        parts += [f"## {_md_cell(s.title)}", "", f"> {esc(s.explanation)}", ""]
        for block in s.blocks:
            kind = block[0]
            if kind == "table":
                parts.append(_table_md(block[1], block[2]))
            elif kind == "token_table":
                header, *rows = ([c[0], *map(visible, c[1:])] for c in (block[1], *block[2]))
                parts.append(_table_md(header, rows))
            elif kind == "p":
                parts.append(esc(block[1]))
            elif kind == "pre":
                parts.append("~~~text\n" + block[1].replace("~~~", "~ ~ ~") + "\n~~~")
            elif kind == "tokens":
                parts.append(" ".join(f"<code>{esc(visible(t))}</code>" for t in block[1]))
            elif kind in ("png", "chart"):
                n += 1
                name = f"{n:02d}-{block[2] if kind == 'png' else block[1].key}".replace(" ", "-") + ".png"
                atomic_write_bytes(files / name, block[1] if kind == "png" else _chart_png(block[1]))
                parts.append(f"![{esc(name)}]({files.name}/{name})")
            parts.append("")
    atomic_write_text(out, "\n".join(parts))
