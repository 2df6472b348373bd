import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmforge.config import preset_names
from lmforge.sampling import generate_ids, sample_next
from lmforge import model as model_module
from lmforge.model import IGNORE_INDEX, GPT, GPTConfig, KVCache, linear_cross_entropy
from lmforge.model_counts import training_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from figures import measured_step, preset_model  # noqa: E402  (the measurement the figures table shows)


def small(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 97, "n_layer": 2, "n_head": 4, "n_embd": 32, "seq_len": 24, **kw})
    return GPT(cfg).eval()


@pytest.mark.parametrize("kv", [0, 2])
def test_causal_mask_hides_the_future(kv):
    model = small(n_kv_head=kv)
    idx = torch.randint(0, 97, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % 97
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.equal(a[:, :t], b[:, :t])  # earlier positions: bit-identical
    assert not torch.allclose(a[:, t:], b[:, t:])  # the changed position and later ones do change


def test_bidirectional_attention_sees_the_future():
    model = small()
    idx = torch.randint(0, 97, (1, 16))
    changed = idx.clone()
    changed[0, 12] = (idx[0, 12] + 1) % 97
    with torch.no_grad():
        a, b = model(idx, causal=False), model(changed, causal=False)
    assert not torch.allclose(a[:, :12], b[:, :12])


# Every count of model_counts against the model itself: its tensors and FlopCounterMode on one
# training step (forward and backward through the loss), for every shipped preset. On the meta device
# nothing is allocated or computed, so the 1b preset runs whole; SDPA runs its math path there (and
# here on real tensors), whose matmuls FlopCounterMode counts. benchmarks/figures.py tabulates the same.
PRESET_MODELS = [pytest.param(name, tied, id=f"{name}-{'tied' if tied else 'untied'}")
                 for name in preset_names() for tied in (True, False)]


def measured_flops_per_token(cfg: GPTConfig, objective: str = "causal", recompute: str = "none") -> float:
    return measured_step(cfg, objective, recompute=recompute)[0]


@pytest.mark.parametrize("preset, tied", PRESET_MODELS)
def test_parameter_counts_are_the_models_tensors(preset, tied):
    cfg = preset_model(preset, tie_embeddings=tied)
    with torch.device("meta"):
        model = GPT(cfg)
    shape = cfg.shape()
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.matmul_params == sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert shape.non_embedding_params == sum(p.numel() for p in model.blocks.parameters())


@pytest.mark.parametrize("preset, tied", PRESET_MODELS)
@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_training_flops_are_flop_counter_modes(preset, tied, objective):
    cfg = preset_model(preset, tie_embeddings=tied)
    assert training_flops(cfg.shape()).model == pytest.approx(measured_flops_per_token(cfg, objective), rel=0.01)


@pytest.mark.parametrize("recompute", ["full", "selective"])
def test_recomputed_flops_are_what_train_recompute_runs(recompute):
    """The model's own recomputation (`run_block`, as train.recompute sets it) under FlopCounterMode:
    full runs each block's forward again but its down projection (torch.utils.checkpoint's early
    stop), selective no matmul at all."""
    cfg = preset_model("gpt2-small", n_kv_head=4)
    expected = training_flops(cfg.shape(), recompute)
    assert expected.hardware == pytest.approx(measured_flops_per_token(cfg, recompute=recompute), rel=0.01)
    assert expected.model == pytest.approx(measured_flops_per_token(cfg), rel=0.01)


@pytest.mark.parametrize("kv", [0, 2])
def test_masked_loss_on_a_cpu_counts_the_head_rows_that_ran(kv):
    """On a CPU the masked loss takes only the rows with a target through the output head."""
    cfg = preset_model("tiny", n_kv_head=kv)
    measured, share = measured_step(cfg, "masked", device="cpu", batch=2)
    assert 0.1 < share < 0.2
    assert training_flops(cfg.shape(), head_rows=share).model == pytest.approx(measured, rel=0.01)
    assert training_flops(cfg.shape()).model > 1.2 * measured  # the whole head: 40% of tiny's matmul weights


def test_a_fused_cpu_attention_is_invisible_to_flop_counter_mode():
    """Why the measurements take SDPA's math path: FlopCounterMode has no formula for the CPU kernel."""
    cfg = GPTConfig(vocab_size=97, n_layer=1, n_head=2, n_embd=32, seq_len=16)
    model, idx = GPT(cfg), torch.randint(0, 97, (1, 16))
    with FlopCounterMode(display=False) as counter:
        model(idx, targets=idx).backward()
    attention = training_flops(cfg.shape()).attention * idx.numel()
    assert counter.get_total_flops() == training_flops(cfg.shape()).model * idx.numel() - attention


def test_init_follows_the_seed_and_is_scaled():
    a, b = small(), small()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    torch.manual_seed(1)
    a.init_weights()
    assert not torch.equal(a.wte.weight, b.wte.weight)  # drawn, not fixed
    assert a.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    proj, qkv = a.blocks[0].attn.proj.weight.std().item(), a.blocks[0].attn.qkv.weight.std().item()
    assert proj == pytest.approx(qkv / (2 * a.cfg.n_layer) ** 0.5, rel=0.1)


@pytest.mark.parametrize("kv", [0, 2])
def test_kv_cache_logits_equal_full_forward(kv):
    model = small(n_kv_head=kv)
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.cfg, 2, 20, "cpu", torch.float32)
        parts = [model(idx[:, :7], cache=cache), model(idx[:, 7:12], cache=cache)]
        parts += [model(idx[:, i:i + 1], cache=cache) for i in range(12, 20)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_cached_and_uncached_decoding_give_the_same_tokens(temperature):
    model = small()
    prompt = [5, 17, 3, 40]
    # 30 new tokens run past seq_len=24, exercising the sliding window in both paths
    kw = dict(max_new_tokens=30, temperature=temperature, top_k=20, top_p=0.95, seed=3)
    assert generate_ids(model, prompt, use_cache=True, **kw) == generate_ids(model, prompt, use_cache=False, **kw)


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=gen)) for _ in range(200)}
    assert picks <= {0, 1}
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=gen)) for _ in range(200)}
    assert picks == {0}


def _plain_loss(model, idx, targets, causal):
    logits = model(idx, causal=causal)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                             reduction="sum")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rows", [16, 0])  # 16: 3 chunks of the 40 tokens, a short last one; 0: one chunk
def test_chunked_loss_equals_the_plain_one_in_value_and_gradients(causal, rows, monkeypatch):
    model = small(tie_embeddings=causal).double()  # untied too: the head's gradient alone
    if rows:
        monkeypatch.setattr(model_module, "loss_chunk_rows", lambda vocab: rows)
    idx = torch.randint(0, 97, (2, 20))
    targets = torch.randint(0, 97, (2, 20))
    if not causal:  # a masked batch: most positions carry no target
        targets[torch.rand(targets.shape) < 0.7] = IGNORE_INDEX
    params = [p for p in model.parameters()]
    chunked = model(idx, causal=causal, targets=targets)
    plain = _plain_loss(model, idx, targets, causal)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-12)
    for a, b in zip(torch.autograd.grad(2.5 * chunked, params), torch.autograd.grad(2.5 * plain, params)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # evaluation: per-token losses and first choices, chunked all the same
        nll, first = model(idx, causal=causal, targets=targets, reduction="none")
        logits = model(idx, causal=causal)
    scored = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[scored], targets[scored], reduction="none")
    assert torch.allclose(nll[scored], expected) and torch.all(nll[~scored] == 0)
    assert torch.equal(first[scored], logits[scored].argmax(-1) == targets[scored])


def test_chunked_loss_under_bf16_autocast_matches_the_plain_one():
    x = torch.randn(300, 32, requires_grad=True)
    w = torch.randn(97, 32, requires_grad=True)
    t = torch.randint(0, 97, (300,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = linear_cross_entropy(x, w, t, rows=64)
        plain = torch.nn.functional.cross_entropy((x @ w.t()).float(), t, reduction="sum")
    assert chunked.dtype == torch.float32 and chunked.item() == pytest.approx(plain.item(), rel=1e-3)
    for a, b in zip(torch.autograd.grad(chunked, (x, w)), torch.autograd.grad(plain, (x, w))):
        assert a.dtype == torch.float32 and torch.allclose(a, b, rtol=0.02, atol=0.02 * b.abs().max().item())


def test_compiled_loss_and_gradients_equal_eager_for_both_objectives(monkeypatch):
    """torch.compile of model and loss together (train.compile): the same loss and gradients as eager,
    for next-token (causal) and masked (bidirectional, ignored targets) batches, through the chunked loss."""
    model = small(n_layer=1)
    monkeypatch.setattr(model_module, "loss_chunk_rows", lambda vocab: 16)
    compiled = torch.compile(model, fullgraph=True)  # model and loss in one graph, no break
    idx = torch.randint(0, 97, (2, 20))
    targets = torch.randint(0, 97, (2, 20))
    masked = targets.masked_fill(torch.rand(targets.shape) < 0.7, IGNORE_INDEX)
    params = list(model.parameters())
    for causal, t in ((True, targets), (False, masked)):
        eager = model(idx, causal=causal, targets=t)
        fast = compiled(idx, causal=causal, targets=t)
        assert fast.item() == pytest.approx(eager.item(), rel=1e-5)
        for a, b in zip(torch.autograd.grad(fast, params), torch.autograd.grad(eager, params)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stacked_matrices_name_the_fused_weights_and_their_rows():
    model = small(n_kv_head=2)
    stacked = model.stacked_matrices()
    params = dict(model.named_parameters())
    assert len(stacked) == 2 * model.cfg.n_layer
    for name, rows in stacked.items():
        assert sum(rows) == params[name].size(0)
    hd = model.cfg.head_dim
    assert stacked["blocks.0.attn.qkv.weight"] == [4 * hd, 2 * hd, 2 * hd]
