"""Build the cloze task file that ships with lmforge (`lmforge eval RUN --tasks builtin`).

    python scripts/make_cloze_tasks.py [--out src/lmforge/tasks/builtin_cloze.jsonl] [--count 300] [--seed 0]

Sentences come from the prose part of the built-in corpus that is the same wherever a given
Python is installed: the documentation topics (`pydoc_data.topics`, read through the built-in
source). A sentence is kept when it is plain prose (7-28 words, letters and ordinary punctuation,
no code); one content word is blanked (4+ letters, not a stop word, seen at least 5 times in the
topics, once in the sentence, not among the first two words). The three distractors are content
words of similar frequency (within 25 frequency ranks of the answer) that do not occur in the
sentence, so word frequency alone does not give the answer away. At most 6 sentences per topic.

The sentences are taken from text `lmforge run` may train on: the tasks measure whether a small
model has learned which word fits its context, not generalisation to unseen text.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

from lmforge.data.sources import iter_documents

STOP = set(
    "the of and to in is was that for on with as by at from this which be have are one had not but all were when "
    "there can an your what their if would about into has more two may other its could only first then some them "
    "these so over new after most many like well such where made way through also than been will they used any "
    "must each same does following same should another being both where those there here just very".split()
)
PROSE = re.compile(r"^[A-Z][A-Za-z ,;'-]+\.$")
WORD = re.compile(r"[a-z]+")


def topic_texts() -> dict[str, str]:
    """The documentation topics as the built-in corpus reads them (id -> text)."""
    out = {}
    for doc in iter_documents(["builtin"]):
        if doc.id.startswith("pydoc_data.topics:"):
            out[doc.id] = doc.text
    return out


def sentences(text: str) -> list[str]:
    prose = []
    for para in re.split(r"\n\s*\n", text):
        if any(line.startswith(("   ", "\t", ">>>")) for line in para.splitlines()):
            continue  # code blocks and indented examples
        for s in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
            if PROSE.match(s) and 7 <= len(s.split()) <= 28:
                prose.append(s)
    return prose


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="src/lmforge/tasks/builtin_cloze.jsonl")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    texts = topic_texts()
    freq = Counter(w for t in texts.values() for w in WORD.findall(t.lower()))
    content = [w for w, c in freq.most_common() if c >= 5 and len(w) >= 4 and w not in STOP]
    rank = {w: i for i, w in enumerate(content)}

    tasks, seen = [], set()
    for doc_id in sorted(texts):
        pool = [s for s in sentences(texts[doc_id]) if s not in seen]
        rng.shuffle(pool)
        taken = 0
        for s in pool:
            words = s[:-1].replace(",", " ").replace(";", " ").split()
            lower = [w.lower() for w in words]
            options = [w for i, w in enumerate(words[2:], 2) if w in rank and lower.count(w) == 1]
            if not options:
                continue
            answer = rng.choice(options)
            r = rank[answer]
            near = [w for w in content[max(0, r - 25): r + 26] if w != answer and w not in lower]
            if len(near) < 3:
                continue
            choices = rng.sample(near, 3) + [answer]
            rng.shuffle(choices)
            context = re.sub(rf"\b{answer}\b", "[MASK]", s, count=1)
            tasks.append({"context": context, "choices": choices, "answer": choices.index(answer),
                          "source": doc_id})
            seen.add(s)
            taken += 1
            if taken == 6:
                break
    rng.shuffle(tasks)
    tasks = tasks[: args.count]
    Path(args.out).write_text("".join(json.dumps(t) + "\n" for t in tasks))
    print(f"{len(tasks)} tasks from {len(texts)} topics -> {args.out}")


if __name__ == "__main__":
    main()
