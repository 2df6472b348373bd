"""Each rule fires on a document made to break it and stays quiet on a clean one."""

from collections import Counter

import numpy as np
import pytest

from conftest import corpus_texts

from lmforge.config import C4Config, CodeConfig, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from lmforge.data import clean
from lmforge.data.clean import Doc

CLEAN_PROSE = (
    "The history of the river valley is long and varied. Farmers settled on the fertile banks, and the town "
    "grew around the old stone bridge that still stands today.\n\n"
    "In the spring the water rises with the melting snow. The people who live near the river have learned to "
    "build their houses on higher ground, and they keep boats ready for the floods.\n\n"
    "Visitors come to see the bridge, the mill and the small museum. The museum tells the story of the valley "
    "with old maps, tools and photographs that the families have kept for generations.\n\n"
    "Every autumn there is a market with bread, cheese and apples from the farms. It is a good time to visit, "
    "when the leaves turn and the air is cool and clear."
)
CLEAN_CODE = "import os\n\n\ndef list_files(folder):\n    \"\"\"Names of the files in folder.\"\"\"\n    return sorted(os.listdir(folder))\n"


def prose(text=CLEAN_PROSE):
    return Doc("d", text, "x.txt", "prose")


RULES = [
    (clean.GopherQuality(GopherQualityConfig()), [
        ("few_words", "Too short to be a document."),
        ("short_words", " ".join(["a b c d e the of and to"] * 20)),
        ("long_words", " ".join(["incomprehensibilities the"] * 40)),
        ("symbols", CLEAN_PROSE + " #" * 40),
        ("bullet_lines", "\n".join(f"- item number {i} is the one with the best value and to be" for i in range(60))),
        ("ellipsis_lines", "\n".join(f"and then the story went on with line {i} of the tale..." for i in range(60))),
        ("non_alpha_words", CLEAN_PROSE + " 1234" * 400),
        ("few_stop_words", " ".join(["Lorem ipsum dolor sit amet consectetur"] * 20)),
    ]),
    (clean.GopherRepetition(GopherRepetitionConfig()), [
        ("duplicate_paragraphs", "\n\n".join([CLEAN_PROSE.split("\n\n")[0]] * 4 + [CLEAN_PROSE])),
        ("duplicate_lines", "\n".join(["The same line again and again."] * 6 + ["A different line here.", "Another."])),
        ("top_2_gram", CLEAN_PROSE + " wild geese" * 80),
        ("top_4_gram", CLEAN_PROSE + " alpha beta gamma delta" * 7),
        ("duplicate_5_grams", CLEAN_PROSE + " " + CLEAN_PROSE.split("\n\n")[1].replace("\n", " ")),
    ]),
    (clean.C4Lines(C4Config()), [
        ("lorem_ipsum", CLEAN_PROSE + "\nLorem ipsum dolor sit amet."),
        ("curly_bracket", CLEAN_PROSE + "\nfunction f() { return 1; }"),
        ("few_sentences", "One sentence only here. And a second one."),
    ]),
    (clean.FineWebQuality(FineWebConfig()), [
        ("line_punctuation", "\n".join(f"heading number {i} without any end mark at all here" for i in range(30))),
        ("short_lines", "\n".join(["Short line."] * 10 + [f"Line {i}." for i in range(30)])),
        ("duplicate_line_chars", CLEAN_PROSE + "\n" + CLEAN_PROSE.split("\n\n")[0]),
        ("list_like", "\n".join(f"Extraordinary circumstances number{i}." for i in range(40))),
    ]),
]


@pytest.mark.parametrize("rule, reason, text", [(r, reason, t) for r, cases in RULES for reason, t in cases],
                         ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_rule_fires_on_a_document_made_to_break_it(rule, reason, text):
    assert rule(prose(text)) == reason


@pytest.mark.parametrize("rule", [r for r, _ in RULES], ids=lambda r: r.name)
def test_rule_keeps_clean_prose(rule):
    doc = prose()
    assert rule(doc) is None


def _reference_top_share(words: list[str], n: int) -> float:
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]  # ties: the first seen
    return count * sum(map(len, gram)) / sum(map(len, words)) if count > 1 else 0.0


def _reference_dup_share(words: list[str], n: int) -> float:
    seen, covered = set(), [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / sum(map(len, words))


def test_ngram_shares_over_a_batch_equal_a_plain_count_per_document():
    docs = [t.split() for t in corpus_texts()] + [(CLEAN_PROSE + " wild geese" * 30).split(), ["one"], ["a", "a"]]
    table = clean.WordTable(docs)
    every = np.ones(len(docs), dtype=bool)
    for n in range(2, 11):
        np.testing.assert_allclose(table.top_share(n, every), [_reference_top_share(w, n) for w in docs])
        np.testing.assert_allclose(table.dup_share(n, every), [_reference_dup_share(w, n) for w in docs])


def test_batch_verdicts_equal_one_document_at_a_time():
    texts = corpus_texts() + [t for _, cases in RULES for _, t in cases]
    for rule, _ in RULES:
        docs = [prose(t) for t in texts]
        assert getattr(rule, "batch", lambda ds: [rule(d) for d in ds])(docs) == [rule(prose(t)) for t in texts]


def test_c4_removes_policy_and_javascript_lines_only():
    text = CLEAN_PROSE + "\nThis site uses cookies to improve your experience.\nPlease enable JavaScript to view this page."
    doc = prose(text)
    assert clean.C4Lines(C4Config())(doc) is None
    assert doc.text == CLEAN_PROSE


CODE = clean.CodeQuality(CodeConfig())


@pytest.mark.parametrize("reason, text", [
    ("long_line", "x = [" + "1, " * 600 + "]\n"),
    ("long_mean_line", "\n".join(["value = '" + "a" * 150 + "'"] * 5)),
    ("low_alphanumeric", "\n".join(["{}[]();;;;;;;;;;;;;;;;;;"] * 20)),
    ("auto_generated", "# This file is automatically generated. Do not edit.\n" + CLEAN_CODE),
])
def test_code_rules(reason, text):
    assert CODE(Doc("c", text, "x.py", "code")) == reason
    assert CODE(Doc("c", CLEAN_CODE, "x.py", "code")) is None


def test_code_and_prose_get_their_own_rules():
    assert clean.kind_of("pkg/mod.py") == "code" and clean.kind_of("a/b.c.gz") == "code"
    assert clean.kind_of("README.md") == "prose" and clean.kind_of("mod.py#docstrings") == "prose"


def test_mojibake_control_chars_and_whitespace_repaired():
    repair = clean.Repair()
    doc = prose("The Mona Lisa doesnâ€™t have eyebrows.\x07   \r\n\n\n\n\nNext paragraph.  ")
    assert repair(doc) is None
    assert doc.text == "The Mona Lisa doesn't have eyebrows.\n\nNext paragraph."
    assert repair.counts["mojibake_or_unicode_fixed"] == 1 and repair.counts["control_chars_removed"] == 1
    assert repair(prose("\x01\x02  ")) == "repair:empty_after_repair"


def test_pii_redacted_and_counted():
    pii = clean.RedactPII()
    doc = prose("Write to jane.doe@example.com or call +1 415-555-0123. Server 192.168.10.20, "
                "card 4111 1111 1111 1111, version 3.11.7, order 1234567890123 (not a valid card).")
    pii(doc)
    assert doc.text == ("Write to <EMAIL> or call <PHONE>. Server <IP_ADDRESS>, card <CREDIT_CARD>, "
                        "version 3.11.7, order 1234567890123 (not a valid card).")
    assert dict(pii.counts) == {"email": 1, "phone": 1, "ip_address": 1, "credit_card": 1}


def test_offensive_document_removed_clean_kept():
    flt = clean.Offensive(threshold=0.9, max_fraction=0.2)
    rude = prose("You are a fucking idiot and a piece of shit.\n\nShut the fuck up, asshole.")
    assert flt(rude) == "offensive_language"
    assert flt(prose()) is None


def test_language_kept_and_dropped():
    flt = clean.Language(["en"], 0.65)
    assert flt(prose()) is None
    german = prose("Die Geschichte des Flusstals ist lang und vielfältig. Bauern siedelten an den fruchtbaren "
                   "Ufern, und die Stadt wuchs um die alte Steinbrücke, die noch heute steht.")
    assert flt(german) == "not_en:de"


def test_blocklist_words_and_urls(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("# my list\nbadword\nspam.example.com\n")
    flt = clean.Blocklist(str(path))
    assert flt(prose(CLEAN_PROSE + " A badword here.")) == "blocked_word"
    assert flt(prose(CLEAN_PROSE + " See http://spam.example.com/x.")) == "blocked_url"
    assert flt(prose(CLEAN_PROSE + " Badwordy is fine.")) is None
