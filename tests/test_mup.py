"""muP (model.parametrization=mup) against the standard parameterisation: the standard one exactly as
GPT-2's formulas give it, muP's scales by measurement, its learning rates by the update they make,
and the coordinate check separating the two on real subprocesses of `lmforge scale coordcheck`."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import TrainConfig, load_config
from lmforge.errors import LmforgeError
from lmforge.model import GPT, GPTConfig, apply_rope, rope_tables
from lmforge.folders.run import RunDir
from lmforge.open_run import open_run
from lmforge.training.optim import build_optimizers
from lmforge.training.trainer import train
from test_cli import assert_user_error, lmforge


def model(width=32, parametrization="standard", base=0, seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    if parametrization != "standard":  # a standard model is built as before muP existed
        kw.update(parametrization=parametrization, mup_base_width=base)
    return GPT(GPTConfig(**{"vocab_size": 97, "n_layer": 2, "n_head": 2, "n_embd": width, "seq_len": 24, **kw}))


@pytest.mark.parametrize("tied", [True, False])
def test_standard_init_is_gpt2s_formula_bit_for_bit(tied):
    """The standard parameterisation is what it was before muP: N(0, 0.02), residual projections
    over sqrt(2 n_layer), drawn in this order from torch's generator (after the layers' own
    constructors have drawn theirs, which is why init_weights is drawn again here from a known seed)."""
    m = model(width=64, tie_embeddings=tied)
    torch.manual_seed(5)
    m.init_weights()
    torch.manual_seed(5)
    draw = lambda t, std: torch.randn(t.shape) * std  # noqa: E731
    assert torch.equal(m.wte.weight, draw(m.wte.weight, 0.02))
    if not tied:
        assert torch.equal(m.lm_head.weight, draw(m.lm_head.weight, 0.02))
    for b in m.blocks:
        for w, std in ((b.attn.qkv, 0.02), (b.mlp.gate_up, 0.02), (b.attn.proj, 0.02 / 2), (b.mlp.down, 0.02 / 2)):
            assert torch.equal(w.weight, draw(w.weight, std))


def reference_logits(m: GPT, idx: torch.Tensor, attention_scale: float, output_multiplier: float) -> torch.Tensor:
    """The forward pass written out with explicit attention: scores q.k x attention_scale, logits
    from the final norm x output_multiplier."""
    c = m.cfg
    B, T = idx.shape
    H, hd = c.n_head, c.head_dim
    cos, sin = rope_tables(T, hd, c.rope_theta)
    norm = lambda x: F.rms_norm(x, (c.n_embd,), eps=c.norm_eps)  # noqa: E731
    x = m.wte.weight[idx]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for b in m.blocks:
        q, k, v = (norm(x) @ b.attn.qkv.weight.T).view(B, T, 3 * H, hd).split([H, H, H], dim=2)
        q, k = apply_rope(q, cos, sin).transpose(1, 2), apply_rope(k, cos, sin).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1) * attention_scale).masked_fill(~causal, float("-inf"))
        y = (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, c.n_embd)
        x = x + y @ b.attn.proj.weight.T
        gate, up = (norm(x) @ b.mlp.gate_up.weight.T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ b.mlp.down.weight.T
    return (norm(x) * output_multiplier) @ m.lm_head.weight.T


@pytest.mark.parametrize("parametrization, attention_scale, output_multiplier", [
    ("standard", 1 / math.sqrt(32), 1.0),
    ("mup", 1 / 32, 16 / 64),  # width 64 over base 16: logits x 1/4; q.k over d_head, not its root
])
@pytest.mark.parametrize("tied", [True, False])
def test_forward_scales_attention_and_logits_as_the_parametrization_says(parametrization, attention_scale,
                                                                         output_multiplier, tied):
    m = model(width=64, parametrization=parametrization, base=16, tie_embeddings=tied).eval()
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        expected = reference_logits(m, idx, attention_scale, output_multiplier)
        assert (m(idx) - expected).abs().max() < 1e-5
        # the loss path (chunked head) and the inspection path read the same scales
        loss = m(idx[:, :-1], targets=idx[:, 1:])
        assert loss.item() == pytest.approx(F.cross_entropy(expected[:, :-1].flatten(0, 1), idx[:, 1:].flatten(),
                                                            reduction="sum").item(), rel=1e-5)
        probs = m.attention_probs(idx)
        assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_mup_hidden_init_shrinks_as_one_over_root_fan_in():
    """Under muP std x sqrt(fan_in) of every hidden matrix is the same at every width (the base
    width's), while the embedding keeps 0.02; under the standard one the hidden std is 0.02 at every width."""
    stds = {}
    for width in (64, 256):
        m = model(width=width, parametrization="mup", base=64, seed=1)
        stds[width] = (m.blocks[0].mlp.gate_up.weight.std().item(), m.wte.weight.std().item())
    assert stds[64][0] == pytest.approx(0.02, rel=0.03)
    assert stds[256][0] == pytest.approx(0.02 / 2, rel=0.03)  # 4x the fan-in: half the std
    assert stds[256][1] == pytest.approx(0.02, rel=0.03)
    assert model(width=256, seed=1).blocks[0].mlp.gate_up.weight.std().item() == pytest.approx(0.02, rel=0.03)


def first_step_sizes(m: GPT, cfg: TrainConfig) -> dict[str, float]:
    """The largest change one optimizer step makes to a hidden matrix and to the embedding."""
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    idx = torch.randint(0, 97, (4, 21), generator=torch.Generator().manual_seed(0))
    m(idx[:, :-1], targets=idx[:, 1:]).backward()
    for opt in build_optimizers(m, cfg):
        opt.step()
    delta = {n: (p.detach() - before[n]).abs().max().item() for n, p in m.named_parameters()}
    return {"hidden": delta["blocks.0.mlp.gate_up.weight"], "embedding": delta["wte.weight"]}


def test_mup_learning_rates_per_group_by_the_update_they_make():
    """Adam's first step moves each weight by ~lr (the normalised gradient is +-1): under muP a
    hidden matrix at 4x the base width moves by lr / 4, the embedding by lr; under the standard
    parameterisation both by lr. Muon's hidden lr is the same under both."""
    cfg = TrainConfig(lr=1e-3, weight_decay=0.0)
    mup = first_step_sizes(model(width=128, parametrization="mup", base=32), cfg)
    standard = first_step_sizes(model(width=128), cfg)
    assert mup["hidden"] == pytest.approx(1e-3 / 4, rel=1e-3)
    assert mup["embedding"] == pytest.approx(1e-3, rel=1e-3)
    assert standard["hidden"] == pytest.approx(1e-3, rel=1e-3) and standard["embedding"] == pytest.approx(1e-3, rel=1e-3)
    muon = TrainConfig(optimizer="muon", muon_lr=0.02, lr=1e-3, weight_decay=0.0)
    groups = [build_optimizers(model(width=128, parametrization=p, base=32), muon) for p in ("standard", "mup")]
    lrs = [[(type(o).__name__, g["lr"]) for o in opts for g in o.param_groups] for opts in groups]
    assert lrs[0] == lrs[1] == [("AdamW", 1e-3)] + [("Muon", 0.02)] * 3  # Q/K/V, gate/up, the rest


def test_mup_without_a_base_width_is_refused():
    with pytest.raises(LmforgeError, match="model.mup_base_width"):
        load_config("tiny", overrides=["model.parametrization=mup"])
    with pytest.raises(LmforgeError, match="model.parametrization"):
        load_config("tiny", overrides=["model.parametrization=mu"])


def test_a_mup_sweep_leaves_the_width_rule_to_mup():
    """The sweep's lr ~ width^-1/2 rule is the standard parameterisation's; under muP every run
    keeps train.lr and its optimizer divides the hidden groups' lr by width / base width."""
    from lmforge.scaling.design import size_config

    standard = load_config("scaling")
    mup = load_config("scaling", overrides=["model.parametrization=mup", f"model.mup_base_width={standard.model.n_embd}"])
    wide = 4 * standard.model.n_embd
    assert size_config(standard, wide).train.lr == pytest.approx(standard.train.lr / 2)
    sized = size_config(mup, wide)
    assert sized.train.lr == mup.train.lr and sized.model.mup_base_width == standard.model.n_embd


def test_a_mup_run_records_its_base_width_and_group_learning_rates(tiny_config, tokens_dir):
    cfg = tiny_config(**{"model.parametrization": "mup", "model.mup_base_width": 16, "train.max_steps": 4})
    summary = train(cfg, data=[str(tokens_dir)], log=lambda *_: None)
    assert summary["parametrization"] == "mup" and summary["mup_base_width"] == 16
    groups = {g["name"]: g for g in summary["param_groups"]}
    assert groups["hidden"]["lr"] == pytest.approx(3e-3 / 2)  # width 32 over base 16
    assert groups["embedding+head"]["lr"] == pytest.approx(3e-3)
    run = RunDir(cfg.run.out)
    assert json.loads(run.summary_path.read_text())["param_groups"] == summary["param_groups"]
    assert (run.config.model.parametrization, run.config.model.mup_base_width) == ("mup", 16)
    assert open_run(run, "cpu").model.cfg.width_multiplier == 2.0  # the checkpoint rebuilds the muP model


def test_coordcheck_separates_the_parametrizations(tmp_path):
    """Widths 32 to 256, 10 steps: under muP every activation and the logits stay within 1.5x of the
    narrowest model's (measured x1.16), under the standard parameterisation they grow (measured x12)."""
    r = lmforge("scale", "coordcheck", "--widths", "32,64,128,256", "--steps", 10, "--out", tmp_path / "cc", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert json.loads((tmp_path / "cc" / "coordcheck.json").read_text()) == result
    assert (tmp_path / "cc" / "coordcheck.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mup, standard = result["parametrizations"]["mup"], result["parametrizations"]["standard"]
    assert set(mup["growth"]) == {"embedding", "block1", "block2", "logits"}
    assert mup["max_growth"] < 1.5
    assert standard["max_growth"] > 3.0
    assert len(mup["scales"]["256"]) == 11  # init and after each of the 10 steps


def test_coordcheck_bad_input_is_one_line(tmp_path):
    assert_user_error(lmforge("scale", "coordcheck", "--widths", "32,abc"), "--widths", "abc")
    assert_user_error(lmforge("scale", "coordcheck", "--widths", "32,66"), "66", "model.n_head")
    assert_user_error(lmforge("scale", "coordcheck", "--widths", "64"), "at least two widths")
    assert_user_error(lmforge("scale", "coordcheck", "--steps", 0), "--steps")
    assert_user_error(lmforge("scale", "coordcheck", tmp_path), "not a sweep")
    assert not list(tmp_path.iterdir())  # nothing written into a folder that is not a sweep
