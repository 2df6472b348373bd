"""Folders written by an earlier lmforge (main 18fc753, tests/data/folders/README.md) read unchanged:
a run, its prepared and tokenized folders, and a sweep. The readers are lmforge/folders/ (no torch)
and open_run (the model)."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import figures
from lmforge.data.sources import list_inputs
from lmforge.folders.prepared import PreparedDir, read_jsonl_gz
from lmforge.folders.run import RunDir, Summary, TrainRecord, ValRecord
from lmforge.folders.sweep import RUN_TOKENS, SweepDir, fit_path
from lmforge.folders.tokenized import load_shards, read_meta, train_tokens

OLD = Path(__file__).parent / "data" / "folders"


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy: reading must not need to write, and a test must not change the kept folders."""
    shutil.copytree(OLD, tmp_path / "old")
    return tmp_path / "old"


def test_an_old_run_folder_reads(old):
    run = RunDir(old / "run").require()
    assert run.config.model.n_embd == 16 and run.config.model.n_layer == 1 and run.objective == "causal"
    assert run.tokens_dir == old / "run" / "tokens"
    summary = run.summary()
    assert summary.complete and run.is_complete
    assert (summary.steps, summary.tokens_trained, summary.params, summary.val_tokens) == (8, 512, 8896, 512)
    assert summary.val_loss == pytest.approx(5.62838876247406) and summary.unigram_val_loss == pytest.approx(4.1234626)
    assert summary.param_groups[0]["optimizer"] == "adamw" and summary.steps_by_threads == {"1": 8}
    assert summary.samples == ["def  e\ufffd\ufffd"] and summary.cloze["tasks"] == 196
    assert set(summary.neighbours) == {"object", "value"} and summary.map is None and summary.extra == {}
    records = run.metrics()
    assert [r.step for r in records if isinstance(r, TrainRecord)] == [2, 4, 6, 8]
    assert [r.val_loss for r in records if isinstance(r, ValRecord)][-1] == summary.val_loss
    assert records[0].grad_norm == 0.84268 and records[0].threads == 1
    assert run.steps_done() == 8 and run.has_validation_at(8) and not run.has_validation_at(6)
    ckpt = run.latest_checkpoint()
    assert ckpt.step == 8 and ckpt.problem() is None and ckpt.objective() == "causal"
    assert run.tokenizer().get_vocab_size() == 300


def test_an_old_summary_is_written_back_byte_for_byte(old):
    """The record keeps every key, in order: rewriting an old summary.json changes nothing."""
    for path in (old / "run" / "summary.json", *sorted((old / "sweep" / "runs").glob("*/summary.json"))):
        text = path.read_text()
        assert figures.dumps(Summary.from_dict(json.loads(text)).to_dict(), indent=2) == text


def test_old_metrics_are_written_back_byte_for_byte(old):
    """Resuming truncates metrics.jsonl through the records: the lines it keeps come out as they were."""
    for folder in (old / "run", *sorted((old / "sweep" / "runs").iterdir())):
        run = RunDir(folder)
        text = run.metrics_path.read_text()
        run.truncate_metrics(run.steps_done())
        assert run.metrics_path.read_text() == text


def test_a_metrics_line_without_the_later_fields_keeps_without_them(tmp_path):
    run = RunDir(tmp_path)
    lines = ['{"step": 5, "loss": 3.5, "lr": 0.001}', '{"step": 5, "val_loss": 3.6, "mystery": 1}', '{"step": 10, "loss": 3.1}']
    run.metrics_path.write_text("\n".join(lines) + "\n")
    train, val, later = run.metrics()
    assert isinstance(train, TrainRecord) and train.loss == 3.5 and train.mfu is None and train.skipped_steps == 0
    assert isinstance(val, ValRecord) and val.val_loss == 3.6 and val.extra == {"mystery": 1}
    run.truncate_metrics(5)
    assert run.metrics_path.read_text() == "\n".join(lines[:2]) + "\n"


def test_summary_keys_a_reader_does_not_know_survive_a_rewrite(tmp_path):
    run = RunDir(tmp_path)
    run.summary_path.write_text(json.dumps({"complete": True, "val_loss": 2.5, "from_a_newer_lmforge": [1, 2]}))
    summary = run.summary()
    assert summary.complete and summary.val_loss == 2.5 and summary.mfu is None  # absent keys take their defaults
    summary.samples = ["x"]
    run.write_summary(summary)
    again = json.loads(run.summary_path.read_text())
    assert again["from_a_newer_lmforge"] == [1, 2] and again["samples"] == ["x"] and "map" not in again


def test_an_old_run_opens_its_model(old):
    from lmforge.open_run import open_run

    opened = open_run(RunDir(old / "run"))
    assert opened.causal and opened.checkpoint.step == 8
    assert sum(p.numel() for p in opened.model.parameters()) == opened.run.summary().params


def test_an_old_prepared_folder_reads(old, tmp_path):
    folder = PreparedDir(old / "run" / "prepared")
    assert folder.is_own()
    report = folder.report()
    assert (report.documents_in, report.documents_kept, report.documents_rejected) == (10, 8, 2)
    assert report.rejected_by_reason == {"exact_duplicate": 1, "gopher_quality:few_words": 1}
    assert report.examples["exact_duplicate"] == ["src/dup.txt"] and report.fingerprint == "ff1585c03bd12365"
    kept = [r for path in folder.clean_files() for r in read_jsonl_gz(path)]
    assert len(kept) == 8 and all(r["text"] for r in kept)
    rejected = {r["reason"]: r for path in folder.rejected_files() for r in read_jsonl_gz(path)}
    assert set(rejected) == set(report.rejected_by_reason) and rejected["gopher_quality:few_words"]["text"] == "hi"
    # named as a source, a prepared folder gives its clean/ only
    assert list(list_inputs([str(folder.path)], []).all_files()) == folder.clean_files()
    # written back through the record: the same bytes (the fingerprint last, as the completion marker)
    folder.write_report(report, tmp_path)
    assert (tmp_path / "report.json").read_text() == folder.report_path.read_text()


def test_an_old_tokenized_folder_reads(old):
    folder = old / "run" / "tokens"
    meta = read_meta(folder)  # checked against its shards and tokenizer.json
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16" and meta["eot_id"] == 0
    assert [sum(map(len, load_shards(folder, split))) for split in ("train", "val")] == [9438, 1196]
    assert train_tokens(folder) == 9438


def test_an_old_sweep_reads(old):
    from lmforge.scaling.law import read_fit
    from lmforge.scaling.runner import collect_points, run_config, sweep_status

    sweep = SweepDir(old / "sweep")
    cfg, data = sweep.load()
    assert [r["name"] for r in data["runs"]] == ["width008-c0", "width016-c0"]
    rows = sweep_status(sweep.path)
    assert [(r["state"], r["step"]) for r in rows] == [("done", 137), ("done", 64)]
    assert rows[0]["val_loss"] == pytest.approx(4.187213897705078)
    points, excluded = collect_points(sweep.path)
    assert [(p["name"], p["params"], p["tokens"]) for p in points] == [("width008-c0", 4192, 17536),
                                                                         ("width016-c0", 8896, 8192)]
    assert excluded == []
    # each run trains on the sweep's tokens, by a path relative to its folder
    rcfg = run_config(cfg, sweep.path, data["runs"][1])
    run = RunDir(rcfg.run.out)
    assert rcfg.data.tokenized == RUN_TOKENS and run.config.data.tokenized == RUN_TOKENS
    assert run.tokens_dir.resolve() == sweep.tokens_dir.resolve() and read_meta(run.tokens_dir)["vocab_size"] == 300
    fit = read_fit(fit_path(sweep.path))
    assert fit["form"] == "additive" and fit["alpha"] == pytest.approx(0.3505146705386971)
    assert sweep.verified() == [] and sweep.points_path.is_file()


def test_the_folders_load_no_torch():
    code = ("import sys; import lmforge.folders.run, lmforge.folders.prepared, lmforge.folders.tokenized, "
            "lmforge.folders.sweep; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tokenizers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ast.literal_eval(out.stdout.strip()) == []
