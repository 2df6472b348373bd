import pytest
import torch

from lmforge.sampling import generate_ids, sample_next
from lmforge import model as model_module
from lmforge.model import IGNORE_INDEX, GPT, GPTConfig, KVCache, linear_cross_entropy


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


def test_parameter_and_flop_accounting():
    model = small(tie_embeddings=False)
    cfg = model.cfg
    d, h, V, L = cfg.n_embd, cfg.mlp_hidden, cfg.vocab_size, cfg.n_layer
    per_block = d * 3 * d + d * d + d * 2 * h + h * d
    assert model.num_params() == 2 * V * d + L * per_block
    assert model.matmul_params() == V * d + L * per_block
    assert model.flops_per_token() == 6 * (V * d + L * per_block) + 12 * L * d * cfg.seq_len
    tied = small()
    assert tied.num_params() == V * d + L * per_block
    assert cfg.mlp_hidden % 64 == 0 and cfg.mlp_hidden >= 8 * d / 3


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
