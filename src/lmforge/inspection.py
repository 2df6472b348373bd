"""Look inside a trained run: word vectors, the logit lens, attention maps, sentence embeddings.

    insp = Inspector("runs/tiny")                 # lmforge.inspect("runs/tiny") does the same
    insp.neighbours("file", k=10)                 # {"word", "vectors", "neighbours": [{"word", "similarity"}]}
    insp.neighbours("file", vectors="contextual")
    insp.similarity("file", "path"); insp.analogy("list", "append", "dict")
    insp.word_map(top=150)                        # RUN/inspect/map-static.png + map-static.html
    insp.logit_lens("def main():")                # RUN/inspect/layers.png
    insp.attention("import os")                   # RUN/inspect/attention-L<n>.png
    insp.sentences("sentences.txt")               # most similar pairs of lines

Words. A "word" is a run of letters as the BPE pre-tokenizer cuts it (`" word"`, letters only).
The candidates are the words of the run's validation text plus the single-token words of the
vocabulary that the training text uses; a word outside both is unknown (an error).

Vectors (`vectors=`):
- static: the mean of the input embeddings of the tokens of `" word"` (with the leading space,
  the form a word takes mid-sentence); for a one-token word that is its embedding row.
- contextual: the residual stream after `layer` (default: the middle of the network, where
  similarity is usually best; 0 = the embeddings, n_layer = the last block), RMS-normalised
  per token as the next block sees it, averaged over the word's tokens, then over all of its
  occurrences in the validation text (non-overlapping windows of the model's context).
  Contextual vectors share a large common direction, so their mean over the candidates is
  subtracted before cosine similarity (static vectors are compared as they are).

Layers are numbered as the residual stream: 0 = after the embedding, k = after block k; the
attention of block k is "layer k" too. Each text is read after an `<|endoftext|>` token, as
every document is in training. Causal runs (the default) see only the past; masked runs
(`train.objective: masked`) see the whole text, and their logit lens predicts each position's
own token rather than the next one.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmforge.config import read_config, tokens_folder
from lmforge.errors import LmforgeError
from lmforge.model import rms_norm
from lmforge.tokenizer import EOT, PAD, load_shards
from lmforge.training.checkpoint import load_run

VECTORS = ("static", "contextual")
MAX_TRAIN_TOKENS = 20_000_000  # tokens counted to learn which vocabulary words are in use
MAX_VAL_TOKENS = 200_000  # validation tokens read for word lists and contextual vectors
DPI = 100


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


class Inspector:
    """A trained run opened for inspection: model, tokenizer, attention kind, word lists (lazy)."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 32):
        self.run_dir = Path(run_dir)
        self.model, self.tok, self.checkpoint = load_run(self.run_dir, device)
        self.model.eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        cfg_path = self.run_dir / "config.yaml"
        self.cfg = read_config(cfg_path) if cfg_path.is_file() else None
        self.causal = self.cfg is None or self.cfg.train.objective != "masked"
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
        if self.cfg is None:
            return None
        folder = tokens_folder(self.cfg, self.run_dir)
        return folder if (folder / "meta.json").is_file() else None

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
        return Words(list(index), counts, index, occ_word, occ_len, letter_pos, occ_of_token)

    def _known(self, word: str, vectors: str, known: dict[str, int]) -> int:
        if not word or not word.strip() or any(c.isspace() for c in word):
            raise LmforgeError(f"inspect: {word!r} is not one word: give a single word without spaces")
        if word in known:
            return known[word]
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
        words = self.words().words
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
        """The n words seen most often in the validation text (vocabulary order where there is none)."""
        w = self.words()
        order = np.argsort(-w.counts, kind="stable")
        return [w.words[i] for i in order if len(w.words[i]) >= min_length][:n]

    def word_map(self, words: list[str] | None = None, top: int = 100, vectors: str = "static",
                 layer: int | None = None, method: str = "auto", out: str | Path | None = None) -> dict:
        """Project word vectors to 2-D (PCA, or UMAP when installed) and draw them: map-VECTORS.png and .html."""
        all_words, mat = self.vectors(vectors, layer)
        known = {w: n for n, w in enumerate(all_words)}
        if words:
            rows = [self._known(w, vectors, known) for w in dict.fromkeys(words)]
        else:
            if top < 3:
                raise LmforgeError(f"inspect: --top {top}: a map needs at least 3 words")
            rows = [known[w] for w in self.frequent_words(len(all_words)) if w in known][:top]
        if len(rows) < 3:
            raise LmforgeError(f"inspect: a map needs at least 3 words, got {len(rows)}")
        chosen = [all_words[i] for i in rows]
        xy, used = project_2d(mat[rows].numpy(), method)
        folder = self._out(out)
        tag = f"map-{vectors}" + (f"-L{self._layer(layer)}" if vectors == "contextual" else "")
        title = f"{self.run_dir.name}: {vectors} word vectors" + (
            f" (layer {self._layer(layer)})" if vectors == "contextual" else "") + f", {used.upper()}"
        png = plot_map(chosen, xy, title, folder / f"{tag}.png")
        page = write_map_html(chosen, xy, title, folder / f"{tag}.html")
        return {**self._describe(vectors, layer), "method": used, "png": str(png), "html": str(page),
                "png_size": list(MAP_PIXELS),
                "points": [{"word": w, "x": round(float(x), 5), "y": round(float(y), 5)} for w, (x, y) in zip(chosen, xy)]}

    # ------------------------------------------------------------ texts

    def _encode_text(self, text: str) -> list[int]:
        if not text or not text.strip():
            raise LmforgeError("inspect: the text is empty: give some words to read")
        ids = [self.eot] + self.tok.encode(text, add_special_tokens=False).ids
        if len(ids) > self.model.cfg.seq_len:
            raise LmforgeError(f"inspect: the text is {len(ids) - 1} tokens; this model reads at most "
                               f"{self.model.cfg.seq_len - 1} after <|endoftext|>: shorten it")
        return ids

    @torch.no_grad()
    def logit_lens(self, text: str, k: int = 3, out: str | Path | None = None) -> dict:
        """Top-k predictions at every position after every layer (final norm + output head applied to the
        intermediate residual stream), and how far each block turns the stream (cosine distance)."""
        if k < 1:
            raise LmforgeError(f"inspect: -k {k}: give at least 1")
        ids = self._encode_text(text)
        _, hidden = self.model(torch.tensor([ids], device=self.device), causal=self.causal, return_hidden=True)
        stream = torch.stack(hidden)[:, 0].float()  # (L+1, T, d)
        probs = self.lens_logits(stream).softmax(-1).cpu()  # (L+1, T, vocab)
        top = probs.topk(min(k, probs.size(-1)), dim=-1)
        turn = 1 - torch.nn.functional.cosine_similarity(stream[1:], stream[:-1], dim=-1).cpu()  # (L, T)
        tokens = [self.token_text[i] for i in ids]
        top1 = top.values[..., 0].numpy()
        png = plot_lens(tokens, [[self.token_text[i] for i in row] for row in top.indices[..., 0].tolist()], top1,
                        "next token" if self.causal else "this position", self._out(out) / "layers.png")
        return {
            "text": text, "tokens": tokens, "predicts": "next" if self.causal else "same",
            "layers": [{"layer": layer, "top": [[{"token": self.token_text[i], "prob": round(float(p), 6)}
                                                 for p, i in zip(ps, ix)]
                                                for ps, ix in zip(top.values[layer].tolist(), top.indices[layer].tolist())]}
                       for layer in range(self.n_layer + 1)],
            "top1_prob": top1.round(6).tolist(),
            "layer_change": [{"from": layer, "to": layer + 1, "cosine_distance": round(float(turn[layer].mean()), 6),
                              "per_position": turn[layer].round(decimals=6).tolist()} for layer in range(self.n_layer)],
            "png": str(png), "png_size": list(lens_pixels(len(tokens), self.n_layer + 1)),
        }

    def lens_logits(self, stream: torch.Tensor) -> torch.Tensor:
        """Residual states (..., d) -> logits (..., vocab): the model's own final norm and output head."""
        return self.model.lm_head(rms_norm(stream, self.model.cfg.norm_eps)).float()

    @torch.no_grad()
    def attention(self, text: str, layer: int | None = None, head: int | None = None,
                  out: str | Path | None = None) -> dict:
        """Attention maps of one layer (all heads in a grid) or of one head; layers count from 1."""
        if layer is not None and not 1 <= layer <= self.n_layer:
            raise LmforgeError(f"inspect: --layer {layer} is out of range: attention layers are 1 to {self.n_layer}")
        layer = layer or self.n_layer
        H = self.model.cfg.n_head
        if head is not None and not 0 <= head < H:
            raise LmforgeError(f"inspect: --head {head} is out of range: this model has heads 0 to {H - 1}")
        ids = self._encode_text(text)
        maps = self.model.attention_probs(torch.tensor([ids], device=self.device), causal=self.causal)
        probs = maps[layer - 1, 0].float().cpu()  # (H, T, T)
        heads = list(range(H)) if head is None else [head]
        tokens = [self.token_text[i] for i in ids]
        name = f"attention-L{layer}" + ("" if head is None else f"-H{head}") + ".png"
        png = plot_attention(tokens, probs[heads].numpy(), heads, layer, self._out(out) / name)
        return {"text": text, "tokens": tokens, "layer": layer, "heads": heads, "causal": self.causal,
                "attention": probs[heads].round(decimals=6).tolist(), "png": str(png),
                "png_size": list(attention_pixels(len(tokens), len(heads)))}

    @torch.no_grad()
    def sentences(self, file: str | Path, layer: int | None = None, top: int = 10,
                  out: str | Path | None = None) -> dict:
        """One vector per line of `file` (mean of the RMS-normalised stream after `layer` over its tokens,
        less the mean over all lines), and the `top` most similar pairs by cosine similarity."""
        path = Path(file)
        if not path.is_file():
            raise LmforgeError(f"inspect: sentence file {path} does not exist: give a text file, one sentence a line")
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
        if len(lines) < 2:
            raise LmforgeError(f"inspect: {path} holds {len(lines)} sentence(s): give at least two, one a line")
        layer = self._layer(layer)
        limit = self.model.cfg.seq_len - 1
        encoded = [e.ids for e in self.tok.encode_batch_fast(lines, add_special_tokens=False)]
        truncated = sum(len(e) > limit for e in encoded)  # longer lines are read up to the context
        encoded = [e[:limit] for e in encoded]
        if any(not e for e in encoded):
            raise LmforgeError(f"inspect: {path} has a line that encodes to no tokens")
        emb = torch.nn.functional.normalize(self._pooled(encoded, layer), dim=-1)
        emb = torch.nn.functional.normalize(emb - emb.mean(0, keepdim=True), dim=-1)
        sims = emb @ emb.T
        i, j = torch.triu_indices(len(lines), len(lines), offset=1)
        order = sims[i, j].argsort(descending=True)[:max(top, 0)]
        folder = self._out(out)
        np.save(folder / "sentences.npy", emb.numpy(), allow_pickle=False)
        return {"layer": layer, "sentences": len(lines), "embeddings": str(folder / "sentences.npy"),
                "truncated": truncated,
                "pairs": [{"a": lines[i[n]], "b": lines[j[n]], "similarity": round(float(sims[i[n], j[n]]), 6)}
                          for n in order.tolist()]}

    def _pooled(self, encoded: list[list[int]], layer: int) -> torch.Tensor:
        """Mean state per sequence, each read after <|endoftext|>. Causal runs pad on the right (a position
        never sees later padding); masked runs would see it, so they are batched by equal length instead."""
        pad = self.tok.token_to_id(PAD)
        order = sorted(range(len(encoded)), key=lambda n: len(encoded[n]))
        batches: list[list[int]] = []
        for n in order:
            fits = batches and len(batches[-1]) < self.batch_size and (
                self.causal or len(encoded[batches[-1][0]]) == len(encoded[n]))
            batches[-1].append(n) if fits else batches.append([n])
        pooled = torch.zeros(len(encoded), self.model.cfg.n_embd)
        for batch in batches:
            width = 1 + max(len(encoded[n]) for n in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            for r, n in enumerate(batch):
                ids[r, 0] = self.eot
                ids[r, 1:1 + len(encoded[n])] = torch.tensor(encoded[n])
            states = self.hidden_states(ids, layer)  # (b, width, d)
            for r, n in enumerate(batch):
                pooled[n] = states[r, 1:1 + len(encoded[n])].mean(0)
        return pooled

    def _out(self, out: str | Path | None) -> Path:
        folder = Path(out) if out else self.run_dir / "inspect"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LmforgeError(f"inspect: cannot write to {folder}: {e.strerror}") from None
        return folder


# ---------------------------------------------------------------- projection and pictures

def project_2d(x: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str]:
    """(n, d) -> (n, 2) and the method used: PCA (numpy SVD of the centred rows) or UMAP (if importable)."""
    if method not in ("auto", "pca", "umap"):
        raise LmforgeError(f"inspect: --method {method!r}: choose auto, pca or umap")
    if method in ("auto", "umap"):
        try:
            import umap  # optional: pip install umap-learn
        except ImportError:
            if method == "umap":
                raise LmforgeError("inspect: --method umap needs the umap-learn package (pip install umap-learn)") from None
        else:
            # spectral initialisation needs more points than a handful; seeded, hence one thread
            reducer = umap.UMAP(n_neighbors=max(2, min(15, len(x) - 1)), metric="cosine", random_state=0, n_jobs=1,
                                init="spectral" if len(x) > 10 else "random")
            return reducer.fit_transform(x), "umap"
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    # SVD signs are arbitrary: fix them so the same run always draws the same picture
    return xy * np.where(xy[np.abs(xy).argmax(0), [0, 1]] < 0, -1.0, 1.0), "pca"


def _short(token: str, width: int = 12) -> str:
    """A token as a plot label: control characters visible, long ones cut."""
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[:width - 1] + "…"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


MAP_PIXELS = (1200, 900)


def plot_map(words: list[str], xy: np.ndarray, title: str, path: Path) -> Path:
    plt = _pyplot()
    with plt.rc_context({"text.parse_math": False}):
        fig, ax = plt.subplots(figsize=(MAP_PIXELS[0] / DPI, MAP_PIXELS[1] / DPI), dpi=DPI)
        ax.scatter(xy[:, 0], xy[:, 1], s=10, color="tab:blue", alpha=0.7)
        for w, (x, y) in zip(words, xy):
            ax.annotate(w, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=8)
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


def write_map_html(words: list[str], xy: np.ndarray, title: str, path: Path) -> Path:
    """A self-contained page: an inline SVG (hover a point for its word, wheel to zoom, drag to pan,
    type to highlight). Every word is HTML-escaped; nothing is loaded from elsewhere."""
    w, h, pad = 1000, 750, 40
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    px = pad + (xy - lo) / span * [w - 2 * pad, h - 2 * pad]
    px[:, 1] = h - px[:, 1]  # SVG's y grows downwards
    points = "\n".join(
        f'<g class="p" data-w="{html.escape(word.lower())}"><circle cx="{x:.1f}" cy="{y:.1f}" r="3"/>'
        f'<text x="{x + 4:.1f}" y="{y - 4:.1f}">{html.escape(word)}</text><title>{html.escape(word)}</title></g>'
        for word, (x, y) in zip(words, px))
    page = _MAP_PAGE.replace("{title}", html.escape(title)).replace("{w}", str(w)).replace("{h}", str(h))
    path.write_text(page.replace("{points}", points), encoding="utf-8")
    return path


_MAP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{font-family:sans-serif;margin:1em} svg{border:1px solid #ccc;cursor:grab;background:#fff}
circle{fill:#1f77b4;opacity:.7} text{font-size:11px;fill:#333} .hit circle{fill:#d62728;opacity:1}
.hit text{fill:#d62728;font-weight:bold;font-size:14px} .dim{opacity:.25}
</style></head><body>
<h3>{title}</h3>
<p><input id="q" placeholder="highlight words containing..." size="30"> wheel: zoom, drag: pan</p>
<svg id="map" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">
{points}
</svg>
<script>
(function () {
  var svg = document.getElementById("map"), box = [0, 0, {w}, {h}], drag = null;
  function show() { svg.setAttribute("viewBox", box.join(" ")); }
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    var f = e.deltaY > 0 ? 1.2 : 1 / 1.2, r = svg.getBoundingClientRect();
    var mx = box[0] + (e.clientX - r.left) / r.width * box[2], my = box[1] + (e.clientY - r.top) / r.height * box[3];
    box = [mx - (mx - box[0]) * f, my - (my - box[1]) * f, box[2] * f, box[3] * f]; show();
  });
  svg.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", function () { drag = null; });
  svg.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var r = svg.getBoundingClientRect();
    box[0] -= (e.clientX - drag[0]) / r.width * box[2]; box[1] -= (e.clientY - drag[1]) / r.height * box[3];
    drag = [e.clientX, e.clientY]; show();
  });
  document.getElementById("q").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    document.querySelectorAll("g.p").forEach(function (g) {
      var hit = q && g.getAttribute("data-w").indexOf(q) >= 0;
      g.classList.toggle("hit", !!hit); g.classList.toggle("dim", !!q && !hit);
    });
  });
})();
</script>
</body></html>
"""


def lens_pixels(n_tokens: int, n_rows: int) -> tuple[int, int]:
    """Heat-map size in pixels: a fixed margin plus one cell per (layer, position)."""
    cell = 64 if n_tokens <= 40 else 20
    return 220 + cell * n_tokens, 170 + 44 * n_rows


def plot_lens(tokens: list[str], top1: list[list[str]], prob: np.ndarray, predicts: str, path: Path) -> Path:
    """Heat-map of the top-1 probability per (layer, position), labelled with the top-1 token."""
    plt = _pyplot()
    n_rows, T = prob.shape
    w, h = lens_pixels(T, n_rows)
    with plt.rc_context({"text.parse_math": False}):
        fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
        ax = fig.add_axes((150 / w, 110 / h, 1 - 200 / w, 1 - 150 / h))
        im = ax.imshow(prob, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(n_rows), ["embedding"] + [f"layer {i}" for i in range(1, n_rows)])
        ax.set_xticks(range(T), [_short(t) for t in tokens], rotation=60, ha="right", fontsize=8)
        if T <= 40:
            for layer in range(n_rows):
                for t in range(T):
                    ax.text(t, layer, _short(top1[layer][t], 8), ha="center", va="center", fontsize=7,
                            color="white" if prob[layer, t] < 0.6 else "black")
        ax.set_title(f"logit lens: top-1 prediction ({predicts}) and its probability")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


def attention_pixels(n_tokens: int, n_heads: int) -> tuple[int, int]:
    panel = min(480, max(240, 12 * n_tokens))
    cols = math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / cols)
    return 60 + cols * (panel + 60), 60 + rows * (panel + 70)


def plot_attention(tokens: list[str], probs: np.ndarray, heads: list[int], layer: int, path: Path) -> Path:
    """probs (n_heads, T, T): one panel per head, queries down, keys across."""
    plt = _pyplot()
    w, h = attention_pixels(len(tokens), len(heads))
    cols = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / cols)
    with plt.rc_context({"text.parse_math": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(w / DPI, h / DPI), dpi=DPI, squeeze=False)
        for ax in axes.flat[len(heads):]:
            ax.axis("off")
        labels = [_short(t) for t in tokens] if len(tokens) <= 40 else []
        for ax, p, head in zip(axes.flat, probs, heads):
            ax.imshow(p, cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(len(tokens)) if labels else [], labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)) if labels else [], labels, fontsize=6)
        fig.subplots_adjust(left=0.12, right=0.98, bottom=0.12, top=0.93, wspace=0.6, hspace=0.6)
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


# ---------------------------------------------------------------- terminal

def format_neighbours(result: dict) -> str:
    how = result["vectors"] + (f", layer {result['layer']}" if result.get("layer") is not None else "")
    rows = "\n".join(f"  {n['similarity']:7.4f}  {n['word']}" for n in result["neighbours"])
    return f"nearest to {result['word']!r} ({how} vectors, cosine):\n{rows}"


def format_lens(result: dict) -> str:
    """One row per position, one column per layer: the top-1 prediction and its probability."""
    n_rows = len(result["layers"])
    head = ["position", "token"] + ["embedding"] + [f"layer {i}" for i in range(1, n_rows)]
    body = []
    for t, token in enumerate(result["tokens"]):
        cells = [f"{result['layers'][l]['top'][t][0]['token']!r} {result['layers'][l]['top'][t][0]['prob']:.2f}"
                 for l in range(n_rows)]
        body.append([str(t), repr(token)] + cells)
    widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(wd) for cell, wd in zip(row, widths)).rstrip() for row in [head] + body]
    what = "next token" if result["predicts"] == "next" else "token at this position"
    change = ", ".join(f"{c['from']}->{c['to']} {c['cosine_distance']:.3f}" for c in result["layer_change"])
    return (f"logit lens (top-1 prediction of the {what} and its probability, after each layer):\n"
            + "\n".join(lines) + f"\ncosine distance between consecutive layers (mean over positions): {change}")


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False)
