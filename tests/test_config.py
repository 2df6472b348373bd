import pytest

from lmforge.config import Config, load_config, parse_override, preset_names, read_config, save_config
from lmforge.errors import LmforgeError


def test_presets_load_and_validate():
    assert {"tiny", "gpt2-small", "1b"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.preset == name


def test_round_trip(tmp_path):
    cfg = load_config("tiny", overrides=["train.lr=1e-4", "model.n_layer=3", "data.sources=[a, b]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = read_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.train.lr == 1e-4 and again.model.n_layer == 3 and again.data.sources == ["a", "b"]


def test_overrides_apply_in_order_and_parse_yaml_values():
    cfg = load_config("tiny", overrides=["train.max_steps=7", "train.max_steps=9", "train.compile=true"])
    assert cfg.train.max_steps == 9 and cfg.train.compile is True
    assert parse_override("a.b=3") == {"a": {"b": 3}}


def test_yaml_file_over_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_embd: 64\ntrain:\n  lr: 3.0e-4\n")
    cfg = load_config("tiny", file=path)
    assert cfg.model.n_embd == 64 and cfg.train.lr == 3e-4 and cfg.model.n_layer == load_config("tiny").model.n_layer


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", "did you mean 'lr'"),
        ("nosuch.x=1", "unknown key"),
        ("model.n_layer=0", "model.n_layer"),
        ("model.n_layer=two", "must be an integer"),
        ("train.lr=-1", "train.lr"),
        ("train.optimizer=sgd", "choose one of"),
        ("model.n_embd=130", "divisible by model.n_head"),
        ("model.n_kv_head=3", "must divide"),
        ("train.compile=maybe", "true or false"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("tokenizer.vocab_size=100", "tokenizer.vocab_size"),
    ],
)
def test_bad_values_rejected_with_the_key_named(override, words):
    with pytest.raises(LmforgeError) as e:
        load_config("tiny", overrides=[override])
    assert words in str(e.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(LmforgeError, match="unknown preset"):
        load_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(LmforgeError, match="not valid YAML"):
        load_config("tiny", file=bad)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(LmforgeError):
        load_config("tiny", file=evil)


def test_defaults_are_a_valid_config():
    Config().validate()
