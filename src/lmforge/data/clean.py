"""Repairs and filters, one small class per rule, each with the published defaults.

A step sees a `Doc` (id, source, kind, text) and either keeps it, possibly editing its text
(repairs, line removal, redaction: each edit listed in `doc.edits` by rule), or names the reason
it must go (`"few_words"`, filed as `"gopher_quality:few_words"`). Words are whitespace-split and
lines newline-split, as in Gopher/C4/FineWeb's rules: fast, no model download, and the same
numbers the papers define their thresholds on.

What runs on what (the policy; README "Cleaning policy" says the same):
- kinds: `code` (source files, by suffix), `web` (web pages from WARC/HTML, and JSONL/Parquet
  records, the form web crawls ship in, unless their lines are a play's, a poem's or a hard-wrapped
  book's), `prose` (every other text file: books, plays, docs, READMEs); `data.kinds` sets a source's;
- `code` is never edited into invalid code: no repairs, no line removal, no boilerplate removal,
  and of the PII rules only e-mail and public IP addresses (a Python file whose redaction would
  not parse keeps its text); StarCoder's rules decide whether it stays;
- C4's and FineWeb's line rules were designed on web pages: they run on `web` only by default
  (`prepare.line_rules`), and even there on logical lines: a hard-wrapped paragraph is one line,
  headings and speaker labels are kept, and a verse or script layout is left alone (`Layout`);
- Gopher's word rules read the language found first: stop words from that language's list, and
  no word-length or stop-word rule for a language without a list or written without spaces.

Sources of the thresholds: Gopher (Rae et al. 2021, appendix A), C4 (Raffel et al. 2020),
FineWeb (Penedo et al. 2024), all as in datatrove's filters; StarCoder's code rules
(Li et al. 2023). Language: py3langid's bundled model. Offensive text: alt-profanity-check's
bundled linear model.
"""

from __future__ import annotations

import re
import unicodedata
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress, islice
from operator import methodcaller, not_
from pathlib import Path

import numpy as np

from lmforge.config import (KINDS, C4Config, CodeConfig, FineWebConfig, GopherQualityConfig,
                            GopherRepetitionConfig, PrepareConfig)
from lmforge.data import FILTERS
from lmforge.data.sources import CODE_SUFFIXES, RECORD, WEB_SUFFIXES
from lmforge.errors import LmforgeError



@dataclass
class Doc:
    id: str
    text: str
    source: str
    kind: str = "prose"
    meta: dict = field(default_factory=dict)
    edits: list[dict] = field(default_factory=list)  # {"rule": "c4:short_line", "lines": [...]} or {"rule", "count"}

    def __post_init__(self):
        self.original = self.text  # exactly as read: what rejected/ stores

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def stripped_lines(self) -> list[str]:
        """Each line without the whitespace around it ("" for a blank line): what most line rules read."""
        return list(map(str.strip, self.lines))

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def layout(self) -> "Layout":
        return Layout(self.lines, self.stripped_lines)

    def set_text(self, text: str) -> None:
        self.text = text
        for cached in ("lines", "stripped_lines", "words", "layout"):
            self.__dict__.pop(cached, None)

    def edit(self, rule: str, text: str, **detail) -> None:
        self.set_text(text)
        self.edits.append({"rule": rule, **detail})


def kind_of(source: str, hint: str = "", text: str = "") -> str:
    """The kind the reader's `hint` names (a source's data.kinds, a record's own "kind", `web` for a
    page); for a record that names none (`RECORD`), `prose` when its `text` is laid out as a play, a
    poem or a hard-wrapped book (`Layout`) and `web` otherwise (how crawls ship); for a file, `code`
    by suffix, `web` for a saved page, else `prose`."""
    if hint in KINDS:
        return hint
    if hint == RECORD:
        layout = Layout(text.split("\n"))
        return "prose" if layout.verse or layout.wrapped else "web"  # a script is verse too
    suffix = Path(source).suffix.lower()
    if suffix in (".gz", ".zst"):
        suffix = Path(Path(source).stem).suffix.lower()
    if suffix in CODE_SUFFIXES:
        return "code"
    return "web" if suffix in WEB_SUFFIXES else "prose"


# ---------------------------------------------------------------- the base class and the registry

class Filter(ABC):
    """datatrove's BaseFilter, in small: `__call__` (or `batch`) gives None to keep a document
    (its text perhaps edited through `doc.edit`) or the reason it goes; `run` counts, per step,
    the documents seen, dropped by reason and edited. `kinds` are the kinds it applies to."""

    name = "filter"
    kinds: tuple[str, ...] = ("prose", "web")

    def __init__(self):
        self.stats: Counter = Counter()

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "Filter | None":
        return cls()

    @abstractmethod
    def __call__(self, doc: Doc) -> str | None:
        """None to keep `doc`, else the reason it goes."""

    def batch(self, docs: list[Doc]) -> list[str | None]:
        return [self(d) for d in docs]

    def run(self, docs: list[Doc]) -> list[str | None]:
        edits_before = [len(d.edits) for d in docs]
        reasons = self.batch(docs)
        self.stats["documents"] += len(docs)
        for doc, before, reason in zip(docs, edits_before, reasons):
            if reason:
                self.stats["dropped"] += 1
                self.stats[f"dropped:{reason}"] += 1
            elif len(doc.edits) > before:
                self.stats["edited"] += 1
        return reasons


class BatchFilter(Filter):
    """A filter that judges many documents at once (language ID and the offensive-text classifier
    score a batch; Gopher's repetition rules count its n-grams together): `batch` is the work, one
    document is a batch of one."""

    @abstractmethod
    def batch(self, docs: list[Doc]) -> list[str | None]:
        """For each document, None to keep it, else the reason it goes."""

    def __call__(self, doc: Doc) -> str | None:
        return self.batch([doc])[0]


REGISTRY: dict[str, type[Filter]] = {}


def register(cls: type[Filter]) -> type[Filter]:
    if cls.name not in FILTERS:
        raise ImportError(f"filter {cls.name!r} is not in lmforge.data.FILTERS: add it there")
    REGISTRY[cls.name] = cls
    return cls


# ---------------------------------------------------------------- layout: what a line is

SPEAKER = re.compile(r"[A-Z][A-Za-z'\-]*(?: [A-Za-z][A-Za-z'\-]*){0,3}[.:]")  # "CORIOLANUS:", "First Citizen:"
HEADING_WORD = re.compile(r"(?:chapter|book|part|volume|section|act|scene|canto|prologue|epilogue|appendix)\b", re.I)
LINE_END = (".", "!", "?", '"', "'", "”", "’", ":", ";", ",", ")", "]")


class Layout:
    """How a text uses its lines, found from their shapes (no model):

    - hard-wrapped: most lines inside paragraphs end near one width (40-100 characters), as in
      Project Gutenberg books and plain-text docs; then a paragraph, not a line, is the unit the
      line rules judge, and removing one removes all its lines;
    - script: speaker labels ("CORIOLANUS:") on their own lines; verse: lines inside stanzas start
      with a capital and run three to twelve words, ragged. In both a line is a line of the work:
      the line rules leave them alone, and speaker labels do not count as duplicate lines;
    - headings: a short paragraph of one line that reads as a heading (CHAPTER XXI, all capitals).
    """

    def __init__(self, lines: list[str], stripped: list[str] | None = None):
        self.lines = lines
        self.stripped = stripped = list(map(str.strip, lines)) if stripped is None else stripped
        self.paragraphs = self._paragraphs(stripped)  # [(first, end)) line ranges of non-blank runs
        # "First Citizen:" or, with a full stop, only in capitals ("HAMLET."): "Short line." is no speaker
        self.speakers = {i for i, s in enumerate(stripped)
                         if s and len(s) <= 40 and (s[-1] == ":" or s.isupper()) and SPEAKER.fullmatch(s)
                         and i + 1 < len(lines) and stripped[i + 1]}
        nonblank = len(stripped) - stripped.count("")
        self.script = len(self.speakers) >= 3 and len(self.speakers) >= 0.03 * nonblank
        self.verse = self.script or self._is_verse(
            [stripped[i] for a, b in self.paragraphs for i in range(a + 1, b) if i not in self.speakers])
        self.wrapped = not self.verse and self._is_wrapped(
            [len(lines[i].rstrip()) for a, b in self.paragraphs for i in range(a, b - 1)])
        self.headings = {a for a, b in self.paragraphs if b == a + 1 and self._is_heading(stripped[a])}
        self._units: list[tuple[list[int], str]] | None = None

    @staticmethod
    def _paragraphs(stripped: list[str]) -> list[tuple[int, int]]:
        out, start = [], None
        for i, line in enumerate(stripped):
            if line:
                if start is None:
                    start = i
            elif start is not None:
                out.append((start, i))
                start = None
        if start is not None:
            out.append((start, len(stripped)))
        return out

    @staticmethod
    def _is_verse(inner: list[str]) -> bool:
        if len(inner) < 8:
            return False
        capital = sum(1 for s in inner if s[:1].isupper())
        if capital < 0.7 * len(inner):  # most text fails here: no need to count its words
            return False
        words = sorted(len(s.split()) for s in inner)
        return 3 <= words[len(words) // 2] <= 12 and words[len(words) // 5] >= 2

    @staticmethod
    def _is_wrapped(lengths: list[int]) -> bool:
        if len(lengths) < 8:
            return False
        ordered = sorted(lengths)
        width = ordered[int(0.9 * (len(lengths) - 1))]
        near_width = bisect_right(ordered, width + 2) - bisect_left(ordered, 0.7 * width)  # lines of 0.7-1x the width
        return 40 <= width <= 100 and near_width >= 0.8 * len(lengths)

    @staticmethod
    def _is_heading(line: str) -> bool:
        n_words = len(line.split(None, 8))  # 9 means "more than 8": a long line is not split to its end
        return 0 < n_words <= 8 and (line.isupper() or HEADING_WORD.match(line) is not None)

    def units(self) -> list[tuple[list[int], str]]:
        """The logical lines: (physical line numbers, text). A wrapped paragraph is one unit.
        Built once: C4 and FineWeb both read them (C4's edits give the document a new Layout)."""
        if self._units is None:
            s = self.stripped
            if self.wrapped:
                self._units = [(list(range(a, b)), " ".join(s[a:b])) for a, b in self.paragraphs]
            else:
                self._units = [([i], line) for i, line in enumerate(s) if line]
        return self._units

    def protected(self, first_line: int) -> bool:
        """A unit the line rules keep whatever they say: a heading or a speaker label."""
        return first_line in self.headings or first_line in self.speakers


def _without_lines(doc: Doc, removed: set[int]) -> str:
    text = "\n".join(l for i, l in enumerate(doc.lines) if i not in removed)
    if doc.kind == "web":  # a web page's gaps are noise; prose keeps its own spacing
        text = MANY_BLANK_LINES.sub("\n\n", text).strip()
    return text


# ---------------------------------------------------------------- repairs

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# the characters cp1252 (or Latin-1, for its five undefined bytes) shows for the bytes 0x80-0xBF
CONTINUATION = "\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a" \
               "\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
# UTF-8 read as cp1252: a lead byte's character (Â..ô) followed by a continuation byte's character
MOJIBAKE_SIGN = re.compile(f"[\u00c2-\u00f4][{CONTINUATION}]")
MOJIBAKE_SEQUENCE = re.compile(f"[\u00c2-\u00df][{CONTINUATION}]|[\u00e0-\u00ef][{CONTINUATION}]{{2}}"
                               f"|[\u00f0-\u00f4][{CONTINUATION}]{{3}}")
# "â€" left without its third byte: cp1252 has no character for 0x9D, the last byte of ” (E2 80 9D),
# so converters drop it; nothing else starting E2 80 is common enough to compete
LOST_CLOSING_QUOTE = re.compile(f"\u00e2\u20ac(?![{CONTINUATION}])")
C0_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_RSTRIP_SPACE = methodcaller("rstrip", " \t")
MANY_BLANK_LINES = re.compile(r"\n{3,}")


def _without_trailing_space(text: str) -> str:
    """`re.sub(r"[ \\t]+\\n", "\\n", text)`, a line at a time (7x faster: the pattern tries every
    space); the last line, with no newline after it, keeps its spaces as the pattern leaves them."""
    lines = text.split("\n")
    last = lines.pop()
    lines = list(map(_RSTRIP_SPACE, lines))
    lines.append(last)
    return "\n".join(lines)


def _cp1252_bytes(text: str) -> bytes:
    out = bytearray()
    for ch in text:  # Latin-1 below 0x100 (which also keeps the C1 controls cp1252 leaves undefined)
        out += bytes([ord(ch)]) if ord(ch) <= 0xFF else ch.encode("cp1252")
    return bytes(out)


def _decode_sequence(match: re.Match) -> str:
    try:
        return _cp1252_bytes(match.group()).decode("utf-8")
    except UnicodeError:
        return match.group()


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as cp1252, once or twice over (`siÄ™` -> `się`, `Ã¢â‚¬â„¢` -> `’`): each
    sequence of a lead byte's character and the right number of continuation characters is
    re-encoded and decoded, and kept only if it is valid UTF-8, so correct text is left alone."""
    for _ in range(3):  # double and triple encoding
        fixed = MOJIBAKE_SEQUENCE.sub(_decode_sequence, LOST_CLOSING_QUOTE.sub("\u201d", text))
        if fixed == text:
            break
        text = fixed
    return text


# Project Gutenberg's header and licence (about 20 kB around every book): its own markers bound the book
GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E(?:BOOK|TEXT)\b[^\n]*\n", re.I | re.M)
GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E(?:BOOK|TEXT)\b", re.I | re.M)
GUTENBERG_LAST_LINE = re.compile(r"\n[ \t]*End of (?:the )?Project Gutenberg(?:'s)? E(?:Book|Text)[^\n]*\s*$", re.I)


def without_gutenberg_boilerplate(text: str) -> str:
    """The book between Project Gutenberg's START and END markers (the licence after it is ~11% of
    War and Peace's last 5%, which became its validation text, cloze blanks and sample prompts);
    `text` itself where the markers are not both there."""
    start = GUTENBERG_START.search(text)
    end = GUTENBERG_END.search(text, start.end()) if start else None
    if not (start and end):
        return text
    return GUTENBERG_LAST_LINE.sub("", text[start.end():end.start()]).strip("\r\n") + "\n"


class Repair(Filter):
    """Mojibake, Unicode NFC, control characters out, tidy whitespace, Project Gutenberg's header and
    licence cut away; counts what it fixed. Code is read as it is (a form feed or an NFD string literal
    is the program's business); prose keeps every line (trailing spaces go); web text also loses runs
    of blank lines."""

    name = "repair"
    kinds = ("prose", "web")

    def __init__(self):
        super().__init__()
        import ftfy

        self._ftfy = ftfy.fix_text
        self._ftfy_config = ftfy.TextFixerConfig(normalization="NFC", explain=False, uncurl_quotes=False)
        self.counts = self.stats

    def __call__(self, doc: Doc) -> str | None:
        text = doc.text
        if "\ufffd" in text:
            self.counts["invalid_utf8_chars"] += text.count("\ufffd")
        if doc.kind not in self.kinds:
            return None if text.strip() else "empty_after_repair"
        if "GUTENBERG" in text[:20_000].upper():
            book = without_gutenberg_boilerplate(text)
            if book is not text:
                self.counts["gutenberg_boilerplate_removed"] += 1
                doc.edits.append({"rule": "repair:gutenberg_boilerplate"})
                doc.set_text(book)
                text = book
        has_control = CONTROL.search(text) is not None  # C0 and C1: one scan rules both out
        if has_control and C0_CONTROL.search(text):
            self.counts["control_chars_removed"] += 1
            doc.edits.append({"rule": "repair:control_chars"})
        fixed = text
        if text.isascii():  # no mojibake, nothing to normalise
            pass
        elif MOJIBAKE_SIGN.search(text):  # before control-char removal: mojibake can look like C1 controls
            fixed = fix_mojibake(text)
            if MOJIBAKE_SIGN.search(fixed):  # what the byte rule cannot undo: ftfy's heuristics (~1 ms a document)
                fixed = self._ftfy(fixed, self._ftfy_config)
            fixed = unicodedata.normalize("NFC", fixed)
        elif not unicodedata.is_normalized("NFC", text):
            fixed = unicodedata.normalize("NFC", text)
        if fixed is not text and C0_CONTROL.sub("", fixed) != C0_CONTROL.sub("", text):
            self.counts["mojibake_or_unicode_fixed"] += 1
            doc.edits.append({"rule": "repair:mojibake_or_unicode"})
        # each rewrite behind a cheap scan that rules it out: most documents need none of them
        without_control = CONTROL.sub("", fixed) if (has_control or fixed is not text) else fixed
        cleaned = without_control
        if "\r" in cleaned:
            cleaned = cleaned.replace("\r\n", "\n")
        if " \n" in cleaned or "\t\n" in cleaned:
            cleaned = _without_trailing_space(cleaned)
        if doc.kind == "web":
            if "\n\n\n" in cleaned:
                cleaned = MANY_BLANK_LINES.sub("\n\n", cleaned)
            cleaned = cleaned.strip()
        if cleaned != text:
            if cleaned != without_control:
                doc.edits.append({"rule": "repair:whitespace"})
            doc.set_text(cleaned)
        return None if cleaned.strip() else "empty_after_repair"


# ---------------------------------------------------------------- language first

def body_sample(text: str, windows: int = 3, width: int = 200) -> str:
    """`windows` pieces of `width` characters from a document's body (at 1/4, 1/2, 3/4 of it for
    three), each starting after a space: what language identification reads when the opening fails."""
    pieces = []
    for k in range(1, windows + 1):
        start = text.find(" ", len(text) * k // (windows + 1)) + 1
        pieces.append(text[start:start + width])
    return " ".join(pieces)


@register
class Language(BatchFilter):
    """py3langid's bundled model on the first 600 characters (what it costs grows with the length; a
    long document that reads uncertain there is judged again on `body_sample`),
    run as a batch (data/classifiers.py); keeps the listed languages and records the language, which
    the word rules after it read. Code is not identified (its keywords are English)."""

    name = "language"
    kinds = ("prose", "web")
    MIN_CHARS = 100  # "Too short." reads as Oromo; a sentence or two reads as its language

    def __init__(self, languages: list[str], min_probability: float):
        super().__init__()
        from lmforge.data.classifiers import BatchLanguageIdentifier

        self.identifier = BatchLanguageIdentifier()
        self.languages, self.min_probability = set(languages), min_probability

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "Language":
        return cls(cfg.languages, cfg.language_min_probability)

    def batch(self, docs: list[Doc]) -> list[str | None]:
        found = self.identifier.classify([d.text[:600] for d in docs])
        # a long document whose opening says little (a book's title page and table of contents: War and
        # Peace, once Gutenberg's English licence was cut away, read "uncertain") is judged again on
        # running text from its body
        again = [i for i, (d, (lang, prob)) in enumerate(zip(docs, found))
                 if len(d.text) > 3 * 600 and (lang not in self.languages or prob < self.min_probability)]
        if again:
            for i, result in zip(again, self.identifier.classify([body_sample(docs[i].text) for i in again])):
                found[i] = result
        reasons: list[str | None] = []
        for doc, (lang, prob) in zip(docs, found):
            doc.meta["language"], doc.meta["language_probability"] = lang, round(prob, 3)
            if len(doc.text) < self.MIN_CHARS:  # too little to tell: the length rules judge it, not a guess
                reasons.append(None)
            elif lang not in self.languages:
                reasons.append(f"not_{'_'.join(sorted(self.languages))}:{lang}")
            else:
                reasons.append("uncertain_language" if prob < self.min_probability else None)
        return reasons


# Gopher's rule asks for two of eight English function words ("the", "be", "to", "of", "and",
# "that", "have", "with"). The same rule for other languages takes each one's commonest function
# words (articles, prepositions, conjunctions, the verb "to be"), as frequent in running text as
# Gopher's eight are in English. A language with no list skips the rule.
STOP_WORDS = {
    "en": "the be to of and that have with",
    "de": "der die das und ist nicht mit von zu den ein eine sich auf",
    "fr": "le la les de des et est un une que dans pour pas qui",
    "es": "el la los las de y que en un una es por con para",
    "it": "il la di e che un una per non con del della sono",
    "pt": "o a os as de e que um uma do da em para com não",
    "nl": "de het een en van is dat op te in niet met zijn",
    "sv": "och att det som en är på av för med inte den",
    "da": "og at det er en til på af for med ikke den som",
    "no": "og i det er en til på av for med ikke som at",
    "nb": "og i det er en til på av for med ikke som at",
    "pl": "i w nie na się że z do to jest jak o",
    "cs": "a v se na je že to s z do jako o",
    "ru": "и в не на что с по это как он она к",
    "uk": "і в не на що з до це як він та у",
    "fi": "ja on ei se että hän oli ovat kun mutta tai myös",
    "tr": "ve bir bu da de için ile çok ne gibi olarak daha",
    "id": "yang dan di ini itu dengan untuk dari tidak dalam ke",
    "ro": "și în de la cu nu care este un o pe a",
    "hu": "a az és hogy nem is egy de van meg",
}
STOP_WORDS_BY_LANGUAGE = {lang: frozenset(words.split()) for lang, words in STOP_WORDS.items()}
# written without spaces between words: whitespace "words" are phrases, so no word-count rule
# reads them as words (characters stand in for the minimum length) and no word-length rule runs
UNSPACED = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz"})


def language_of(doc: Doc, configured: list[str]) -> str | None:
    """What language identification found, else the one language asked for, else unknown."""
    return doc.meta.get("language") or (configured[0] if len(configured) == 1 else None)


# ---------------------------------------------------------------- prose quality

BULLETS = ("•", "-", "*", "‣", "▶", "●", "◦", "○")
ELLIPSES = ("...", "…")
PUNCT_END = (".", "!", "?", '"', "'", "”", "’", ":", ";")
_STRIP_PUNCTUATION = methodcaller("strip", "\"'.,;:!?()[]{}<>*_/`-@=\u2013\u2014\u2026\u201c\u201d\u2018\u2019")


def _enough_words_with_a_letter(words: list[str], min_ratio: float) -> bool:
    """Gopher's "80% of words hold a letter", over words that are not bare punctuation: a
    pre-tokenised text (WikiText's ` @,@ `, `.` and `,` as words) is not made of non-words."""
    # a word of letters alone is unchanged by the stripping and counts: only the others need it (all at C speed)
    letters_only = list(map(str.isalpha, words))
    n_letters_only = sum(letters_only)
    if n_letters_only and n_letters_only >= min_ratio * len(words):  # enough whatever the others turn out to be
        return True
    others = list(map(_STRIP_PUNCTUATION, compress(words, map(not_, letters_only))))
    alphabetic = n_letters_only + sum(map(str.isalpha, others))  # letters once the punctuation around them is gone
    counted = len(words) - others.count("")
    if alphabetic >= min_ratio * counted:
        return counted > 0
    return n_letters_only + sum(1 for w in others if w and any(map(str.isalpha, w))) >= min_ratio * counted


@register
class GopherQuality(Filter):
    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig, languages: list[str] | None = None):
        super().__init__()
        self.cfg, self.languages = cfg, languages or ["en"]

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "GopherQuality":
        return cls(cfg.gopher_quality, cfg.languages)

    def __call__(self, doc: Doc) -> str | None:
        c, words = self.cfg, doc.words
        lang = language_of(doc, self.languages)
        n = len(words)
        if lang in UNSPACED:
            if len(doc.text) - doc.text.count(" ") < c.min_doc_words:
                return "few_words"
        elif n < c.min_doc_words:
            return "few_words"
        if n > c.max_doc_words and doc.kind == "web":  # Gopher's cap is for web pages: a book is long by nature
            return "too_many_words"
        if lang not in UNSPACED:
            avg = sum(map(len, words)) / n
            if avg < c.min_avg_word_length:
                return "short_words"
            if avg > c.max_avg_word_length:
                return "long_words"
        symbols = doc.text.count("#") + doc.text.count("...") + doc.text.count("…")
        if symbols / max(n, 1) > c.max_symbol_word_ratio:
            return "symbols"
        lines = list(filter(None, doc.stripped_lines))  # the non-blank ones
        if lines:
            if sum(map(methodcaller("startswith", BULLETS), lines)) / len(lines) > c.max_bullet_lines_ratio:
                return "bullet_lines"
            if sum(map(methodcaller("endswith", ELLIPSES), lines)) / len(lines) > c.max_ellipsis_lines_ratio:
                return "ellipsis_lines"
        if lang not in UNSPACED and not _enough_words_with_a_letter(words, c.max_non_alpha_words_ratio):
            return "non_alpha_words"
        stop_words = STOP_WORDS_BY_LANGUAGE.get(lang or "")
        if stop_words is None:
            return None
        stop = 0
        for w in words:  # stop at the threshold: most documents reach it in their first sentence
            if w.lower() in stop_words:
                stop += 1
                if stop >= c.min_stop_words:
                    return None
        return "few_stop_words"


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and how many characters they hold."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


@register
class GopherRepetition(BatchFilter):
    """Gopher's repetition rules: duplicate paragraphs and lines, the most frequent 2-4-gram's share
    of the characters, and the share covered by repeated 5-10-grams. The n-gram counts run over a
    whole batch of documents at once (`WordTable`): one sort per n for the batch instead of one per
    document, whose numpy call overheads would cost more than the sorting."""

    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "GopherRepetition":
        return cls(cfg.gopher_repetition)

    def batch(self, docs: list[Doc]) -> list[str | None]:
        reasons = [self.paragraphs_and_lines(doc) for doc in docs]
        pending = [i for i, r in enumerate(reasons) if r is None and docs[i].words]
        windows = {i: self.windows(docs[i].words) for i in pending}
        for chunk in _runs_within(pending, [len(windows[i]) for i in pending], WordTable.MAX_DOCS):
            group = np.repeat(np.arange(len(chunk)), [len(windows[i]) for i in chunk])
            table = WordTable(list(chain.from_iterable(windows[i] for i in chunk)))
            for i, reason in zip(chunk, self.ngram_reasons(table, group)):
                reasons[i] = reason
        return reasons

    def windows(self, words: list[str]) -> list[list[str]]:
        w = self.cfg.window_words
        return [words] if len(words) <= w else [words[i:i + w] for i in range(0, len(words), w)]

    def paragraphs_and_lines(self, doc: Doc) -> str | None:
        c, text = self.cfg, doc.text
        body = text.strip()
        # splitting at "\n\n" is PARAGRAPH_SPLIT's split (at C speed) when no run of three newlines or more is there
        parts = body.split("\n\n") if "\n\n\n" not in body else PARAGRAPH_SPLIT.split(body)
        paragraphs = [p for p in parts if p.strip()]
        n, chars = _duplicates(paragraphs)
        if paragraphs and n / len(paragraphs) > c.dup_para_frac:
            return "duplicate_paragraphs"
        if chars / max(len(text), 1) > c.dup_para_char_frac:
            return "duplicate_paragraph_chars"
        nonblank = list(map(bool, doc.stripped_lines))
        reason = self._duplicate_lines(list(compress(doc.lines, nonblank)), len(text))
        if reason and doc.layout.script:  # a play names its speakers again and again: not repetition
            speakers = doc.layout.speakers
            reason = self._duplicate_lines([l for i, l in enumerate(doc.lines) if nonblank[i] and i not in speakers],
                                           len(text))
        return reason

    def _duplicate_lines(self, lines: list[str], n_chars: int) -> str | None:
        n, chars = _duplicates(lines)
        if lines and n / len(lines) > self.cfg.dup_line_frac:
            return "duplicate_lines"
        if chars / max(n_chars, 1) > self.cfg.dup_line_char_frac:
            return "duplicate_line_chars"
        return None

    def ngram_reasons(self, table: "WordTable", group: np.ndarray) -> list[str | None]:
        """The n-gram rules for the documents whose windows fill `table` (`group`: each window's
        document); a document's share is its windows' character-weighted mean."""
        c = self.cfg
        n_docs = int(group.max()) + 1 if len(group) else 0
        doc_chars = np.bincount(group, weights=table.chars, minlength=n_docs)

        def per_doc(share: np.ndarray) -> np.ndarray:
            return np.bincount(group, weights=share * table.chars, minlength=n_docs) / doc_chars

        reasons: list[str | None] = [None] * n_docs
        undecided = np.ones(n_docs, dtype=bool)
        # an n-gram's characters times its count are at most n times the largest count x length of a
        # single word: a document under that bound cannot fail the n-gram rule, and is not counted
        heaviest_word = per_doc(table.top_share(1, undecided[group], heaviest=True))
        for n_words, limit in c.top_n_grams:
            n = int(n_words)
            check = undecided & (n * heaviest_word > limit)
            if check.any():
                for d in np.flatnonzero(check & (per_doc(table.top_share(n, check[group])) > limit)):
                    reasons[d] = f"top_{n}_gram"
                    undecided[d] = False
        checks = sorted((int(n), limit) for n, limit in c.dup_n_grams)
        for k, (n, limit) in enumerate(checks):
            if not undecided.any():
                break
            fraction = per_doc(table.dup_share(n, undecided[group]))
            for d in np.flatnonzero(undecided & (fraction > limit)):
                reasons[d] = f"duplicate_{n}_grams"
                undecided[d] = False
            # words covered by repeated (n+1)-grams are a subset of those covered by repeated n-grams,
            # so once the fraction is under every remaining limit, no longer n-gram can fail
            undecided &= fraction > min((later for _, later in checks[k + 1:]), default=np.inf)
        return reasons


PARAGRAPH_SPLIT = re.compile(r"\n{2,}")


def _runs_within(items: list[int], sizes: list[int], most: int) -> list[list[int]]:
    """`items` cut, in order, into runs whose sizes add up to at most `most` (a larger item alone)."""
    runs: list[list[int]] = []
    total = 0
    for item, size in zip(items, sizes):
        if not runs or total + size > most:
            runs.append([])
            total = 0
        runs[-1].append(item)
        total += size
    return runs


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


def line_rule_kinds(policy: str) -> tuple[str, ...]:
    """prepare.line_rules -> the kinds C4's and FineWeb's rules run on."""
    return {"web": ("web",), "prose": ("prose", "web"), "off": ()}[policy]


class LineRules(Filter):
    """A filter of line rules (C4's, FineWeb's): its settings are `section` of the prepare config,
    and `prepare.line_rules` decides which kinds of document it judges (none when "off")."""

    section = ""
    kinds = ("web",)

    def __init__(self, cfg: C4Config | FineWebConfig, kinds: tuple[str, ...] = ("web",)):
        super().__init__()
        self.cfg, self.kinds = cfg, kinds

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "LineRules | None":
        if cfg.line_rules == "off":
            return None
        return cls(getattr(cfg, cls.section), line_rule_kinds(cfg.line_rules))


@register
class C4Lines(LineRules):
    """C4's rules: drop lines that are too short, policy boilerplate, 'javascript' notices or hold
    an over-long word (and, if asked, lines without end punctuation); drop the document for
    'lorem ipsum', a curly bracket (web text only, `c4.curly_bracket`) or too few sentences left.
    A line is a logical line (`Layout`): headings and speaker labels stay, verse is left alone."""

    name = section = "c4"

    def __call__(self, doc: Doc) -> str | None:
        c = self.cfg
        low = doc.text.lower()
        if "lorem ipsum" in low:
            return "lorem_ipsum"
        if c.curly_bracket and doc.kind == "web" and "{" in doc.text:
            return "curly_bracket"
        removed: dict[str, list[int]] = {}
        # whole-document scans first: most documents hold no over-long word and no policy phrase, and
        # then no line needs those checks; with no short physical line either, no logical line can go
        # a word is no longer than its line, and lines are fewer than words
        check_words = (max(map(len, doc.lines)) > c.max_word_length
                       and max(map(len, doc.words), default=0) > c.max_word_length)
        phrases = [p for p in ("javascript", *c.policy_phrases) if p in low]
        # a line's first min_words_per_line words tell whether it is short: the rest is not split
        few = max(c.min_words_per_line - 1, 0)
        some_short = any(len(s.split(None, few)) < c.min_words_per_line for s in doc.stripped_lines if s)
        if (some_short or check_words or phrases or c.remove_lines_without_punctuation) and not doc.layout.verse:
            layout = doc.layout
            for numbers, unit in layout.units():
                if not layout.protected(numbers[0]) and (reason := self._line_reason(unit, check_words, phrases, layout.wrapped)):
                    removed.setdefault(reason, []).extend(numbers)
        text = _without_lines(doc, set(chain.from_iterable(removed.values()))) if removed else doc.text
        if c.min_sentences and sum(1 for _ in islice(SENTENCE_END.finditer(text), c.min_sentences)) < c.min_sentences:
            return "few_sentences"
        if removed:
            doc.set_text(text)
            doc.edits += [{"rule": f"c4:{reason}", "lines": [i + 1 for i in numbers]} for reason, numbers in removed.items()]
        return None

    def _line_reason(self, unit: str, check_words: bool, phrases: list[str], wrapped: bool) -> str | None:
        c, words = self.cfg, unit.split()
        # in a hard-wrapped text a unit is a paragraph: a short one that ends a sentence ("Yes.") is dialogue
        if len(words) < c.min_words_per_line and not (wrapped and unit.endswith(PUNCT_END)):
            return "short_line"
        if c.remove_lines_without_punctuation and not unit.endswith(PUNCT_END):
            return "no_end_punctuation"
        if check_words and max(map(len, words)) > c.max_word_length:
            return "long_word"
        if phrases and any(p in unit.lower() for p in phrases):
            return "policy_line"
        return None


@register
class FineWebQuality(LineRules):
    """FineWeb's line rules, on logical lines (`Layout`); a verse or script layout is exempt from
    the end-punctuation and short-line shares (its lines are short and unpunctuated by design)."""

    name = section = "fineweb"

    def __call__(self, doc: Doc) -> str | None:
        c, layout = self.cfg, doc.layout
        speakers = layout.speakers
        units = [u for numbers, u in layout.units() if not speakers or numbers[0] not in speakers]
        if not units:
            return "empty"
        if not layout.verse:
            if sum(u.endswith(PUNCT_END) for u in units) / len(units) < c.min_line_punct_ratio:
                return "line_punctuation"
            if sum(len(u) <= c.short_line_chars for u in units) / len(units) > c.max_short_line_ratio:
                return "short_lines"
        _, dup_chars = _duplicates(units)
        if dup_chars / max(len(doc.text) - doc.text.count("\n"), 1) > c.max_duplicate_line_char_ratio:
            return "duplicate_line_chars"
        newlines = len(units) if layout.wrapped else doc.text.count("\n")
        if newlines / max(len(doc.words), 1) > c.max_newline_word_ratio:
            return "list_like"
        return None


# ---------------------------------------------------------------- source code

@register
class CodeQuality(Filter):
    """StarCoder's filters: minified or data-like files and files a tool wrote."""

    name = "code"
    kinds = ("code",)

    def __init__(self, cfg: CodeConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "CodeQuality":
        return cls(cfg.code)

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


# ---------------------------------------------------------------- offensive text, blocklist

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@register
class Offensive(BatchFilter):
    """alt-profanity-check's bundled classifier (TF-IDF + linear SVM), scored per paragraph and run
    as a batch (data/classifiers.py): a paragraph is offensive when it scores at least `threshold`
    and holds a word the model weighs at least `min_word_weight`; a document goes when the share
    of such paragraphs passes `max_fraction`. It runs before the word rules, so a short insult is
    filed as offensive, not as a short document; one rude paragraph in a long document is kept,
    with its score in `offensive_max`.

    Why the word: the model learned from abusive comments, where "dirty", "stinky", "smelly",
    "mom" (yo-mama insults) and even "drove" lean offensive (weights 1.6-2.0). A children's story's
    paragraph about a smelly flavor like stinky cheese, or a wet, dirty dog, adds them up to 0.90-0.97
    with no insult in it; in a story of four paragraphs that one is a quarter of the document. The
    model's profanities and insults weigh 2.5 and more (its ~100 heaviest words: "fool", "damn",
    "idiot" 6.2, "fuck" 11.1), so requiring one keeps its decisions on words that offend
    (benchmarks/clean_quality.py measures both rules side by side)."""

    name = "offensive"
    kinds = KINDS

    def __init__(self, threshold: float, max_fraction: float, min_word_weight: float = 0.0):
        super().__init__()
        from lmforge.data.classifiers import BatchOffensiveScorer

        self.scorer, self.threshold, self.max_fraction = BatchOffensiveScorer(), threshold, max_fraction
        self.min_word_weight = min_word_weight

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "Offensive":
        return cls(cfg.offensive_threshold, cfg.offensive_max_fraction, cfg.offensive_min_word_weight)

    def batch(self, docs: list[Doc]) -> list[str | None]:
        paragraphs, sizes = [], []
        for doc in docs:
            parts = [p for p in PARAGRAPH_BREAK.split(doc.text) if p.strip()][:200] or [doc.text]
            paragraphs += parts
            sizes.append(len(parts))
        probs, strongest = self.scorer.score(paragraphs)  # (paragraphs,) each
        offensive = (probs >= self.threshold) & (strongest >= self.min_word_weight)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        highest = np.maximum.reduceat(probs, starts)  # (docs,)
        offensive_share = np.add.reduceat(offensive.astype(np.float64), starts) / np.array(sizes)
        reasons: list[str | None] = []
        for doc, top, share in zip(docs, highest, offensive_share):
            doc.meta["offensive_max"] = round(float(top), 3)
            reasons.append("offensive_language" if share > self.max_fraction else None)
        return reasons


@register
class Blocklist(Filter):
    """A user's words and URL fragments, one per line (# comments); whole-word, case-insensitive."""

    name = "blocklist"
    kinds = KINDS

    def __init__(self, path: str):
        super().__init__()
        try:
            entries = [l.strip().lower() for l in Path(path).read_text().splitlines()]
        except OSError as e:
            raise LmforgeError(f"prepare.blocklist {path!r} cannot be read: {e.strerror}") from None
        except UnicodeDecodeError:
            raise LmforgeError(f"prepare.blocklist {path!r} is not a UTF-8 text file: give a text file "
                               "of words and URL fragments, one per line") from None
        entries = [e for e in entries if e and not e.startswith("#")]
        words = [re.escape(e) for e in entries if "/" not in e and "." not in e]
        self.urls = [e for e in entries if "/" in e or "." in e]
        self.words = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.I) if words else None

    @classmethod
    def from_config(cls, cfg: PrepareConfig) -> "Blocklist | None":
        return cls(cfg.blocklist) if cfg.blocklist else None

    def __call__(self, doc: Doc) -> str | None:
        if self.words is not None and self.words.search(doc.text):
            return "blocked_word"
        low = doc.text.lower()
        if any(u in low for u in self.urls):
            return "blocked_url"
        return None


if set(REGISTRY) != set(FILTERS):
    raise ImportError(f"lmforge.data.FILTERS names {sorted(set(FILTERS) - set(REGISTRY))} with no filter class")


def normalise_for_hash(text: str) -> str:
    """What exact deduplication compares: NFKC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())
