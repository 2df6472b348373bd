"""The Inspector: word vectors (inspection/vectors.py) plus maps, the logit lens, attention and sentences."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.figures import plural
from lmforge.files import atomic_write_bytes, output_errors, read_own_bytes, refuse_link
from lmforge.inspection.pictures import (MAP_PIXELS, attention_pixels, lens_pixels, plot_attention, plot_lens,
                                         plot_map, project_2d, write_map_html)
from lmforge.inspection.vectors import WordVectors
from lmforge.tokenizer import PAD

INSPECT_MARKER = ".lmforge-inspect"  # in an --out folder: the pictures there are lmforge's to replace


class Inspector(WordVectors):
    """A trained run opened for inspection (lmforge.inspect(RUN) returns one)."""

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
        tag = f"map-{vectors}" + (f"-L{self._layer(layer)}" if vectors == "contextual" else "")
        folder = self._out(out, f"{tag}.png", f"{tag}.html")
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
                        "next token" if self.causal else "this position", self._out(out, "layers.png") / "layers.png")
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
        return self.model.lm_head(self.model.head_input(stream)).float()

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
        png = plot_attention(tokens, probs[heads].numpy(), heads, layer, self._out(out, name) / name)
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
            raise LmforgeError(f"inspect: {path} holds {plural(len(lines), 'sentence')}: give at least two, one a line")
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
        folder = self._out(out, "sentences.npy")
        array = io.BytesIO()
        np.save(array, emb.numpy(), allow_pickle=False)
        with output_errors("inspect", folder):
            atomic_write_bytes(folder / "sentences.npy", array.getvalue())
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

    def _out(self, out: str | Path | None, *names: str) -> Path:
        """RUN/inspect, or an --out folder. The pictures have fixed `names`: in an --out that is not an
        earlier inspect's (its marker file), a user's file of one of those names is never replaced."""
        folder = Path(out) if out else self.run.inspect_dir
        refuse_link(folder)
        if out and read_own_bytes(folder / INSPECT_MARKER) is None:
            taken = next((name for name in names if os.path.lexists(folder / name)), None)
            if taken is not None:
                raise LmforgeError(f"inspect: {folder / taken} is in the way and is not lmforge's: move it away or "
                                   f"give another --out")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if out and read_own_bytes(folder / INSPECT_MARKER) is None:
                atomic_write_bytes(folder / INSPECT_MARKER, b"lmforge inspect writes its pictures here\n")
        except OSError as e:
            raise LmforgeError(f"inspect: cannot write to {folder}: {e.strerror}") from None
        return folder
