"""lmforge export --format hf: transformers loads the folder offline and computes what lmforge computes;
lmforge train --init-from reads it back."""

import json
import os

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.export import export
from lmforge.hf_llama import HF_CONFIG, init_from
from lmforge.model import GPT
from lmforge.folders.run import MODEL_FILE, RunDir
from lmforge.open_run import load_run_model, open_run
from lmforge.open_run import load_run_model, open_run
from lmforge.sampling import generate_ids
from lmforge.tokenizer import EOT
from lmforge.training.trainer import train

transformers = pytest.importorskip("transformers", reason="transformers is a test extra: pip install -e '.[test]'")

MULTILINGUAL = "Grüße aus Köln — naïve café; 日本語のテキスト, русский текст, 🙂 emoji\n\tdef f(x): return x**2"
quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def gqa_run(tmp_path_factory, tokens_dir):
    """A trained tiny causal run with grouped-query attention, an untied head, non-default RoPE and eps."""
    from lmforge.config import load_config
    from conftest import tiny_overrides

    out = tmp_path_factory.mktemp("export") / "run"
    cfg = load_config("tiny", overrides=tiny_overrides(**{
        "model.n_head": 4, "model.n_kv_head": 2, "model.tie_embeddings": "false", "model.rope_theta": 500.0,
        "model.norm_eps": 1e-5, "train.max_steps": 30}) + [f"run.out={out}"])
    train(cfg, data=[str(tokens_dir)], log=quiet)
    return RunDir(out)


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory, tokens_dir):
    from lmforge.config import load_config
    from conftest import tiny_overrides

    out = tmp_path_factory.mktemp("export") / "tied"
    cfg = load_config("tiny", overrides=tiny_overrides(**{"train.max_steps": 30}) + [f"run.out={out}"])
    train(cfg, data=[str(tokens_dir)], log=quiet)
    return RunDir(out)


@pytest.fixture(scope="module")
def mup_run(tmp_path_factory, tokens_dir):
    """A tied muP run at twice its base width: its attention scale and output multiplier must be folded."""
    from lmforge.config import load_config
    from conftest import tiny_overrides

    out = tmp_path_factory.mktemp("export") / "mup"
    cfg = load_config("tiny", overrides=tiny_overrides(**{
        "model.parametrization": "mup", "model.mup_base_width": 16, "train.max_steps": 30}) + [f"run.out={out}"])
    train(cfg, data=[str(tokens_dir)], log=quiet)
    return RunDir(out)


def load_hf(folder):
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                              torch_dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return model.eval(), tok


@pytest.mark.parametrize("which", ["gqa_run", "tied_run", "mup_run"])
def test_transformers_computes_the_same_logits_and_tokens(which, request, tmp_path):
    run = request.getfixturevalue(which)
    result = export(run.path, tmp_path / "hf")
    assert result["architecture"] == "LlamaForCausalLM"
    hf_model, hf_tok = load_hf(tmp_path / "hf")
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    opened = open_run(run)
    ours = opened.tokenizer
    ids = ours.encode(MULTILINGUAL, add_special_tokens=False).ids
    assert hf_tok(MULTILINGUAL)["input_ids"] == ids
    assert hf_tok.decode(ids) == MULTILINGUAL
    assert hf_tok.eos_token == EOT and hf_tok.eos_token_id == ours.token_to_id(EOT)

    x = torch.tensor([[ours.token_to_id(EOT)] + ids[:31]])
    with torch.no_grad():
        expected = opened.model(x)
        got = hf_model(x).logits.float()
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4

    prompt = [ours.token_to_id(EOT)] + ours.encode("def ", add_special_tokens=False).ids
    lm = generate_ids(opened.model, prompt, 20, temperature=0.0, stop_id=ours.token_to_id(EOT))
    with torch.no_grad():
        hf_out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    if hf_out and hf_out[-1] == ours.token_to_id(EOT):  # transformers keeps the eos it stopped at
        hf_out = hf_out[:-1]
    assert hf_out == lm and len(lm) > 0


def test_init_from_an_export_starts_from_identical_weights(gqa_run, tmp_path, tokens_dir):
    export(gqa_run.path, tmp_path / "hf")
    cfg = gqa_run.config
    cfg.run.out = str(tmp_path / "again")
    cfg.train.init_from = str(tmp_path / "hf")
    train(cfg, data=[str(tokens_dir)], stop_at=0, log=quiet)  # a checkpoint of the starting weights
    again, _ = load_run_model(RunDir(tmp_path / "again"))
    original = open_run(gqa_run).model
    x = torch.randint(0, 512, (2, 32))
    with torch.no_grad():
        assert torch.equal(again(x), original(x))


def test_init_from_a_model_of_another_tokenizer_is_refused_unless_allowed(gqa_run, tmp_path):
    """Weights learned over another tokenizer would read each id as another token (val 7.95, worse
    than the unigram baseline): refused, naming --allow-new-tokenizer; with it the blocks are kept and
    the embedding and untied head are resized to the data's tokenizer, a token both vocabularies hold
    keeping its learned row, and the log says what was done."""
    from lmforge.config import load_config
    from lmforge.tokenizing import tokenize_corpus
    from conftest import make_prose, tiny_overrides

    export(gqa_run.path, tmp_path / "hf")
    prose = tmp_path / "prose"  # another corpus: another tokenizer, sharing some of the first one's tokens
    prose.mkdir()
    for i in range(40):
        (prose / f"{i}.txt").write_text(make_prose(i))
    other = load_config("tiny", overrides=tiny_overrides(**{"tokenizer.vocab_size": 384}))
    other.data.sources = [str(prose)]
    tokenize_corpus(other.data, other.tokenizer, tmp_path / "tok384", log=quiet)
    cfg = gqa_run.config
    cfg.run.out, cfg.train.init_from = str(tmp_path / "again"), str(tmp_path / "hf")
    with pytest.raises(LmforgeError, match="--allow-new-tokenizer"):
        train(cfg, data=[str(tmp_path / "tok384")], stop_at=0, log=quiet)
    lines = []
    train(cfg, data=[str(tmp_path / "tok384")], stop_at=0, log=lines.append, allow_new_tokenizer=True)
    said = [line for line in lines if "--allow-new-tokenizer" in line]
    assert len(said) == 1 and "embedding and output head resized from 512 to 384 rows" in said[0], lines
    again, _ = load_run_model(RunDir(tmp_path / "again"))
    original = open_run(gqa_run).model
    theirs, ours = gqa_run.tokenizer().get_vocab(), RunDir(tmp_path / "again").tokenizer().get_vocab()
    shared = sorted(set(theirs) & set(ours))
    assert 0 < len(shared) < 384 and f"{len(shared):,} tokens found in both" in said[0]
    assert any(ours[t] != theirs[t] for t in shared)  # the rows move to their new ids
    for token in shared[:50]:
        for name in ("wte", "lm_head"):
            assert torch.equal(getattr(again, name).weight[ours[token]], getattr(original, name).weight[theirs[token]])
    new = next(t for t in ours if t not in theirs)
    assert not any(torch.equal(again.wte.weight[ours[new]], row) for row in original.wte.weight)
    assert torch.equal(again.blocks[0].attn.qkv.weight, original.blocks[0].attn.qkv.weight)


def test_init_from_refuses_a_mup_model(mup_run, tmp_path, tokens_dir):
    export(mup_run.path, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is False
    cfg = mup_run.config
    cfg.run.out, cfg.train.init_from = str(tmp_path / "again"), str(tmp_path / "hf")
    with pytest.raises(LmforgeError, match="model.parametrization=standard"):
        train(cfg, data=[str(tokens_dir)], stop_at=0, log=quiet)


def test_llama_norm_weights_are_folded_exactly(gqa_run, tmp_path):
    """A Llama with real norm weights (not lmforge's unit ones) loads to the same function."""
    export(gqa_run.path, tmp_path / "hf")
    hf_model, _ = load_hf(tmp_path / "hf")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    hf_model.save_pretrained(tmp_path / "llama", safe_serialization=True)
    model = GPT(open_run(gqa_run).model.cfg)
    init_from(model, tmp_path / "llama")
    x = torch.randint(0, 512, (1, 32))
    with torch.no_grad():
        assert (model(x) - hf_model(x).logits).abs().max().item() <= 1e-4


def test_init_from_refuses_another_shape(gqa_run, tmp_path):
    export(gqa_run.path, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / HF_CONFIG).read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "hf" / HF_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(LmforgeError, match=r"num_hidden_layers=3 .*--set model.n_layer=3"):
        init_from(GPT(open_run(gqa_run).model.cfg), tmp_path / "hf")
    with pytest.raises(LmforgeError, match=MODEL_FILE):
        init_from(GPT(open_run(gqa_run).model.cfg), tmp_path)


def test_export_cli_and_masked_refusal(tied_run, tmp_path, tokens_dir, capsys):
    assert main(["export", str(tied_run.path), str(tmp_path / "hf"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["files"]) >= {"config.json", MODEL_FILE, "tokenizer.json",
                                                                 "tokenizer_config.json", "generation_config.json"}
    masked = tmp_path / "masked"
    assert main(["train", "--data", str(tokens_dir), "--out", str(masked), "--objective", "masked",
                 "--no-progress", "--max-steps", "2", "--threads", "1", *sum((["--set", o] for o in _tiny()), [])]) == 0
    capsys.readouterr()
    assert main(["export", str(masked), str(tmp_path / "hf2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "masked" in err and "encoder" in err and len(err.splitlines()) == 1


def _tiny():
    from conftest import tiny_overrides

    return tiny_overrides(**{"train.final_eval_tokens": 256})
