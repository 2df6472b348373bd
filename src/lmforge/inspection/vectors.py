"""Word vectors of a run: the candidate words, static and contextual vectors, nearest neighbours.

See lmforge/inspection/__init__.py for what a word and each kind of vector is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.model import rms_norm
from lmforge.folders.run import RunDir
from lmforge.open_run import open_run
from lmforge.tokenizer import EOT
from lmforge.folders.tokenized import META, load_shards

VECTORS = ("static", "contextual")
MAX_TRAIN_TOKENS = 20_000_000  # tokens counted to learn which vocabulary words are in use
MAX_VAL_TOKENS = 200_000  # validation tokens read for word lists and contextual vectors


@dataclass
class Words:
    """Candidate words, with validation-text frequency and every occurrence as a token span."""
    words: list[str]
    counts: np.ndarray  # (n_words,) occurrences in the validation text
    index: dict[str, int]
    occ_word: np.ndarray  # (n_occ,) word index of each occurrence in the validation text
    occ_len: np.ndarray  # (n_occ,) tokens in the occurrence
    token_pos: np.ndarray  # (n_tok,) position in the validation stream of each token of each occurrence
    token_occ: np.ndarray  # (n_tok,) the occurrence that token belongs to
    # (n_words,) every token of the word occurs in training: an embedding row no training step touched
    # is its initialisation, and its "neighbours" (0.99 alike in issue 28's trial) mean nothing
    trained: np.ndarray



class WordVectors:
    """A trained run opened for word-level questions: model, tokenizer, attention kind, word lists (lazy)."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 32):
        self.run = RunDir(run_dir).require()
        self.run_dir = self.run.path
        opened = open_run(self.run, device)
        self.model, self.tok, self.checkpoint, self.causal = opened.model, opened.tokenizer, opened.checkpoint, opened.causal
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.n_layer = self.model.cfg.n_layer
        self.eot = self.tok.token_to_id(EOT)
        vocab = self.model.cfg.vocab_size
        texts = self.tok.decode_batch([[i] for i in range(self.tok.get_vocab_size())], skip_special_tokens=False)
        self.token_text = texts + [""] * (vocab - len(texts))  # a padded vocabulary's extra ids decode to nothing
        self._val: np.ndarray | None = None
        self._words: Words | None = None
        self._vectors: dict[tuple[str, int], tuple[list[str], torch.Tensor]] = {}

    # ------------------------------------------------------------ data

    def _tokens_dir(self) -> Path | None:
        folder = self.run.tokens_dir
        return folder if folder is not None and (folder / META).is_file() else None

    def val_ids(self) -> np.ndarray:
        """The first MAX_VAL_TOKENS validation tokens of the run (empty if its tokens are gone)."""
        if self._val is None:
            folder = self._tokens_dir()
            parts, left = [], MAX_VAL_TOKENS
            for shard in load_shards(folder, "val") if folder else []:
                parts.append(np.asarray(shard[:left], dtype=np.int64))
                left -= len(parts[-1])
                if left <= 0:
                    break
            self._val = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._val

    def _used_tokens(self) -> np.ndarray:
        """(vocab,) bool: the token occurs in the first MAX_TRAIN_TOKENS training tokens (all True without them)."""
        vocab = self.model.cfg.vocab_size
        folder = self._tokens_dir()
        if folder is None:
            return np.ones(vocab, dtype=bool)
        counts, left = np.zeros(vocab, dtype=np.int64), MAX_TRAIN_TOKENS
        for shard in load_shards(folder, "train"):
            chunk = np.asarray(shard[:left])
            counts += np.bincount(chunk, minlength=vocab)[:vocab]
            left -= len(chunk)
            if left <= 0:
                break
        return counts > 0

    def words(self) -> Words:
        if self._words is None:
            self._words = self._find_words()
        return self._words

    def _find_words(self) -> Words:
        # A token is a letter token if its text, less one leading space, is all letters; a word starts
        # at a letter token with a leading space (or after a non-letter token) and runs on through
        # letter tokens without one, exactly the pieces the pre-tokenizer's ` ?\p{L}+` cut.
        cores = [t[1:] if t.startswith(" ") else t for t in self.token_text]
        letters = np.array([c.isalpha() for c in cores])
        spaced = np.array([t.startswith(" ") for t in self.token_text]) & letters
        ids = self.val_ids()
        is_letter = letters[ids]
        prev = np.concatenate([[False], is_letter[:-1]])
        letter_pos = np.flatnonzero(is_letter)  # every token of every occurrence, in order
        starts = (spaced[ids] | ~prev)[letter_pos]
        occ_of_token = np.cumsum(starts) - 1  # (n_letter_tokens,) occurrence each token belongs to
        occ_start = letter_pos[starts]
        occ_len = np.bincount(occ_of_token, minlength=len(occ_start))
        index: dict[str, int] = {}
        occ_word = np.empty(len(occ_start), dtype=np.int64)
        for n, (s, e) in enumerate(zip(occ_start.tolist(), (occ_start + occ_len).tolist())):
            word = cores[ids[s]] + "".join(self.token_text[i] for i in ids[s + 1:e].tolist())
            occ_word[n] = index.setdefault(word, len(index))
        counts = np.bincount(occ_word, minlength=len(index))
        used = self._used_tokens()
        for i in np.flatnonzero(spaced & used[:len(spaced)]).tolist():
            index.setdefault(cores[i], len(index))
        counts = np.pad(counts, (0, len(index) - len(counts)))
        words = list(index)
        encoded = self.tok.encode_batch_fast([" " + w for w in words], add_special_tokens=False) if words else []
        trained = np.array([bool(e.ids) and bool(used[[i for i in e.ids if i < len(used)]].all()) for e in encoded],
                           dtype=bool)
        return Words(words, counts, index, occ_word, occ_len, letter_pos, occ_of_token, trained)

    def _known(self, word: str, vectors: str, known: dict[str, int]) -> int:
        if not word or not word.strip() or any(c.isspace() for c in word):
            raise LmforgeError(f"inspect: {word!r} is not one word: give a single word without spaces")
        if word in known:
            return known[word]
        w = self.words()
        if vectors == "static" and word in w.index and not w.trained[w.index[word]]:
            raise LmforgeError(f"inspect: {word!r} occurs in the validation text but not in the training text: its "
                               "static vector is its untrained initialisation (try --vectors contextual)")
        import difflib

        close = difflib.get_close_matches(word, list(known), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        where = ("is not a vocabulary word and never occurs in the validation text" if vectors == "static"
                 else "never occurs in the validation text, so it has no contextual vector")
        raise LmforgeError(f"inspect: {word!r} {where} of {self.run_dir}{hint}")

    def _layer(self, layer: int | None, what: str = "--layer") -> int:
        if layer is None:
            return (self.n_layer + 1) // 2
        if not 0 <= layer <= self.n_layer:
            raise LmforgeError(f"inspect: {what} {layer} is out of range: this model has layers 0 (embedding) "
                               f"to {self.n_layer}")
        return layer

    # ------------------------------------------------------------ vectors

    @torch.no_grad()
    def vectors(self, vectors: str = "static", layer: int | None = None) -> tuple[list[str], torch.Tensor]:
        """Candidate words and their unit-length vectors (n_words, d), rows in the same order."""
        if vectors not in VECTORS:
            raise LmforgeError(f"inspect: vectors {vectors!r}: choose static or contextual")
        if vectors == "static" and layer is not None:
            raise LmforgeError("inspect: --layer applies to contextual vectors: add --vectors contextual")
        layer = self._layer(layer) if vectors == "contextual" else -1
        key = (vectors, layer)
        if key not in self._vectors:
            words, mat = self._static() if vectors == "static" else self._contextual(layer)
            self._vectors[key] = (words, torch.nn.functional.normalize(mat, dim=-1))
        return self._vectors[key]

    def _static(self) -> tuple[list[str], torch.Tensor]:
        w = self.words()
        words = [word for word, trained in zip(w.words, w.trained) if trained]
        if not words:
            raise LmforgeError(f"inspect: {self.run_dir} has no words to compare (no letter tokens in its vocabulary)")
        encoded = self.tok.encode_batch_fast([" " + w for w in words], add_special_tokens=False)
        lengths = torch.tensor([len(e.ids) for e in encoded])
        ids = torch.zeros(len(words), int(lengths.max()), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask = torch.arange(ids.size(1))[None, :] < lengths[:, None]  # (n_words, max_len)
        emb = self.model.wte.weight.detach().float().cpu()[ids] * mask[..., None]  # (n_words, max_len, d)
        mat = emb.sum(1) / lengths[:, None]
        return words, mat - mat.mean(0, keepdim=True)

    def hidden_states(self, ids: torch.Tensor, layer: int) -> torch.Tensor:
        """ids (B, T) -> the RMS-normalised residual stream after `layer`, (B, T, d) float32 on the CPU."""
        _, hidden = self.model(ids.to(self.device), causal=self.causal, return_hidden=True)
        return rms_norm(hidden[layer].float(), self.model.cfg.norm_eps).cpu()

    def _contextual(self, layer: int) -> tuple[list[str], torch.Tensor]:
        w = self.words()
        ids = self.val_ids()
        if len(w.occ_word) == 0:
            raise LmforgeError(f"inspect: {self.run_dir} has no validation text with words (its tokens folder "
                               f"{self._tokens_dir() or 'is missing'}): contextual vectors need it; use static")
        T = self.model.cfg.seq_len
        n_win = math.ceil(len(ids) / T)
        padded = np.full(n_win * T, self.eot, dtype=np.int64)
        padded[:len(ids)] = ids
        windows = torch.from_numpy(padded).view(n_win, T)
        states = torch.cat([self.hidden_states(windows[i:i + self.batch_size], layer).flatten(0, 1)
                            for i in range(0, n_win, self.batch_size)])[:len(ids)]  # (N, d)
        # mean over each occurrence's tokens, then over each word's occurrences: two index_adds
        occ = torch.zeros(len(w.occ_word), states.size(1)).index_add_(
            0, torch.from_numpy(w.token_occ), states[torch.from_numpy(w.token_pos)])
        occ /= torch.from_numpy(w.occ_len)[:, None].float()
        seen = np.flatnonzero(w.counts > 0)
        per_word = torch.zeros(len(w.words), states.size(1)).index_add_(0, torch.from_numpy(w.occ_word), occ)
        mat = per_word[torch.from_numpy(seen)] / torch.from_numpy(w.counts[seen])[:, None].float()
        return [w.words[i] for i in seen], mat - mat.mean(0, keepdim=True)

    # ------------------------------------------------------------ words

    def _rows(self, vectors: str, layer: int | None, *query: str) -> tuple[list[str], torch.Tensor, list[int]]:
        """Candidate words, their vectors, and the rows of the `query` words (refused when unknown)."""
        words, mat = self.vectors(vectors, layer)
        known = {w: n for n, w in enumerate(words)}
        return words, mat, [self._known(q, vectors, known) for q in query]

    def neighbours(self, word: str, k: int = 10, vectors: str = "static", layer: int | None = None) -> dict:
        """The k nearest candidate words to `word` by cosine similarity, best first."""
        if k < 1:
            raise LmforgeError(f"inspect: -k {k}: give at least 1")
        words, mat, (i,) = self._rows(vectors, layer, word)
        return {"word": word, **self._describe(vectors, layer), "neighbours": self._nearest(mat[i], words, mat, k, {i})}

    def similarity(self, a: str, b: str, vectors: str = "static", layer: int | None = None) -> dict:
        _, mat, (i, j) = self._rows(vectors, layer, a, b)
        return {"words": [a, b], **self._describe(vectors, layer), "similarity": float(mat[i] @ mat[j])}

    def analogy(self, a: str, b: str, c: str, k: int = 5, vectors: str = "static", layer: int | None = None) -> dict:
        """A is to B as C is to ?: the words nearest to B - A + C (3CosAdd), leaving out A, B and C."""
        words, mat, (ia, ib, ic) = self._rows(vectors, layer, a, b, c)
        query = torch.nn.functional.normalize(mat[ib] - mat[ia] + mat[ic], dim=0)
        return {"a": a, "b": b, "c": c, **self._describe(vectors, layer),
                "answers": self._nearest(query, words, mat, k, {ia, ib, ic})}

    def _describe(self, vectors: str, layer: int | None) -> dict:
        return {"vectors": vectors, "layer": self._layer(layer) if vectors == "contextual" else None}

    @staticmethod
    def _nearest(query: torch.Tensor, words: list[str], mat: torch.Tensor, k: int, leave_out: set[int]) -> list[dict]:
        sims = mat @ query  # (n_words,)
        sims[list(leave_out)] = float("-inf")
        top = sims.topk(min(k, len(words) - len(leave_out)))
        return [{"word": words[i], "similarity": round(float(s), 6)} for s, i in zip(top.values, top.indices.tolist())]

    def frequent_words(self, n: int, min_length: int = 1) -> list[str]:
        """The n words seen most often in the validation text (vocabulary order where there is none),
        among those training saw."""
        w = self.words()
        order = np.argsort(-w.counts, kind="stable")
        return [w.words[i] for i in order if len(w.words[i]) >= min_length and w.trained[i]][:n]
