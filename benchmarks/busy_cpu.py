"""Training on a shared CPU: `lmforge train` step times beside a controlled competing load.

Loads: quiet (nothing added), and one busy single-threaded competitor (a Python spin loop, the
shape of a test run or a compiler job beside the training). Every case is the real CLI,
`python -m lmforge train --preset tiny` on a small tokenized corpus, in a fresh process:

  2 threads, spinning   `--threads 2` with GOMP_SPINCOUNT=300000: libgomp's spin count when
                        OMP_WAIT_POLICY is unset, i.e. the behaviour before issue 14
  1 thread              `--threads 1`: what one free core allows
  lmforge default       no flag, no OpenMP variable: what a user gets (torch's thread count,
                        lowered to the free cores between steps by the trainer's ThreadGovernor;
                        OpenMP waits as it does unset: spinning a while, then sleeping)
  default, passive      no flag, OMP_WAIT_POLICY=PASSIVE: the governor with sleeping OpenMP
                        workers (lmforge's default between issue 14 and 2026-12-02)

What OpenMP actually read is taken from libgomp itself (OMP_DISPLAY_ENV=VERBOSE prints its
OMP_WAIT_POLICY and GOMP_SPINCOUNT as torch loads it) and printed beside the figures. A step's time
is the trainer's own (metrics.jsonl `train_time_s`, logged every step); the first step is a
warm-up. Cases are interleaved in rounds, so each comparison is measured within the same minute;
the figure is the median of the rounds' medians. The machine's own load (other users) is printed
with the figures: on a shared machine "quiet" means "nothing added by this benchmark".

    python benchmarks/busy_cpu.py [--rounds 2] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = [  # (name, --threads or None for the default, extra environment)
    ("2 threads, spinning", 2, {"GOMP_SPINCOUNT": "300000"}),
    ("1 thread", 1, {}),
    ("lmforge default", None, {}),
    ("default, passive", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
]
OPENMP_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_DISPLAY_ENV")
ROOT = Path(__file__).resolve().parents[1]


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def lmforge(args: list[str], extra_env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge", *args], env=clean_env(extra_env), capture_output=True,
                          text=True, check=True)


def make_corpus(folder: Path) -> Path:
    """A tokenized folder whose vocabulary fills the tiny preset's 4,096 (random words, fixed seed)."""
    rng = random.Random(14)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(6000)]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) + " ." for _ in range(6000))
    (folder / "corpus.txt").write_text(text + "\n")
    lmforge(["tokenize", str(folder / "corpus.txt"), "--out", str(folder / "tok"), "--preset", "tiny"], {})
    return folder / "tok"


def case(tok: Path, out: Path, threads: int | None, extra_env: dict, steps: int) -> dict:
    args = ["train", "--data", str(tok), "--out", str(out), "--preset", "tiny", "--max-steps", str(steps + 1),
            "--no-progress", "--set", "train.log_interval=1", "--set", "train.eval_interval=0",
            "--set", "train.final_eval_tokens=4096", "--set", "train.checkpoint_interval=0"]
    done = lmforge(args + (["--threads", str(threads)] if threads else []), {**extra_env, "OMP_DISPLAY_ENV": "VERBOSE"})
    shown = dict(re.findall(r"^\s+(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", done.stderr + done.stdout, re.M))
    used = re.search(r"(\d+) threads", done.stdout + done.stderr)
    clock = [json.loads(line)["train_time_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line and '"train_time_s"' in line]
    step_s = [b - a for a, b in zip(clock, clock[1:])]  # the first step (warm-up) is clock[0] alone
    return {"median_s": statistics.median(step_s), "threads": int(used.group(1)) if used else None, **shown}


def competitor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (each after a warm-up step)")
    args = ap.parse_args()
    loads = ["quiet", "one busy competitor"]
    results: dict[tuple[str, str], list[float]] = {(l, s[0]): [] for l in loads for s in SETTINGS}
    seen: dict[str, dict] = {}
    start = time.time()
    print(f"start: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="busy_cpu_") as tmp:
        tok = make_corpus(Path(tmp))
        for r in range(args.rounds):
            for load in loads:
                busy = competitor() if load != "quiet" else None
                try:
                    time.sleep(0.5 if busy else 0)
                    for i, (name, threads, extra) in enumerate(SETTINGS):
                        got = case(tok, Path(tmp) / f"run_{r}_{load[0]}_{i}", threads, extra, args.steps)
                        results[(load, name)].append(got["median_s"])
                        seen[name] = got
                finally:
                    if busy:
                        busy.kill()
                        busy.wait()
            print(f"round {r + 1}/{args.rounds} done ({time.time() - start:.0f}s; machine load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
    print(f"\nlmforge train --preset tiny, ms/step (median of {args.rounds} rounds x {args.steps} steps); "
          f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'setting':<22}{'threads':>8}{'OpenMP read':>22}" + "".join(f"{l:>22}" for l in loads)
          + f"{'busy / 1 thread busy':>22}")
    one_busy = statistics.median(results[(loads[1], "1 thread")])
    for name, _, _ in SETTINGS:
        ms = [1e3 * statistics.median(results[(l, name)]) for l in loads]
        omp = f"{seen[name].get('OMP_WAIT_POLICY', '?')}, spin {seen[name].get('GOMP_SPINCOUNT', '?')}"
        print(f"{name:<22}{seen[name]['threads'] or '?':>8}{omp:>22}" + "".join(f"{m:>22,.0f}" for m in ms)
              + f"{ms[1] / (1e3 * one_busy):>22.2f}")


if __name__ == "__main__":
    main()
