"""Activation memory: lmforge's formula (`lmforge.cost.activation_memory`) beside what torch measures
for a real forward and backward of the model, several shapes x every recompute mode.

    python benchmarks/memory_check.py [--device cpu|cuda] [--json]

For each case, two figures (`lmforge.measured_memory.measured_training_memory`):
  held   bytes still allocated for backward when the forward returns: the storages the forward
         made that are alive then (saved tensors, each storage once; checkpointed blocks' inputs;
         selective recomputation's kept outputs; autocast's weight copies); parameters apart
  peak   the most bytes allocated at once during forward and backward beyond the parameters and
         their (already allocated) gradients: the profiler's memory timeline on a CPU,
         torch.cuda.max_memory_allocated on CUDA
Shapes are small enough for a CPU in seconds; they differ in what the formula must get right:
grouped-query attention, an untied head, the chunked loss (more tokens than one chunk), bf16
autocast over float32 weights, and bf16 weights (as FSDP gathers them).

`memory_rows()` returns the table as rows (name, formula bytes, measured bytes, ratio) for
benchmarks/figures.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

import torch

from lmforge import model_counts
from lmforge.config import RECOMPUTE
from lmforge.cost import activation_memory
from lmforge.model import GPT, GPTConfig
from lmforge.measured_memory import measured_training_memory

# name -> (model shape, micro-batch, compute dtype, weights dtype, logits per loss chunk or None)
CASES = {
    "mha fp32": (dict(vocab_size=512, n_layer=2, n_head=4, n_embd=64, seq_len=32), 2, torch.float32, torch.float32, None),
    "gqa bf16-autocast": (dict(vocab_size=300, n_layer=3, n_head=4, n_kv_head=2, n_embd=128, seq_len=64), 2,
                          torch.bfloat16, torch.float32, None),
    "gqa untied bf16-weights": (dict(vocab_size=1024, n_layer=2, n_head=2, n_kv_head=1, n_embd=64, seq_len=128,
                                     tie_embeddings=False), 1, torch.bfloat16, torch.bfloat16, None),
    "chunked-loss bf16-autocast": (dict(vocab_size=512, n_layer=2, n_head=4, n_embd=64, seq_len=64), 4,
                                   torch.bfloat16, torch.float32, 64 * 512),
    "wide fp32": (dict(vocab_size=260, n_layer=1, n_head=8, n_embd=256, seq_len=16), 4, torch.float32, torch.float32, None),
}


@contextmanager
def loss_chunk(logits: int | None):
    """The loss's chunk size for a case (`lmforge.model_counts.LOSS_CHUNK_LOGITS`), so that a small batch
    takes the chunked path that a real vocabulary and batch take."""
    before = model_counts.LOSS_CHUNK_LOGITS
    model_counts.LOSS_CHUNK_LOGITS = logits or before
    try:
        yield
    finally:
        model_counts.LOSS_CHUNK_LOGITS = before


def measure_case(name: str, recompute: str, device: str = "cpu", peak: bool = True) -> dict[str, dict[str, float]]:
    """{"formula": activation_memory(...), "measured": measured_training_memory(...)} for one case."""
    shape_kw, batch, compute, weights, chunk = CASES[name]
    torch.manual_seed(0)
    mcfg = GPTConfig(**shape_kw)
    model = GPT(mcfg).to(device=device, dtype=weights)
    model.recompute = recompute
    idx = torch.randint(0, mcfg.vocab_size, (batch, mcfg.seq_len), device=device)
    targets = torch.randint(0, mcfg.vocab_size, (batch, mcfg.seq_len), device=device)
    with loss_chunk(chunk):
        amp = compute if compute != weights else None
        measured = measured_training_memory(model, idx, targets, amp, peak=peak)
        formula = activation_memory(mcfg.shape(), batch, recompute, compute.itemsize, weights.itemsize)
    return {"formula": formula, "measured": measured}


def memory_rows(device: str = "cpu") -> list[tuple[str, float, float, float]]:
    """(name, formula bytes, measured bytes, formula / measured) for every case, recompute mode and
    figure (held, peak)."""
    rows = []
    for name in CASES:
        for recompute in RECOMPUTE:
            both = measure_case(name, recompute, device)
            for figure in ("held", "peak"):
                f, m = both["formula"][figure], both["measured"][figure]
                rows.append((f"{name} {recompute} {figure}", f, m, f / m))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = memory_rows(args.device)
    if args.json:
        print(json.dumps([dict(zip(("name", "formula", "measured", "ratio"), r)) for r in rows], indent=1))
        return 0
    print(f"{'case':<46} {'formula B':>12} {'measured B':>12} {'ratio':>6}   ({args.device}, torch {torch.__version__})")
    for name, f, m, r in rows:
        print(f"{name:<46} {f:>12,.0f} {m:>12,.0f} {r:>6.3f}")
    worst = max(abs(r - 1) for *_, r in rows)
    print(f"largest deviation {worst:.1%}")
    return 0 if worst <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
