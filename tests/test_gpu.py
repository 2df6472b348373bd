"""The CUDA path, run on a GPU machine (skipped without CUDA): bf16 decoding, compilation, a
stopped and resumed bf16 run, FSDP2 on one GPU. The CPU suite covers the same code at float32.

    pytest tests/test_gpu.py
"""

import os
import socket

import pytest
import torch

from conftest import tiny_overrides
from lmforge.config import load_config
from lmforge.model import IGNORE_INDEX, GPT, GPTConfig, KVCache
from lmforge.folders.run import RunDir
from lmforge.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 1024, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 128, "seq_len": 64, **kw})
    return GPT(cfg).to(CUDA)


def test_kv_cache_decoding_equals_the_full_forward_in_bf16():
    model = _model().to(torch.bfloat16).eval()
    idx = torch.randint(0, 1024, (2, 48), device=CUDA)
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.cfg, 2, 48, CUDA, torch.bfloat16)
        parts = [model(idx[:, :20], cache=cache)] + [model(idx[:, i:i + 1], cache=cache) for i in range(20, 48)]
    step = torch.cat(parts, dim=1)
    # bf16: the same logits up to rounding, and the same first choice almost everywhere
    assert (step - full).abs().max() < 0.05 * full.abs().max()
    assert (step.argmax(-1) == full.argmax(-1)).float().mean() > 0.97


@pytest.mark.parametrize("causal", [True, False])
def test_compiled_equals_eager_under_bf16_autocast(causal):
    model = _model(vocab_size=50304)  # 50,304 tokens: the loss takes several chunks
    compiled = torch.compile(model, fullgraph=True)
    idx = torch.randint(0, 50304, (4, 64), device=CUDA)
    targets = torch.randint(0, 50304, (4, 64), device=CUDA)
    if not causal:
        targets[torch.rand(targets.shape, device=CUDA) < 0.85] = IGNORE_INDEX
    params = list(model.parameters())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(idx, causal=causal, targets=targets)
        fast = compiled(idx, causal=causal, targets=targets)
    assert fast.item() == pytest.approx(eager.item(), rel=2e-3)
    for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(eager, params)):
        assert torch.allclose(a, b, rtol=0.05, atol=0.02 * b.abs().max().item())


def test_bf16_run_stops_and_resumes_to_the_same_weights(tmp_path, tokens_dir):
    over = tiny_overrides(**{"train.max_steps": 12, "train.device": "cuda", "train.dtype": "bfloat16",
                             "train.checkpoint_interval": 4})
    straight = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'a'}"])
    train(straight, [str(tokens_dir)], log=lambda *_: None)
    split = load_config("tiny", overrides=over + [f"run.out={tmp_path / 'b'}"])
    assert train(split, [str(tokens_dir)], stop_at=6, log=lambda *_: None)["complete"] is False
    summary = train(split, [str(tokens_dir)], resume=True, log=lambda *_: None)
    assert summary["complete"] and summary["dtype"] == "bfloat16" and summary["device"].startswith("cuda")
    from safetensors.torch import load_file

    a = load_file(str(RunDir(tmp_path / "a").latest_checkpoint().model_file))
    b = load_file(str(RunDir(tmp_path / "b").latest_checkpoint().model_file))
    for k in a:  # the same kernels on the same inputs: bit for bit
        assert torch.equal(a[k], b[k]), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp2_on_one_gpu_matches_the_plain_model():
    """FSDP2 over a one-GPU NCCL group: the same loss and the same updated weights as no sharding."""
    import torch.distributed as dist

    from lmforge.training import distributed
    from lmforge.training.distributed import gather_full

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", torch.cuda.current_device()))
    try:
        plain, sharded = _model(), _model()
        distributed.shard_model(sharded)
        idx = torch.randint(0, 1024, (4, 64), device=CUDA)
        targets = torch.randint(0, 1024, (4, 64), device=CUDA)
        losses = []
        for m in (plain, sharded):
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(idx, targets=targets)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-3)
        for (name, a), b in zip(plain.state_dict().items(), sharded.state_dict().values()):
            assert torch.allclose(a, gather_full(b), rtol=1e-3, atol=1e-5), name
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_activation_memory_formula_against_max_memory_allocated(recompute):
    """`lmforge.cost.activation_memory` against torch.cuda.max_memory_allocated (the peak) and the
    storages kept for backward (held), for the shapes of benchmarks/memory_check.py."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from memory_check import CASES, measure_case

    for case in CASES:
        both = measure_case(case, recompute, "cuda")
        for figure in ("held", "peak"):
            assert both["formula"][figure] == pytest.approx(both["measured"][figure], rel=0.15), (case, figure)


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_1b_preset_activations_are_what_estimate_plans(weights):
    """The whole 1b preset, one 2,048-token sequence, no recomputation, bf16 compute: autocast over
    float32 weights (DDP) or bf16 weights (as FSDP2 gathers them), measured against the planner."""
    from lmforge import cost
    from lmforge.model import model_config
    from lmforge.measured_memory import measured_training_memory

    cfg = load_config("1b")
    torch.manual_seed(0)
    model = GPT(model_config(cfg)).to(CUDA, weights)
    idx = torch.randint(0, model.cfg.vocab_size, (1, model.cfg.seq_len), device=CUDA)
    amp = torch.bfloat16 if weights == torch.float32 else None
    measured = measured_training_memory(model, idx, idx, amp)
    planned = cost.activation_bytes(cost.shape_from_model(cfg), 1, "none", zero_stage=0 if amp else 3)
    assert planned == pytest.approx(measured["peak"], rel=0.15)
