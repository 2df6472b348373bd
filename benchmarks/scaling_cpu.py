"""Scaling-law benchmark on CPU: fit a sweep of tiny models, then train a model with >= 10x the
compute of the largest sweep run and compare the predicted loss with the measured one.

    python benchmarks/scaling_cpu.py [--out runs/scaling_bench] [--budget 2e13] [--multiple 12]

Every step is the lmforge CLI a user would type (lmforge scale plan / run / fit / verify), so a
killed benchmark resumes where it stopped when started again with the same --out. Target: the
predicted validation loss within 2% of the measured one. About 20 minutes on 2 idle cores (sweep on
2 processes x 1 thread, the target on 2 threads); results in OUT/benchmark.json, plots in OUT/plots/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lmforge.scaling.design import make_size
from lmforge.scaling.runner import load_sweep


def lmforge(*args: str) -> str:
    """Run one lmforge command, streaming its output; returns stdout."""
    cmd = [sys.executable, "-m", "lmforge", *args]
    print("$ lmforge " + " ".join(args), flush=True)
    lines = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # stream progress lines as they come
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, env=env) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if proc.returncode:
        raise SystemExit(f"lmforge {args[0]} {args[1]} failed with exit code {proc.returncode}")
    return "".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/scaling_bench", help="sweep folder (reused: a rerun resumes)")
    ap.add_argument("--budget", default="8e12", help="sweep FLOPs (a 3 x 3 grid of sizes x tokens)")
    ap.add_argument("--sizes", default="16,32,48", help="widths (depth 4, head size 16)")
    ap.add_argument("--target-width", type=int, default=64, help="the target model's width")
    ap.add_argument("--multiple", type=float, default=10.5, help="target compute (6ND) / largest sweep run's")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the target run")
    ap.add_argument("--source", default="builtin", help="corpus (builtin, or e.g. ../shared/data/...)")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    timings = {}
    if not (out / "sweep.yaml").is_file():
        lmforge("scale", "plan", "--budget", args.budget, "--sizes", args.sizes, "--parallel", str(args.parallel),
                "--threads", str(max(1, (os.cpu_count() or 2) // args.parallel)),
                "--set", f"data.sources=[{args.source}]", "--design", "grid", "--points-per-size", "4",
                # every run >= 800 optimizer steps of 512 tokens and >= 2 tokens per parameter: shorter
                # runs measure how far the optimizer got, not what the model can learn (docs/LOG.md)
                "--set", "train.batch_size=4", "--set", "scale.level_ratio=1.6", "--set", "scale.min_steps=800",
                "--set", "scale.min_tokens_per_param=2", "--out", str(out))
    timings["plan_s"] = time.time() - t0
    t = time.time()
    lmforge("scale", "run", str(out), "--parallel", str(args.parallel), "--interval", "60")
    timings["sweep_s"] = time.time() - t
    t = time.time()
    lmforge("scale", "fit", str(out))
    fit = json.loads((out / "fit.json").read_text())
    timings["fit_s"] = time.time() - t
    # The target: a wider model than any in the sweep, on --multiple x the compute of the largest sweep
    # run (6ND), about one epoch of the built-in corpus
    cfg, _ = load_sweep(out)
    params = make_size(cfg, args.target_width, cfg.tokenizer.vocab_size).params
    tokens = args.multiple * fit["largest_flops"] / (6 * params)
    t = time.time()
    result = json.loads(lmforge("scale", "verify", str(out), "--params", str(params), "--tokens", f"{tokens:.0f}",
                                "--threads", str(args.threads), "--json").strip().splitlines()[-1])
    timings["target_s"] = time.time() - t
    sweep = json.loads(lmforge("scale", "status", str(out), "--json"))
    largest_exact = max(r["flops"] for r in sweep)
    report = {
        "predicted": result["predicted"], "interval": result["interval"], "actual": result["actual"],
        "relative_error": result["relative_error"], "target_met": abs(result["relative_error"]) <= 0.02,
        "predicted_loss_vs_compute": result.get("predicted_loss_vs_compute"),
        "loss_vs_compute_relative_error": (result["predicted_loss_vs_compute"] - result["actual"]) / result["actual"]
        if result.get("predicted_loss_vs_compute") else None,
        "target_params": result["params"], "target_tokens": result["tokens"],
        "target_times_largest_run_6nd": result["times_largest_run"],
        "target_times_largest_run_exact": result["flops_exact"] / largest_exact,
        "sweep_runs": len(sweep), "fit": {k: fit[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
        "fit_residual_rms": fit["residuals"]["rmse_log"], "excluded": fit["excluded"],
        "plots": [str(out / "plots" / p) for p in ("isoflop.png", "law.png", "extrapolation.png")],
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "total_s": round(time.time() - t0, 1),
        "cpus": os.cpu_count(),
    }
    (out / "benchmark.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"predicted {report['predicted']:.4f}, actual {report['actual']:.4f}: "
          f"{100 * report['relative_error']:+.2f}% at {report['target_times_largest_run_6nd']:.1f}x the largest "
          f"sweep run's compute; target |error| <= 2%: {'met' if report['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
