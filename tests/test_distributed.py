"""Real multi-process data parallelism: torchrun, two CPU processes, the gloo backend."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from lmforge.training.checkpoint import latest_checkpoint

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
    a = load_file(str(latest_checkpoint(tmp_path / "one") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "two") / "model.safetensors"))
    # same windows, same token-normalised loss: equal up to the order of the gradient all-reduce
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5), k
