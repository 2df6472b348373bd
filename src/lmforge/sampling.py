"""Sampling continuations from a trained run, with or without a KV cache."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.model import GPT, KVCache
from lmforge.folders.run import RunDir
from lmforge.open_run import open_run
from lmforge.tokenizer import EOT, token_bytes


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next ids (B,). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(model: GPT, prompt: list[int], max_new_tokens: int, temperature: float = 0.8, top_k: int = 50,
                 top_p: float = 1.0, seed: int = 0, use_cache: bool = True, stop_id: int | None = None,
                 first: torch.Tensor | None = None) -> list[int]:
    """Continue `prompt`; with `use_cache` each step feeds one token and reuses cached keys/values.
    `first` (V,) bool, where given, is the tokens the first new one may be."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    limit = model.cfg.seq_len
    cache = None
    if use_cache:
        cache = KVCache(model.cfg, 1, min(limit, len(prompt) + max_new_tokens), device, next(model.parameters()).dtype)
    out: list[int] = []
    step_input = ids
    for _ in range(max_new_tokens):
        if cache is not None and cache.pos + step_input.size(1) > cache.max_len:
            # past the context length: recompute over the last seq_len tokens, as the uncached path does
            cache = KVCache(model.cfg, 1, limit, device, cache.k.dtype)
            step_input = ids[:, -limit:]
        if cache is None:
            step_input = ids[:, -limit:]
        logits = model(step_input, cache=cache)[:, -1, :]
        if first is not None and not out:  # a model's vocabulary may be padded past the tokenizer's
            allowed = torch.zeros(logits.size(-1), dtype=torch.bool, device=logits.device)
            allowed[: len(first)] = first[: logits.size(-1)].to(logits.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
        nxt = sample_next(logits, temperature, top_k, top_p, gen)
        token = int(nxt.item())
        if stop_id is not None and token == stop_id:
            break
        out.append(token)
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        step_input = nxt.view(1, 1)
    return out


def continue_text(model: GPT, tok, prompt: str, max_tokens: int = 100, temperature: float = 0.8, top_k: int = 50,
                  top_p: float = 1.0, seed: int = 0) -> str:
    """`prompt` and its sampled continuation, read after <|endoftext|> as training documents are,
    stopping at the next <|endoftext|>.

    Spaces that end the prompt are taken off it and asked of the first new token instead (token
    healing, for spaces only): byte-level BPE spells a word with the space before it (" boy"), so
    "The " encodes as "The", " ", after which the model has rarely seen a word and writes a second
    space ("The  boy")."""
    eot = tok.token_to_id(EOT)
    head, first = heal_trailing_spaces(tok, prompt)
    ids = tok.encode(head, add_special_tokens=False).ids
    out = generate_ids(model, [eot] + ids, max_tokens, temperature, top_k, top_p, seed, stop_id=eot, first=first)
    return head + tok.decode(out) if out else prompt


def heal_trailing_spaces(tok, prompt: str) -> tuple[str, torch.Tensor | None]:
    """(`prompt` less its trailing spaces, the tokens whose text starts with them), or (`prompt`,
    None) where it ends otherwise or no token starts so."""
    head = prompt.rstrip(" ")
    tail = prompt[len(head):].encode()
    if not tail:
        return prompt, None
    starts = torch.tensor([b.startswith(tail) for b in token_bytes(tok)])
    return (head, starts) if starts.any() else (prompt, None)


def check_sampling(max_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    """Refuse, naming the flag, settings that would fail inside torch or sample nonsense: NaN
    passes every comparison-based check, a negative k breaks topk, top-p 0 keeps no token."""
    if not max_tokens >= 0:
        raise LmforgeError(f"--max-tokens {max_tokens}: must be >= 0")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise LmforgeError(f"--temperature {temperature}: must be a finite number >= 0 (0 = greedy)")
    if not top_k >= 0:
        raise LmforgeError(f"--top-k {top_k}: must be >= 0 (0 = no top-k cut)")
    if not 0 < top_p <= 1:  # NaN fails this too
        raise LmforgeError(f"--top-p {top_p}: must be in (0, 1] (1 = no nucleus cut)")


def generate(run_dir: str | Path, prompt: str, max_tokens: int = 100, temperature: float = 0.8, top_k: int = 50,
             top_p: float = 1.0, seed: int = 0, device: str = "cpu") -> str:
    check_sampling(max_tokens, temperature, top_k, top_p)
    run = RunDir(run_dir).require()
    run.require_objective("causal", "generate")
    opened = open_run(run, device)
    return continue_text(opened.model, opened.tokenizer, prompt, max_tokens, temperature, top_k, top_p, seed)
