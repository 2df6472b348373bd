import pytest
import torch

from lmforge.sampling import generate_ids, sample_next
from lmforge.model import GPT, GPTConfig, KVCache


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
