"""Language identification and offensive-text scoring, batched, from the models their packages ship.

py3langid and alt-profanity-check are the models (their weights, their decisions); this module
only runs them differently, because in a cleaning worker their own entry points cost more than
the rest of the filter stack together:

- py3langid walks a byte-level automaton in a Python loop (~0.4 ms per 600 characters) and
  decompresses its model into ~100 MB on load. Here the same automaton walks every document of a
  batch at once (one numpy gather per byte position), and the tables are read from an
  uncompressed copy through `mmap`, so workers share them and load nothing.
- alt-profanity-check is a scikit-learn TF-IDF + calibrated linear SVM behind a 9 ms call and
  ~60 MB of scikit-learn. Here it is its vocabulary, idf, the five folds' coefficients and sigmoid
  calibrations as numpy arrays, applied to all paragraphs of a batch in one pass.

The copies are exported once per installed package version into a cache folder
($LMFORGE_CACHE, else $XDG_CACHE_HOME/lmforge, else ~/.cache/lmforge) by a short child process,
so the full models' import and load peak never lands in a worker. tests/data/test_classifiers.py
checks that both give the packages' own answers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from importlib.metadata import version
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError


def cache_root() -> Path:
    if os.environ.get("LMFORGE_CACHE"):
        return Path(os.environ["LMFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lmforge"


def _model_dir(name: str, package: str) -> Path:
    """The exported copy of `package`'s model, exported now by a child process if missing."""
    folder = cache_root() / f"{name}-{version(package)}"
    if not (folder / "done").is_file():
        done = subprocess.run([sys.executable, "-m", "lmforge.data.classifiers", name, str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LmforgeError(f"cannot export the {package} model to {folder}: {last} "
                               "(set LMFORGE_CACHE to a writable folder)")
    return folder


def export_models(filters: list[str]) -> None:
    """Export the models these filters need before workers start, so that workers only read them."""
    if "language" in filters:
        _model_dir("langid", "py3langid")
    if "offensive" in filters:
        _model_dir("profanity", "alt-profanity-check")


def _finish(tmp: Path, folder: Path) -> None:
    (tmp / "done").write_text("")
    try:
        tmp.rename(folder)
    except OSError:  # another process exported it first: theirs is identical
        pass


# ---------------------------------------------------------------- language identification

class BatchLanguageIdentifier:
    """py3langid's naive Bayes over byte n-grams, with probabilities normalised as its
    `norm_probs=True`: `classify(texts)` gives `[identifier.classify(t) for t in texts]` (the same
    languages; probabilities to float32 rounding, since the sums run in another order)."""

    def __init__(self, folder: Path | None = None):
        folder = folder or _model_dir("langid", "py3langid")
        # plain ndarray views of the mapped files: a numpy memmap's own indexing costs ~30 us a call
        load = lambda name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r"))  # noqa: E731
        # the automaton's next state (17 bits) as its low 16 bits plus a packed array of 17th bits: 21 MB, not 39
        self.next_low, self.next_high = load("next_low"), load("next_high")
        self.output, self.nb_ptc = load("output"), load("nb_ptc")
        self.rowbase = load("row").astype(np.int64) << 8  # 104k states: small, kept in memory
        self.nb_pc = np.array(load("nb_pc"))
        meta = json.loads((folder / "meta.json").read_text())
        self.classes: list[str] = meta["classes"]
        self.alias_pairs: list[tuple[int, int]] = [tuple(p) for p in meta["alias_pairs"]]

    @staticmethod
    def encode(text: str) -> bytes:
        if text.isupper():  # as py3langid: an all-capitals text is read in lower case
            text = text.lower()
        return unicodedata.normalize("NFC", text).encode("utf8", errors="surrogatepass")

    def feature_counts(self, raw: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text, feature, count) triples sorted by text then feature, from walking the automaton
        over all texts at once: state[b] <- next[rowbase[state[b]] + byte[b, t]]."""
        lengths = np.array([len(r) for r in raw])
        width = int(lengths.max(initial=0))
        columns = np.zeros((width, len(raw)), dtype=np.int64)  # (T, B) bytes, zero-padded: one row per step
        for i, r in enumerate(raw):
            columns[:len(r), i] = np.frombuffer(r, dtype=np.uint8)
        states = np.empty((width, len(raw)), dtype=np.int64)  # (T, B)
        state = np.zeros(len(raw), dtype=np.int64)
        for t in range(width):
            at = self.rowbase[state] + columns[t]
            high = (self.next_high[at >> 3] >> (at & 7)) & 1  # np.packbits(bitorder="little")
            state = self.next_low[at] | (high.astype(np.int64) << 16)
            states[t] = state
        features = self.output[states.T]  # (B, T), -1 where a state counts nothing
        features[np.arange(width)[None, :] >= lengths[:, None]] = -1  # padding
        features.sort(axis=1)  # each text's features in order: B short sorts, not one of B x T keys
        text, position = np.nonzero(features >= 0)  # (N,) each, text by text
        feature = features[text, position]
        starts_run = np.ones(len(feature), dtype=bool)
        starts_run[1:] = (feature[1:] != feature[:-1]) | (text[1:] != text[:-1])
        first = np.flatnonzero(starts_run)
        return text[first], feature[first], np.diff(np.append(first, len(feature)))

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        raw = [self.encode(t) for t in texts]
        text, feature, counts = self.feature_counts(raw)
        scores = np.zeros((len(texts), len(self.classes)), dtype=np.float32)  # (B, C)
        starts = np.searchsorted(text, np.arange(len(texts) + 1))
        weights = np.log1p(counts.astype(np.float32))
        for i in range(len(texts)):  # one small matrix-vector product per text: 5x np.add.reduceat here
            a, b = starts[i], starts[i + 1]
            if a < b:
                scores[i] = weights[a:b] @ self.nb_ptc.take(feature[a:b], axis=0)  # take: 2x faster than [ ]
        has = np.zeros(len(texts), dtype=bool)
        has[text] = True
        scores[has] += self.nb_pc  # a text with no features stays uniform, as in py3langid
        scores *= (1.0 / np.sqrt(np.maximum([len(r) for r in raw], 1)))[:, None].astype(np.float32)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.alias_pairs:  # script variants of one language share its label
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        return [(self.classes[k], float(scores[n, k])) for n, k in enumerate(best)]


def _export_langid(folder: Path) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    nextmove = np.frombuffer(ident.tk_nextmove, dtype=np.uint32)
    if nextmove.max() >= 1 << 17:
        raise ValueError(f"{len(ident.tk_row)} automaton states need more than 17 bits")
    np.save(tmp / "next_low.npy", (nextmove & 0xFFFF).astype(np.uint16))
    np.save(tmp / "next_high.npy", np.packbits((nextmove >> 16).astype(np.uint8), bitorder="little"))
    np.save(tmp / "row.npy", np.frombuffer(ident.tk_row, dtype=np.dtype(ident.tk_row.typecode)))
    np.save(tmp / "output.npy", np.asarray(ident.tk_output, dtype=np.int32))
    # float32, not the shipped float16: the cast is exact, and py3langid casts to float32 for every document
    np.save(tmp / "nb_ptc.npy", np.asarray(ident.nb_ptc, dtype=np.float32))
    np.save(tmp / "nb_pc.npy", np.asarray(ident.nb_pc, dtype=np.float32))
    (tmp / "meta.json").write_text(json.dumps({"classes": list(ident.nb_classes),
                                               "alias_pairs": [list(p) for p in ident._alias_pairs]}))
    _finish(tmp, folder)


# ---------------------------------------------------------------- offensive text

# scikit-learn's default token_pattern (?u)\b\w\w+\b, which the model was fitted with: maximal runs of
# two or more word characters, which is what \w\w+ finds (greedy, scanning left to right), 40% faster
TOKEN = re.compile(r"\w\w+")
# in ASCII text \w is [A-Za-z0-9_] and lower() only maps A-Z: one translate lower-cases the words and
# blanks everything else, and a split finds the same runs ~3x faster than the pattern
_ASCII_WORDS = str.maketrans({c: (c.lower() if c.isalnum() or c == "_" else " ") for c in map(chr, range(128))})


def tokens(text: str) -> list[str]:
    """scikit-learn's lower-cased `\\w\\w+` tokens of `text`, in order."""
    if text.isascii():
        return [w for w in text.translate(_ASCII_WORDS).split() if len(w) > 1]
    return TOKEN.findall(text.lower())


class BatchOffensiveScorer:
    """alt-profanity-check's `predict_prob`: l2-normalised TF-IDF of lower-cased words, each of the
    calibrated classifier's folds a linear SVM followed by a sigmoid, the folds averaged."""

    def __init__(self, folder: Path | None = None):
        folder = folder or _model_dir("profanity", "alt-profanity-check")
        arrays = np.load(folder / "model.npz")
        self.idf, self.coef, self.intercept = arrays["idf"], arrays["coef"], arrays["intercept"]  # (V,), (K, V), (K,)
        self.sigmoid_a, self.sigmoid_b = arrays["sigmoid_a"], arrays["sigmoid_b"]  # (K,)
        words = json.loads((folder / "vocabulary.json").read_text())
        self.vocabulary = {w: i for i, w in enumerate(words)}
        self.word_weight = self.coef.mean(axis=0)  # (V,) each word's coefficient, averaged over the folds

    def predict_prob(self, texts: list[str]) -> np.ndarray:
        return self.score(texts)[0]

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n,) probabilities as `predict_prob`, and (n,) the largest weight (the folds' mean
        coefficient) of any word of each text that the model knows (0 for none): how much of the
        score one word carries, which tells a profanity from a sum of mildly weighted words."""
        n = len(texts)
        per_text = [tokens(t) for t in texts]
        flat = list(chain.from_iterable(per_text))
        term = np.fromiter(map(self.vocabulary.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
        owner = np.repeat(np.arange(n), [len(t) for t in per_text])
        known = term >= 0
        strongest = np.zeros(n)
        if not known.any():
            decision = np.zeros((n, len(self.intercept)))
        else:
            pair, counts = np.unique(owner[known] * len(self.idf) + term[known], return_counts=True)
            doc, word = np.divmod(pair, len(self.idf))
            weight = counts * self.idf[word]  # tf * idf, then each text's vector scaled to unit length
            norm = np.sqrt(np.bincount(doc, weights=weight * weight, minlength=n))
            weight = weight / norm[doc]
            decision = np.stack([np.bincount(doc, weights=weight * c[word], minlength=n) for c in self.coef], axis=1)
            np.maximum.at(strongest, doc, self.word_weight[word])
        decision = decision + self.intercept  # (n, K)
        return (1.0 / (1.0 + np.exp(self.sigmoid_a * decision + self.sigmoid_b))).mean(axis=1), strongest


def _export_profanity(folder: Path) -> None:
    from profanity_check.profanity_check import model, vectorizer

    folds = model.calibrated_classifiers_
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    words = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    (tmp / "vocabulary.json").write_text(json.dumps(words))
    np.savez(tmp / "model.npz", idf=vectorizer.idf_,
             coef=np.stack([f.estimator.coef_[0] for f in folds]),
             intercept=np.array([f.estimator.intercept_[0] for f in folds]),
             sigmoid_a=np.array([f.calibrators[0].a_ for f in folds]),
             sigmoid_b=np.array([f.calibrators[0].b_ for f in folds]))
    _finish(tmp, folder)


if __name__ == "__main__":  # python -m lmforge.data.classifiers {langid|profanity} FOLDER
    {"langid": _export_langid, "profanity": _export_profanity}[sys.argv[1]](Path(sys.argv[2]))
