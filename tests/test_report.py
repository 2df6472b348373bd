"""lmforge report: the page of a real tiny run, its sections, its escaping, its Markdown twin, and the
page itself in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""

import gzip
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.pipeline import run as run_job
from lmforge.report import report
from lmforge.folders.run import RunDir
from conftest import corpus_texts, make_prose, tiny_overrides

EVIL = "<script>alert(1)</script>"
PERSONAL = ("alice.smith@example.com", "415-555-0123", "123-45-6789")  # an e-mail, a phone, an SSN
KEPT_PERSONAL = ("bob.jones@example.org", "212-555-0199", "219-09-9999")


def write_personal_documents(corpus: Path) -> None:
    """Personal data in a document rejected as too short, in a kept one, and in an exact copy of the
    kept one (rejected as a duplicate, stored as read): read first, so both rejections are examples."""
    (corpus / "001-short.txt").write_text("Write to {} or call {}; SSN {}.".format(*PERSONAL))
    kept = make_prose(7) + "\n\nWrite to {}, call {}, SSN {}.\n".format(*KEPT_PERSONAL)
    (corpus / "002-kept.txt").write_text(kept)
    (corpus / "003-copy.txt").write_text(kept)


def assert_no_personal_data(text: str, where: str) -> None:
    for s in PERSONAL + KEPT_PERSONAL:
        assert s not in text, f"{s} in {where}"
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`lmforge run` on real text plus a document that is an XSS attempt (and is rejected as too short),
    with the same string as a sample prompt, so it reaches both the examples and the samples."""
    root = tmp_path_factory.mktemp("report")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(corpus_texts()):
        (corpus / f"doc{i:03d}.txt").write_text(text)
    (corpus / "000-evil.txt").write_text(EVIL)  # read first, so it is among the examples shown
    write_personal_documents(corpus)
    cfg = load_config("tiny", overrides=tiny_overrides(**{
        "train.max_steps": 40, "train.eval_interval": 20, "prepare.workers": 1, "run.map_words": 30,
        "run.inspect_words": 2, "run.sample_prompts": json.dumps([EVIL, "The "]), "run.samples": 2,
    }) + [f"run.out={root / 'run'}"])
    cfg.data.sources = [str(corpus)]
    run_job(cfg, log=lambda *_: None)
    return RunDir(root / "run")


def test_run_writes_a_self_contained_page_with_every_section(tiny_run):
    page = tiny_run.report_path().read_text()  # written by lmforge run itself
    for title in ("The corpus", "Tokens", "Training", "Results", "Inside the model", "Cost"):
        assert f"<h2>{title}</h2>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not fetch anything"
    assert re.search(r"tokenizer learned from.*prose [\d,]+ of [\d,]+ \([\d.,]+ (bytes|kB|MB|GB) of [\d.,]+ (bytes|kB|MB|GB)\)", page)  # prepare's kinds, read from clean/
    assert page.count("data:image/png;base64,") >= 2  # the word map and the logit lens
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    data = page[page.index('id="report-data">'):]
    assert "<script>alert" not in data.split("</script>")[0]
    assert {"loss", "lr", "tokens_per_s", "mfu"} <= set(json.loads(data[len('id="report-data">'):data.index("</script>")])["charts"])


def test_this_runs_energy_is_its_measured_time_at_its_power(tiny_run):
    """Issue 24: the report took this run's energy from the shape's FLOPs over the MFU; a masked run's
    MFU counts only the head rows that ran, so it read ~35% high. Measured time x power is no estimate."""
    summary = json.loads(tiny_run.summary_path.read_text())
    watts = 15.0 * summary["threads"]  # a CPU: 15 W per thread
    md_rows = report(tiny_run.path, fmt="md").read_text()
    assert f"{watts * summary['train_time_s'] / 3600:.3g} Wh (at {watts:.0f} W)" in md_rows


def test_sections_without_data_are_left_out(tiny_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_run.path, bare, ignore=shutil.ignore_patterns("prepared", "inspect", "summary.json"))
    page = report(bare).read_text()
    assert "<h2>Training</h2>" in page
    for title in ("The corpus", "Results", "Cost"):
        assert f"<h2>{title}</h2>" not in page


def test_markdown_has_pngs_beside_it(tiny_run, capsys):
    assert main(["report", str(tiny_run.path), "--format", "md"]) == 0
    md = tiny_run.report_path("md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 4
    for rel in images:
        data = (tiny_run.path / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert EVIL not in md.split("~~~")[0]  # outside code fences it is escaped


def test_rejected_examples_are_shown_redacted_in_html_markdown_and_report_json(tiny_run):
    page = tiny_run.report_path().read_text()
    assert "&lt;EMAIL&gt;" in page and "&lt;SSN&gt;" in page  # the examples are there, with placeholders
    assert main(["report", str(tiny_run.path), "--format", "md"]) == 0
    for where, text in (("report.html", page), ("report.md", tiny_run.report_path("md").read_text()),
                        ("prepared/report.json", tiny_run.prepared.report_path.read_text())):
        assert_no_personal_data(text, where)


def test_prepare_prints_and_records_no_personal_data(tmp_path):
    """The summary on stdout and report.json name example documents; a JSONL record's own id is its
    content, so an id that is an e-mail address is redacted there too."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_personal_documents(corpus)
    (corpus / "004-records.jsonl").write_text(json.dumps({"id": PERSONAL[0], "text": "too short to keep"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "lmforge", "prepare", str(corpus), "--out", str(tmp_path / "prep"),
                        "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "prep" / "report.json").read_text())
    assert rep["documents_rejected"] == 3 and rep["documents_kept"] == 1, rep["rejected_by_reason"]
    assert "<EMAIL>" in sum(rep["examples"].values(), [])  # the record whose id was an address
    for where, text in (("stdout", r.stdout), ("stderr", r.stderr), ("report.json", json.dumps(rep))):
        assert_no_personal_data(text, where)
    # nothing lost: rejected/ keeps each document as it was read
    stored = "".join(gzip.open(f, "rt").read() for f in (tmp_path / "prep" / "rejected").glob("*.jsonl.gz"))
    assert all(s in stored for s in PERSONAL + KEPT_PERSONAL)


def test_report_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run or sweep folder" in capsys.readouterr().err


def _browser(width: int = 1100):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra: pip install -e '.[test]'")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},900", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


# what a reader would see as broken, measured in the page: anything wider than the viewport or sticking
# out of the text column (a table's content may be wider only inside its own scrolling box), text cut
# by its box, a chart label beyond its picture, a funnel bar beyond its track
LAYOUT_PROBLEMS = r"""
var out = [], doc = document.documentElement, vw = doc.clientWidth;
if (doc.scrollWidth > vw) out.push('the page is ' + doc.scrollWidth + ' px wide in a ' + vw + ' px viewport');
var body = document.body.getBoundingClientRect(), cs = getComputedStyle(document.body);
var left = body.left + parseFloat(cs.paddingLeft), right = body.right - parseFloat(cs.paddingRight);
function name(e) {
  var cls = typeof e.className === 'string' && e.className ? '.' + e.className.replace(/ /g, '.') : '';
  return e.tagName.toLowerCase() + cls + ' "' + (e.textContent || '').trim().slice(0, 50) + '"';
}
document.body.querySelectorAll('*').forEach(function (e) {
  if (e.tagName === 'SCRIPT' || (e.parentElement && e.parentElement.closest('.scroll, svg'))) return;
  var r = e.getBoundingClientRect();
  if (r.width && (r.right > right + 1 || r.left < left - 1)) out.push('outside the column: ' + name(e) + ' ' + r.left + '-' + r.right);
});
document.querySelectorAll('.funnel div, th, td, h1, h2, h3, .tok, .legend span, p').forEach(function (e) {
  if (e.scrollWidth > e.clientWidth + 1) out.push('text cut by its box: ' + name(e));
});
document.querySelectorAll('.chart svg').forEach(function (svg) {
  var vb = svg.viewBox.baseVal;
  svg.querySelectorAll('text').forEach(function (t) {
    var b = t.getBBox();
    if (b.x < -0.5 || b.x + b.width > vb.width + 0.5) out.push('chart label cut off: ' + t.textContent);
  });
});
document.querySelectorAll('.funnel .bar').forEach(function (b) {
  if (b.getBoundingClientRect().right > b.parentElement.getBoundingClientRect().right + 0.5) out.push('bar beyond its track');
});
return out;
"""

# each chart's tick labels: x labels sit on one line under the plot, y labels at its left
CHART_TICKS = r"""
var out = {};
document.querySelectorAll('.chart[data-chart]').forEach(function (box) {
  var texts = [].slice.call(box.querySelectorAll('svg text[font-size="10"]'));
  out[box.getAttribute('data-chart')] = {
    x: texts.filter(function (t) { return t.getAttribute('y') === '220'; }).map(function (t) { return t.textContent; }),
    y: texts.filter(function (t) { return t.getAttribute('y') !== '220'; }).map(function (t) { return t.textContent; })};
});
return out;
"""


def at_width(browser, width: int) -> None:
    """The viewport of a phone (375 px, as a phone reports it) or a laptop, whatever the window."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    browser.refresh()


def full_page_screenshot(browser, path: Path) -> None:
    height = min(browser.execute_script("return document.documentElement.scrollHeight"), 12000)
    width = browser.execute_script("return document.documentElement.clientWidth")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    browser.save_screenshot(str(path))


def round_ticks(labels: list[str]) -> str | None:
    """Why these axis labels are not round values in one notation (1, 2 or 5 x 10^k apart), or None."""
    if len(labels) < 2:
        return f"{labels}: fewer than two ticks"
    if len({"e" in t for t in labels}) > 1:
        return f"{labels}: two notations on one axis"
    values = [float(t) for t in labels]
    step = values[1] - values[0]
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    if not any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10)):
        return f"{labels}: step {step:g} is not 1, 2 or 5 times a power of ten"
    for a, b in zip(values, values[1:]):
        if not math.isclose(b - a, step, rel_tol=1e-6, abs_tol=step * 1e-6):
            return f"{labels}: uneven steps"
    if any(abs(v / step - round(v / step)) > 1e-6 for v in values):
        return f"{labels}: not multiples of {step:g}"
    return None


def check_layout(browser, url: str, shots: Path, name: str) -> dict:
    """The page at a phone's and a laptop's width: no layout problem, round ticks on both x axes
    (steps and wall-clock seconds); screenshots of each in `shots`. Returns the ticks at 1280 px."""
    browser.get(url)
    ticks = {}
    for width in WIDTHS:
        at_width(browser, width)
        charts = browser.execute_script("return !!document.querySelector('input[name=xaxis]')")
        for axis in ("steps", "seconds") if charts else ("steps",):
            browser.execute_script("var r = document.querySelector('input[name=xaxis][value=' + arguments[0] + ']');"
                                   "if (r) { r.checked = true; r.dispatchEvent(new Event('change')); }", axis)
            problems = browser.execute_script(LAYOUT_PROBLEMS)
            assert not problems, f"{name} at {width} px, x axis {axis}: {problems}"
            ticks = browser.execute_script(CHART_TICKS)
            for key, t in ticks.items():
                for which in ("x", "y"):
                    assert round_ticks(t[which]) is None, (name, width, axis, key, which, round_ticks(t[which]))
            full_page_screenshot(browser, shots / f"{name}-{width}px-{axis}.png")
            at_width(browser, width)
    return ticks


WIDTHS = (375, 1280)


def test_the_page_in_a_real_browser(tiny_run):
    browser = _browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    try:
        browser.get(tiny_run.report_path().resolve().as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        charts = browser.find_elements(By.CSS_SELECTOR, ".chart svg")
        images = browser.find_elements(By.TAG_NAME, "img")
        assert len(charts) >= 4 and len(images) >= 2
        for e in charts + images:
            assert e.size["width"] > 0 and e.size["height"] > 0, e.get_attribute("outerHTML")[:80]
        for img in images:
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        # hovering the loss curve shows the values under the cursor
        loss = browser.find_element(By.CSS_SELECTOR, '.chart[data-chart="loss"]')
        ActionChains(browser).move_to_element(loss.find_element(By.TAG_NAME, "svg")).perform()
        tip = loss.find_element(By.CLASS_NAME, "tip")
        assert tip.is_displayed() and re.search(r"train loss: \d", tip.text), tip.text
        # the XSS attempt is text on the page and never ran
        assert browser.execute_script("return typeof window.alert") == "function"
        body = browser.find_element(By.TAG_NAME, "body").text
        assert body.count(EVIL) >= 2  # a rejected example and a sample, shown as text
        samples = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.sample")]
        assert any(s.startswith(EVIL) for s in samples)
        assert len(browser.find_elements(By.TAG_NAME, "script")) == 2  # the data and the chart script, no more
        browser.switch_to.alert  # noqa: B018 - raises when no alert is open
        pytest.fail("an alert opened: the page ran the corpus' script")
    except Exception as e:  # selenium's NoAlertPresentException means nothing ran
        if type(e).__name__ != "NoAlertPresentException":
            raise
    finally:
        try:
            DOCS.mkdir(exist_ok=True)
            browser.set_window_size(1100, 2400)
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(DOCS / "report.png"))
        finally:
            browser.quit()


def test_a_fitted_sweep_reports_its_law_and_plots(tmp_path):
    import itertools

    from lmforge import scaling

    rows = ["params,tokens,loss"] + [f"{n:.0f},{d:.0f},{1.8 + 400 / n ** 0.34 + 2000 / d ** 0.37:.6f}"
                                     for n, d in itertools.product([1e5, 3e5, 1e6, 3e6, 1e7], [1e6, 3e6, 1e7, 3e7])]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    fit = scaling.fit(tmp_path / "points.csv", bootstrap=5, out=tmp_path / "sweep")
    page = report(tmp_path / "sweep").read_text()
    assert "<h2>The scaling-law fit</h2>" in page and "<h2>Training</h2>" not in page
    assert f"<td>{fit['alpha']:.4g}</td>" in page and abs(fit["alpha"] - 0.34) < 0.02
    assert page.count("data:image/png;base64,") == len(fit["plots"]) >= 3


def empty_header_rows(browser) -> int:
    return browser.execute_script("return [].filter.call(document.querySelectorAll('tr'), function (tr) {"
                                  "  return tr.querySelector('th') && !tr.textContent.trim(); }).length")


def test_the_page_at_a_phones_and_a_laptops_width(tiny_run, tmp_path):
    """Issue 28: ticks were the data range cut in quarters (7.9146), the last wall-clock label was cut
    off, funnel labels ran off short bars and full-width bars out of the column, header-less tables
    had an empty grey row, white-space tokens were blank boxes, tables overflowed a phone's screen."""
    browser = _browser()
    try:
        ticks = check_layout(browser, tiny_run.report_path().resolve().as_uri(), tmp_path, "run")
        assert {"loss", "lr", "mfu"} <= set(ticks)
        assert max(float(v) for v in ticks["mfu"]["y"]) <= 1
        assert empty_header_rows(browser) == 0
        tokens = browser.execute_script("return [].map.call(document.querySelectorAll('.tok, .tokcell'), "
                                        "function (t) { return t.textContent; })")
        assert len(tokens) > 40 and all(t.strip() for t in tokens), tokens  # the piece of text and the logit lens
    finally:
        browser.quit()


def stress_page():
    """A page with what broke the layout: long labels on tiny funnel bars, an example that is one
    unbroken run of characters, white-space tokens, a wide table, MFU close to 1, seconds to 1,234.5."""
    from lmforge.report.model import Chart, Page, Section

    steps = list(range(0, 201, 10))
    seconds = [1234.5 * i / 20 for i in range(21)]
    charts = [Chart("mfu", "MFU", "fraction of peak", [{"name": "mfu", "steps": steps, "seconds": seconds,
                                                         "values": [0.9 + 0.09 * (i % 3) / 2 for i in steps],
                                                         "dashed": False}], (0.0, 1.0)),
              Chart("loss", "Loss", "nats per token", [{"name": "train loss", "steps": steps, "seconds": seconds,
                                                        "values": [7.9146 - 0.0123 * i for i in steps], "dashed": False}]),
              Chart("lr", "Learning rate", "lr", [{"name": "lr", "steps": steps, "seconds": seconds,
                                                   "values": [8.941e-4 + 1e-5 * i for i in steps], "dashed": False}]),
              Chart("beyond", "A share measured above its bound", "fraction", [
                  {"name": "share", "steps": steps, "seconds": seconds, "values": [0.95 + i / 2000 for i in steps],
                   "dashed": False}], (0.0, 1.0))]
    funnel = [("documents in", 100_000), ("removed by fineweb:duplicate_line_chars", 3),
              ("removed by gopher_repetition:duplicate_5_grams", 1), ("kept", 99_996)]
    wide = tuple(f"position {i}" for i in range(14))
    return Page("Run with-a-rather-long-name-that-does-not-break-anywhere-at-all-ever", "How this model was made", [
        Section("The corpus", "Why.", [("funnel", funnel),
                                       ("table", ("reason", "documents", "example"),
                                        [("fineweb:duplicate_line_chars", "3", "x" * 240 + " | " + "https://example.com/" + "a" * 200)]),
                                       ("table", None, [("vocabulary", "512 tokens"), ("val split", "3,687 tokens")]),
                                       ("table", ("layer",) + wide, [("0",) + wide])]),
        Section("Tokens", "Why.", [("tokens", [" ", "\n", "\n\n", "\t", " the", "a\r\n"])]),
        Section("Training", "Why.", [("chart", c) for c in charts])])


def test_a_page_of_long_labels_odd_tokens_and_a_busy_mfu_fits_both_widths(tmp_path):
    from lmforge.report.render import render_html

    page = tmp_path / "stress.html"
    page.write_text(render_html(stress_page()))
    browser = _browser()
    try:
        ticks = check_layout(browser, page.as_uri(), tmp_path, "stress")
        assert max(float(v) for v in ticks["mfu"]["y"]) <= 1  # the axis of a share stops at 1
        assert max(float(v) for v in ticks["beyond"]["y"]) > 1  # ... unless a value passed it: never hidden
        assert float(ticks["mfu"]["x"][-1]) > 1000  # on the wall-clock axis, its last label drawn whole
        assert empty_header_rows(browser) == 0
        tokens = browser.execute_script("return [].map.call(document.querySelectorAll('.tok'), function (t) { return t.textContent; })")
        assert tokens == ["␣", "↵", "↵↵", "⇥", "␣the", "a\\r↵"]
    finally:
        browser.quit()


def test_round_ticks_tells_round_from_quartered():
    assert round_ticks(["0", "50", "100", "150", "200"]) is None
    assert round_ticks(["0.0008", "0.0010", "0.0012"]) is None
    assert round_ticks(["2.0e+4", "4.0e+4", "6.0e+4"]) is None
    assert round_ticks(["7.9146", "82.5", "155", "227.5"]) is not None  # main's quarters
    assert round_ticks(["8.941e-4", "0.00165"]) is not None  # two notations
    assert round_ticks(["0", "30", "60"]) is not None  # a step of 3


def test_a_masked_runs_page_tells_its_own_figures_in_its_own_words(tiny_run, tmp_path):
    """Issue 28: a masked run's page had no masked-token accuracy, said the model learns so "the next
    token gets a higher probability" and called its masked loss bits per byte, which does not compare
    with a causal run's. Its MFU (issue 24: the head rows that ran) stays within [0, 1]."""
    from lmforge.training.trainer import train

    out = tmp_path / "masked"
    cfg = load_config("tiny", overrides=tiny_overrides(**{"train.objective": "masked", "train.max_steps": 20,
                                                          "train.eval_interval": 10}) + [f"run.out={out}"])
    said: list[str] = []
    summary = train(cfg, data=[str(tiny_run.tokens_dir)], log=said.append)
    assert summary["objective"] == "masked"
    # what train says of it too: its accuracy beside its loss, never a bits per byte
    assert not [line for line in said if "bits/byte" in line or "bits per byte" in line]
    assert [line for line in said if "train: done" in line and "masked-token accuracy" in line]
    assert [line for line in said if line.startswith("step 10: masked-token loss")]
    page = report(out).read_text()
    training = page[page.index("<h2>Training</h2>"):page.index("<h2>Results</h2>")]
    results = page[page.index("<h2>Results</h2>"):]
    assert "next token" not in training and "hidden tokens a higher probability" in training
    assert f"{summary['val_accuracy']:.3f} of {summary['val_tokens']:,} hidden tokens" in results
    assert "<td>masked-token loss</td>" in results
    assert not re.search(r"<td>(bits per byte|perplexity|validation loss)</td>", page)
    data = json.loads(page[page.index('id="report-data">') + len('id="report-data">'):].split("</script>")[0])
    assert data["charts"]["val_accuracy"]["series"][0]["values"]  # the accuracy at each evaluation, drawn
    assert data["charts"]["mfu"]["y_bounds"] == [0.0, 1.0]
    assert all(0 < v <= 1 for v in data["charts"]["mfu"]["series"][0]["values"])
    md = report(out, fmt="md").read_text()
    assert "- masked-token accuracy: " in md and "- bits per byte" not in md


def test_a_sweeps_page_is_titled_for_a_sweep_and_fits_both_widths(tmp_path):
    import itertools

    from lmforge import scaling

    rows = ["params,tokens,loss"] + [f"{n:.0f},{d:.0f},{1.8 + 400 / n ** 0.34 + 2000 / d ** 0.37:.6f}"
                                     for n, d in itertools.product([1e5, 3e5, 1e6, 3e6], [1e6, 3e6, 1e7])]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    scaling.fit(tmp_path / "points.csv", bootstrap=2, out=tmp_path / "sweep", form="kaplan")
    page = report(tmp_path / "sweep").read_text()
    assert ("fits L(N, D) = E + ((A / N^alpha)^(1/beta) + (B / D^beta)^(1/beta))^beta to their final losses "
            "(Kaplan et al.&#x27;s form, as asked)") in page
    assert "<h1>Sweep sweep</h1>" in page and "language model was made" not in page
    assert "What a sweep of small models says about bigger ones" in page
    browser = _browser()
    try:
        check_layout(browser, (tmp_path / "sweep" / "report.html").as_uri(), tmp_path, "sweep")
        assert empty_header_rows(browser) == 0
    finally:
        browser.quit()


def test_the_report_package_imports_one_way():
    """Issue 25: report.py and report_render.py imported each other (the page model lived in the
    reader). Now model <- read, model <- render, and only the package joins the two."""
    import ast

    import lmforge.report

    root = Path(lmforge.report.__file__).parent

    def imports(name: str) -> set[str]:
        tree = ast.parse((root / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
               {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert not {m for m in imports("model") if m.startswith("lmforge")}
    assert "lmforge.report.render" not in imports("read") and "lmforge.report.read" not in imports("render")
    assert not {m for m in imports("read") | imports("render") if m in ("lmforge.report", "lmforge.report.__init__")}
