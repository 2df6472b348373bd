"""Training on a shared CPU: tiny-preset step times beside a controlled competing load.

Loads: quiet (nothing added), and one busy single-threaded competitor (a Python spin loop, the
shape of a test run or a compiler job beside the training). Settings, each in a fresh process so
OpenMP reads its environment as torch loads:

  2 threads, spinning   torch loaded before lmforge sets OMP_WAIT_POLICY: libgomp's default wait,
                        the behaviour before issue 14
  1 thread              what one free core allows
  2 threads, PASSIVE    lmforge's default (lmforge/__init__.py sets OMP_WAIT_POLICY=PASSIVE)

Every case is stepped by the trainer's own functions (`measure_step_seconds`: forward, backward,
optimizer update on random tokens at the tiny preset's model and batch). Cases are interleaved in
rounds, so each comparison is measured within the same minute; the figure is the median of the
rounds' medians. The machine's own load (other users) is printed with the figures: on a shared
machine "quiet" means "nothing added by this benchmark".

    python benchmarks/busy_cpu.py [--rounds 3] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = [  # (name, threads, OMP_WAIT_POLICY or None for torch's own default)
    ("2 threads, spinning", 2, None),
    ("1 thread", 1, None),
    ("2 threads, PASSIVE", 2, "PASSIVE"),
]

CHILD = r"""
import json, os, statistics, sys
threads, steps, spin = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "spin"
if spin:
    import torch  # OpenMP reads its environment now, before lmforge could set OMP_WAIT_POLICY
import torch
import lmforge
from lmforge.training.trainer import measure_step_seconds
torch.set_num_threads(threads)
cfg = lmforge.load_config("tiny")
times = [measure_step_seconds(cfg, cfg.tokenizer.vocab_size, steps=1) for _ in range(steps)]
print(json.dumps({"median_s": statistics.median(times), "threads": torch.get_num_threads()}))
"""


def case(threads: int, policy: str | None, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), "spin" if policy is None else "-"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def competitor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (each after a warm-up step)")
    args = ap.parse_args()
    loads = ["quiet", "one busy competitor"]
    results: dict[tuple[str, str], list[float]] = {(l, s[0]): [] for l in loads for s in SETTINGS}
    start = time.time()
    for r in range(args.rounds):
        for load in loads:
            busy = competitor() if load != "quiet" else None
            try:
                time.sleep(0.5 if busy else 0)
                for name, threads, policy in SETTINGS:
                    results[(load, name)].append(case(threads, policy, args.steps)["median_s"])
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
        print(f"round {r + 1}/{args.rounds} done ({time.time() - start:.0f}s; machine load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
    print(f"\ntiny preset, ms/step (median of {args.rounds} rounds x {args.steps} steps); "
          f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}")
    print(f"{'setting':<22}" + "".join(f"{l:>22}" for l in loads) + f"{'busy / 1 thread busy':>22}")
    one_busy = statistics.median(results[(loads[1], "1 thread")])
    for name, _, _ in SETTINGS:
        ms = [1e3 * statistics.median(results[(l, name)]) for l in loads]
        print(f"{name:<22}" + "".join(f"{m:>22,.0f}" for m in ms) + f"{ms[1] / (1e3 * one_busy):>22.2f}")


if __name__ == "__main__":
    main()
