"""Real multi-process data parallelism: torchrun, two CPU processes, the gloo backend."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from lmforge.run_dir import RunDir

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, tokens_dir):
    common = tiny_overrides(**{"train.max_steps": 8, "train.grad_accum": 2})
    sets = [a for o in common for a in ("--set", o)]
    single = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", "--data", tokens_dir, "--out", tmp_path / "one",
         *sets, "--set", "train.batch_size=4"], env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / "two", *sets, "--set", "train.batch_size=2"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    a = load_file(str(RunDir(tmp_path / "one").latest_checkpoint().model_file))
    b = load_file(str(RunDir(tmp_path / "two").latest_checkpoint().model_file))
    # same windows, same token-normalised loss: equal up to the order of the gradient all-reduce
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k


def _torchrun(tmp_path, tokens_dir, out, *extra):
    sets = [a for o in tiny_overrides(**{"train.max_steps": 8, "train.grad_accum": 2, "train.batch_size": 2})
            for a in ("--set", o)]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / out, *sets, "--set", "train.data_parallel=fsdp", *extra],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(str(RunDir(tmp_path / out).latest_checkpoint().model_file))


def test_fsdp_matches_ddp_and_resumes_bit_for_bit(tmp_path, tokens_dir):
    """FSDP2 shards parameters, gradients and optimizer state over the ranks: the same windows and
    the same token-normalised loss give DDP's weights, and a checkpoint (gathered whole, the same
    format as any run's) resumes to exactly the uninterrupted run."""
    common = tiny_overrides(**{"train.max_steps": 8, "train.grad_accum": 2, "train.batch_size": 2})
    sets = [a for o in common for a in ("--set", o)]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmforge",
         "train", "--data", tokens_dir, "--out", tmp_path / "ddp", *sets], env=ENV, capture_output=True, text=True,
        timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    full = _torchrun(tmp_path, tokens_dir, "fsdp")
    reference = load_file(str(RunDir(tmp_path / "ddp").latest_checkpoint().model_file))
    for k in reference:
        assert torch.allclose(full[k], reference[k], atol=2e-5), k
    _torchrun(tmp_path, tokens_dir, "halves", "--stop-at", "4")
    resumed = _torchrun(tmp_path, tokens_dir, "halves", "--resume")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
