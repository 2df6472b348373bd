"""Issue 23, "Nothing outside the folder you named": every writer writes only inside folders lmforge
made or that are empty, replaces only its own files, never writes through a symbolic link, and says
in one line (exit 2) when the disk is full or the folder is wrong. Real `python -m lmforge`
subprocesses on real files; each test reproduces what the issue's probe did."""

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from conftest import tiny_overrides
from lmforge.errors import LmforgeError
from lmforge.files import OutputKind, append_text, atomic_write_text, claim_output, install
from lmforge.folders.run import RunDir
from test_faults import ENV, lmforge, one_line_error, sets

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def file_size_limited(limit: int):
    """A child whose files cannot grow past `limit` bytes: a write beyond fails with EFBIG, as on a full disk."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the failed write raises instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


def lmforge_limited(limit: int, *args):
    return subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=300, preexec_fn=file_size_limited(limit))


def snapshot(folder):
    """Every file under `folder` with its bytes: what 'nothing lost' compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def readable_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokens_dir):
    """A tiny trained run (CLI), copied afresh by `run_copy` for each test that changes it."""
    run = tmp_path_factory.mktemp("writers") / "run"
    r = lmforge("train", "--data", tokens_dir, "--out", run, *sets(**{"train.max_steps": 10}))
    assert r.returncode == 0, r.stderr
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    return run


# ---------------------------------------------------------------- prepare

def test_prepare_rerun_with_other_settings_keeps_the_users_files(tmp_path, corpus_dir):
    out = tmp_path / "prep"
    assert lmforge("prepare", corpus_dir, "--out", out, "--workers", 1, "--no-progress").returncode == 0
    (out / "notes.txt").write_text("mine")
    first = json.loads((out / "report.json").read_text())["fingerprint"]
    r = lmforge("prepare", corpus_dir, "--out", out, "--workers", 1, "--no-progress",
                "--set", "prepare.near_dedup_threshold=0.7")
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["fingerprint"] != first
    assert sorted(p.name for p in out.iterdir()) == ["clean", "notes.txt", "rejected", "report.json"]  # work/ goes once the report is written
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prep.lock", "prep"]  # the building sibling is gone


def test_prepare_into_its_own_source_folder_is_refused(tmp_path, corpus_dir):
    sources = tmp_path / "sources"
    shutil.copytree(corpus_dir, sources)
    before = snapshot(sources)
    one_line_error(lmforge("prepare", sources, "--out", sources, "--workers", 1), "is the source folder")
    # a new folder inside the sources is allowed: the listing leaves it out (tests/test_inputs.py)
    assert snapshot(sources) == before


def test_prepare_into_a_users_folder_is_refused_and_force_writes_beside_never_over(tmp_path, corpus_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(lmforge("prepare", corpus_dir, "--out", out, "--workers", 1), "is not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    r = lmforge("prepare", corpus_dir, "--out", out, "--workers", 1, "--no-progress", "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.json").is_file()

    clash = tmp_path / "clash"
    (clash / "clean").mkdir(parents=True)
    (clash / "clean" / "keep.txt").write_text("mine")
    one_line_error(lmforge("prepare", corpus_dir, "--out", clash, "--workers", 1, "--force"), "clean", "is not lmforge's")
    assert (clash / "clean" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- tokenize and train's RUN/tokens

def test_tokenize_into_its_own_source_folder_is_refused(tmp_path, corpus_dir):
    sources = tmp_path / "sources"
    shutil.copytree(corpus_dir, sources)
    before = snapshot(sources)
    one_line_error(lmforge("tokenize", sources, "--out", sources), "is the source folder")
    assert snapshot(sources) == before


def test_tokenize_never_wipes_a_users_folder_and_replaces_only_its_own_files(tmp_path, corpus_dir):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(lmforge("tokenize", corpus_dir, "--out", out), "not empty", "tokenized folder")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    own = tmp_path / "own"
    assert lmforge("tokenize", corpus_dir, "--out", own, *sets()).returncode == 0
    (own / "notes.txt").write_text("mine")
    r = lmforge("tokenize", corpus_dir, "--out", own, *sets(**{"tokenizer.vocab_size": 600}))
    assert r.returncode == 0, r.stderr
    assert (own / "notes.txt").read_text() == "mine"
    assert json.loads((own / "meta.json").read_text())["vocab_size"] == 600
    # the building sibling is gone; the lock beside each folder is lmforge's (it outlives a rebuild)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".own.lock", "own", "tok"]


def test_train_on_raw_sources_never_wipes_a_users_run_tokens_folder(tmp_path, corpus_dir):
    run = tmp_path / "run"
    (run / "tokens").mkdir(parents=True)
    (run / "tokens" / "data.bin").write_bytes(b"mine")
    one_line_error(lmforge("train", "--data", corpus_dir, "--out", run, *sets()), "tokens", "not empty")
    assert (run / "tokens" / "data.bin").read_bytes() == b"mine"


def test_train_into_a_users_folder_is_refused_and_its_config_yaml_kept(tmp_path, tokens_dir):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: settings\n")
    one_line_error(lmforge("train", "--data", tokens_dir, "--out", mine, *sets()), "not empty", "no lmforge run")
    assert snapshot(mine) == {"config.yaml": b"my: settings\n"}


# ---------------------------------------------------------------- export

def test_export_into_a_run_folder_is_refused_and_the_weights_are_untouched(run_copy):
    ckpt = RunDir(run_copy).latest_checkpoint()
    before = snapshot(run_copy)
    one_line_error(lmforge("export", run_copy, ckpt.path), "run folder")
    one_line_error(lmforge("export", run_copy, run_copy), "run folder")
    assert snapshot(run_copy) == before


def test_export_never_overwrites_or_lists_a_users_files(trained, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    one_line_error(lmforge("export", trained, out), "not empty", "--force")
    one_line_error(lmforge("export", trained, out, "--force"), "config.json", "is not lmforge's")
    assert (out / "config.json").read_text() == '{"mine": 1}'

    (out / "config.json").rename(out / "README.md")
    r = lmforge("export", trained, out, "--force", "--json")
    assert r.returncode == 0, r.stderr
    written = json.loads(r.stdout)["files"]
    assert "README.md" not in written and (out / "README.md").read_text() == '{"mine": 1}'
    assert sorted(written) == sorted(p.name for p in out.iterdir() if p.name != "README.md")
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == readable_mode()
    r = lmforge("export", trained, out)  # an earlier export is lmforge's own: replaced without --force
    assert r.returncode == 0, r.stderr
    assert (out / "README.md").is_file()


def test_export_never_writes_through_a_link_in_its_target(trained, tmp_path):
    out = tmp_path / "hf"
    assert lmforge("export", trained, out).returncode == 0
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    for name in ("tokenizer.json", "config.json"):
        (out / name).unlink()
        (out / name).symlink_to(mine)
    r = lmforge("export", trained, out)
    assert r.returncode == 0, r.stderr
    assert mine.read_text() == "mine"
    assert not any(p.is_symlink() for p in out.iterdir())


def test_export_onto_a_file_is_one_line(trained, tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"mine")
    one_line_error(lmforge("export", trained, target), "is a file")
    one_line_error(lmforge("export", trained, target / "hf"), "is a file")
    assert target.read_bytes() == b"mine"


def test_checkpoint_weights_are_as_readable_as_every_other_file(trained):
    ckpt = RunDir(trained).latest_checkpoint()
    for path in (ckpt.model_file, ckpt.state_tensors, ckpt.state_json):
        assert stat.S_IMODE(path.stat().st_mode) == readable_mode(), path


def test_inspect_out_never_replaces_a_users_file_of_the_same_name(trained, tmp_path):
    """The probe's `inspect map --out FOLDER` replaced the user's map-static.png, exit 0."""
    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "map-static.png").write_bytes(b"mine")
    one_line_error(lmforge("inspect", "map", trained, "--top", 5, "--out", mine), "map-static.png", "is in the way")
    assert [p.name for p in mine.iterdir()] == ["map-static.png"] and (mine / "map-static.png").read_bytes() == b"mine"
    ours = tmp_path / "ours"
    for _ in range(2):  # new, then lmforge's own: written, then replaced
        assert lmforge("inspect", "map", trained, "--top", 5, "--out", ours).returncode == 0
    assert (ours / "map-static.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- symbolic links

def test_report_replaces_a_linked_report_html_never_writing_through_it(run_copy, tmp_path):
    target = tmp_path / "elsewhere.html"
    target.write_text("mine")
    (run_copy / "report.html").symlink_to(target)
    assert lmforge("report", run_copy).returncode == 0
    assert target.read_text() == "mine"
    assert not (run_copy / "report.html").is_symlink() and "<html" in (run_copy / "report.html").read_text()


def test_inspect_refuses_a_linked_inspect_folder(run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_copy / "inspect").symlink_to(elsewhere)
    one_line_error(lmforge("inspect", "map", run_copy, "--top", 5), "symbolic link")
    assert not any(elsewhere.iterdir())


def test_report_embeds_no_picture_a_link_points_to(run_copy, tmp_path):
    secret = tmp_path / "secret.png"  # a real PNG elsewhere: the link, not the content, is what is refused
    secret.write_bytes(PNG + b"SECRET-BYTES")
    (run_copy / "inspect").mkdir(exist_ok=True)
    (run_copy / "inspect" / "map-static.png").symlink_to(secret)
    assert lmforge("report", run_copy, "--format", "md").returncode == 0
    assert all(b"SECRET-BYTES" not in p.read_bytes() for p in (run_copy / "report-files").iterdir())
    assert "map of word vectors" not in (run_copy / "report.md").read_text()
    assert lmforge("report", run_copy).returncode == 0
    import base64
    assert base64.b64encode(PNG + b"SECRET-BYTES")[12:40].decode() not in (run_copy / "report.html").read_text()


def test_resume_never_writes_through_a_linked_metrics_file(tmp_path, tokens_dir):
    run = tmp_path / "run"
    args = ["train", "--data", tokens_dir, "--out", run, *sets(**{"train.checkpoint_interval": 4,
                                                                   "train.max_steps": 8})]
    assert lmforge(*args, "--stop-at", 4).returncode == 0
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text('{"mine": 1}\n')
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(elsewhere)
    r = lmforge(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert elsewhere.read_text() == '{"mine": 1}\n'
    assert not (run / "metrics.jsonl").is_symlink() and '"val_loss"' in (run / "metrics.jsonl").read_text()


def test_a_linked_lock_file_is_refused_and_its_target_kept(tmp_path, corpus_dir):
    target = tmp_path / "mine.txt"
    target.write_text("mine")
    (tmp_path / ".prep.lock").symlink_to(target)
    one_line_error(lmforge("prepare", corpus_dir, "--out", tmp_path / "prep", "--workers", 1), "symbolic link")
    assert target.read_text() == "mine"


# ---------------------------------------------------------------- a full disk

@pytest.mark.parametrize("stage", ["prepare", "tokenize"])
def test_a_full_disk_is_one_line_and_the_earlier_output_stays(stage, tmp_path, corpus_dir):
    out = tmp_path / "out"
    extra = ["--workers", 1, "--no-progress"] if stage == "prepare" else []
    assert lmforge(stage, corpus_dir, "--out", out, *extra, *sets()).returncode == 0
    before = snapshot(out)
    other = sets(**{"prepare.near_dedup_threshold": 0.7} if stage == "prepare" else {"tokenizer.vocab_size": 600})
    r = lmforge_limited(2000, stage, corpus_dir, "--out", out, *extra, *other)
    one_line_error(r, f"{stage}: cannot write", "File too large", "free disk space")
    assert snapshot(out) == before


def test_export_report_and_inspect_on_a_full_disk_are_one_line(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    hf = tmp_path / "hf"
    assert lmforge("export", run, hf).returncode == 0
    before = snapshot(hf)
    one_line_error(lmforge_limited(4096, "export", run, hf), "export: cannot write", "free disk space")
    assert snapshot(hf) == before and sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]
    one_line_error(lmforge_limited(4096, "inspect", "map", run, "--top", 5), "inspect: cannot write", "free disk space")
    one_line_error(lmforge_limited(4096, "report", run), "cannot write", "free disk space")


# ---------------------------------------------------------------- the helpers themselves

KIND = OutputKind("test folder", ("data", "marker.json"), "marker.json", lambda f: (f / "marker.json").is_file())


def test_atomic_write_replaces_a_link_and_append_refuses_one(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("mine")
    (tmp_path / "a.txt").symlink_to(target)
    atomic_write_text(tmp_path / "a.txt", "lmforge's")
    assert target.read_text() == "mine" and (tmp_path / "a.txt").read_text() == "lmforge's"
    (tmp_path / "b.jsonl").symlink_to(target)
    with pytest.raises(LmforgeError, match="symbolic link"):
        append_text(tmp_path / "b.jsonl", "{}\n")
    assert target.read_text() == "mine"


def test_install_replaces_only_the_kinds_own_entries(tmp_path):
    folder, build = tmp_path / "out", tmp_path / ".out.building"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "old").write_text("old")
    (folder / "marker.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    assert claim_output(folder, KIND)
    (build / "data").mkdir(parents=True)
    (build / "data" / "new").write_text("new")
    (build / "marker.json").write_text('{"new": 1}')
    install(build, folder, KIND)
    assert snapshot(folder) == {"data/new": b"new", "marker.json": b'{"new": 1}', "notes.txt": b"mine"}
    assert not build.exists()


def test_claim_refuses_a_link_and_a_users_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(LmforgeError, match="symbolic link"):
        claim_output(tmp_path / "link", KIND)
    assert not claim_output(real, KIND)  # empty: fine
    (real / "notes.txt").write_text("mine")
    with pytest.raises(LmforgeError, match="not empty"):
        claim_output(real, KIND)
    assert not claim_output(real, KIND, force=True)


def test_a_run_whose_files_are_another_users_is_one_line(run_copy):
    """The probe's "run made by another user": summary.json and metrics.jsonl unreadable to the reader."""
    from test_inputs import unprivileged

    for name in ("summary.json", "metrics.jsonl"):
        (run_copy / name).chmod(0)
    r = subprocess.run([*unprivileged(), sys.executable, "-m", "lmforge", "report", str(run_copy)],
                       capture_output=True, text=True, env=ENV, timeout=300)
    one_line_error(r, "permission denied")
