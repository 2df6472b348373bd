"""Looking inside a model: a tiny model really trained by lmforge on a corpus whose word groups
co-occur by construction must place each word's group among its nearest neighbours."""

import json
import os
import random
import struct

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.inspection import Inspector
from lmforge.inspection.pictures import MAP_PIXELS, attention_pixels, lens_pixels, write_map_html
from lmforge.model import GPT, GPTConfig, rms_norm
from lmforge.training.trainer import train
from conftest import tiny_overrides

# Each sentence draws four words of one group and two filler words, shuffled: a group's words are
# used together and nowhere else, and no word has a fixed slot, so topic is the only structure.
# (Three group words among four fillers, 400 steps, reached only 0.17-0.69 precision: the tiny model
# had not yet picked the topic signal out of the filler; more steps on 300 documents overfit.)
GROUPS = {
    "animal": ["dog", "cat", "bark", "meow", "tail"],
    "tool": ["hammer", "nail", "saw", "drill", "wood"],
    "food": ["bread", "cheese", "soup", "bake", "eat"],
    "weather": ["rain", "snow", "cloud", "wind", "storm"],
    "music": ["piano", "violin", "song", "sing", "drum"],
    "sea": ["boat", "wave", "fish", "sail", "shore"],
}
FILLER = "the a and of to in it was is then very with on at so we".split()


def sentence(rng: random.Random, group: list[str]) -> str:
    words = rng.sample(group, 4) + [rng.choice(FILLER) for _ in range(2)]
    rng.shuffle(words)
    return " ".join(words) + "."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    rng = random.Random(0)
    (root / "corpus").mkdir()
    for d in range(300):
        text = " ".join(sentence(rng, rng.choice(list(GROUPS.values()))) for _ in range(6))
        (root / "corpus" / f"doc{d:03d}.txt").write_text(text + "\n")
    over = tiny_overrides(**{"data.val_fraction": 0.3, "model.n_embd": 64, "model.n_head": 4, "train.max_steps": 400,
                             "train.batch_size": 16, "train.lr": 1e-2, "train.warmup_steps": 10})
    cfg = load_config("tiny", overrides=over + [f"run.out={root / 'run'}"])
    # a relative source path: document ids, and so the train/validation split, are the same every run
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train(cfg, data=["corpus"], log=lambda *_: None)
    finally:
        os.chdir(cwd)
    return root / "run"


@pytest.fixture(scope="module")
def insp(run):
    return Inspector(run)


def png_size(path) -> tuple[int, int]:
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", head[16:24])
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[:2] == (height, width)  # the whole file decodes
    return width, height


@pytest.mark.parametrize("vectors", ["static", "contextual"])
def test_group_members_are_nearest_neighbours(insp, vectors):
    words, _ = insp.vectors(vectors)
    assert set(FILLER) | {w for g in GROUPS.values() for w in g} <= set(words)
    k = 4  # the other members of a group of five
    precision = []
    for group in GROUPS.values():
        for word in group:
            found = insp.neighbours(word, k=k, vectors=vectors)["neighbours"]
            sims = [n["similarity"] for n in found]
            assert len(found) == k and word not in [n["word"] for n in found] and sims == sorted(sims, reverse=True)
            precision.append(sum(n["word"] in group for n in found) / k)
    chance = (len(group) - 1) / (len(words) - 1)
    mean = sum(precision) / len(precision)
    assert chance < 0.1 and mean >= 0.75, (mean, chance)


def test_similarity_and_analogy(insp):
    same = insp.similarity("dog", "cat")["similarity"]
    other = insp.similarity("dog", "hammer")["similarity"]
    assert same > other + 0.3
    assert insp.similarity("cat", "dog")["similarity"] == pytest.approx(same)
    result = insp.analogy("dog", "bark", "hammer", k=3)
    answers = [a["word"] for a in result["answers"]]
    assert not {"dog", "bark", "hammer"} & set(answers) and answers[0] in GROUPS["tool"]


def test_logit_lens_last_layer_is_the_models_output(insp):
    text = "the dog and a cat bark on the shore"
    result = insp.logit_lens(text, k=5)
    ids = torch.tensor([[insp.eot] + insp.tok.encode(text).ids])
    with torch.no_grad():
        probs = insp.model(ids).softmax(-1)[0]  # (T, vocab)
        _, hidden = insp.model(ids, return_hidden=True)
    assert torch.allclose(insp.lens_logits(hidden[-1])[0].softmax(-1), probs, atol=1e-6)
    last = result["layers"][-1]["top"]
    top = probs.topk(5)
    for t in range(ids.size(1)):
        assert [p["token"] for p in last[t]] == [insp.token_text[i] for i in top.indices[t].tolist()]
        assert [p["prob"] for p in last[t]] == pytest.approx(top.values[t].tolist(), abs=1e-5)
    assert len(result["layers"]) == insp.n_layer + 1 and result["tokens"][0] == "<|endoftext|>"
    # an intermediate layer is a different distribution, and each block moves the stream
    assert result["top1_prob"][1] != result["top1_prob"][-1]
    assert [c["to"] for c in result["layer_change"]] == list(range(1, insp.n_layer + 1))
    assert all(0 < c["cosine_distance"] <= 2 for c in result["layer_change"])
    assert png_size(result["png"]) == lens_pixels(len(result["tokens"]), insp.n_layer + 1) == tuple(result["png_size"])


@pytest.mark.parametrize("causal,kv_heads", [(True, 4), (False, 4), (True, 2)])
def test_explicit_attention_matches_sdpa(causal, kv_heads):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=kv_heads, n_embd=32, seq_len=16)).eval()
    with torch.no_grad():
        for block in model.blocks:  # larger weights than the init's, so that attention is far from uniform
            block.attn.qkv.weight.mul_(20)
        idx = torch.randint(0, 64, (3, 12))
        x = rms_norm(model.wte(idx), 1e-6)
        cos, sin = model.rope_cos[:12], model.rope_sin[:12]
        attn = model.blocks[0].attn
        y, probs = attn.explicit(x, cos, sin, causal)
        assert torch.allclose(y, attn(x, cos, sin, causal), atol=1e-5)  # probs @ V is what SDPA computes
        maps = model.attention_probs(idx, causal)
    assert maps.shape == (2, 3, 4, 12, 12) and torch.equal(maps[0], probs)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 3, 4, 12))
    future = maps.triu(diagonal=1).sum()
    assert future == 0 if causal else future > 1


def test_attention_maps_png(insp):
    text = "rain and snow in the storm"
    grid = insp.attention(text)
    T = len(grid["tokens"])
    assert grid["layer"] == insp.n_layer and grid["heads"] == [0, 1, 2, 3]
    assert png_size(grid["png"]) == attention_pixels(T, 4) == tuple(grid["png_size"])
    maps = np.array(grid["attention"])  # (heads, T, T)
    assert np.allclose(maps.sum(-1), 1, atol=1e-4) and np.triu(maps, 1).max() == 0  # causal: no future
    one = insp.attention(text, layer=1, head=2)
    assert one["png"].endswith("attention-L1-H2.png") and png_size(one["png"]) == attention_pixels(T, 1)
    insp.causal = False  # how a masked-objective run is read: every position sees the whole text
    try:
        assert np.triu(np.array(insp.attention(text, layer=1)["attention"]), 1).max() > 0
    finally:
        insp.causal = True


def test_map_png_and_escaped_html(insp, tmp_path):
    result = insp.word_map(top=30, out=tmp_path)
    assert result["method"] in ("pca", "umap") and len(result["points"]) == 30
    assert png_size(result["png"]) == MAP_PIXELS
    page = open(result["html"], encoding="utf-8").read()
    assert all(f">{p['word']}</text>" in page for p in result["points"]) and "http" not in page.replace(
        "http://www.w3.org/2000/svg", "")
    chosen = insp.word_map(["dog", "cat", "hammer", "rain"], vectors="contextual", out=tmp_path)
    assert [p["word"] for p in chosen["points"]] == ["dog", "cat", "hammer", "rain"]
    xy = np.array([[p["x"], p["y"]] for p in chosen["points"]])
    assert np.linalg.norm(xy[0] - xy[1]) < np.linalg.norm(xy[0] - xy[2])  # dog lies nearer cat than hammer
    evil = ["<script>alert(1)</script>", "a&b", '"quoted"']
    path = write_map_html(evil, np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.2]]), "<b>title</b>", tmp_path / "x.html")
    page = path.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "&quot;quoted&quot;" in page and "<b>title" not in page


def test_sentences_pair_by_topic(insp, tmp_path):
    rng = random.Random(5)
    lines = [sentence(rng, GROUPS[g]) for g in ("animal", "sea", "tool", "animal", "sea", "tool")]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n\n")
    result = insp.sentences(tmp_path / "s.txt", top=3, out=tmp_path)
    topic = {line: n % 3 for n, line in enumerate(lines)}
    assert result["sentences"] == 6 and all(topic[p["a"]] == topic[p["b"]] for p in result["pairs"])
    assert np.load(result["embeddings"], allow_pickle=False).shape == (6, 64)


def test_cli_json_and_text(run, capsys):
    assert main(["inspect", "neighbours", str(run), "dog", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [set(n) for n in result["neighbours"]] == [{"word", "similarity"}] * 3
    assert main(["inspect", "neighbors", str(run), "dog", "-k", "3", "--vectors", "contextual", "--layer", "1"]) == 0
    assert "nearest to 'dog' (contextual, layer 1" in capsys.readouterr().out
    assert main(["inspect", "layers", str(run), "the dog"]) == 0
    out = capsys.readouterr().out
    assert "layer 2" in out and "' dog'" in out and (run / "inspect" / "layers.png").is_file()


@pytest.mark.parametrize("args,words", [
    (["neighbours", "{run}", "zebra"], ["'zebra'", "not a vocabulary word"]),
    (["neighbours", "{run}", "zebra", "--vectors", "contextual"], ["never occurs"]),
    (["neighbours", "{run}", "dog cat"], ["one word"]),
    (["neighbours", "{run}", "dog", "--vectors", "contextual", "--layer", "9"], ["--layer 9", "0 (embedding) to 2"]),
    (["similarity", "{run}", "dog", "qwzx"], ["'qwzx'"]),
    (["map", "{run}", "dog", "nowhere"], ["'nowhere'"]),
    (["layers", "{run}", "  "], ["text is empty"]),
    (["layers", "{run}", "dog " * 40], ["shorten it"]),
    (["attention", "{run}", "the dog", "--layer", "3"], ["--layer 3", "1 to 2"]),
    (["attention", "{run}", "the dog", "--head", "4"], ["--head 4", "0 to 3"]),
    (["sentences", "{run}", "{run}/missing.txt"], ["does not exist"]),
    (["neighbours", "{run}/nothing", "dog"], ["does not exist"]),
])
def test_bad_input_exits_2(run, capsys, args, words):
    assert main(["inspect"] + [a.replace("{run}", str(run)) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmforge: error: "), err
    assert all(w in err[0] for w in words), err[0]


def test_control_characters_are_drawn_as_their_codes(tmp_path):
    """Byte-level BPE has tokens such as "\\x0b" and "\\x1c": no font has a glyph for them, so a
    picture labelled with them warned and drew blank boxes."""
    import warnings

    from lmforge.inspection.pictures import plot_lens

    tokens = ["a\x0b", "\x01", "b\x1c", "\u200b", "\n\t"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning
        plot_lens(tokens, [tokens, tokens], np.full((2, 5), 0.5), "next token", tmp_path / "lens.png")
    from lmforge.inspection.pictures import _short

    assert [_short(t) for t in tokens] == ["a\\x0b", "\\x01", "b\\x1c", "\\u200b", "\\n\\t"]


def test_words_training_never_saw_are_neither_shown_nor_neighbours(run):
    """Issue 28's trial: validation-only words ("Sonic", "Sega") had whole tokens the tokenizer learned
    from the validation documents, but embedding rows no step had touched, and the first look showed
    them 0.97-0.99 alike. A word whose token training never saw is left out of the frequent words and
    of the static neighbours, and asking for it says why."""
    from lmforge.errors import LmforgeError

    top = Inspector(run).frequent_words(3, min_length=3)
    insp = Inspector(run)
    (unseen,) = insp.tok.encode(" " + top[0], add_special_tokens=False).ids  # one token in this vocabulary
    used = insp._used_tokens()
    used[unseen] = False
    insp._used_tokens = lambda: used  # as if no training window had held that token
    assert top[0] not in insp.frequent_words(3, min_length=3)
    words, _ = insp.vectors("static")
    assert top[0] not in words and top[1] in words
    assert all(n["word"] != top[0] for n in insp.neighbours(top[1], k=len(words) - 1)["neighbours"])
    with pytest.raises(LmforgeError, match="not in the training text"):
        insp.neighbours(top[0])
