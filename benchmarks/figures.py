"""Every count lmforge prints beside an independent measurement of it: the cost module's answer to
"how do I know this is right?".

    python benchmarks/figures.py [--presets tiny gpt2-small ...]   # a few minutes on one CPU core

One row per figure, formula (src/lmforge/model_counts.py, as `lmforge estimate`, MFU, the report
and the scaling lab read it) against the measurement and their ratio, for every shipped preset
(src/lmforge/configs/*.yaml), with tied and untied embeddings:

- parameters and matmul parameters: counted against the model built on the meta device (the sum of
  its unique tensors' elements, and of its nn.Linear weights);
- training FLOPs per token, causal and masked: against torch.utils.flop_counter.FlopCounterMode on
  one forward and backward of the real model through its loss, on the meta device (no memory and
  no time, so the 1b preset runs at its full 2,048-token context). Attention runs SDPA's math path,
  whose matmuls FlopCounterMode counts: it has no formula for the fused CPU kernel, and would miss
  attention on a CPU. On meta the masked loss takes every row through the head, as a GPU does;
- the masked objective on a CPU, where the loss drops the rows without a target before the head:
  the same step on real tensors (the presets with under 10M parameters);
- full and selective recomputation (the hardware FLOPs behind HFU): FlopCounterMode around the same
  step with the model's own `recompute` set, as `train.recompute` sets it (`lmforge.model.run_block`);
- `lmforge estimate` by shape flags against `--preset`: the same FLOPs to the last digit;
- activation memory: benchmarks/memory_check.py's `memory_rows()`, `lmforge.cost.activation_memory`
  against the bytes torch keeps for backward ("held") and its allocation peak, on small shapes.

The tests assert the same equalities (tests/test_model.py, tests/test_cost.py, tests/test_memory.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmforge.config import load_config, preset_names
from lmforge.model import GPT, IGNORE_INDEX
from lmforge.model_counts import GPTConfig, model_config, training_flops
from memory_check import memory_rows  # benchmarks/memory_check.py, beside this file

MASK_SHARE = 0.15  # targets of a masked batch, as train.mask_prob's default
REAL_TENSORS_UP_TO = 10_000_000  # parameters: the presets stepped on real CPU tensors too


def preset_model(name: str, **changes) -> GPTConfig:
    return replace(model_config(load_config(name)), **changes)


def measured_step(cfg: GPTConfig, objective: str = "causal", device: str = "meta", recompute: str = "none",
                  batch: int = 1, seed: int = 0) -> tuple[float, float]:
    """FlopCounterMode's FLOPs per token of one forward and backward of a `cfg` model through its
    loss, and the share of tokens that are targets. On "cpu" the tensors are real (so the masked
    loss filters its rows, as in training); on "meta" nothing is allocated."""
    with torch.device(device):
        model = GPT(cfg)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), generator=generator)
    targets = idx.clone()
    if objective == "masked":
        targets[torch.rand(idx.shape, generator=generator) >= MASK_SHARE] = IGNORE_INDEX
    share = (targets != IGNORE_INDEX).float().mean().item()
    model.recompute = recompute  # as train.recompute sets it
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(idx.to(device), causal=objective == "causal", targets=targets.to(device)).backward()
    return counter.get_total_flops() / idx.numel(), share


def parameter_rows(name: str, cfg: GPTConfig) -> list[tuple]:
    with torch.device("meta"):
        model = GPT(cfg)
    shape = cfg.shape()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return [(f"{name}: parameters", shape.params, sum(p.numel() for p in model.parameters())),
            (f"{name}: matmul parameters", shape.matmul_params, linear)]


def flop_rows(name: str, cfg: GPTConfig) -> list[tuple]:
    shape = cfg.shape()
    rows = []
    for objective in ("causal", "masked"):
        measured, _ = measured_step(cfg, objective)
        rows.append((f"{name}: FLOPs/token, {objective}", training_flops(shape).model, measured))
    for recompute in ("full", "selective"):
        measured, _ = measured_step(cfg, recompute=recompute)
        rows.append((f"{name}: hardware FLOPs/token, {recompute} recompute",
                     training_flops(shape, recompute).hardware, measured))
    if shape.params <= REAL_TENSORS_UP_TO:
        measured, share = measured_step(cfg, "masked", device="cpu", batch=4)
        rows.append((f"{name}: FLOPs/token, masked on a CPU", training_flops(shape, head_rows=share).model, measured))
    return rows


def estimate_flops(*args: str) -> float:
    """`lmforge estimate ARGS --json`'s FLOPs per token, from its own process."""
    out = subprocess.run([sys.executable, "-m", "lmforge", "estimate", *args, "--tokens", "1B", "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["flops_exact"] / 1e9


def flags_of(cfg: GPTConfig) -> list[str]:
    return ["--layers", str(cfg.n_layer), "--width", str(cfg.n_embd), "--heads", str(cfg.n_head), "--kv-heads",
            str(cfg.n_kv_head), "--vocab", str(cfg.vocab_size), "--context", str(cfg.seq_len)]


def print_table(rows: list[tuple]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':{width}s} {'formula':>16s} {'measured':>16s} {'ratio':>9s}")
    for label, formula, measured in rows:
        print(f"{label:{width}s} {formula:16,.0f} {measured:16,.0f} {formula / measured:9.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=preset_names())
    args = ap.parse_args()
    rows = []
    for name in args.presets:
        for tied in (True, False):
            cfg = preset_model(name, tie_embeddings=tied)
            label = f"{name}{'' if tied else ' untied'}"
            rows += parameter_rows(label, cfg) + flop_rows(label, cfg)
        cfg = preset_model(name)
        # here "formula" is estimate by shape flags, "measured" estimate by --preset
        rows.append((f"{name}: estimate FLOPs/token, flags / preset", estimate_flops(*flags_of(cfg)),
                     estimate_flops("--preset", name)))
    print_table(rows)
    print("\nactivation memory in bytes (lmforge.cost.activation_memory), against torch on a CPU:")
    memory = [row[:3] for row in memory_rows()]
    print_table(memory)
    print()
    for what, table in (("counts and FLOPs", rows), ("activation memory", memory)):
        print(f"largest difference, {what}: {max(abs(f / m - 1) for _, f, m in table):.4%}")


if __name__ == "__main__":
    main()
