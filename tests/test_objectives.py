"""The masked (missing-token) objective: what is hidden, in what proportions, reproducibly."""

import math

import numpy as np
import pytest
import torch

from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.model import GPT, GPTConfig
from lmforge.objectives import IGNORE_INDEX, CausalLM, MaskedLM, build_objective, mask_generator
from lmforge.tokenizer import load_tokenizer, vocab_tables
from lmforge.folders.tokenized import load_shards

V, EOT, PAD, MASK_ID = 512, 0, 1, 2


def objective(**kw) -> MaskedLM:
    return MaskedLM(MASK_ID, [EOT, PAD, MASK_ID], V, **kw)


def windows(rows: int, seed: int = 0) -> torch.Tensor:
    """(rows, 257) ordinary ids with a document boundary now and then."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(3, V, (rows, 257), generator=g)
    w[torch.rand(w.shape, generator=g) < 0.02] = EOT
    return w


def test_masking_proportions_hold_statistically():
    w = windows(400)  # 102,400 input tokens
    x = w[:, :-1]
    inputs, targets = objective().batch(w, mask_generator(1, 2, 3))
    selected = targets != IGNORE_INDEX
    ordinary = x != EOT
    n = int(ordinary.sum())
    # round(15% x n) per sequence: the total is within half a token per sequence of 15%
    assert abs(int(selected.sum()) - 0.15 * n) <= 0.5 * len(x) + 1
    assert not (selected & ~ordinary).any(), "a special token was selected"
    assert torch.equal(targets[selected], x[selected])
    k = int(selected.sum())
    masked = (inputs == MASK_ID) & selected
    same = (inputs == x) & selected
    replaced = selected & ~masked & ~same
    se = lambda p: 4 * math.sqrt(p * (1 - p) / k)  # noqa: E731  four standard errors
    # a random replacement equals the original with probability 1/509, which then reads as "same"
    p_random = 0.1 * (1 - 1 / (V - 3))
    assert abs(masked.sum().item() / k - 0.8) < se(0.8)
    assert abs(replaced.sum().item() / k - p_random) < se(p_random)
    assert abs(same.sum().item() / k - (1 - 0.8 - p_random)) < se(0.1)
    assert not torch.isin(inputs[replaced], torch.tensor([EOT, PAD, MASK_ID])).any(), "random token was special"
    assert torch.equal(inputs[~selected], x[~selected]), "an unselected token changed"
    # other settings are honoured too
    inputs, targets = objective(mask_prob=0.3, replace=0.5, random=0.5).batch(w, mask_generator(9))
    sel = targets != IGNORE_INDEX
    assert abs(sel.sum().item() / n - 0.3) < 0.01
    assert abs(((inputs == MASK_ID) & sel).sum().item() / sel.sum().item() - 0.5) < 0.02
    assert ((inputs == x) & sel).sum().item() / sel.sum().item() < 0.01


def test_masks_are_reproducible_from_their_key():
    w = windows(8)
    a = objective().batch(w, mask_generator(1337, 5, 0, 0))
    b = objective().batch(w, mask_generator(1337, 5, 0, 0))
    c = objective().batch(w, mask_generator(1337, 6, 0, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_masked_position_logits_do_not_depend_on_the_original_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, n_layer=2, n_head=2, n_embd=32, seq_len=64)).eval()
    obj = objective()
    w = windows(4, seed=3)[:, :65]
    inputs, targets = obj.batch(w, mask_generator(7))
    hidden = inputs == MASK_ID
    assert hidden.sum() > 10
    other = w.clone()
    other[:, :-1][hidden] = (other[:, :-1][hidden] - 3 + 1) % (V - 3) + 3  # every hidden token changed
    inputs2, targets2 = obj.batch(other, mask_generator(7))
    assert not torch.equal(targets, targets2)
    with torch.no_grad():
        a, b = model(inputs, causal=False), model(inputs2, causal=False)
    assert torch.equal(a[hidden], b[hidden])
    # ...whereas a visible token does reach the masked positions (the attention is bidirectional)
    visible = other.clone()
    row, col = torch.nonzero(hidden)[0].tolist()
    visible[row, col + 1 if col + 1 < 64 and not hidden[row, col + 1] else col - 1] += 1
    with torch.no_grad():
        c = model(obj.batch(visible, mask_generator(7))[0], causal=False)
    assert not torch.allclose(a[row, col], c[row, col])


def test_loss_counts_only_the_selected_positions():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_embd=32, seq_len=64))
    obj = objective()
    w = windows(2)[:, :65]
    inputs, targets = obj.batch(w, mask_generator(0))
    loss, count = obj.loss(model, inputs, targets)
    keep = targets != IGNORE_INDEX
    logits = model(inputs, causal=False)
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
    expected = sum(round(0.15 * int((row != EOT).sum())) for row in w[:, :-1])
    assert count.item() == keep.sum().item() == expected
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_whole_word_masking_takes_whole_words(tokens_dir):
    tok = load_tokenizer(tokens_dir)
    tables = vocab_tables(tok)
    obj = MaskedLM(**tables, whole_word=True)
    ids = tok.encode("Serialization of dictionaries, e.g. json.dumps(x)", add_special_tokens=False).ids
    words = obj.words(torch.tensor([ids]))[0].tolist()
    groups = ["".join(tok.decode([ids[i] for i in range(len(ids)) if words[i] == w])) for w in sorted(set(words))]
    assert groups == ["Serialization", " of", " dictionaries", ",", " e", ".", "g", ".", " json", ".", "dumps", "(", "x", ")"]
    assert len(ids) > len(groups)  # some words span several tokens, so the grouping is doing work
    shards = load_shards(tokens_dir, "train")
    w = torch.from_numpy(np.asarray(shards[0][: 64 * 129], dtype=np.int64).reshape(64, 129))
    x = w[:, :-1]
    inputs, targets = obj.batch(w, mask_generator(3))
    selected = targets != IGNORE_INDEX
    word = obj.words(x)
    for r in range(len(x)):
        for wid in word[r].unique():
            in_word = selected[r][word[r] == wid]
            assert in_word.all() or not in_word.any(), "a word was partly selected"
        budget = round(0.15 * int((~obj.is_special[x[r]]).sum()))
        longest = int(torch.bincount(word[r]).max())
        assert budget - longest < int(selected[r].sum()) <= budget
    share = selected.sum().item() / (~obj.is_special[x]).sum().item()
    assert 0.12 < share <= 0.15


def test_config_keys_and_their_checks():
    cfg = load_config("tiny", overrides=["train.objective=masked", "train.mask_prob=0.2", "train.whole_word_mask=true"])
    assert isinstance(build_objective(cfg.train, {"mask_id": 2, "special_ids": [0, 1, 2], "vocab_size": 10,
                                                 "starts_word": np.ones(10, bool), "joins_next": np.ones(10, bool)}),
                      MaskedLM)
    assert isinstance(build_objective(load_config("tiny").train), CausalLM)
    for bad, key in (("train.objective=mlm", "train.objective"), ("train.mask_prob=0", "train.mask_prob"),
                     ("train.mask_random=0.3", "train.mask_random")):
        with pytest.raises(LmforgeError, match=key):
            load_config("tiny", overrides=[bad])
