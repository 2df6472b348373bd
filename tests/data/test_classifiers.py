"""The batched classifiers give the packages' own answers (data/classifiers.py runs their models)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import corpus_texts
from lmforge.data.classifiers import TOKEN, BatchLanguageIdentifier, BatchOffensiveScorer, tokens

TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest.",
    "Bonjour tout le monde, comment ça va aujourd'hui ? Il fait très beau à Paris.",
    "Das ist ein deutscher Satz über Katzen, Hunde und das Wetter in Berlin.",
    "Esto es una frase en español sobre el tiempo y los perros de Madrid.",
    "日本語のテキストです。東京は大きな都市です。",
    "Это предложение на русском языке о погоде в Москве.",
    "THIS TEXT IS WRITTEN ENTIRELY IN CAPITAL LETTERS FOR EMPHASIS.",
    "", "a", "12345 67890", "def main():\n    return 0\n", "emoji 🙂 and naïve café",
    "fuck you, you stupid idiot", "What a lovely day for a walk in the park",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return TEXTS + [t[:600] for t in corpus_texts()]


def test_language_identifier_matches_py3langid(texts):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ours = BatchLanguageIdentifier().classify(texts)
    for text, (lang, prob) in zip(texts, ours):
        want_lang, want_prob = reference.classify(text)
        assert lang == want_lang, text
        assert prob == pytest.approx(want_prob, abs=1e-5), text


def test_language_identifier_batch_equals_one_at_a_time(texts):
    ident = BatchLanguageIdentifier()
    batch = ident.classify(texts)
    assert batch == [ident.classify([t])[0] for t in texts]  # padding never leaks between texts


def test_offensive_scorer_matches_alt_profanity_check(texts):
    from profanity_check import predict_prob

    ours = BatchOffensiveScorer().predict_prob(texts)
    np.testing.assert_allclose(ours, predict_prob(texts), rtol=0, atol=1e-12)
    assert ours[TEXTS.index("fuck you, you stupid idiot")] > 0.9
    assert ours[TEXTS.index("What a lovely day for a walk in the park")] < 0.1


def test_token_pattern_is_scikit_learns():
    import re

    sklearn_pattern = re.compile(r"(?u)\b\w\w+\b")
    every_ascii = "".join(map(chr, range(128)))
    for text in TEXTS + ["a-b c_d e'f g.h ii j2 ñandú x y", every_ascii, every_ascii.upper() * 2, "ΟΔΟΣ İstanbul Ǆemal"]:
        assert TOKEN.findall(text.lower()) == sklearn_pattern.findall(text.lower())
        assert tokens(text) == sklearn_pattern.findall(text.lower())  # the ASCII shortcut too
