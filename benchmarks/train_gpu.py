"""GPU training benchmark: lmforge against nanoGPT's own train.py, side by side on one GPU, one run.

    python benchmarks/train_gpu.py --nanogpt PATH/TO/nanoGPT [--steps 40] [--steps-1b 12] [--rounds 2]

Shape of the comparison (nanoGPT's GPT-2 124M config): 12 layers, width 768, 12 heads, context
1024, vocabulary 50,304, micro-batch 12, 8 micro-batches per step (98,304 tokens), bf16,
torch.compile. nanoGPT runs from the checkout given (its train.py, unmodified, with these flags);
lmforge runs `lmforge train --preset gpt2-small` at the same batch. Then lmforge's `1b` preset
(1.2B parameters, micro-batch 8 x 2048; 8 micro-batches per step, not the preset's 64, to keep
the run short) on the same GPU.

Both read the same tokens: lmforge's built-in corpus (this Python's standard library) as byte
tokens (ids < 259 of the 50,304-wide head; the speed of a step does not depend on the ids).
Each run is a fresh process under one wrapper that reports the CUDA allocator's peak. The runs
alternate (nanoGPT, lmforge, then lmforge, nanoGPT, ...) so drift in clocks or temperature hits
both. Steady-state time per step is the median over steps after the first 5 (compilation and
warm-up, reported apart), as nanoGPT's own MFU does. MFU for both is the PaLM convention,
6 x matmul weights + 12 x layers x width x context FLOPs per token (both models have 123.5M
matmul weights at this shape: their MLPs have the same FLOPs), over the GPU's dense bf16 peak
in lmforge/hardware.yaml.

Prints one table and writes WORK/results.json (default /tmp/lmforge-gpu-bench).
`--smoke` runs the whole harness at a toy shape on the CPU (no GPU, no compile): it checks the
script, not the speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sidebyside import (
    WARMUP_STEPS,
    lmforge_step_seconds,
    log,
    nanogpt_iter_seconds,
    steady_step_s,
    warmup_s,
)

SHAPE = dict(n_layer=12, n_head=12, n_embd=768, seq_len=1024, vocab=50304, micro_batch=12, grad_accum=8)

# The child process: runs nanoGPT's train.py or lmforge's CLI in this interpreter and reports the
# allocator's peak at exit, the same way for both.
CHILD = r"""
import atexit, json, runpy, sys, torch
kind, script, out = sys.argv[1], sys.argv[2], sys.argv[3]
def report():
    with open(out, "w") as f:
        json.dump({"peak_allocated": torch.cuda.max_memory_allocated(), "peak_reserved": torch.cuda.max_memory_reserved()}, f)
atexit.register(report)
sys.argv = [script] + sys.argv[4:]
if kind == "nanogpt":
    sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
    runpy.run_path(script, run_name="__main__")
else:
    runpy.run_module("lmforge", run_name="__main__", alter_sys=True)
"""


def prepare_tokens(work: Path, max_bytes: int) -> Path:
    """lmforge byte tokens of its built-in corpus (this Python's standard library: docs and sources),
    and the same ids as nanoGPT's train.bin/val.bin."""
    import numpy as np

    import lmforge
    from lmforge.folders.tokenized import load_shards
    from lmforge.tokenizing import tokenize_corpus

    tokens = work / "tokens"
    if not (tokens / "meta.json").is_file():
        cfg = lmforge.load_config("gpt2-small", overrides=[
            "data.sources=[builtin]", f"data.max_bytes={max_bytes}", "data.val_fraction=0.02",
            "tokenizer.vocab_size=259", "tokenizer.train_bytes=0"])
        tokenize_corpus(cfg.data, cfg.tokenizer, tokens, log=lambda m: log("  " + m))
    data = work / "nanogpt" / "data" / "lmforge_bytes"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        np.concatenate([np.asarray(s, dtype=np.uint16) for s in load_shards(tokens, split)]).tofile(data / f"{split}.bin")
    return tokens


def gpu_name_and_peak() -> tuple[str, float]:
    import torch

    from lmforge.training.device import peak_flops

    return torch.cuda.get_device_name(0), peak_flops(torch.device("cuda", 0), torch.bfloat16)


def run_child(kind: str, script: str, args: list[str], cwd: Path, out: Path, timeout: int) -> tuple[str, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, script, str(out), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    mem = json.loads(out.read_text())
    mem["wall_s"] = wall
    return proc.stdout + proc.stderr, mem


def nanogpt_run(nanogpt: Path, work: Path, steps: int, timeout: int, extra: list[str]) -> dict:
    cwd = work / "nanogpt"
    (cwd / "configurator.py").write_text((nanogpt / "configurator.py").read_text())  # train.py reads it from the cwd
    args = ["--dataset=lmforge_bytes", f"--out_dir={cwd / 'out'}", f"--batch_size={SHAPE['micro_batch']}",
            f"--block_size={SHAPE['seq_len']}", f"--gradient_accumulation_steps={SHAPE['grad_accum']}",
            f"--n_layer={SHAPE['n_layer']}", f"--n_head={SHAPE['n_head']}", f"--n_embd={SHAPE['n_embd']}",
            "--dropout=0.0", "--bias=False", "--compile=True", "--dtype=bfloat16", "--wandb_log=False",
            f"--max_iters={steps}", "--lr_decay_iters=100000", "--warmup_iters=10", "--eval_iters=1",
            "--eval_interval=100000", "--log_interval=1", "--always_save_checkpoint=False", "--init_from=scratch",
            *extra]
    text, mem = run_child("nanogpt", str(nanogpt / "train.py"), args, cwd, work / "nanogpt_mem.json", timeout)
    times = nanogpt_iter_seconds(text)
    if len(times) <= WARMUP_STEPS:
        raise SystemExit(f"nanoGPT printed {len(times)} step times:\n{text[-3000:]}")
    # iteration 0 evaluates (eval_interval is past the run's end): it is inside the warm-up
    return {"step_s": steady_step_s(times), "warmup_s": warmup_s(times), **mem}


def lmforge_run(preset: str, tokens: Path, work: Path, steps: int, overrides: list[str], timeout: int) -> dict:
    out = work / f"lmforge-{preset}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    sets = [f"train.max_steps={steps}", "train.log_interval=1", "train.eval_interval=0", "train.checkpoint_interval=0",
            "train.final_eval_tokens=65536", "train.progress=false", "train.warmup_steps=10", "tokenizer.vocab_size=259",
            *overrides]
    args = ["train", "--preset", preset, "--data", str(tokens), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    _, mem = run_child("lmforge", "lmforge", args, work, work / "lmforge_mem.json", timeout)
    times = lmforge_step_seconds(out / "metrics.jsonl")  # log_interval=1: one record per step
    summary = json.loads((out / "summary.json").read_text())
    return {"step_s": steady_step_s(times), "warmup_s": warmup_s(times),
            "tokens_per_step": summary["tokens_trained"] / summary["steps"], "flops_per_token": summary["flops_per_token"],
            "params": summary["params"], **mem}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", required=True, type=Path, help="a checkout of karpathy/nanoGPT (its train.py is run)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per 124M run")
    ap.add_argument("--steps-1b", type=int, default=12, help="optimizer steps of the 1b run (0 = skip it)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating nanoGPT/lmforge pairs at 124M")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmforge-gpu-bench"))
    ap.add_argument("--max-bytes", type=int, default=40_000_000, help="bytes of the built-in corpus to tokenize")
    ap.add_argument("--smoke", action="store_true", help="toy shape on the CPU: checks the harness, measures nothing")
    args = ap.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        print(f"--nanogpt {args.nanogpt}: no train.py there; give a checkout of karpathy/nanoGPT")
        return 2
    import torch

    nano_extra, lm_extra = [], []
    if args.smoke:
        SHAPE.update(n_layer=2, n_head=2, n_embd=64, seq_len=64, micro_batch=2, grad_accum=2)
        nano_extra = ["--device=cpu", "--compile=False", "--dtype=float32"]
        lm_extra = [f"model.n_layer={SHAPE['n_layer']}", f"model.n_head={SHAPE['n_head']}", f"model.n_embd={SHAPE['n_embd']}",
                    f"model.seq_len={SHAPE['seq_len']}", "train.device=cpu", "train.compile=false", "train.dtype=float32"]
        args.steps, args.steps_1b, args.rounds, args.max_bytes = WARMUP_STEPS + 3, 0, 2, 2_000_000
        args.work = args.work.with_name(args.work.name + "-smoke")
    elif not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke, to check the harness on the CPU)")
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    gpu, peak = gpu_name_and_peak() if not args.smoke else ("cpu (smoke)", 1e11)
    log(f"{gpu}, bf16 peak {peak / 1e12:.1f} TFLOP/s; torch {torch.__version__}; tokenizing the built-in corpus")
    tokens = prepare_tokens(args.work, args.max_bytes)
    tokens_per_step = SHAPE["micro_batch"] * SHAPE["seq_len"] * SHAPE["grad_accum"]
    small = [f"train.batch_size={SHAPE['micro_batch']}", f"train.grad_accum={SHAPE['grad_accum']}",
             f"model.vocab_size={SHAPE['vocab']}", "train.dtype=bfloat16", "train.compile=true", *lm_extra]
    results: dict[str, list[dict]] = {"nanogpt": [], "lmforge": [], "lmforge-1b": []}
    for r in range(args.rounds):
        order = ["nanogpt", "lmforge"] if r % 2 == 0 else ["lmforge", "nanogpt"]
        for who in order:
            log(f"round {r + 1}: {who} 124M, {args.steps} steps")
            res = (nanogpt_run(args.nanogpt, args.work, args.steps, 600, nano_extra) if who == "nanogpt"
                   else lmforge_run("gpt2-small", tokens, args.work, args.steps, small, 600))
            log(f"  {tokens_per_step / res['step_s']:,.0f} tokens/s, {res['step_s'] * 1e3:.1f} ms/step, "
                f"peak {res['peak_allocated'] / 2**30:.2f} GiB")
            results[who].append(res)
    if args.steps_1b:
        log(f"lmforge 1b, {args.steps_1b} steps")
        results["lmforge-1b"].append(lmforge_run("1b", tokens, args.work, args.steps_1b,
                                                 ["model.vocab_size=65536", "train.grad_accum=8",
                                                  f"train.max_steps={args.steps_1b}"], 900))

    # the same FLOPs per token for both 124M models: lmforge's count at this shape
    fpt = results["lmforge"][0]["flops_per_token"]
    rows = []
    for who, runs in results.items():
        if not runs:
            continue
        step = min(r["step_s"] for r in runs)  # the better run of each: drift hits both
        tps_step = runs[0].get("tokens_per_step", tokens_per_step)
        tps = tps_step / step
        f = runs[0]["flops_per_token"] if who == "lmforge-1b" else fpt
        rows.append({"run": who, "tokens_per_s": tps, "ms_per_step": step * 1e3, "mfu": tps * f / peak,
                     "peak_gib": max(r["peak_allocated"] for r in runs) / 2**30,
                     "warmup_s": max(r["warmup_s"] for r in runs), "runs": len(runs)})
    print(f"\n{gpu}, torch {torch.__version__}, bf16, compile; MFU over {peak / 1e12:.1f} TFLOP/s (PaLM FLOPs)")
    print(f"{'run':12s} {'tokens/s':>10s} {'ms/step':>9s} {'MFU':>7s} {'peak GiB':>9s} {'warm-up s':>10s}")
    for row in rows:
        print(f"{row['run']:12s} {row['tokens_per_s']:10,.0f} {row['ms_per_step']:9.1f} {100 * row['mfu']:6.1f}% "
              f"{row['peak_gib']:9.2f} {row['warmup_s']:10.1f}")
    by = {row["run"]: row for row in rows}
    if "nanogpt" in by and "lmforge" in by:
        print(f"lmforge / nanoGPT tokens/s at 124M: {by['lmforge']['tokens_per_s'] / by['nanogpt']['tokens_per_s']:.3f}x "
              f"(target >= 1.15x, >= 46% MFU); peak memory {by['lmforge']['peak_gib']:.2f} vs {by['nanogpt']['peak_gib']:.2f} GiB")
    if "lmforge-1b" in by:
        print(f"1b on one GPU: MFU {100 * by['lmforge-1b']['mfu']:.1f}% (target >= 58%)")
    (args.work / "results.json").write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "peak_flops": peak,
                                                        "rows": rows, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
