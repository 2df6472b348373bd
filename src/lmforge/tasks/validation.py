"""What `lmforge run` asks a model, drawn from its own validation text (text it never trained on).

The validation split of the run's tokenized folder is decoded back to text (at most VAL_TOKENS
tokens, from its start) as passages: a passage runs from one <|endoftext|> to the next, or is the
part of a long document held out from training (it then starts mid-document). From them:

- Sample prompts (`sample_prompts`): the first PROMPT_WORDS words of a passage start, cut where a
  word ends (never inside one, never after a space, which would make the model write a second
  one), and at a paragraph break. Starts are document starts; where the validation text holds
  fewer distinct ones than prompts wanted (one long file, held out as its tail), paragraph starts,
  then line starts. Drawn with `random.Random(seed)`; a prompt is not repeated.
- Cloze tasks (`cloze_tasks`), as scripts/make_cloze_tasks.py builds the built-in ones but with no
  word list of any language: a sentence (split after . ! ? and at blank lines; 7-40
  words; its text kept as it is, line breaks included) has one lowercase word blanked, chosen
  among those of 3+ letters that occur at least MIN_COUNT times in the validation text, are not
  among its COMMON most frequent words (function words, in any language), occur once in the
  sentence and are not its first two words. The three distractors are lowercase words within
  NEAR frequency ranks of the answer (so word frequency alone does not give it away) that do not
  occur in the sentence. Deterministic given the seed; fewer than MIN_TASKS tasks is no test,
  and `cloze_tasks` then says why instead.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.folders.tokenized import load_shards, read_meta

VAL_TOKENS = 1_000_000  # about 4 MB of text: enough sentences, decoded in about a second
PROMPT_WORDS = 4
PROMPT_CHARS = 60  # ...or fewer words, where the first ones are long (code, URLs)
TASKS = 200
MIN_TASKS = 20
MIN_COUNT = 3
COMMON = 50
NEAR = 25
CHOICES = 4

# a whole word of letters, not part of "don't" or "well-known"
WORD = re.compile(r"(?<![\w'’-])[^\W\d_]+(?![\w'’-])")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n[ \t]*\n\s*")
PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")


@dataclass
class Passage:
    text: str
    document_start: bool  # begins after <|endoftext|>; else inside a document held out in part


def validation_passages(tokens_dir: str | Path, tok, max_tokens: int = VAL_TOKENS) -> list[Passage]:
    """The validation split of a tokenized folder as text, cut at <|endoftext|>."""
    eot = read_meta(tokens_dir)["eot_id"]
    parts, left = [], max_tokens
    for shard in load_shards(tokens_dir, "val"):
        parts.append(np.asarray(shard[:left]))
        left -= len(parts[-1])
        if left <= 0:
            break
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    cuts = np.flatnonzero(ids == eot)
    pieces = [(ids[:cuts[0]] if len(cuts) else ids, False)]
    pieces += [(ids[a + 1:b], True) for a, b in zip(cuts, [*cuts[1:], len(ids)])]
    pieces = [(p, start) for p, start in pieces if len(p)]
    texts = tok.decode_batch([p.tolist() for p, _ in pieces], skip_special_tokens=False)
    return [Passage(t, start) for t, (_, start) in zip(texts, pieces) if t.strip()]


def first_words(text: str, words: int = PROMPT_WORDS, max_chars: int = PROMPT_CHARS) -> str:
    """The first `words` words of `text` (runs of non-space), cut at the end of a word: before a
    paragraph break, and after `max_chars` unless that would leave no word at all."""
    text = PARAGRAPH.split(text.lstrip(), maxsplit=1)[0]
    ends = [m.end() for m in re.finditer(r"\S+", text)][:words]
    if not ends:
        return ""
    fitting = [e for e in ends if e <= max_chars]
    return text[:(fitting or ends)[-1]]


def prompt_starts(passages: list[Passage], wanted: int) -> list[str]:
    """Texts that begin where the model saw text begin: document starts, then, while fewer than
    `wanted` distinct ones, paragraph starts, then line starts."""
    found: list[str] = []
    # a passage's first paragraph or line is no start unless the passage starts a document
    levels = [lambda p: [p.text] if p.document_start else [],
              lambda p: PARAGRAPH.split(p.text)[1:],
              lambda p: p.text.split("\n")[1:]]
    for level in levels:
        found += [t for p in passages for t in level(p)]
        if len({first_words(t) for t in found} - {""}) >= wanted:
            break
    return found


def sample_prompts(passages: list[Passage], count: int, seed: int) -> list[str]:
    """Up to `count` distinct prompts (module docstring), in a seeded random order."""
    if count <= 0:
        return []
    starts = prompt_starts(passages, count)
    rng = random.Random(seed)
    rng.shuffle(starts)
    return list(dict.fromkeys(w for w in map(first_words, starts) if w))[:count]


def sentences(passages: list[Passage]) -> list[str]:
    out = []
    for p in passages:
        for s in SENTENCE_END.split(p.text):
            s = s.strip()
            if 7 <= len(s.split()) <= 40:
                out.append(s)
    return list(dict.fromkeys(out))  # a repeated sentence (a refrain, a licence line) counts once


def cloze_tasks(passages: list[Passage], seed: int, count: int = TASKS) -> tuple[list[dict], str]:
    """Up to `count` tasks {"context", "choices", "answer"} (module docstring), and, when fewer
    than MIN_TASKS could be made, none and the reason, in words."""
    pool = sentences(passages)
    freq = Counter(m.group() for s in pool for m in WORD.finditer(s))
    common = {w for w, _ in freq.most_common(COMMON)}
    ranked = [w for w, c in freq.most_common()
              if c >= MIN_COUNT and w.islower() and len(w) >= 3 and w not in common]
    rank = {w: i for i, w in enumerate(ranked)}
    rng = random.Random(seed)
    rng.shuffle(pool)
    tasks = []
    for s in pool:
        words = list(WORD.finditer(s))
        present = {m.group() for m in words}
        spans = [m for m in words[2:] if m.group() in rank and sum(w.group() == m.group() for w in words) == 1]
        if not spans:
            continue
        blank = rng.choice(spans)
        r = rank[blank.group()]
        near = [w for w in ranked[max(0, r - NEAR): r + NEAR + 1] if w not in present]
        if len(near) < CHOICES - 1:
            continue
        choices = rng.sample(near, CHOICES - 1)
        answer = rng.randrange(CHOICES)
        choices.insert(answer, blank.group())
        tasks.append({"context": s[:blank.start()] + "[MASK]" + s[blank.end():], "choices": choices, "answer": answer})
        if len(tasks) == count:
            break
    if len(tasks) < MIN_TASKS:
        return [], (f"the validation text gave {len(tasks)} usable sentences ({len(pool):,} of 7-40 words, "
                    f"{len(ranked):,} lowercase words seen {MIN_COUNT}+ times); {MIN_TASKS} are needed")
    return tasks, ""
