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
        ("tokenizer.vocab_size=1000000000", "must be in [259, 1048576]"),  # the Rust trainer aborted allocating it
        ("model.vocab_size=1000000000", "model.vocab_size"),
        ("run.temperature=nan", "must be a number"),  # NaN passes every comparison-based range check
        ("run.temperature=.inf", "must be a finite number >= 0"),
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


def refused(tmp_path, text: str, *words: str) -> str:
    """The one-line error loading `text` as a --config file gives."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(LmforgeError) as e:
        load_config("tiny", file=path)
    message = str(e.value)
    assert "\n" not in message and len(message) < 200, message[:300]
    for w in words:
        assert w in message, message
    return message


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    """YAML keeps the last of two equal keys without a word: the first value would be ignored."""
    refused(tmp_path, "train:\n  lr: 1.0e-3\n  max_steps: 3\n  lr: 2.0e-3\n",
            "c.yaml:4:", "key 'lr' is given twice (first on line 2)")
    refused(tmp_path, "train:\n  lr: 1.0e-3\nmodel:\n  n_layer: 2\ntrain:\n  max_steps: 3\n",
            "c.yaml:5:", "key 'train' is given twice (first on line 1)")
    path = tmp_path / "merge.yaml"  # a merge key's values are meant to be overridden: not a duplicate
    path.write_text("train:\n  <<: {lr: 1.0e-3, max_steps: 3}\n  lr: 2.0e-3\n")
    assert load_config("tiny", file=path).train.lr == 2e-3


def test_an_explicit_null_is_refused_but_an_empty_section_changes_nothing(tmp_path):
    refused(tmp_path, "model:\n  n_layer: 3\ntrain: null\n", "c.yaml:3:", "null is not a config value")
    refused(tmp_path, "train: ~\n", "c.yaml:1:", "~ is not a config value")
    path = tmp_path / "empty.yaml"
    path.write_text("train:\nmodel:\n  n_layer: 3\n")
    assert load_config("tiny", file=path).train == load_config("tiny").train


def test_an_alias_bomb_is_one_short_line(tmp_path):
    """Levels of nine aliases: 300 bytes name 9**6 values (the issue's nine levels in 1 KB, 9**9).
    safe_load shares them, but the checks walked them and the error printed them all: 28 MB for
    these six levels, 254 MB in 27 s for seven (measured before this check)."""
    text = "model:\n  - &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 7))
    assert len(text) < 400
    refused(tmp_path, text, "c.yaml:", "more than 100,000 values once its aliases (*name) are expanded")
    refused(tmp_path, "data:\n  sources: &a [*a]\n", "c.yaml:2:", "a loop")


def test_a_deeply_nested_file_is_one_line(tmp_path):
    """10,000 levels ended in RecursionError inside the YAML composer."""
    refused(tmp_path, "model: " + "[" * 10_000 + "]" * 10_000 + "\n", "c.yaml:1:", "nested deeper than 32 levels")
    refused(tmp_path, "".join("  " * i + f"k{i}:\n" for i in range(200)), "c.yaml:32:", "nested deeper")


def test_an_error_quotes_a_long_value_as_an_excerpt(tmp_path):
    message = refused(tmp_path, f"train:\n  optimizer: {'x' * 100_000}\n", "train.optimizer", "(100,002 chars)")
    assert "x" * 79 in message and "x" * 80 not in message
    with pytest.raises(LmforgeError) as e:
        load_config("tiny", overrides=["data.sources=[[" + ", ".join(["a"] * 5000) + "]]"])
    assert "data.sources[0] must be a string" in str(e.value) and len(str(e.value)) < 200


def test_a_file_names_its_preset_and_a_conflict_is_refused(tmp_path):
    """A saved RUN/config.yaml names its preset; it used to be replaced by --preset's default, tiny."""
    path = tmp_path / "c.yaml"
    path.write_text("preset: gpt2-small\ntrain:\n  lr: 1.0e-4\n")
    cfg = load_config(file=path)
    assert cfg.preset == "gpt2-small" and cfg.model == load_config("gpt2-small").model and cfg.train.lr == 1e-4
    assert load_config("gpt2-small", file=path) == cfg
    with pytest.raises(LmforgeError, match="names preset 'gpt2-small' but --preset is 'tiny'"):
        load_config("tiny", file=path)
    with pytest.raises(LmforgeError, match="choose it with --preset"):
        load_config("tiny", overrides=["preset=gpt2-small"])
    saved = tmp_path / "saved.yaml"
    save_config(cfg, saved)
    assert load_config(file=saved) == cfg
