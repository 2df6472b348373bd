"""Fill in the blank, multiple choice and cloze tasks, for masked and causal models.

Both models train on one synthetic corpus that makes every blank certain: documents walk a cycle
of 40 words from a random start, so each word is fixed by its neighbours (the cycle is longer
than the 32-token context, so copying the same word from one period away is not a shortcut).
"""

import json
import math
import random
import re
from collections import Counter

import pytest
import torch

from conftest import WORDS, tiny_overrides
from lmforge import cli
from lmforge.tasks.cloze import Scorer, fill
from lmforge.config import load_config
from lmforge.evaluation import evaluate_run
from lmforge.tasks.accuracy import evaluate_tasks, read_tasks, wilson_interval
from lmforge.tokenizing import tokenize_corpus
from lmforge.training.trainer import train

CYCLE = list(dict.fromkeys(w for w in WORDS if len(w) >= 4))[:40]
N = len(CYCLE)


def word(i: int) -> str:
    return CYCLE[i % N]


def query(i: int, blank: str = "[MASK]") -> str:
    """Three words either side of word i, with word i blanked."""
    return " ".join([word(i - 3), word(i - 2), word(i - 1), blank, word(i + 1), word(i + 2), word(i + 3)])


def options(i: int, rng: random.Random) -> tuple[list[str], int]:
    choices = [word(i)] + rng.sample([w for w in CYCLE if w != word(i)], 3)
    rng.shuffle(choices)
    return choices, choices.index(word(i))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cloze")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for d in range(60):
        start = rng.randrange(N)
        (corpus / f"d{d}.txt").write_text(" ".join(word(start + i) for i in range(200)) + "\n")
    over = tiny_overrides(**{"model.n_embd": 64, "train.max_steps": 250, "train.batch_size": 16, "train.lr": 3e-3,
                             "train.warmup_steps": 10, "train.final_eval_tokens": 0})
    cfg = load_config("tiny", overrides=over)
    cfg.data.sources = [str(corpus)]
    tokens = root / "tokens"
    tokenize_corpus(cfg.data, cfg.tokenizer, tokens, log=lambda *_: None)
    # the masked model through the command line's --objective flag, the causal one through the API
    args = ["train", "--data", str(tokens), "--out", str(root / "masked"), "--objective", "masked", "--no-progress"]
    assert cli.main(args + [a for o in over for a in ("--set", o)]) == 0
    train(load_config("tiny", overrides=over + [f"run.out={root / 'causal'}"]), data=[str(tokens)],
          log=lambda *_: None)
    return {"masked": root / "masked", "causal": root / "causal", "root": root}


def test_masked_model_learns_the_fill_in_pattern(runs):
    run = runs["masked"]
    assert "objective: masked" in (run / "config.yaml").read_text()
    assert json.loads((run / "summary.json").read_text())["objective"] == "masked"
    val = evaluate_run(run)
    assert val["objective"] == "masked" and val["accuracy"] > 0.9, val  # 0.96 measured; window edges are harder
    right = 0
    for i in range(N):
        result = fill(run, query(i), top_k=3)
        assert result["scoring"] == "masked-pll" and len(result["candidates"]) == 3
        right += result["candidates"][0]["text"] == word(i)
    assert right / N > 0.95, f"{right}/{N}"


@pytest.mark.parametrize("kind", ["masked", "causal"])
def test_choices_rank_the_certain_answer_first(runs, kind, capsys):
    rng = random.Random(1)
    for i in range(0, N, 4):
        choices, answer = options(i, rng)
        result = fill(runs[kind], query(i), choices)
        assert result["scoring"] == {"masked": "masked-pll", "causal": "causal-sentence"}[kind]
        assert result["candidates"][0]["text"] == choices[answer], result
    # the command line: --json, best first, probabilities normalised over the choices
    assert cli.main(["fill", str(runs[kind]), query(7), "--choices", ",".join(options(7, rng)[0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    scores = [c["score"] for c in out["candidates"]]
    assert out["candidates"][0]["text"] == word(7) and scores == sorted(scores, reverse=True)
    assert sum(c["probability"] for c in out["candidates"]) == pytest.approx(1.0)
    assert out["candidates"][0]["probability"] > 0.9
    # and the plain output names the scoring
    assert cli.main(["fill", str(runs[kind]), query(3), "--top-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("scoring: ") and f'"{word(3)}"' in text.splitlines()[1]


def test_causal_top_fillers_are_completed_sentences(runs):
    result = fill(runs["causal"], query(11), top_k=5)
    assert result["scoring"] == "causal-sentence" and result["shortlist"] <= 50
    assert result["candidates"][0]["text"] == word(11)
    assert [c["score"] for c in result["candidates"]] == sorted((c["score"] for c in result["candidates"]),
                                                                 reverse=True)


def test_multi_token_choices_are_scored_as_documented(runs):
    """Two blanked words as one choice: masked = pseudo-log-likelihood with one <|mask|> per
    choice token in turn; causal = log-likelihood of the whole completed sentence."""
    text = " ".join([word(2), word(3), word(4), "[MASK]", word(7), word(8)])
    right, wrong = f"{word(5)} {word(6)}", f"{word(6)} {word(5)}"
    for kind in ("masked", "causal"):
        scorer = Scorer(runs[kind])
        enc = lambda s: scorer.tok.encode(s, add_special_tokens=False).ids  # noqa: E731
        prefix = [scorer.eot] + enc(" ".join([word(2), word(3), word(4)]))
        filler, suffix = enc(" " + right), enc(" " + " ".join([word(7), word(8)]))
        assert len(filler) == 2
        seq = prefix + filler + suffix
        with torch.no_grad():
            if kind == "masked":
                manual = 0.0
                for j, t in enumerate(filler):
                    row = list(seq)
                    row[len(prefix) + j] = scorer.mask
                    logp = torch.log_softmax(scorer.model(torch.tensor([row]), causal=False)[0], -1)
                    manual += logp[len(prefix) + j, t].item()
            else:
                logp = torch.log_softmax(scorer.model(torch.tensor([seq[:-1]]))[0], -1)
                manual = sum(logp[t, seq[t + 1]].item() for t in range(len(seq) - 1))
        result = fill(runs[kind], text, [wrong, right, f"{word(5)} {word(12)}"])  # same length: raw sums compare
        by_text = {c["text"]: c for c in result["candidates"]}
        assert by_text[right]["score"] == pytest.approx(manual, abs=1e-4)
        assert by_text[right]["tokens"] == 2
        assert result["candidates"][0]["text"] == right, result


def write_tasks(path, n=20, seed=2):
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        choices, answer = options(i, rng)
        lines.append(json.dumps({"context": query(i), "choices": choices, "answer": answer}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", ["masked", "causal"])
def test_eval_tasks_reports_accuracy_with_intervals(runs, kind, tmp_path, capsys):
    tasks = write_tasks(tmp_path / "tasks.jsonl")
    result = evaluate_tasks(runs[kind], tasks)
    assert result["tasks"] == 20 and result["model"] == kind
    assert result["scoring"] == {"masked": "masked-pll", "causal": "causal-sentence"}[kind]
    assert result["accuracy"] >= 0.95 and result["accuracy_norm"] >= 0.95
    right = round(result["accuracy"] * 20)
    assert result["accuracy_ci95"] == pytest.approx(list(wilson_interval(right, 20)))
    assert result["chance"] == pytest.approx(0.25)
    assert cli.main(["eval", str(runs[kind]), "--tasks", str(tasks)]) == 0
    out = capsys.readouterr().out
    assert "accuracy per byte" in out and "95% CI" in out


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), method 3: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


def test_masked_eval_reports_masked_token_loss_and_accuracy(runs, capsys):
    assert cli.main(["eval", str(runs["masked"]), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(runs["masked"]), "--objective", "masked", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first  # masks drawn with a fixed seed
    causal = evaluate_run(runs["causal"])
    # round(15%) of each 32-token window's ordinary tokens (boundary tokens are never masked) are targets
    rows = causal["tokens"] // 32
    assert abs(first["tokens"] - 0.15 * causal["tokens"]) <= 0.5 * rows + 1
    assert math.isfinite(first["val_loss"]) and 0.9 < first["accuracy"] <= 1.0  # window edges are harder
    assert cli.main(["eval", str(runs["masked"])]) == 0
    assert "masked-token loss" in capsys.readouterr().out


def test_builtin_tasks_ship_with_lmforge(runs):
    tasks = read_tasks("builtin")
    assert len(tasks) >= 150
    assert all(t["context"].count("[MASK]") == 1 and len(t["choices"]) == 4 for t in tasks)
    answers = [t["answer"] for t in tasks]
    assert max(answers.count(a) for a in range(4)) < 0.35 * len(tasks)  # the right slot is not a giveaway
    result = evaluate_tasks(runs["causal"], "builtin")
    assert result["tasks"] == len(tasks)
    scorer = Scorer(runs["causal"])  # the same decisions, counted by hand
    right = 0
    for t in tasks:
        scores = [s.score for s in scorer.score_choices(t["context"], t["choices"])[1]]
        right += scores.index(max(scores)) == t["answer"]
    assert result["accuracy"] == right / len(tasks)
    lo, hi = result["accuracy_ci95"]
    assert lo < result["accuracy"] < hi
    assert result["truncated"] > 0  # the 32-token test model cannot hold every sentence: trimmed, not refused


def user_error(capsys, args, *words):
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmforge: error:"), lines
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_is_one_clear_line(runs, tmp_path, capsys):
    masked, causal = str(runs["masked"]), str(runs["causal"])
    user_error(capsys, ["fill", masked, "no blank here"], "no blank", "[MASK]")
    user_error(capsys, ["fill", causal, "[MASK] and [MASK]"], "2 blanks", "one per text")
    user_error(capsys, ["fill", masked, query(1), "--choices", f"{word(1)},,{word(2)}"], "choice 2 is empty")
    user_error(capsys, ["fill", masked, query(1), "--top-k", "0"], "--top-k")
    user_error(capsys, ["eval", causal, "--objective", "masked"], "causal objective", "masked-token evaluation",
               "--objective masked")
    user_error(capsys, ["generate", masked, "hello"], "masked objective", "generate")
    user_error(capsys, ["fill", str(tmp_path / "nowhere"), query(1)], "does not exist")
    good = json.dumps({"context": query(1), "choices": [word(1), word(2)], "answer": 0})
    bad_lines = {
        "not json": "not valid JSON",
        json.dumps({"context": "no blank", "choices": ["a", "b"], "answer": 0}): "no blank",
        json.dumps({"context": query(1), "choices": ["a", ""], "answer": 0}): "choice 2 is empty",
        json.dumps({"context": query(1), "choices": ["a", "b"], "answer": 2}): '"answer"',
        json.dumps({"context": query(1), "choices": ["a"], "answer": 0}): "at least two",
        json.dumps({"context": query(1), "answer": 0}): '"choices"',
    }
    for i, (line, words) in enumerate(bad_lines.items()):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text(good + "\n\n" + line + "\n")
        user_error(capsys, ["eval", causal, "--tasks", str(path)], f"bad{i}.jsonl:3:", words)
    user_error(capsys, ["eval", causal, "--tasks", str(tmp_path / "missing.jsonl")], "not found")


# ---------------------------------------------------------------- issue 14: one file of short lines

ANIMALS = [("cow", "moo"), ("cat", "meow"), ("dog", "woof"), ("duck", "quack"), ("owl", "hoot")]
TEMPLATES = ["the {a} says {s} .", "a {a} always says {s} here .", "every {a} says {s} at night ."]


def animals_file(path, lines=4000, seed=0):
    """The issue's corpus: one plain text file of short lines, one document in all."""
    rng = random.Random(seed)
    path.write_text("\n".join(rng.choice(TEMPLATES).format(a=a, s=s) for a, s in (rng.choice(ANIMALS)
                                                                                   for _ in range(lines))) + "\n")
    return path


def test_a_one_file_corpus_is_read_after_a_line_break(runs, tmp_path):
    """One file is one <|endoftext|> in the whole stream: the model learned every line after "\\n"
    (issue 14: after <|endoftext|> a masked tiny-preset model put "quack" in the owl's blank)."""
    over = tiny_overrides(**{"train.max_steps": 2})
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(animals_file(tmp_path / "animals.txt", 600)), "--out", str(run),
                     "--no-progress"] + [a for o in over for a in ("--set", o)]) == 0
    scorer = Scorer(run)
    assert scorer.lead_in == scorer.encode("\n")
    assert scorer.blank("the cow says [MASK] .").prefix == scorer.encode("\nthe cow says")
    assert fill(run, "the cow says [MASK] .", ["moo", "meow"])["read_after"] == "\n"
    # a corpus of many documents still reads a text as a document start
    assert Scorer(runs["causal"]).lead_in == [Scorer(runs["causal"]).eot]
    assert fill(runs["masked"], query(3), [word(3), word(4)])["read_after"] == "<|endoftext|>"


# The corpus and question, on a model small enough for the suite: 2 layers of width 64.
# Measured (1 thread): causal 200 steps x 16 windows 15/15; masked 200 steps 4/15, 400 steps 9/15,
# 600 steps x 32 windows 15/15 (the owl's "hoot" at p 0.996), 1,000 x 16 windows 15/15.
ANIMAL_RUNS = {"causal": {"train.max_steps": 300, "train.batch_size": 16},
               "masked": {"train.max_steps": 600, "train.batch_size": 32}}


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_a_model_of_one_file_of_short_lines_fills_the_blank_it_learned(tmp_path, objective):
    """Issue 14: trained on 4,000 lines "the cow says moo ." (5 animals x 3 templates, one file), the
    model must answer each animal's sound in each template, whichever objective taught it."""
    values = {"tokenizer.vocab_size": 512, "tokenizer.train_bytes": 0, "model.n_layer": 2, "model.n_head": 4,
              "model.n_embd": 64, "model.seq_len": 32, "train.warmup_steps": 20, "train.lr": 3e-3,
              "train.eval_interval": 0, "train.final_eval_tokens": 2048, "train.checkpoint_interval": 0,
              "train.progress": False, "train.threads": 1, "train.log_interval": 50, "train.objective": objective,
              "run.samples": 0, **ANIMAL_RUNS[objective]}
    run = tmp_path / objective
    assert cli.main(["train", "--data", str(animals_file(tmp_path / "animals.txt")), "--out", str(run)]
                    + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]) == 0
    sounds = [s for _, s in ANIMALS]
    wrong = {}
    for animal, sound in ANIMALS:
        for template in TEMPLATES:
            query = template.format(a=animal, s="[MASK]")
            answer = fill(run, query, sounds)["candidates"][0]["text"]
            if answer != sound:
                wrong[query] = answer
    assert not wrong, f"{len(wrong)}/15 wrong: {wrong}"


# ---------------------------------------------------------------- issue 28: fill ranks as eval --tasks; whole words


@pytest.mark.parametrize("kind", ["masked", "causal"])
def test_fill_ranks_choices_as_eval_tasks_accuracy_does(runs, kind, tmp_path):
    """One rule picks the winner of `fill --choices` and of `eval --tasks`' accuracy: the summed
    log-probability, its percentages the softmax of those sums; the per-byte rank (accuracy_norm) is
    shown beside it. (Issue 28 asked for the per-byte rank in fill; measured on seven runs' own blanks it
    was right less often every time, and it showed "__init__(self" at 61% over "range", 10 nats likelier.)"""
    import math

    scorer = Scorer(runs[kind])
    split = []  # built-in tasks where the raw sum and the per-byte score pick different choices
    for t in read_tasks("builtin"):
        scored = scorer.score_choices(t["context"], t["choices"])[1]
        raw = max(range(len(scored)), key=lambda i: scored[i].score)
        norm = max(range(len(scored)), key=lambda i: scored[i].score / scored[i].scored_bytes)
        if raw != norm:
            split.append((t, raw))
    assert split, "no task tells the two rankings apart: the test would prove nothing"
    for t, raw in split[:3]:
        candidates = fill(runs[kind], t["context"], t["choices"])["candidates"]
        assert candidates[0]["text"] == t["choices"][raw]
        z = sum(math.exp(c["score"] - candidates[0]["score"]) for c in candidates)
        assert candidates[0]["probability"] == pytest.approx(1 / z)
        assert candidates[0]["per_byte"] < max(c["per_byte"] for c in candidates)  # the other rank, shown beside
    path = tmp_path / "split.jsonl"
    path.write_text("".join(json.dumps({**t, "answer": raw}) + "\n" for t, raw in split))
    result = evaluate_tasks(runs[kind], path)
    assert result["accuracy"] == 1.0 and result["accuracy_norm"] == 0.0


@pytest.mark.parametrize("kind", ["masked", "causal"])
def test_top_fillers_are_whole_words(runs, kind):
    """Every filler `fill` offers without choices is a whole word, scored as that word given as a
    choice (issue 28: pieces like "ed" or "s" were offered, scored glued to the word before the
    blank). On a corpus of 40 words the likely ones are its words; a masked model offers only them."""
    scorer = Scorer(runs[kind])
    for i in range(0, N, 3):
        result = fill(runs[kind], query(i), top_k=10)
        cands = result["candidates"]
        assert result["scoring"] == {"masked": "masked-pll", "causal": "causal-sentence"}[kind]
        assert cands[0]["text"] == word(i) and len(cands) == 10
        assert all(re.fullmatch(r"\w+", c["text"]) for c in cands), cands
        likely = {c["text"] for c in cands if c["probability"] > 0.01}
        assert likely <= set(WORDS) and (kind == "causal" or {c["text"] for c in cands} <= set(WORDS)), cands
        if i % 9 == 0:
            as_choices = scorer.score_choices(query(i), [c["text"] for c in cands])[1]
            assert [c["score"] for c in cands] == pytest.approx([s.score for s in as_choices], abs=1e-4)
    for w in [w for w in CYCLE if len(scorer.encode(" " + w)) > 1][:2]:  # a word of several tokens is offered whole
        assert fill(runs[kind], query(CYCLE.index(w)), top_k=3)["candidates"][0]["text"] == w


# ---------------------------------------------------------------- issue 28: prompts and blanks from the user's text


def stories(n: int = 300, seed: int = 0) -> list[str]:
    from conftest import make_prose

    return [make_prose(seed + d, paragraphs=2) for d in range(n)]


def test_validation_prompts_are_the_first_words_of_documents():
    from lmforge.tasks.validation import Passage, sample_prompts

    docs = stories(40)
    passages = [Passage(d, True) for d in docs]
    prompts = sample_prompts(passages, 3, seed=5)
    assert len(prompts) == 3 and len(set(prompts)) == 3
    assert prompts == sample_prompts(passages, 3, seed=5) != sample_prompts(passages, 3, seed=6)
    for p in prompts:
        assert any(d.startswith(p) for d in docs), p
        assert p == p.strip() and len(p.split()) == 4
        assert not any(d.startswith(p) and d[len(p):len(p) + 1].isalnum() for d in docs)  # never cut inside a word
    # one long document held out as its tail: paragraph starts instead, never its cut first line
    tail = Passage("ley and the river.\n\n" + "\n\n".join(docs[:5]), False)
    for p in sample_prompts([tail], 3, seed=0):
        assert not p.startswith("ley") and "\n\n" + p in tail.text


def test_blanks_are_made_from_the_validation_text():
    from lmforge.tasks.validation import MIN_COUNT, MIN_TASKS, NEAR, WORD, Passage, cloze_tasks, sentences

    passages = [Passage(d, True) for d in stories()]
    tasks, why = cloze_tasks(passages, seed=1)
    assert why == "" and len(tasks) == 200
    assert tasks == cloze_tasks(passages, seed=1)[0] != cloze_tasks(passages, seed=2)[0]
    pool = set(sentences(passages))
    freq = Counter(m.group() for s in pool for m in WORD.finditer(s))
    ranked = [w for w, c in freq.most_common() if c >= MIN_COUNT and w.islower() and len(w) >= 3]
    for t in tasks:
        answer = t["choices"][t["answer"]]
        sentence = t["context"].replace("[MASK]", answer)
        assert sentence in pool  # one whole word of a real sentence blanked
        assert answer in [m.group() for m in WORD.finditer(sentence)]
        present = {m.group() for m in WORD.finditer(sentence)}
        for c in t["choices"]:
            assert c == answer or c not in present
            assert abs(ranked.index(c) - ranked.index(answer)) <= 2 * NEAR + 50  # of similar frequency
    assert Counter(t["answer"] for t in tasks).most_common(1)[0][1] < 0.35 * len(tasks)
    small, why = cloze_tasks([Passage(stories(2)[0], True)], seed=1)
    assert small == [] and f"{MIN_TASKS} are needed" in why


def test_run_scores_the_built_in_tasks_on_the_built_in_corpus_only(runs):
    """lmforge run's blanks: the built-in Python-documentation ones on the built-in corpus, named for
    what they are; on a user's corpus the validation text's own, or, where it cannot give enough,
    none, with the reason (the cycle corpus has no sentence of 7-40 words)."""
    from lmforge.pipeline import fill_in_the_blank
    from lmforge.folders.run import RunDir

    run = RunDir(runs["causal"])
    cfg = run.config
    said = []
    builtin = fill_in_the_blank(run, cfg, True, said.append)
    assert builtin["tasks"] == len(read_tasks("builtin"))
    assert builtin["label"] == f"fill-in-the-blank accuracy on {builtin['tasks']} blanks from Python's documentation"
    assert said[-1].startswith(f"cloze: {builtin['label']}: ") and f"chance {builtin['chance']:.3f}" in said[-1]
    assert fill_in_the_blank(run, cfg, False, said.append) is None
    assert said[-1].startswith("cloze: no fill-in-the-blank accuracy: the validation text gave 0 usable sentences")
    assert not (run.path / "cloze_tasks.jsonl").exists()
    cfg.run.tasks = "builtin"
    assert fill_in_the_blank(run, cfg, False, said.append)["label"].endswith("documentation, not from your corpus")
    cfg.run.tasks = "none"
    assert fill_in_the_blank(run, cfg, False, said.append) is None
