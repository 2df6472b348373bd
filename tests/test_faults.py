"""Issue 15's reproductions: two writers, a diverging last step, damaged checkpoints. Real
subprocesses and real files; each test reproduces what a user did and checks what they got."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.locks import FolderInUse, FolderLock
from lmforge.folders.run import RunDir, TrainRecord, ValRecord
from lmforge.training.trainer import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def lmforge(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300, **kw)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "lmforge", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def sets(**extra):
    return [a for o in tiny_overrides(**extra) for a in ("--set", o)]


def one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("lmforge: warning:")]
    assert len(lines) == 1 and lines[0].startswith("lmforge: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- one writer per folder

def test_second_train_on_the_same_folder_is_refused_and_the_first_is_intact(tmp_path, tokens_dir):
    import time

    run = tmp_path / "run"
    steps = 1500  # long enough that the first still trains when the second, started once it has begun, asks
    args = ["train", "--data", tokens_dir, "--out", run, "--max-steps", steps,
            *sets(**{"train.checkpoint_interval": 200, "train.log_interval": 1})]
    first = start(*args)
    metrics = run / "metrics.jsonl"
    while not (metrics.is_file() and '"loss"' in metrics.read_text()):  # it holds the lock and trains
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    second = start(*args)
    out = [p.communicate(timeout=300) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 2), out
    loser = out[1]
    assert "Traceback" not in loser[1] and "is in use by pid" in loser[1], loser[1]
    folder = RunDir(run)
    losses = [r for r in folder.metrics() if isinstance(r, TrainRecord)]
    assert [r.step for r in losses] == list(range(1, steps + 1))  # one run's records, once each
    assert folder.summary().complete and folder.summary().steps == steps
    assert folder.latest_checkpoint().step == steps
    assert not list(folder.checkpoints_dir.glob("*.tmp"))


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    lock_file = tmp_path / "run" / ".lock"
    code = f"from lmforge.locks import FolderLock; FolderLock({str(lock_file)!r}, 'x').acquire(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    assert json.loads(lock_file.read_text())["pid"]  # its holder's name is still there, the flock is not
    lock = FolderLock(lock_file, "run folder x").acquire()
    try:
        assert lock.taken_over and lock.taken_over["pid"] != os.getpid()
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_live_holder_is_named(tmp_path):
    lock_file = tmp_path / ".prep.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"from lmforge.locks import FolderLock; import sys, time; "
                               f"FolderLock({str(lock_file)!r}, 'x').acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"prepare output folder p is in use by pid {holder.pid} on "):
            FolderLock(lock_file, "prepare output folder p").acquire()
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(lock_file, "prepare output folder p"):  # its death freed the lock
        pass


def test_second_prepare_on_the_same_folder_is_refused(tmp_path, corpus_dir):
    out = tmp_path / "prep"
    with FolderLock(tmp_path / ".prep.lock", "held by this test"):
        pass  # the lock file the pipeline uses, proven free; now hold it from another process
    holder = subprocess.Popen([sys.executable, "-c", "from lmforge.locks import FolderLock; import time; "
                               f"FolderLock({str(tmp_path / '.prep.lock')!r}, 'x').acquire(); print(1, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        holder.stdout.readline()
        r = lmforge("prepare", corpus_dir, "--out", out)
        one_line_error(r, "prepare output folder", "in use by pid")
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- every update checked

def test_a_run_that_diverges_on_its_last_step_fails_and_saves_no_nan(tmp_path, tokens_dir):
    """The issue's reproduction: a non-finite step never reaches the weights (it is skipped on the
    device); the run either stops with one line or finishes and says how many steps it skipped."""
    run = tmp_path / "run"
    r = lmforge("train", "--data", tokens_dir, "--out", run, "--max-steps", 3,
                *sets(**{"train.lr": 1e9, "train.log_interval": 1}))
    folder = RunDir(run)
    if r.returncode == 0:
        summary = folder.summary()
        assert summary.skipped_steps >= 1 and "skipped" in r.stdout
        assert all(v is None or math.isfinite(v) for v in summary.to_dict().values() if isinstance(v, float))
        assert any(isinstance(rec, TrainRecord) and rec.skipped_steps for rec in folder.metrics())
    else:
        one_line_error(r, "diverged")
        assert folder.summary() is None
    for ckpt in folder.checkpoints():
        for tensor in load_file(str(ckpt.model_file)).values():
            assert torch.isfinite(tensor).all()
    assert "NaN" not in (folder.metrics_path.read_text() if folder.metrics_path.is_file() else "")


def test_an_infinite_gradient_never_reaches_the_weights():
    from lmforge.config import load_config
    from lmforge.model import GPT, GPTConfig
    from lmforge.training.optim import build_optimizers
    from lmforge.training.trainer import NonFiniteGuard, apply_update

    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizers = build_optimizers(model, load_config("tiny").train)  # the optimizers a run uses
    guard = NonFiniteGuard(torch.device("cpu"))
    for clip in (1.0, 0.0):  # clipping an infinite norm would write NaN
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        next(model.parameters()).grad[0] = float("inf")
        apply_update(model, optimizers, torch.tensor(2.0), clip, guard)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert guard.check(2) == 2  # both skipped and counted, not stepped


def test_non_finite_weights_are_never_checkpointed(tiny_config, tokens_dir):
    from lmforge.model import GPT, GPTConfig
    from lmforge.training.checkpoint import save_checkpoint

    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8))
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    run = RunDir(tiny_config().run.out)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        save_checkpoint(run, model, {"step": 5, "rng": {}, "optimizers": [], "tokens": 0, "loader": {},
                                     "train_time_s": 0.0, "schedule_steps": 5}, {}, keep=2)
    assert not run.checkpoints_dir.exists() or not any(run.checkpoints_dir.iterdir())


# ---------------------------------------------------------------- checkpoints verified

@pytest.fixture
def two_checkpoints(tmp_path, tokens_dir):
    """A run stopped at step 14 with checkpoints at 7 and 14, and the uninterrupted run's weights."""
    def cfg(out):
        from lmforge.config import load_config

        return load_config("tiny", overrides=tiny_overrides(**{"train.checkpoint_interval": 7, "train.max_steps": 21})
                           + [f"run.out={out}"])
    quiet = lambda *_: None  # noqa: E731
    train(cfg(tmp_path / "whole"), data=[str(tokens_dir)], log=quiet)
    train(cfg(tmp_path / "run"), data=[str(tokens_dir)], stop_at=14, log=quiet)
    run = RunDir(tmp_path / "run")
    assert [c.step for c in run.checkpoints()] == [7, 14]
    return run, cfg, RunDir(tmp_path / "whole"), tokens_dir


def test_a_truncated_newest_checkpoint_is_reported_and_the_previous_one_resumed(two_checkpoints):
    run, cfg, whole, tokens_dir = two_checkpoints
    newest = run.checkpoint(14)
    data = newest.model_file.read_bytes()
    newest.model_file.write_bytes(data[: len(data) // 2])
    warnings = []
    assert run.latest_checkpoint(report=warnings.append).step == 7
    assert "checksum" in warnings[0] and "step-000014" in warnings[0]
    r = lmforge("eval", run)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "step-000014 is unusable" in r.stderr
    train(cfg(run.path), data=[str(tokens_dir)], resume=True, log=lambda *_: None)
    final = load_file(str(run.latest_checkpoint().model_file))
    expected = load_file(str(whole.latest_checkpoint().model_file))
    assert all(torch.equal(final[k], expected[k]) for k in expected)  # resumed from 7, bit for bit


def test_a_deleted_state_json_is_no_traceback(two_checkpoints):
    run, cfg, whole, tokens_dir = two_checkpoints
    run.checkpoint(14).state_json.unlink()
    r = lmforge("train", "--data", tokens_dir, "--out", run, "--resume",
                *sets(**{"train.checkpoint_interval": 7, "train.max_steps": 21}))
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "step-000007" in r.stdout and "state.json is missing" in r.stderr


def test_old_checkpoints_are_deleted_only_after_the_new_one_verifies(two_checkpoints, monkeypatch):
    import lmforge.training.checkpoint as checkpoint

    run, cfg, whole, tokens_dir = two_checkpoints
    real = checkpoint.save_file

    def torn(tensors, path, metadata=None):  # the disk fills up in the middle of the next checkpoint
        real(tensors, path, metadata=metadata)
        if path.endswith("model.safetensors"):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", torn)
    with pytest.raises(LmforgeError, match="cannot write checkpoint .*No space left.*earlier checkpoints are intact"):
        train(cfg(run.path), data=[str(tokens_dir)], resume=True, log=lambda *_: None)
    assert [c.step for c in run.checkpoints()] == [7, 14]
    assert run.latest_checkpoint().step == 14 and not list(run.checkpoints_dir.glob("*.tmp"))


def test_disk_full_while_checkpointing_is_one_line(tmp_path, tokens_dir):
    run = tmp_path / "run"
    r = lmforge("train", "--data", tokens_dir, "--out", run, "--max-steps", 4,
                *sets(**{"train.checkpoint_interval": 2}))
    assert r.returncode == 0
    size = RunDir(run).checkpoint(4).model_file.stat().st_size
    shutil.rmtree(run)
    # a file-size limit below one checkpoint: the first checkpoint write fails
    r = subprocess.run(["bash", "-c", f"ulimit -f {size // 1024 // 2}; exec {sys.executable} -m lmforge "
                        + " ".join(map(str, ["train", "--data", tokens_dir, "--out", run, "--max-steps", 4,
                                             *sets(**{"train.checkpoint_interval": 2})]))],
                       capture_output=True, text=True, env=ENV, timeout=300)
    one_line_error(r, "cannot write checkpoint", "earlier checkpoints are intact")


def test_damaged_run_files_are_one_line_errors(two_checkpoints):
    run, *_ = two_checkpoints
    good = run.tokenizer_path.read_text()
    run.tokenizer_path.write_text(good[: len(good) // 3])
    for command in (["eval", run], ["generate", run, "The"]):
        one_line_error(lmforge(*command), "tokenizer", "damaged")
    run.tokenizer_path.write_text(good)
    from safetensors.torch import save_file

    for meta in ('{"vocab_size": 512, "n_layerz": 2}', "{not json"):
        for ckpt in run.checkpoints():  # metadata damaged and the checksums rewritten to match
            tensors = load_file(str(ckpt.model_file))
            save_file(tensors, str(ckpt.model_file), metadata={"lmforge_model": meta})
            info = ckpt.state()
            info["files"] = {}
            ckpt.state_json.write_text(json.dumps(info))
        for command in (["eval", run], ["generate", run, "The"]):
            one_line_error(lmforge(*command), "model metadata")


def test_a_kill_after_the_final_checkpoint_leaves_one_final_validation_line(tmp_path, tokens_dir):
    run = tmp_path / "run"
    args = ["train", "--data", tokens_dir, "--out", run, "--max-steps", 6, *sets(**{"train.log_interval": 1})]
    assert lmforge(*args).returncode == 0
    folder = RunDir(run)
    folder.summary_path.unlink()  # as if killed after the final validation line, before the summary
    r = lmforge(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert [r.step for r in folder.metrics() if isinstance(r, ValRecord)] == [6]
    assert folder.summary().complete


def test_a_cut_metrics_line_is_skipped_with_a_warning(tmp_path, capsys):
    folder = RunDir(tmp_path)
    folder.metrics_path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert [r.to_dict() for r in folder.metrics()] == [{"step": 1, "loss": 2.0}]
    assert "metrics.jsonl:2 is not JSON" in capsys.readouterr().err


# ---------------------------------------------------------------- user input: one line, exit 2

@pytest.mark.parametrize("args,words", [
    (["train", "--config", "/bin/ls"], ["/bin/ls", "not text"]),
    (["train", "--set", "train.seed=-1"], ["train.seed=-1"]),
    (["estimate", "--params", "7B", "--tokens", "1T", "--hardware-file", "/bin/ls"], ["--hardware-file"]),
    (["estimate", "--params", "7B", "--tokens", "1T", "--mfu", "0"], ["--mfu 0"]),
    (["estimate", "--params", "7B", "--tokens", "1T", "--price-per-hour=-5"], ["--price-per-hour -5"]),
    (["plan", "--budget", "100", "--pue", "0.5"], ["--pue 0.5"]),
    (["estimate", "kv-cache", "--layers", "2", "--width", "8190", "--heads", "7", "--kv-heads", "8"], ["--kv-heads 8"]),
    (["estimate", "--params", "7B", "--price-per-hour", "-", "5"], ["--price-per-hour"]),
    (["train", "--max-steps", "many"], ["--max-steps", "--help"]),
])
def test_bad_input_is_one_line(args, words):
    one_line_error(lmforge(*args), *words)


@pytest.mark.parametrize("yaml_text", ["train: 5\n", "train: 0\n", "model: [1, 2]\n"])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path, yaml_text):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(LmforgeError, match="must be a mapping"):
        from lmforge.config import load_config

        load_config("tiny", tmp_path / "c.yaml")


def test_an_empty_section_changes_nothing(tmp_path):
    from lmforge.config import load_config

    (tmp_path / "c.yaml").write_text("train:\nmodel:\n  n_layer: 3\n")
    cfg = load_config("tiny", tmp_path / "c.yaml")
    assert cfg.train == load_config("tiny").train and cfg.model.n_layer == 3


def test_a_context_that_cannot_fit_is_refused_before_training():
    from lmforge.model import GPTConfig
    from lmforge.training.trainer import check_memory

    mcfg = GPTConfig(vocab_size=4096, n_layer=4, n_head=4, n_embd=128, seq_len=100000)
    with pytest.raises(LmforgeError, match=r"model.seq_len=100000 with train.batch_size=16 needs about [\d,]+ GB"):
        check_memory(mcfg, 16, torch.device("cpu"))
    check_memory(GPTConfig(vocab_size=4096, seq_len=256), 16, torch.device("cpu"))  # the tiny preset fits


def test_garbage_zst_is_skipped_and_counted(tmp_path):
    sources = tmp_path / "sources"  # the output beside the sources, never inside them
    sources.mkdir()
    (sources / "good.txt").write_text("A sentence of ordinary text, long enough to tokenize. " * 20)
    (sources / "bad.txt.zst").write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(500))
    for command in (["tokenize", sources, "--out", tmp_path / "tok", *sets()],):
        r = lmforge(*command)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "1 unreadable or truncated files" in r.stdout + r.stderr


def test_latin1_text_is_read_not_called_binary(tmp_path):
    from lmforge.data.sources import SourceStats, iter_documents

    text = "Le café crème, déjà brûlé: à côté, où l'été naît. " * 40
    (tmp_path / "fr.txt").write_bytes(text.encode("latin-1"))
    (tmp_path / "noise.bin").write_bytes(bytes(range(1, 256)) * 40)
    stats = SourceStats()
    docs = list(iter_documents([str(tmp_path)], stats))
    assert [d.text for d in docs] == [text]
    assert stats.decoded == {"cp1252": 1} and stats.skipped["binary files"] == 1
    assert "1 file read as cp1252" in stats.summary()
