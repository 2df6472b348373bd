"""Fill in the blank and multiple choice, for causal and masked models.

The blank is written `[MASK]`, once per text. What a score is (the `scoring` key of the result):

    masked-pll       masked model: pseudo-log-likelihood of the filler's tokens (Salazar et
                     al. 2020, restricted to the filler). The filler's m tokens are put in the blank;
                     for each j, token j alone is replaced by <|mask|> (the other m-1 and all the
                     context stay visible) and log P(token j) is read there; score = the sum over j.
                     One sequence per filler token, so an m-token filler is never scored from a
                     single mask.
    causal-sentence  causal model: the log-likelihood of the whole completed sentence, the sum over
                     its tokens of log P(x_t | x_<t) after the lead-in (below), so the text after
                     the blank counts too.

Ranking (`rank` and `best`, the one rule of `fill` and of `eval --tasks`' `accuracy`): by the summed
log-probability (`score`), so the percentages `fill` shows are the softmax of the model's own
log-likelihoods. The score per UTF-8 byte of the scored tokens (`per_byte`: the filler's for a masked
model, the completed sentence's for a causal one) is given beside it, and `eval --tasks`'
`accuracy_norm` ranks by it. Issue 28 asked for the per-byte rank; measured on blanks made from seven
runs' own validation text it picked the right word less often on every one (docs/LOG.md, 2026-12-07):
for a causal model it is the whole sentence's figure, so a longer filler earns the sentence's mean
cost per byte as a bonus ("__init__(self" over "range", 10 nats worse).

Without choices, `fill` finds the candidates itself (`Scorer.top_fillers`: whole words, grown from
the likeliest first tokens at the blank) and ranks them as choices.

The lead-in: a text is read where texts start in the model's training stream. That is after
<|endoftext|> when documents started often there (at least once every 50 context windows), else
after a line break: a model trained on one long file (one document, one <|endoftext|> in the whole
stream) has seen <|endoftext|> as context once, and every line it learned followed "\n". Measured
(issue 14, tiny preset, 4,000 animal lines in one file, masked, step 200): after <|endoftext|> 14/15
blanks right, worst margin -0.55 nats; after "\n" 15/15, worst margin +2.16.

Tokenisation: the text before the blank, the filler and the text after it are encoded separately
and joined, so every choice is scored against the same context tokens. A space just before the
blank moves into the filler, because byte-level BPE spells a word in running text with its space
(" token"). A text longer than the model's context is trimmed from its far ends (the longer side
first); the result then says `truncated`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError, shown
from lmforge.folders.run import RunDir
from lmforge.open_run import open_run
from lmforge.tokenizer import EOT, MASK, SPECIAL_TOKENS, token_bytes
from lmforge.folders.tokenized import read_meta

MARK = "[MASK]"
SHORTLIST = 50  # first tokens tried by `fill` without choices (5 x --top-k where that is more)
WORD_TOKENS = 6  # tokens a filler word may grow to
WORD_CHAR = re.compile(r"\w")


@dataclass
class Blank:
    """A text cut at its blank, in tokens. `prefix` starts with the lead-in when untrimmed."""

    prefix: list[int]
    suffix: list[int]
    space: str  # the space taken from before the blank, spelled by every filler


@dataclass
class Scored:
    text: str
    score: float  # summed log-probability (nats)
    tokens: int  # tokens of the filler
    scored_bytes: int  # UTF-8 bytes of the tokens whose log-probabilities make the score
    truncated: bool = False

    @property
    def per_byte(self) -> float:
        return self.score / max(self.scored_bytes, 1)


class Scorer:
    """A loaded run and the scoring rules above; reused across many texts (`eval --tasks`)."""

    def __init__(self, run_dir: str | Path, device: str = "cpu"):
        opened = open_run(RunDir(run_dir), device)
        self.model, self.tok, self.checkpoint, self.objective = (opened.model, opened.tokenizer, opened.checkpoint,
                                                                 opened.objective)
        self.device = torch.device(device)
        self.eot, self.mask = self.tok.token_to_id(EOT), self.tok.token_to_id(MASK)
        self.special = [i for i in (self.tok.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None]
        pieces = token_bytes(self.tok)
        self.bytes = [len(b) for b in pieces]
        self.pieces = [b.decode("utf-8", errors="replace") for b in pieces]  # a split character reads as \ufffd
        self.limit = self.model.cfg.seq_len
        self.lead_in = lead_in(RunDir(run_dir), self.tok, self.limit)

    # ---------------------------------------------------------------- text -> tokens

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def blank(self, text: str) -> Blank:
        before, after = split_blank(text)
        space = " " if before.endswith(" ") else ""
        return Blank(self.lead_in + self.encode(before[: len(before) - len(space)]), self.encode(after), space)

    def fit(self, blank: Blank, filler_len: int) -> tuple[list[int], list[int], bool]:
        """Trim the context so prefix + filler + suffix fits the model's context."""
        room = self.limit - filler_len
        if room < 0:
            raise LmforgeError(f"a filler of {filler_len} tokens does not fit the model's context of {self.limit}")
        prefix, suffix = blank.prefix, blank.suffix
        excess = len(prefix) + len(suffix) - room
        if excess <= 0:
            return prefix, suffix, False
        # the longer side gives first, until both are equal; then both give alike
        cut_p = min(max(len(prefix) - len(suffix), 0), excess)
        cut_s = min(max(len(suffix) - len(prefix), 0), excess)
        rest = excess - cut_p - cut_s
        cut_p, cut_s = cut_p + (rest + 1) // 2, cut_s + rest // 2
        return prefix[cut_p:], suffix[: len(suffix) - cut_s], True

    # ---------------------------------------------------------------- the model

    @torch.no_grad()
    def log_probs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Each row (T,) -> (T, V) log-probabilities; rows of one length share a forward pass."""
        out: list[torch.Tensor | None] = [None] * len(rows)
        by_len: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_len.setdefault(len(r), []).append(i)
        causal = self.objective == "causal"
        for idx in by_len.values():
            x = torch.tensor([rows[i] for i in idx], dtype=torch.long, device=self.device)  # (B, T)
            logp = F.log_softmax(self.model(x, causal=causal).float(), dim=-1).cpu()  # (B, T, V)
            for j, i in enumerate(idx):
                out[i] = logp[j]
        return out

    # ---------------------------------------------------------------- scoring

    def score_choices(self, text: str, choices: list[str]) -> tuple[str, list[Scored]]:
        """The scoring's name and one summed log-probability per choice, in the given order."""
        blank = self.blank(text)
        check_choices(choices)
        if self.objective == "masked":
            return "masked-pll", self._pll(blank, choices)
        return "causal-sentence", self._sentences(blank, [(c, self.encode(blank.space + c)) for c in choices])

    def _pll(self, blank: Blank, choices: list[str]) -> list[Scored]:
        rows, spans = [], []
        for c in choices:
            filler = self.encode(blank.space + c)
            prefix, suffix, cut = self.fit(blank, len(filler))
            seq, start = prefix + filler + suffix, len(prefix)
            spans.append((len(rows), start, filler, cut))
            for j in range(len(filler)):  # one mask per choice token, in turn
                rows.append(seq[:start + j] + [self.mask] + seq[start + j + 1:])
        logps = self.log_probs(rows)
        out = []
        for c, (first, start, filler, cut) in zip(choices, spans):
            score = sum(logps[first + j][start + j, t].item() for j, t in enumerate(filler))
            out.append(Scored(c, score, len(filler), sum(self.bytes[t] for t in filler), cut))
        return out

    def _sentences(self, blank: Blank, fillers: list[tuple[str, list[int]]]) -> list[Scored]:
        seqs, cuts = [], []
        for _, filler in fillers:
            prefix, suffix, cut = self.fit(blank, len(filler))
            seqs.append(prefix + filler + suffix)
            cuts.append(cut)
        logps = self.log_probs([s[:-1] for s in seqs])
        out = []
        for (text, filler), seq, logp, cut in zip(fillers, seqs, logps, cuts):
            targets = torch.tensor(seq[1:])
            score = logp.gather(1, targets[:, None]).sum().item()  # every token after the first
            out.append(Scored(text, score, len(filler), sum(self.bytes[t] for t in seq[1:]), cut))
        return out

    def top_fillers(self, text: str, top_k: int) -> tuple[str, list[dict], dict]:
        """The `top_k` likeliest whole-word fillers, ranked as choices are (`rank`), and notes.

        A filler is a whole word: it starts a word and ends at a word boundary. It starts a word
        when its first token is the blank's space (where one stood before the blank) followed by
        a word character (a letter, digit or underscore: \\w): " cat" or "cat", never "ed" or "s"
        after a space, nor " ," . The SHORTLIST (at least) likeliest such first tokens at the blank
        are taken (causal: the next token after the text before the blank; masked: at one
        <|mask|> there). A word ends where the model's likeliest next token does not continue it
        (continuing = starting with a word character, no space): while it does, that token is
        appended (causal: the next token after the filler; masked: at one more <|mask|> between
        the filler and the text after the blank), up to WORD_TOKENS tokens; a word still going on
        after that is dropped. The words found are then scored whole, exactly as --choices are.
        The boundary is the model's judgement: a piece it never saw end a word (" ma" where it only
        saw " many") may be followed there by a new word and so pass as finished; scored whole it
        ranks low (on the 40-word corpus of tests/test_cloze.py, below 1%)."""
        blank = self.blank(text)
        shortlist = max(SHORTLIST, 5 * top_k)
        prefix, suffix, _ = self.fit(blank, WORD_TOKENS + 1)
        if self.objective == "masked":
            firsts = self.log_probs([prefix + [self.mask] + suffix])[0][len(prefix)]  # (V,)
        else:
            firsts = self.log_probs([prefix])[0][-1]  # (V,)
        starts = [i for i in firsts.argsort(descending=True).tolist()
                  if i < len(self.pieces) and self.starts_word(self.pieces[i], blank.space)][:shortlist]
        words = self.grow_words(prefix, suffix, [[i] for i in starts])
        texts = list(dict.fromkeys(w for w in (self.tok.decode(ids)[len(blank.space):] for ids in words) if w.strip()))
        if not texts:
            raise LmforgeError(f"the model finished no whole word among the {len(starts)} likeliest at the blank "
                               f"(each ran past {WORD_TOKENS} tokens): give --choices to rank yours")
        scoring, scored = self.score_choices(text, texts)
        return scoring, rank(scored)[:top_k], {"shortlist": len(starts), "words": len(texts),
                                               "truncated": any(s.truncated for s in scored)}

    @staticmethod
    def starts_word(piece: str, space: str) -> bool:
        rest = piece[len(space):] if piece.startswith(space) else None
        return bool(rest) and WORD_CHAR.match(rest) is not None

    def grow_words(self, prefix: list[int], suffix: list[int], words: list[list[int]]) -> list[list[int]]:
        """Each word's tokens extended while the model's likeliest next token continues it
        (`top_fillers`); those still unfinished after WORD_TOKENS tokens are dropped."""
        done: list[list[int]] = []
        for _ in range(WORD_TOKENS):
            if self.objective == "masked":
                logps = self.log_probs([prefix + w + [self.mask] + suffix for w in words])
                nexts = [lp[len(prefix) + len(w)] for lp, w in zip(logps, words)]
            else:
                nexts = [lp[-1] for lp in self.log_probs([prefix + w for w in words])]
            going = []
            for w, lp in zip(words, nexts):
                lp[self.special] = float("-inf")
                best = int(lp.argmax())
                piece = self.pieces[best] if best < len(self.pieces) else ""
                if WORD_CHAR.match(piece):
                    going.append(w + [best])
                else:
                    done.append(w)
            words = going
            if not words:
                break
        return done

DOCUMENTS_PER_WINDOW = 0.02  # below this, <|endoftext|> was a rare context in training


def lead_in(run: RunDir, tok, seq_len: int) -> list[int]:
    """The tokens a text is read after (the module's "lead-in"): <|endoftext|>, or a line break
    when the training stream rarely started a document (meta.json of the run's tokenized folder;
    <|endoftext|> when that folder is gone)."""
    eot = [tok.token_to_id(EOT)]
    folder = run.tokens_dir
    try:
        train = read_meta(folder)["splits"]["train"] if folder is not None else None
    except (LmforgeError, OSError, ValueError, KeyError):
        train = None
    if not train or not train.get("tokens"):
        return eot
    line_break = tok.encode("\n", add_special_tokens=False).ids
    rare = train["documents"] * seq_len < DOCUMENTS_PER_WINDOW * train["tokens"]
    return line_break if rare and len(line_break) == 1 else eot


def split_blank(text: str) -> tuple[str, str]:
    """'a [MASK] b' -> ('a ', ' b'); exactly one blank is supported."""
    count = text.count(MARK)
    if count == 0:
        raise LmforgeError(f"the text has no blank: write {MARK} where the missing word goes")
    if count > 1:
        raise LmforgeError(f"the text has {count} blanks ({MARK}); one per text is supported: fill them one at a time")
    before, _, after = text.partition(MARK)
    return before, after


def check_choices(choices: list[str], where: str = "--choices") -> None:
    """Refuse choices no ranking can use; `where` names them in the message (the option, or a
    task file's FILE:LINE)."""
    if not choices:
        raise LmforgeError(f"{where}: no choices given: pass --choices a,b,c or leave it out for the top fillers")
    first: dict[str, int] = {}
    for i, c in enumerate(choices):
        if not c.strip():
            raise LmforgeError(f"{where}: choice {i + 1} is empty: every choice needs text (e.g. --choices Label,Model)")
        if MARK in c:
            raise LmforgeError(f"{where}: choice {shown(c)} holds {MARK}: a choice is the text that goes in the blank")
        # the same filler twice splits its probability in two and, in a task, makes the answer ambiguous
        if c.strip() in first:
            raise LmforgeError(f"{where}: choices {first[c.strip()] + 1} and {i + 1} are both {shown(c.strip())}: "
                               f"give each choice once")
        first[c.strip()] = i


def best(scored: list[Scored]) -> int:
    """The index of the winning candidate: the highest summed log-probability (module docstring)."""
    return max(range(len(scored)), key=lambda i: scored[i].score)


def best_per_byte(scored: list[Scored]) -> int:
    return max(range(len(scored)), key=lambda i: scored[i].per_byte)


def rank(scored: list[Scored]) -> list[dict]:
    """Best first by summed log-probability (as `best` picks), `probability` the softmax of those sums
    over the candidates; ties keep the given order."""
    top = max(s.score for s in scored)
    z = sum(math.exp(s.score - top) for s in scored)
    out = [{"text": s.text, "score": s.score, "per_byte": s.per_byte, "probability": math.exp(s.score - top) / z,
            "tokens": s.tokens} for s in scored]
    return sorted(out, key=lambda c: -c["score"])


def fill(run_dir: str | Path, text: str, choices: list[str] | None = None, top_k: int = 10,
         device: str = "cpu") -> dict:
    """`lmforge fill`: rank `choices` for the blank in `text`, or find the `top_k` likeliest fillers."""
    if choices is None and top_k < 1:
        raise LmforgeError(f"--top-k {top_k}: must be >= 1")
    split_blank(text)  # a text without its blank fails before the model loads
    if choices is not None:
        check_choices(choices)
    scorer = Scorer(run_dir, device)
    if choices is not None:
        scoring, scored = scorer.score_choices(text, choices)
        return {"scoring": scoring, "model": scorer.objective, "text": text, "read_after": scorer.tok.decode(
                    scorer.lead_in, skip_special_tokens=False), "candidates": rank(scored),
                "truncated": any(s.truncated for s in scored)}
    scoring, cands, notes = scorer.top_fillers(text, top_k)
    return {"scoring": scoring, "model": scorer.objective, "text": text,
            "read_after": scorer.tok.decode(scorer.lead_in, skip_special_tokens=False), "candidates": cands, **notes}
