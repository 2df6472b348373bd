"""CPU training benchmark at nanoGPT's documented CPU shape, against nanoGPT itself.

Shape: 4 layers, 4 heads, width 128, context 64, batch 12, on tinyshakespeare
(`../shared/data/tinyshakespeare.txt`), through lmforge's own training loop (`lmforge.train`).

Two runs:
  bytes  vocabulary of 256 bytes + 3 special tokens: the like-for-like throughput comparison
         with nanoGPT's 65-character vocabulary (one token per character on this ASCII text);
  bpe    a 1,024-token BPE vocabulary: the same shape sees ~2x more text per token, which is
         what bits-per-byte-over-wall-clock rewards.

Prints this CPU's measured matmul peak (fp32 and bf16), tokens/s, achieved GFLOP/s, MFU, and
validation bits per byte against training time, next to nanoGPT's figures. Threads are
reported with every figure (set them with --threads; a second busy process distorts them).

    python benchmarks/train_cpu.py [--threads 2] [--steps-bytes 600] [--steps-bpe 900]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import lmforge
from lmforge.probe import measured_matmul_flops

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"

# nanoGPT (karpathy/nanoGPT, train.py, config/train_shakespeare_char.py with the README's CPU
# flags, --max_iters=2000), fp32, 2 threads.
NANOGPT = {
    "issue machine (AMX CPU)": {"tokens_per_s": 18_700, "val_nats_per_char": 1.886, "wall_s": 96},
    "this machine, measured 2026-11-29": {"tokens_per_s": 11_900, "val_nats_per_char": 1.8857, "wall_s": 141},
}


def run(name: str, vocab: int, steps: int, threads: int, workdir: Path, eval_every: int) -> dict:
    cfg = lmforge.load_config("tiny", overrides=[
        f"data.sources=[{DATA}]", "data.max_document_bytes=40000", "data.val_fraction=0.1", "data.max_bytes=0",
        f"tokenizer.vocab_size={vocab}", "tokenizer.train_bytes=0", "tokenizer.min_frequency=2",
        "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.seq_len=64",
        "train.batch_size=12", f"train.max_steps={steps}", "train.lr=2e-3", "train.min_lr_ratio=0.1",
        "train.warmup_steps=50", "train.weight_decay=0.1", "train.beta2=0.99", "train.dtype=float32",
        f"train.threads={threads}", f"train.eval_interval={eval_every}", "train.eval_tokens=32768",
        "train.final_eval_tokens=0", "train.checkpoint_interval=0", "train.log_interval=50", "train.progress=false",
        f"run.out={workdir / name}",
    ])
    t0 = time.perf_counter()
    summary = lmforge.train(cfg, log=lambda m: print("  " + m))
    wall = time.perf_counter() - t0
    events = [json.loads(l) for l in open(workdir / name / "metrics.jsonl")]
    curve = [(e["train_time_s"], e["val_bpb"]) for e in events if "val_bpb" in e]
    return {"summary": summary, "curve": curve, "wall_s": wall}


def bf16_note(achieved: float, bf16: float, fp32: float) -> str:
    if bf16 < fp32:
        return f"bf16 is emulated on this CPU ({bf16 / 1e9:.1f} GFLOP/s), so fp32 is the peak that counts"
    return f"{100 * achieved / bf16:.1f}% of the bf16 peak"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps-bytes", type=int, default=600)
    ap.add_argument("--steps-bpe", type=int, default=900)
    args = ap.parse_args()
    if not DATA.is_file():
        print(f"benchmark data {DATA} not found: this benchmark needs ../shared/data next to the checkout")
        return 2
    torch.set_num_threads(args.threads)
    fp32 = measured_matmul_flops("cpu", torch.float32, 2048, 5)
    bf16 = measured_matmul_flops("cpu", torch.bfloat16, 512, 3)
    print(f"matmul peak on this CPU ({args.threads} threads): fp32 {fp32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "bytes": run("bytes", 259, args.steps_bytes, args.threads, Path(tmp), 200),
            "bpe": run("bpe", 1024, args.steps_bpe, args.threads, Path(tmp), 100),
        }
    print(f"\nresults ({args.threads} threads, fp32; nanoGPT figures are fp32, 2 threads)")
    for name, r in results.items():
        s = r["summary"]
        gflops = s["tokens_per_s"] * s["flops_per_token"] / 1e9
        print(f"  {name:5s} vocab {'259' if name == 'bytes' else '1024'}: {s['tokens_per_s']:,.0f} tokens/s, "
              f"{gflops:.1f} GFLOP/s, MFU {100 * gflops * 1e9 / fp32:.1f}% of fp32 peak, {bf16_note(gflops * 1e9, bf16, fp32)}, "
              f"{s['params']:,} params")
        print(f"        val {s['bits_per_byte']:.3f} bits/byte after {s['steps']} steps, "
              f"{s['train_time_s']:.1f}s training, {r['wall_s']:.1f}s wall incl. tokenizing and evals")
        crossed = next((t for t, bpb in r["curve"] if bpb <= 2.72), None)
        print("        bits/byte over training time: " + ", ".join(f"{t:.0f}s {b:.2f}" for t, b in r["curve"]))
        print(f"        first at <= 2.72 bits/byte: {f'{crossed:.1f}s' if crossed else 'not reached'}")
    print("\npeer: nanoGPT at this shape")
    for where, n in NANOGPT.items():
        print(f"  {where}: {n['tokens_per_s']:,} tokens/s, val {n['val_nats_per_char']} nats/char = "
              f"{n['val_nats_per_char'] / math.log(2):.2f} bits/byte after 2000 steps in ~{n['wall_s']}s")
    here = NANOGPT["this machine, measured 2026-11-29"]
    ratio = results["bytes"]["summary"]["tokens_per_s"] / here["tokens_per_s"]
    print(f"target: >= 1.5x nanoGPT tokens/s -> {ratio:.2f}x (vs this machine's nanoGPT figure); "
          f"2.72 bits/byte within half nanoGPT's wall-clock ({here['wall_s'] / 2:.0f}s here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
