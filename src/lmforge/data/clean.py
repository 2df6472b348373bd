"""Repairs and filters, one small class per rule, each with the published defaults.

A step sees a `Doc` (id, source, kind = "prose" | "code", text) and either changes its text
(repairs, line removal, redaction) or names the reason it must go (`"gopher_quality:few_words"`).
Words are whitespace-split and lines newline-split, as in Gopher/C4/FineWeb's rules: fast, no
model download, and the same numbers the papers define their thresholds on.

Sources of the thresholds: Gopher (Rae et al. 2021, appendix A), C4 (Raffel et al. 2020),
FineWeb (Penedo et al. 2024), all as in datatrove's filters; StarCoder's code rules
(Li et al. 2023). Language: py3langid's bundled model. Offensive text: alt-profanity-check's
bundled linear model.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, islice
from operator import methodcaller
from pathlib import Path

import numpy as np

from lmforge.config import C4Config, CodeConfig, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from lmforge.errors import LmforgeError

CODE_SUFFIXES = {
    ".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb", ".php", ".sh", ".pl",
    ".lua", ".scala", ".kt", ".swift", ".cs", ".m", ".r", ".sql", ".el", ".hs", ".ml", ".jl", ".tex", ".css",
}


@dataclass
class Doc:
    id: str
    text: str
    source: str
    kind: str = "prose"
    meta: dict = field(default_factory=dict)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    def set_text(self, text: str) -> None:
        self.text = text
        self.__dict__.pop("lines", None)
        self.__dict__.pop("words", None)


def kind_of(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix == ".gz":
        suffix = Path(Path(source).stem).suffix.lower()
    return "code" if suffix in CODE_SUFFIXES else "prose"


# ---------------------------------------------------------------- repairs

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# UTF-8 read as Latin-1/cp1252: a lead byte (Â..ô) followed by a continuation byte's character
MOJIBAKE_SIGN = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
                           "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")
C0_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TRAILING_SPACE = re.compile(r"[ \t]+\n")
MANY_BLANK_LINES = re.compile(r"\n{3,}")


class Repair:
    """Mojibake (ftfy), Unicode NFC, control characters out, tidy whitespace; counts what it fixed."""

    name = "repair"

    def __init__(self):
        import ftfy

        self._fix = ftfy.fix_text
        self._config = ftfy.TextFixerConfig(normalization="NFC", explain=False)
        self.counts: Counter = Counter()

    def __call__(self, doc: Doc) -> str | None:
        text = doc.text
        if "\ufffd" in text:
            self.counts["invalid_utf8_chars"] += text.count("\ufffd")
        has_control = CONTROL.search(text) is not None  # C0 and C1: one scan rules both out
        if has_control and C0_CONTROL.search(text):
            self.counts["control_chars_removed"] += 1
        fixed = text
        if text.isascii():  # no mojibake, nothing to normalise
            pass
        elif MOJIBAKE_SIGN.search(text):  # ftfy costs ~1.3 ms per 2 KB document: only where it can help
            fixed = self._fix(text, self._config)  # before control-char removal: mojibake can look like C1 controls
        elif not text.isascii() and not unicodedata.is_normalized("NFC", text):
            fixed = unicodedata.normalize("NFC", text)
        if fixed is not text and C0_CONTROL.sub("", fixed) != C0_CONTROL.sub("", text):
            self.counts["mojibake_or_unicode_fixed"] += 1
        # each rewrite behind a cheap scan that rules it out: most documents need none of them
        cleaned = CONTROL.sub("", fixed) if (has_control or fixed is not text) else fixed
        if "\r" in cleaned:
            cleaned = cleaned.replace("\r\n", "\n")
        if " \n" in cleaned or "\t\n" in cleaned:
            cleaned = TRAILING_SPACE.sub("\n", cleaned)
        if "\n\n\n" in cleaned:
            cleaned = MANY_BLANK_LINES.sub("\n\n", cleaned)
        cleaned = cleaned.strip()
        if cleaned != text:
            doc.set_text(cleaned)
        return None if cleaned else "repair:empty_after_repair"


# ---------------------------------------------------------------- prose quality

STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
BULLETS = ("•", "-", "*", "‣", "▶", "●", "◦", "○")
PUNCT_END = (".", "!", "?", '"', "'", "”", "’", ":", ";")


_STRIP_PUNCTUATION = methodcaller("strip", "\"'.,;:!?()[]{}<>*_/`-\u2013\u2014\u2026\u201c\u201d\u2018\u2019")


def _enough_words_with_a_letter(words: list[str], min_ratio: float) -> bool:
    # letters only once the punctuation around them is gone: most words, counted at C speed
    alphabetic = sum(map(str.isalpha, map(_STRIP_PUNCTUATION, words)))
    if alphabetic >= min_ratio * len(words):
        return True
    return sum(1 for w in words if w.isalpha() or any(map(str.isalpha, w))) >= min_ratio * len(words)


class GopherQuality:
    name = "gopher_quality"
    applies_to = ("prose",)

    def __init__(self, cfg: GopherQualityConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> str | None:
        c, words = self.cfg, doc.words
        n = len(words)
        if n < c.min_doc_words:
            return "few_words"
        if n > c.max_doc_words:
            return "too_many_words"
        avg = sum(map(len, words)) / n
        if avg < c.min_avg_word_length:
            return "short_words"
        if avg > c.max_avg_word_length:
            return "long_words"
        symbols = doc.text.count("#") + doc.text.count("...") + doc.text.count("…")
        if symbols / n > c.max_symbol_word_ratio:
            return "symbols"
        lines = [l for l in doc.lines if l.strip()]
        if lines:
            if sum(l.lstrip().startswith(BULLETS) for l in lines) / len(lines) > c.max_bullet_lines_ratio:
                return "bullet_lines"
            if sum(l.rstrip().endswith(("...", "…")) for l in lines) / len(lines) > c.max_ellipsis_lines_ratio:
                return "ellipsis_lines"
        if not _enough_words_with_a_letter(words, c.max_non_alpha_words_ratio):
            return "non_alpha_words"
        stop = 0
        for w in words:  # stop at the threshold: most documents reach it in their first sentence
            if w.lower() in STOP_WORDS:
                stop += 1
                if stop >= c.min_stop_words:
                    return None
        return "few_stop_words"


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and how many characters they hold."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


class GopherRepetition:
    """Gopher's repetition rules: duplicate paragraphs and lines, the most frequent 2-4-gram's share
    of the characters, and the share covered by repeated 5-10-grams. The n-gram counts run over a
    whole batch of documents at once (`WordTable`): one sort per n for the batch instead of one per
    document, whose numpy call overheads would cost more than the sorting."""

    name = "gopher_repetition"
    applies_to = ("prose",)

    def __init__(self, cfg: GopherRepetitionConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> str | None:
        return self.batch([doc])[0]

    def batch(self, docs: list[Doc]) -> list[str | None]:
        reasons = [self.paragraphs_and_lines(doc) for doc in docs]
        pending = [i for i, r in enumerate(reasons) if r is None and docs[i].words]
        for lo in range(0, len(pending), WordTable.MAX_DOCS):
            chunk = pending[lo:lo + WordTable.MAX_DOCS]
            for i, reason in zip(chunk, self.ngram_reasons(WordTable([docs[i].words for i in chunk]))):
                reasons[i] = reason
        return reasons

    def paragraphs_and_lines(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        paragraphs = [p for p in PARAGRAPH_SPLIT.split(text.strip()) if p.strip()]
        n, chars = _duplicates(paragraphs)
        if paragraphs and n / len(paragraphs) > c.dup_para_frac:
            return "duplicate_paragraphs"
        if chars / max(len(text), 1) > c.dup_para_char_frac:
            return "duplicate_paragraph_chars"
        lines = [l for l in doc.lines if l.strip()]
        n, chars = _duplicates(lines)
        if lines and n / len(lines) > c.dup_line_frac:
            return "duplicate_lines"
        if chars / max(len(text), 1) > c.dup_line_char_frac:
            return "duplicate_line_chars"
        return None

    def ngram_reasons(self, table: "WordTable") -> list[str | None]:
        c = self.cfg
        reasons: list[str | None] = [None] * table.n_docs
        undecided = np.ones(table.n_docs, dtype=bool)
        # an n-gram's characters times its count are at most n times the largest count x length of a
        # single word: a document under that bound cannot fail the n-gram rule, and is not counted
        heaviest_word = table.top_share(1, undecided, heaviest=True)
        for n_words, limit in c.top_n_grams:
            n = int(n_words)
            check = undecided & (n * heaviest_word > limit)
            if check.any():
                for d in np.flatnonzero(check & (table.top_share(n, check) > limit)):
                    reasons[d] = f"top_{n}_gram"
                    undecided[d] = False
        checks = sorted((int(n), limit) for n, limit in c.dup_n_grams)
        for k, (n, limit) in enumerate(checks):
            if not undecided.any():
                break
            fraction = table.dup_share(n, undecided)
            for d in np.flatnonzero(undecided & (fraction > limit)):
                reasons[d] = f"duplicate_{n}_grams"
                undecided[d] = False
            # words covered by repeated (n+1)-grams are a subset of those covered by repeated n-grams,
            # so once the fraction is under every remaining limit, no longer n-gram can fail
            undecided &= fraction > min((later for _, later in checks[k + 1:]), default=np.inf)
        return reasons


PARAGRAPH_SPLIT = re.compile(r"\n{2,}")


class WordTable:
    """The whitespace words of several documents, concatenated, for n-gram counts over all of them.

    A word is its Python string hash (equal words, equal ids; the loop stays in C). An n-gram is a
    64-bit polynomial hash of its words' ids; its sort key puts the document's index in the top 16
    bits and 48 bits of the hash below, so one sort groups equal n-grams within each document
    (collisions ~ windows^2 / 2^49 per document, ignored)."""

    MAX_DOCS = 1 << 16

    def __init__(self, words: list[list[str]]):
        flat = list(chain.from_iterable(words))
        self.n_docs = len(words)
        self.ids = np.fromiter(map(hash, flat), dtype=np.int64, count=len(flat)).view(np.uint64)
        self.lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        self.doc = np.repeat(np.arange(len(words)), [len(w) for w in words])  # (W,) document of each word
        self.chars = np.maximum(np.bincount(self.doc, weights=self.lengths, minlength=self.n_docs), 1)
        self.char_sum = np.concatenate(([0], np.cumsum(self.lengths)))
        self.hashes = {1: self.ids + np.uint64(1)}

    def ngram_hashes(self, n: int) -> np.ndarray:
        """(W - n + 1,) hash of the n words starting at each position, built from the (n-1)-grams."""
        if n not in self.hashes:
            shorter = self.ngram_hashes(n - 1)
            with np.errstate(over="ignore"):
                self.hashes[n] = shorter[:-1] * np.uint64(0x100000001B3) + self.ids[n - 1:] + np.uint64(1)
        return self.hashes[n]

    def sorted_ngrams(self, n: int, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start positions of the n-grams inside the selected documents, sorted by (document, n-gram)
        with equal n-grams in text order, their keys, and where each run of equal keys begins."""
        hashes = self.ngram_hashes(n)
        start_doc = self.doc[:len(hashes)]
        pos = np.flatnonzero((start_doc == self.doc[n - 1:]) & docs[start_doc])  # windows inside one document
        keys = (start_doc[pos].astype(np.uint64) << np.uint64(48)) | (hashes[pos] >> np.uint64(16))
        order = np.argsort(keys, kind="stable")
        pos, keys = pos[order], keys[order]
        runs = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        return pos, keys, runs

    def top_share(self, n: int, docs: np.ndarray, heaviest: bool = False) -> np.ndarray:
        """Per document: the most frequent n-gram's characters times its count over all characters
        (0 if no n-gram repeats; ties go to the one seen first, as a Counter's most_common).
        heaviest=True (n = 1): the largest count x characters of any word instead."""
        share = np.zeros(self.n_docs)
        pos, keys, runs = self.sorted_ngrams(n, docs)
        if len(pos) == 0:
            return share
        counts = np.diff(np.append(runs, len(keys)))
        run_doc, first = self.doc[pos[runs]], pos[runs]  # stable sort: a run starts at its first occurrence
        if heaviest:
            np.maximum.at(share, run_doc, counts * self.lengths[first] / self.chars[run_doc])
            return share
        top = np.zeros(self.n_docs, dtype=np.int64)
        np.maximum.at(top, run_doc, counts)
        is_top = counts == top[run_doc]
        earliest = np.full(self.n_docs, len(self.ids), dtype=np.int64)
        np.minimum.at(earliest, run_doc[is_top], first[is_top])
        repeated = np.flatnonzero(top >= 2)
        at = earliest[repeated]
        share[repeated] = top[repeated] * (self.char_sum[at + n] - self.char_sum[at]) / self.chars[repeated]
        return share

    def dup_share(self, n: int, docs: np.ndarray) -> np.ndarray:
        """Per document: the share of characters in words covered by an n-gram that repeats an
        earlier one (each word counted once)."""
        pos, keys, _ = self.sorted_ngrams(n, docs)
        repeats = pos[1:][keys[1:] == keys[:-1]]  # every occurrence but the first of each n-gram
        cover = np.zeros(len(self.ids) + 1, dtype=np.int64)
        cover[repeats] += 1  # positions are distinct, so plain fancy-index updates are exact
        cover[repeats + n] -= 1
        covered = np.cumsum(cover[:-1]) > 0
        return np.bincount(self.doc, weights=self.lengths * covered, minlength=self.n_docs) / self.chars


SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


class C4Lines:
    """C4's rules: drop lines without end punctuation, short lines, policy boilerplate and
    over-long words; drop the document for 'lorem ipsum', code braces or too few sentences left."""

    name = "c4"
    applies_to = ("prose",)

    def __init__(self, cfg: C4Config):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> str | None:
        c = self.cfg
        low = doc.text.lower()
        if "lorem ipsum" in low:
            return "lorem_ipsum"
        if "{" in doc.text:
            return "curly_bracket"
        # whole-document scans first: most documents hold no over-long word and no policy phrase,
        # and then no line needs those checks
        check_words = max(map(len, doc.words), default=0) > c.max_word_length
        phrases = [p for p in ("javascript", *c.policy_phrases) if p in low]
        kept = []
        for line in doc.lines:
            stripped = line.strip()
            if not stripped:
                kept.append("")
                continue
            words = stripped.split()
            if len(words) < c.min_words_per_line:
                continue
            if c.remove_lines_without_punctuation and not stripped.endswith(PUNCT_END):
                continue
            if check_words and max(map(len, words)) > c.max_word_length:
                continue
            if phrases and any(p in stripped.lower() for p in phrases):
                continue
            kept.append(stripped)
        text = "\n".join(kept)
        if "\n\n\n" in text:
            text = MANY_BLANK_LINES.sub("\n\n", text)
        text = text.strip()
        if c.min_sentences and sum(1 for _ in islice(SENTENCE_END.finditer(text), c.min_sentences)) < c.min_sentences:
            return "few_sentences"
        if text != doc.text:
            doc.set_text(text)
        return None


class FineWebQuality:
    name = "fineweb"
    applies_to = ("prose",)

    def __init__(self, cfg: FineWebConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> str | None:
        c = self.cfg
        lines = [l.strip() for l in doc.lines if l.strip()]
        if not lines:
            return "empty"
        if sum(l.endswith(PUNCT_END) for l in lines) / len(lines) < c.min_line_punct_ratio:
            return "line_punctuation"
        if sum(len(l) <= c.short_line_chars for l in lines) / len(lines) > c.max_short_line_ratio:
            return "short_lines"
        _, dup_chars = _duplicates(lines)
        if dup_chars / max(len(doc.text.replace("\n", "")), 1) > c.max_duplicate_line_char_ratio:
            return "duplicate_line_chars"
        if doc.text.count("\n") / max(len(doc.words), 1) > c.max_newline_word_ratio:
            return "list_like"
        return None


# ---------------------------------------------------------------- source code

class CodeQuality:
    """StarCoder's filters: minified or data-like files and files a tool wrote."""

    name = "code"
    applies_to = ("code",)

    def __init__(self, cfg: CodeConfig):
        self.cfg = cfg

    def __call__(self, doc: Doc) -> str | None:
        c, lines = self.cfg, doc.lines
        if max(len(l) for l in lines) > c.max_line_length:
            return "long_line"
        if sum(len(l) for l in lines) / len(lines) > c.max_mean_line_length:
            return "long_mean_line"
        if sum(ch.isalnum() for ch in doc.text) / max(len(doc.text), 1) < c.min_alphanumeric_fraction:
            return "low_alphanumeric"
        head = "\n".join(lines[:5]).lower()
        if any(m in head for m in c.generated_markers):
            return "auto_generated"
        return None


# ---------------------------------------------------------------- language, offensive text, blocklist, PII

class Language:
    """py3langid's bundled model on the first 600 characters (what it costs grows with the length),
    run as a batch (data/classifiers.py); keeps the listed languages."""

    name = "language"
    applies_to = ("prose",)

    def __init__(self, languages: list[str], min_probability: float):
        from lmforge.data.classifiers import BatchLanguageIdentifier

        self.identifier = BatchLanguageIdentifier()
        self.languages, self.min_probability = set(languages), min_probability

    def __call__(self, doc: Doc) -> str | None:
        return self.batch([doc])[0]

    def batch(self, docs: list[Doc]) -> list[str | None]:
        reasons: list[str | None] = []
        for doc, (lang, prob) in zip(docs, self.identifier.classify([d.text[:600] for d in docs])):
            doc.meta["language"], doc.meta["language_probability"] = lang, round(prob, 3)
            if lang not in self.languages:
                reasons.append(f"not_{'_'.join(sorted(self.languages))}:{lang}")
            else:
                reasons.append("uncertain_language" if prob < self.min_probability else None)
        return reasons


PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class Offensive:
    """alt-profanity-check's bundled classifier (TF-IDF + linear SVM), scored per paragraph and run
    as a batch (data/classifiers.py): a document goes when the share of offensive paragraphs passes
    `max_fraction`."""

    name = "offensive"
    applies_to = ("prose", "code")

    def __init__(self, threshold: float, max_fraction: float):
        from lmforge.data.classifiers import BatchOffensiveScorer

        self.scorer, self.threshold, self.max_fraction = BatchOffensiveScorer(), threshold, max_fraction

    def __call__(self, doc: Doc) -> str | None:
        return self.batch([doc])[0]

    def batch(self, docs: list[Doc]) -> list[str | None]:
        paragraphs, sizes = [], []
        for doc in docs:
            parts = [p for p in PARAGRAPH_BREAK.split(doc.text) if p.strip()][:200] or [doc.text]
            paragraphs += parts
            sizes.append(len(parts))
        probs = self.scorer.predict_prob(paragraphs)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        highest = np.maximum.reduceat(probs, starts)
        offensive_share = np.add.reduceat((probs >= self.threshold).astype(np.float64), starts) / sizes
        reasons: list[str | None] = []
        for doc, top, share in zip(docs, highest, offensive_share):
            doc.meta["offensive_max"] = round(float(top), 3)
            reasons.append("offensive_language" if share > self.max_fraction else None)
        return reasons


class Blocklist:
    """A user's words and URL fragments, one per line (# comments); whole-word, case-insensitive."""

    name = "blocklist"
    applies_to = ("prose", "code")

    def __init__(self, path: str):
        try:
            entries = [l.strip().lower() for l in Path(path).read_text().splitlines()]
        except OSError as e:
            raise LmforgeError(f"prepare.blocklist {path!r} cannot be read: {e.strerror}") from None
        entries = [e for e in entries if e and not e.startswith("#")]
        words = [re.escape(e) for e in entries if "/" not in e and "." not in e]
        self.urls = [e for e in entries if "/" in e or "." in e]
        self.words = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.I) if words else None

    def __call__(self, doc: Doc) -> str | None:
        if self.words is not None and self.words.search(doc.text):
            return "blocked_word"
        low = doc.text.lower()
        if any(u in low for u in self.urls):
            return "blocked_url"
        return None


PII_PATTERNS = {
    "email": (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), "<EMAIL>"),
    "ip_address": (re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"), "<IP_ADDRESS>"),
    "credit_card": (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "<CREDIT_CARD>"),
    "phone": (re.compile(r"(?<!\w)(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w)"), "<PHONE>"),
}


_DIGIT_RUN = re.compile(r"\d[\d ().+-]{6,}\d")
PII_PRECHECK = {
    "email": re.compile(r"@[A-Za-z0-9.-]+\.[A-Za-z]{2,}").search,  # a literal first: found at memchr speed
    "ip_address": re.compile(r"\d\.\d+\.\d").search,
    "credit_card": _DIGIT_RUN.search,
    "phone": _DIGIT_RUN.search,
}
OTHER_DIGIT = re.compile(r"[^\D0-9]")  # a Unicode digit outside 0-9
MIN_DIGITS = {"email": 0, "ip_address": 4, "credit_card": 13, "phone": 8}  # the fewest each pattern can match


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return 13 <= len(digits) <= 19 and total % 10 == 0


class RedactPII:
    """Emails, IP addresses, card numbers (Luhn-checked) and phone numbers become placeholders."""

    name = "pii"
    applies_to = ("prose", "code")

    def __init__(self):
        self.counts: Counter = Counter()

    def __call__(self, doc: Doc) -> str | None:
        text = doc.text
        # counting ASCII digits is ten memchr-speed scans; a pattern needing more digits cannot match
        # (unless the text holds other Unicode digits, which the patterns' \d also matches)
        digits = sum(map(text.count, "0123456789"))
        if not text.isascii() and OTHER_DIGIT.search(text):
            digits = None
        for kind, (pattern, placeholder) in PII_PATTERNS.items():
            if digits is not None and digits < MIN_DIGITS[kind]:
                continue
            if not PII_PRECHECK[kind](text):  # a C-speed scan that rules the slower pattern out
                continue
            def sub(m, kind=kind, placeholder=placeholder):
                if kind == "credit_card" and not _luhn_ok(m.group()):
                    return m.group()
                self.counts[kind] += 1
                return placeholder
            text = pattern.sub(sub, text)
        if text != doc.text:
            doc.set_text(text)
        return None


def normalise_for_hash(text: str) -> str:
    """What exact deduplication compares: NFKC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())
