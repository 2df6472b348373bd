"""lmforge report: the page of a real tiny run, its sections, its escaping, its Markdown twin, and the
page itself in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.job import run as run_job
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
    assert re.search(r"tokenizer learned from.*prose [\d,]+ of [\d,]+ \([\d.]+ of [\d.]+ MB\)", page)  # prepare's kinds, read from clean/
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


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test extra: pip install -e '.[test]'")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


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
