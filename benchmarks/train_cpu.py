"""CPU training benchmark: lmforge beside nanoGPT's own train.py (and, optionally, an older
lmforge checkout), measured side by side in one run.

    python benchmarks/train_cpu.py --nanogpt PATH/TO/nanoGPT [--baseline PATH/TO/old-lmforge]
        [--threads 2] [--rounds 2] [--steps 2000] [--steps-bpe 900] [--work /tmp/lmforge-cpu-bench]

Shape: nanoGPT's README CPU run, 4 layers, 4 heads, width 128, context 64, batch 12, fp32, on
tinyshakespeare (`../shared/data/tinyshakespeare.txt`, ASCII: one byte per character).

Cases, each a fresh process with OMP_NUM_THREADS=--threads:
  nanogpt        the checkout's train.py, unmodified, in a work folder holding train.py, model.py,
                 configurator.py, config/train_shakespeare_char.py and data/shakespeare_char/ (its
                 prepare.py, run once, reads this text as input.txt: nothing is downloaded), with the
                 README's CPU flags `--device=cpu --compile=False --eval_iters=20 --log_interval=1
                 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
                 --max_iters=N --lr_decay_iters=N --dropout=0.0`;
  lmforge-bytes  `python -m lmforge train` at the same shape with the 259-token bytes vocabulary
                 (256 bytes + 3 specials): like-for-like with nanoGPT's 65-character vocabulary;
  lmforge-bpe    the same with a 1,024-token BPE vocabulary: ~2x more text per token, which is
                 what bits per byte over training time rewards;
  baseline-*     the same two from the --baseline checkout (PYTHONPATH=PATH/src), same flags.

Each lmforge checkout tokenizes the text with its own CLI once, before the timed runs, as nanoGPT's
prepare.py does. The cases alternate in rounds (ABC..., then ...CBA), so each comparison is taken
within the same minutes. Speed is the median step time after the first 5 steps, leaving out the
steps that include an evaluation, read from each program's own log (nanoGPT's `iter k: ... time`
lines, lmforge's metrics.jsonl); the figure is the median over rounds. Validation: nanoGPT's last
`val loss` (20 batches, nats/char = nats/byte here) and lmforge's final evaluation on the whole
validation split, both as bits per byte, with training time (evaluations left out) and process
wall time. "time to nanoGPT's bpb" is the training time at which a run's evaluations first reach
nanoGPT's final bits/byte of the same round. The load average before and after is printed beside
the figures: on a shared machine it says how much the figures can be trusted. Under load the
programs do not lose alike: lmforge's trainer lowers its thread count to the free cores when
train.threads is 0 (here it is pinned to --threads), nanoGPT's does not. Take the
figures in a quiet window (load average well under the core count).

lmforge reads the text as 28 pieces of 40 kB (data.max_document_bytes) split by a hash of their id
(data.val_fraction=0.1): one piece, 40,010 bytes, is its validation split; nanoGPT's is the last
10% of the text. The bits per byte are of the same text, not of the same sample.

Prints one table and writes WORK/results.json. The old lmforge checkout for --baseline can be a
worktree or an export: `git -C REPO worktree add /tmp/lmf-old COMMIT`, or
`git -C REPO archive COMMIT | tar -x -C /tmp/lmf-old`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sidebyside import (
    lmforge_step_seconds,
    log,
    nanogpt_iter_seconds,
    nanogpt_val_losses,
    steady_step_s,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 64, "batch": 12}
TOKENS_PER_STEP = SHAPE["batch"] * SHAPE["seq_len"]
NANOGPT_EVAL_ITERS = 20  # the README's --eval_iters: lmforge's periodic evaluations read as many tokens
NANOGPT_FILES = ["train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py",
                 "data/shakespeare_char/prepare.py"]
OPENMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "PYTHONPATH")
VOCABS = {"bytes": 259, "bpe": 1024}


def eval_interval(steps: int) -> int:
    """Evaluate every 250 steps (nanoGPT's config) or the largest of a few rounder intervals that
    divides the run, so that both programs evaluate at the last step."""
    return next((every for every in (250, 200, 150, 100, 50) if steps % every == 0), steps)


def child_env(threads: int, src: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def run_process(cmd: list[str], cwd: Path, env: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}) in {cwd}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, wall


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- nanoGPT

def prepare_nanogpt(checkout: Path, work: Path) -> Path:
    """nanoGPT's files in a work folder, and its prepare.py run on this text (never downloading)."""
    folder = work / "nanogpt"
    for name in NANOGPT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkout / name, folder / name)
    data = folder / "data" / "shakespeare_char"
    shutil.copyfile(DATA, data / "input.txt")
    if not (data / "val.bin").is_file():
        run_process([sys.executable, "prepare.py"], data, child_env(1, None))
    return folder


def nanogpt_case(folder: Path, steps: int, threads: int) -> dict:
    every = eval_interval(steps)
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           f"--eval_iters={NANOGPT_EVAL_ITERS}", "--log_interval=1", f"--block_size={SHAPE['seq_len']}",
           f"--batch_size={SHAPE['batch']}", f"--n_layer={SHAPE['n_layer']}", f"--n_head={SHAPE['n_head']}",
           f"--n_embd={SHAPE['n_embd']}", f"--max_iters={steps}", f"--lr_decay_iters={steps}", "--dropout=0.0",
           f"--eval_interval={every}", f"--out_dir={folder / 'out'}"]
    shutil.rmtree(folder / "out", ignore_errors=True)
    text, wall = run_process(cmd, folder, child_env(threads, None))
    times = nanogpt_iter_seconds(text)
    evals = nanogpt_val_losses(text)
    if not evals or steps not in evals:
        raise SystemExit(f"nanoGPT printed no validation loss at step {steps}:\n{text[-3000:]}")
    # iteration k evaluates before its update when k % every == 0: that time is not training
    evaluating = {k for k in times if k % every == 0}
    step_s = steady_step_s(times, skip=evaluating)
    clock, curve = 0.0, []
    for k in sorted(times):
        if k in evals:
            curve.append((round(clock, 2), evals[k] / math.log(2)))
        clock += step_s if k in evaluating else times[k]  # an evaluating iteration's update at the median
    return {"step_s": step_s, "val_bpb": evals[steps] / math.log(2), "val_nats_per_char": evals[steps],
            "train_s": curve[-1][0], "wall_s": wall, "curve": curve, "steps": steps}


# ---- lmforge (this checkout or --baseline)

def lmforge_sets(vocab: int, steps: int, threads: int) -> list[str]:
    """The config of every lmforge case: nanoGPT's shape, lmforge's own recipe."""
    every = eval_interval(steps)
    return [
        f"data.sources=[{DATA}]", "data.max_document_bytes=40000", "data.val_fraction=0.1", "data.max_bytes=0",
        f"tokenizer.vocab_size={vocab}", "tokenizer.train_bytes=0", "tokenizer.min_frequency=2",
        f"model.n_layer={SHAPE['n_layer']}", f"model.n_head={SHAPE['n_head']}", f"model.n_embd={SHAPE['n_embd']}",
        f"model.seq_len={SHAPE['seq_len']}", f"train.batch_size={SHAPE['batch']}", f"train.max_steps={steps}",
        "train.lr=2e-3", "train.min_lr_ratio=0.1", "train.warmup_steps=50", "train.weight_decay=0.1",
        "train.beta2=0.99", "train.dtype=float32", f"train.threads={threads}", f"train.eval_interval={every}",
        f"train.eval_tokens={NANOGPT_EVAL_ITERS * TOKENS_PER_STEP}", "train.final_eval_tokens=0",
        "train.checkpoint_interval=0", "train.log_interval=1", "train.progress=false",
    ]


def cli(*args: str) -> list[str]:
    """The lmforge command; which checkout runs is the child's PYTHONPATH."""
    return [sys.executable, "-m", "lmforge", *args]


def check_checkout(src: Path) -> str:
    """The lmforge a PYTHONPATH of `src` imports (it must be that checkout, not the installed one)."""
    text, _ = run_process([sys.executable, "-c", "import lmforge; print(lmforge.__file__)"], ROOT, child_env(1, src))
    found = Path(text.strip().splitlines()[-1]).resolve()
    if not found.is_relative_to(src.resolve()):
        raise SystemExit(f"PYTHONPATH={src} imports lmforge from {found}, not from that checkout")
    return str(found.parent)


def tokenize(src: Path, vocab: int, out: Path, threads: int) -> float:
    if (out / "meta.json").is_file():
        return 0.0
    sets = [a for s in lmforge_sets(vocab, 1, threads) for a in ("--set", s)]
    _, wall = run_process(cli("tokenize", str(DATA), "--out", str(out), "--preset", "tiny", *sets), ROOT,
                          child_env(threads, src))
    return wall


def lmforge_case(src: Path, tokens: Path, out: Path, vocab: int, steps: int, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    sets = [a for s in lmforge_sets(vocab, steps, threads) for a in ("--set", s)]
    _, wall = run_process(cli("train", "--data", str(tokens), "--out", str(out), "--preset", "tiny",
                              "--threads", str(threads), *sets), ROOT, child_env(threads, src))
    every = eval_interval(steps)
    times = lmforge_step_seconds(out / "metrics.jsonl")
    after_eval = {s for s in times if s > 1 and (s - 1) % every == 0}  # as nanoGPT's evaluating iterations
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["train_time_s"], r["val_bpb"]) for r in records if "val_bpb" in r]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "step_s": steady_step_s(times, skip=after_eval),
        "val_bpb": summary.get("bits_per_byte", curve[-1][1]),
        "train_s": summary["train_time_s"], "wall_s": wall, "curve": curve, "steps": summary["steps"],
        "params": summary["params"], "flops_per_token": summary["flops_per_token"],
        "threads": summary.get("threads"),
        # summary.json's own tokens/s: steady state where it writes warmup_s, the whole run's mean before
        "summary_tokens_per_s": summary["tokens_per_s"],
        "summary_tokens_per_s_kind": "steady" if "warmup_s" in summary else "mean over the run",
    }


# ---- the run

def first_reaching(curve: list, target: float) -> float | None:
    return next((t for t, bpb in curve if bpb <= target), None)


def summarize(name: str, runs: list[dict]) -> dict:
    tps = [TOKENS_PER_STEP / r["step_s"] for r in runs]
    row = {"case": name, "tokens_per_s": statistics.median(tps), "tokens_per_s_rounds": tps,
           "val_bpb": statistics.median(r["val_bpb"] for r in runs), "train_s": statistics.median(r["train_s"] for r in runs),
           "wall_s": statistics.median(r["wall_s"] for r in runs), "steps": runs[0]["steps"]}
    if "to_nanogpt_bpb_s" in runs[0]:
        reached = [r["to_nanogpt_bpb_s"] for r in runs]
        row["to_nanogpt_bpb_s"] = None if None in reached else statistics.median(reached)
    return row


def print_table(rows: dict[str, dict], threads: int, peak: float, flops: dict[str, float]) -> None:
    def ratio(name: str, other: str | None) -> str:
        return f"{rows[name]['tokens_per_s'] / rows[other]['tokens_per_s']:.3f}x" if other in rows else "-"

    print(f"\n{threads} threads, fp32; tokens/s: median over rounds (each round: median step after warm-up, "
          f"evaluations left out); fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'case':15s} {'steps':>5s} {'tokens/s':>9s} {'rounds':>15s} {'MFU':>5s} {'/nanoGPT':>8s} {'/baseline':>9s} "
          f"{'val bpb':>7s} {'train s':>7s} {'wall s':>6s} {'to nanoGPT bpb':>14s}")
    for name, row in rows.items():
        vocab = name.split("-")[-1]
        vs_nano = ratio(name, "nanogpt") if vocab == "bytes" else "-"  # like-for-like only at the bytes vocabulary
        vs_base = ratio(name, f"baseline-{vocab}") if name.startswith("lmforge") else "-"
        mfu = f"{100 * row['tokens_per_s'] * flops[name] / peak:4.0f}%" if name in flops else "-"
        reach = row.get("to_nanogpt_bpb_s", "-")
        reach = "not reached" if reach is None else reach if reach == "-" else f"{reach:.1f}s"
        rounds = "/".join(f"{t / 1e3:.1f}k" for t in row["tokens_per_s_rounds"])
        print(f"{name:15s} {row['steps']:5d} {row['tokens_per_s']:9,.0f} {rounds:>15s} {mfu:>5s} {vs_nano:>8s} "
              f"{vs_base:>9s} {row['val_bpb']:7.3f} {row['train_s']:7.1f} {row['wall_s']:6.1f} {reach:>14s}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", required=True, type=Path, help="a checkout of karpathy/nanoGPT (its train.py is run)")
    ap.add_argument("--baseline", type=Path, help="another lmforge checkout to run beside this one (PYTHONPATH=PATH/src)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of all cases, alternating their order")
    ap.add_argument("--steps", type=int, default=2000, help="steps of nanoGPT and of the bytes-vocabulary runs")
    ap.add_argument("--steps-bpe", type=int, help="steps of the BPE runs (default 900, or --steps if fewer)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmforge-cpu-bench"))
    args = ap.parse_args()
    missing = [n for n in NANOGPT_FILES if not (args.nanogpt / n).is_file()]
    if missing:
        print(f"--nanogpt {args.nanogpt}: no {missing[0]} there; give a checkout of karpathy/nanoGPT")
        return 2
    if args.baseline and not (args.baseline / "src" / "lmforge").is_dir():
        print(f"--baseline {args.baseline}: no src/lmforge there; give an lmforge checkout")
        return 2
    if not DATA.is_file():
        print(f"benchmark data {DATA} not found: this benchmark needs ../shared/data next to the checkout")
        return 2
    steps_bpe = args.steps_bpe or min(900, args.steps)
    args.work.mkdir(parents=True, exist_ok=True)

    import torch

    from lmforge.hardware import measured_matmul_flops

    checkouts = {"lmforge": ROOT / "src"} | ({"baseline": args.baseline / "src"} if args.baseline else {})
    imported = {who: check_checkout(src) for who, src in checkouts.items()}
    load_before = load()
    log(f"load average {load_before}; torch {torch.__version__}; lmforge from {imported}")
    torch.set_num_threads(args.threads)
    peak = measured_matmul_flops("cpu", torch.float32, 2048, 5)
    folder = prepare_nanogpt(args.nanogpt, args.work)
    cases: dict[str, Callable[[], dict]] = {"nanogpt": lambda: nanogpt_case(folder, args.steps, args.threads)}
    tokenize_s = {}
    for who, src in checkouts.items():
        for vocab_name, vocab in VOCABS.items():
            name, steps = f"{who}-{vocab_name}", args.steps if vocab_name == "bytes" else steps_bpe
            tokens = args.work / f"tokens-{name}"
            tokenize_s[name] = tokenize(src, vocab, tokens, args.threads)
            cases[name] = (lambda src=src, tokens=tokens, name=name, vocab=vocab, steps=steps:
                           lmforge_case(src, tokens, args.work / f"run-{name}", vocab, steps, args.threads))
    log(f"tokenized (seconds, 0 = already there): {tokenize_s}")

    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for r in range(args.rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in order:
            before = load()
            res = cases[name]()
            res["load_before"], res["load_after"] = before, load()
            log(f"round {r + 1}: {name:15s} {TOKENS_PER_STEP / res['step_s']:8,.0f} tokens/s, val {res['val_bpb']:.3f} "
                f"bits/byte, {res['train_s']:.1f}s training, {res['wall_s']:.1f}s wall; load {before} -> {res['load_after']}")
            runs[name].append(res)
        nanogpt_bpb = runs["nanogpt"][-1]["val_bpb"]
        for name in cases:  # the same round's nanoGPT figure, whichever ran first
            runs[name][-1]["to_nanogpt_bpb_s"] = first_reaching(runs[name][-1]["curve"], nanogpt_bpb)
    load_after = load()

    rows = {name: summarize(name, rs) for name, rs in runs.items()}
    flops = {name: rs[0]["flops_per_token"] for name, rs in runs.items() if "flops_per_token" in rs[0]}
    print_table(rows, args.threads, peak, flops)
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}, on {os.cpu_count()} cores")
    if max(load_before[0], load_after[0]) > args.threads + 0.5:  # each case itself keeps --threads cores busy
        print("  other processes shared the CPU during this run: the figures compare the programs under "
              "contention, not their speed; take them again in a quiet window")
    for name, rs in runs.items():
        if "summary_tokens_per_s" in rs[0]:
            print(f"  {name}: summary.json says {rs[0]['summary_tokens_per_s']:,.0f} tokens/s "
                  f"({rs[0]['summary_tokens_per_s_kind']}), {rs[0]['threads']} threads")
    out = args.work / "results.json"
    out.write_text(json.dumps({
        "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "cores": os.cpu_count(),
        "fp32_peak_flops": peak, "load_before": load_before, "load_after": load_after, "lmforge": imported,
        "nanogpt": str(args.nanogpt), "tokenize_s": tokenize_s, "rows": rows, "runs": runs,
    }, indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
