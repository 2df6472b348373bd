"""Real multi-process data parallelism: torchrun, two CPU processes, the gloo backend."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from lmforge.folders.run import RunDir, TrainRecord

# faulthandler: a rank that aborts in C++ (CI once saw "terminate called without an active exception")
# prints every Python thread's stack first, so the failure says where it happened
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def why(run: subprocess.CompletedProcess) -> str:
    """The ranks' own last words: torchrun's report of a failed child (3 kB) comes after them."""
    return f"stdout: ...{run.stdout[-1500:]}\nstderr: {run.stderr[:4000]}"


def test_the_same_config_trains_the_same_on_one_process_and_on_two(tmp_path, tokens_dir):
    """train.grad_accum counts micro-batches over all ranks: 4 in one process, 2 on each of two
    ranks; the same windows, the same token-normalised loss, so the same weights."""
    # 4,032 validation targets = 63 batches of 2 windows: the second rank scores 31 and runs one unscored
    common = tiny_overrides(**{"train.max_steps": 8, "train.grad_accum": 4, "train.batch_size": 2,
                               "train.final_eval_tokens": 4032})
    sets = [a for o in common for a in ("--set", o)]
    single = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", "--data", tokens_dir, "--out", tmp_path / "one", *sets],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / "two", *sets],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, why(ddp)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    one = RunDir(tmp_path / "one").summary()
    assert summary["tokens_trained"] == one.tokens_trained
    # validation split over the ranks and summed: every target once, the figures of one process
    assert summary["val_tokens"] == one.val_tokens == 4032
    assert abs(summary["val_loss"] - one.val_loss) < 1e-4 * one.val_loss
    a = load_file(str(RunDir(tmp_path / "one").latest_checkpoint().model_file))
    b = load_file(str(RunDir(tmp_path / "two").latest_checkpoint().model_file))
    # same windows, same token-normalised loss: equal up to the order of the gradient all-reduce
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k


FSDP_RUN = {"train.max_steps": 8, "train.grad_accum": 4, "train.batch_size": 2}  # 2 micro-batches per rank


def _torchrun(tmp_path, tokens_dir, out, *extra):
    sets = [a for o in tiny_overrides(**FSDP_RUN)
            for a in ("--set", o)]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / out, *sets, "--set", "train.data_parallel=fsdp", *extra],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, why(run)
    return load_file(str(RunDir(tmp_path / out).latest_checkpoint().model_file))


def test_fsdp_matches_ddp_and_resumes_bit_for_bit(tmp_path, tokens_dir):
    """FSDP2 shards parameters, gradients and optimizer state over the ranks: the same windows and
    the same token-normalised loss give DDP's weights, and a checkpoint (gathered whole, the same
    format as any run's) resumes to exactly the uninterrupted run."""
    sets = [a for o in tiny_overrides(**FSDP_RUN) for a in ("--set", o)]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / "ddp", *sets], env=ENV, capture_output=True, text=True,
        timeout=300)
    assert ddp.returncode == 0, why(ddp)
    full = _torchrun(tmp_path, tokens_dir, "fsdp")
    reference = load_file(str(RunDir(tmp_path / "ddp").latest_checkpoint().model_file))
    for k in reference:
        assert torch.allclose(full[k], reference[k], atol=2e-5), k
    _torchrun(tmp_path, tokens_dir, "halves", "--stop-at", "4")
    resumed = _torchrun(tmp_path, tokens_dir, "halves", "--resume")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_fsdp_checkpoint_resumes_in_one_process(tmp_path, tokens_dir):
    """A run sharded over two ranks, stopped, continues in a single process from the same weights."""
    stopped = _torchrun(tmp_path, tokens_dir, "moved", "--stop-at", "4")
    sets = [a for o in tiny_overrides(**FSDP_RUN) for a in ("--set", o)]
    one = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", "--data", tokens_dir, "--out", tmp_path / "moved", *sets,
         "--set", "train.data_parallel=fsdp", "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, why(one)
    assert "resumed from" in one.stdout + one.stderr
    run = RunDir(tmp_path / "moved")
    summary = run.summary()
    assert summary.complete and summary.world_size == 1 and summary.steps == 8
    assert summary.tokens_trained == 8 * 4 * 2 * 32
    resumed = load_file(str(run.latest_checkpoint().model_file))
    assert resumed.keys() == stopped.keys()
    assert any(not torch.equal(resumed[k], stopped[k]) for k in stopped)  # it trained on from there
    steps = [r.step for r in run.metrics() if isinstance(r, TrainRecord)]
    assert steps == sorted(set(steps)) and steps[-1] == 8


def rank_of(pid: int) -> int | None:
    """A torchrun worker's RANK, read from its environment (Linux /proc)."""
    env = dict(v.split("=", 1) for v in open(f"/proc/{pid}/environ").read().split("\0") if "=" in v)
    return int(env["RANK"]) if "RANK" in env else None


@pytest.mark.parametrize("signals", [
    [(1, signal.SIGTERM)],  # one rank only: rank 0 is not told, only the agreement can stop it
    # Ctrl-C in a terminal reaches every process, and torchrun's agent relays it: each rank gets it twice
    [(0, signal.SIGINT), (1, signal.SIGINT), (0, signal.SIGINT), (1, signal.SIGINT)],
], ids=["sigterm-to-one-rank", "ctrl-c-relayed-by-torchrun"])
def test_a_signal_stops_every_rank_at_the_same_step(tmp_path, tokens_dir, signals):
    """A signal reaches each rank between different steps, or only one rank. The ranks agree on
    stopping, so they leave the loop after the same step: none waits forever in an all-reduce its
    peers never join, and the checkpoint is the one of a run stopped there on purpose."""
    import time

    from conftest import children_of, wait_for_exit

    sets = [a for o in tiny_overrides(**{"train.max_steps": 100_000, "train.log_interval": 1,
                                                 "train.grad_accum": 2}) for a in ("--set", o)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
               "train", "--data", tokens_dir, *sets]
    log = open(tmp_path / "ranks.log", "w+")
    proc = subprocess.Popen([*command, "--out", tmp_path / "signalled"], env=ENV, stdout=log, stderr=subprocess.STDOUT)
    ranks: list[int] = []
    try:
        metrics = tmp_path / "signalled" / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count('"loss"') >= 3):
            assert proc.poll() is None, "torchrun ended before training"
            time.sleep(0.2)
        ranks = children_of(proc.pid)
        by_rank = {rank_of(p): p for p in ranks}
        for rank, sig in signals:
            os.kill(by_rank[rank], sig)
        # each rank exits 130 (interrupted) after the checkpoint; torchrun reports that as its ranks' failure
        assert proc.wait(timeout=120) != 0, open(tmp_path / "ranks.log").read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in wait_for_exit(ranks, hang_guard_s=10):
            os.kill(pid, signal.SIGKILL)
    run = RunDir(tmp_path / "signalled")
    log_text = (tmp_path / "ranks.log").read_text()
    stopped = re.findall(r"stop requested; saving step (\d+)", log_text)
    assert len(stopped) == 1, "rank 0 (the one that reports) did not stop, or stopped twice"
    # the first rank to end (torchrun's "root cause") ended interrupted, not failed; torchrun may end the
    # other with SIGTERM while it leaves, after the checkpoint and the barrier that follows it
    root_cause = log_text.split("Root Cause")[-1]
    assert re.findall(r"exitcode\s*:\s*(-?\d+)", root_cause) == ["130"], log_text[-3000:]
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", log_text)) <= {"130", "-15"}, log_text[-3000:]
    assert not re.search(r'File ".*lmforge', log_text), log_text[-3000:]  # torchrun's own traceback only
    step = int(stopped[0])
    assert run.latest_checkpoint().step == step and not (run.path / "summary.json").exists()
    planned = subprocess.run([*command, "--out", tmp_path / "planned", "--stop-at", str(step)], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, why(planned)
    a = load_file(str(run.latest_checkpoint().model_file))
    b = load_file(str(RunDir(tmp_path / "planned").latest_checkpoint().model_file))
    for k in a:
        assert torch.equal(a[k], b[k]), k
