"""Learning-rate transfer across width: does the best train.lr of a narrow model hold for a wide one?

    python benchmarks/transfer_cpu.py [--out /tmp/lmforge-transfer] [--widths 32,64,128,256]
        [--lrs 2^-10..2^-4] [--steps 300] [--workers 2] [--data TOKENIZED]

One model family (the scaling preset: 2 layers, head size 16, context 128, vocabulary 2,048, batch
8 x 128 tokens, cosine schedule with the sweep's warmup rule, AdamW, fp32), trained for the same
--steps (so the same tokens) at every width and every learning rate of a x2 grid, under the
standard parameterisation and under muP with model.mup_base_width the narrowest width. Every point
is an ordinary lmforge run (lmforge.scaling.tune.proxy_config, train_point: the code `lmforge scale
tune` runs), on the built-in corpus's first 8 MB tokenized once (or --data), scored by its final
validation loss on the same 64k validation tokens. --workers processes x 1 thread; a finished point
is read back, not trained again, so a killed benchmark resumes with the same --out.

Targets (issue 26): under muP the best lr moves by at most one grid step (x2) across the widths
(>= 8x), and the loss at a fixed lr (the narrowest model's best) falls monotonically with width;
under standard the drift of the best lr is measured and reported beside it. The grid's losses
differ near the optimum by about a run's noise (~0.5%, one seed per point): the best is the lowest
loss on the grid (scaling/tune.py's rule).

Printed: the table (best lr per width per parameterisation, loss at the fixed lr per width), the
verdicts, wall and CPU seconds, threads and `uptime` load average. Written: OUT/transfer.json (every
point), OUT/transfer.png (loss vs lr per width, one panel per parameterisation).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

PARAMETRIZATIONS = ("standard", "mup")


def present(points: list[dict]) -> list[str]:
    """The parameterisations the points hold, in PARAMETRIZATIONS' order."""
    return [p for p in PARAMETRIZATIONS if any(x["parametrization"] == p for x in points)]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stamp(threads: int, workers: int) -> str:
    return f"[{workers} processes x {threads} thread, load average {' '.join(map(str, load()))} on {os.cpu_count()} cores]"


def base_config(args):
    from lmforge.config import load_config

    overrides = {
        "model.n_layer": args.layers, "train.batch_size": args.batch, "train.threads": 1, "train.dtype": "float32",
        "train.final_eval_tokens": args.eval_tokens, "train.seed": args.seed, "train.optimizer": args.optimizer,
        "data.max_bytes": args.max_bytes, "model.tie_embeddings": not args.untied,
    }
    return load_config("scaling", overrides=[f"{k}={v}" for k, v in overrides.items()])


def point(cfg_dict: dict) -> dict:
    """One run in a worker; its CPU seconds beside the result."""
    import torch

    from lmforge.config import config_from_dict
    from lmforge.scaling.tune import train_point

    torch.set_num_threads(1)
    t0, c0 = time.time(), time.process_time()
    result = train_point(config_from_dict(cfg_dict), log=lambda *_: None)
    return {**result, "wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}


def best_lrs(points: list[dict], widths: list[int]) -> dict:
    """{parametrization: {width: (best lr, its loss)}} by tune's rule."""
    from lmforge.scaling.tune import best_index

    out = {}
    for p in present(points):
        out[p] = {}
        for w in widths:
            row = sorted((x for x in points if x["parametrization"] == p and x["width"] == w), key=lambda x: x["lr"])
            i = best_index(row) if row else None
            out[p][w] = (row[i]["lr"], row[i]["loss"]) if i is not None else (None, None)
    return out


def loss_at(points: list[dict], p: str, w: int, lr: float) -> float | None:
    hit = [x["loss"] for x in points if x["parametrization"] == p and x["width"] == w and math.isclose(x["lr"], lr)]
    return hit[0] if hit else None


def verdicts(points: list[dict], widths: list[int], lrs: list[float]) -> dict:
    best = best_lrs(points, widths)
    report = {}
    for p in present(points):
        found = [lr for lr, _ in best[p].values() if lr is not None]
        steps = [round(math.log2(lr / lrs[0])) for lr in found]
        fixed = best[p][widths[0]][0]  # the narrowest model's best: what a tune on the proxy would choose
        losses = [loss_at(points, p, w, fixed) for w in widths]
        monotone = all(a is not None and b is not None and b < a for a, b in zip(losses, losses[1:]))
        report[p] = {
            "best_lr": {str(w): best[p][w][0] for w in widths}, "best_loss": {str(w): best[p][w][1] for w in widths},
            "grid_steps_moved": (max(steps) - min(steps)) if steps else None,
            "drift_narrow_to_wide": (best[p][widths[-1]][0] / best[p][widths[0]][0]) if len(found) == len(widths) else None,
            "fixed_lr": fixed, "loss_at_fixed_lr": {str(w): l for w, l in zip(widths, losses)},
            "loss_falls_with_width": monotone,
            "edge": [w for w in widths if best[p][w][0] in (lrs[0], lrs[-1])],
        }
    if "mup" in report:
        report["mup"]["transfer_holds"] = (report["mup"]["grid_steps_moved"] is not None
                                           and report["mup"]["grid_steps_moved"] <= 1 and report["mup"]["loss_falls_with_width"])
    return report


def plot(points: list[dict], widths: list[int], report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = present(points)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), sharey=True, squeeze=False)
    axes = axes[0]
    colours = plt.cm.viridis([0.85 * i / max(1, len(widths) - 1) for i in range(len(widths))])  # no pale yellow
    for ax, p in zip(axes, kinds):
        for w, c in zip(widths, colours):
            row = sorted((x for x in points if x["parametrization"] == p and x["width"] == w and x["loss"] is not None),
                         key=lambda x: x["lr"])
            ax.plot([x["lr"] for x in row], [x["loss"] for x in row], marker="o", color=c, label=f"width {w}")
            lr = report[p]["best_lr"][str(w)]
            if lr is not None:
                ax.plot([lr], [report[p]["best_loss"][str(w)]], marker="*", markersize=13, color=c, linestyle="none")
        moved = report[p]["grid_steps_moved"]
        ax.set(xscale="log", xlabel="train.lr", title=f"{'muP' if p == 'mup' else p}: best lr moved {moved} grid step(s) (x2)")
    axes[0].set_ylabel("final validation loss (nats/token)")
    axes[0].legend(fontsize=8)
    lows = [x["loss"] for x in points if x["loss"] is not None]
    if lows:  # diverging points would squash the interesting part: show up to 1.2 nats above the best
        axes[0].set_ylim(min(lows) - 0.05, min(lows) + 1.2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tokens(args, cfg, out: Path) -> Path:
    from lmforge.scaling.tune import tune_tokens

    if args.data:
        from lmforge.config import with_data

        return tune_tokens(with_data(cfg, tokenized=args.data), out, print)
    return tune_tokens(cfg, out, print)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/lmforge-transfer")
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--lrs", default=",".join(f"{2.0 ** -k:g}" for k in range(10, 3, -1)), help="x2 apart")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-tokens", type=int, default=65536)
    ap.add_argument("--max-bytes", type=int, default=8_000_000)
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "muon"])
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--parametrizations", default="standard,mup", help="standard,mup or either alone")
    ap.add_argument("--untied", action="store_true", help="model.tie_embeddings=false (an output head of its own)")
    ap.add_argument("--data", help="a tokenized folder (default: the built-in corpus, tokenized into OUT/tokens)")
    ap.add_argument("--docs-png", help="also copy the plot here (e.g. docs/transfer.png)")
    args = ap.parse_args()

    from lmforge.config import with_data
    from lmforge.scaling.tune import proxy_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    widths = sorted(int(w) for w in args.widths.split(","))
    lrs = sorted(float(x) for x in args.lrs.split(","))
    cfg = base_config(args)
    folder = tokens(args, cfg, out).resolve()
    base = widths[0]
    jobs = []
    for w in sorted(widths, reverse=True):  # the widest (longest) first packs the workers best
        for p in args.parametrizations.split(","):
            for lr in lrs:
                pc = proxy_config(cfg, w, lr, p, base, args.steps, out / "runs" / f"{p}-w{w:03d}-lr{lr:.4g}")
                jobs.append(with_data(pc, tokenized=str(folder)).to_dict())
    print(f"transfer: {len(jobs)} runs (widths {widths}, {len(lrs)} lrs {lrs[0]:.4g}..{lrs[-1]:.4g}, "
          f"{args.steps} steps of {cfg.train.batch_size * cfg.model.seq_len:,} tokens, {args.layers} layers, "
          f"{args.optimizer}, muP base width {base}) {stamp(1, args.workers)}", flush=True)
    t0 = time.time()
    points = []
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(point, j) for j in jobs]
        for fut in as_completed(futures):
            r = fut.result()
            points.append(r)
            loss = f"{r['loss']:.4f}" if r["loss"] is not None else "diverged"
            print(f"  {r['parametrization']:8s} width {r['width']:3d} lr {r['lr']:.4g}: {loss} "
                  f"({r['wall_s']}s wall, {r['cpu_s']}s CPU) {stamp(1, args.workers)}", flush=True)
    wall = time.time() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = verdicts(points, widths, lrs)
    summary = {"widths": widths, "lrs": lrs, "steps": args.steps, "tokens_per_run": args.steps * cfg.tokens_per_step(),
               "layers": args.layers, "batch": args.batch, "optimizer": args.optimizer, "mup_base_width": base,
               "workers": args.workers, "threads": 1, "wall_s": round(wall, 1),
               "cpu_s_workers": round(children.ru_utime + children.ru_stime, 1),
               "cpu_s_points": round(sum(p["cpu_s"] for p in points), 1), "load_average_end": load(),
               "report": report, "points": sorted(points, key=lambda x: (x["parametrization"], x["width"], x["lr"]))}
    (out / "transfer.json").write_text(json.dumps(summary, indent=1))
    title = (f"{args.layers} layers, {args.steps} steps x {cfg.tokens_per_step():,} tokens, {args.optimizer}, "
             f"muP base width {base}{', untied head' if args.untied else ''}; {args.data or f'built-in corpus, first {args.max_bytes / 1e6:g} MB'}")
    plot(points, widths, report, out / "transfer.png", title)
    if args.docs_png:
        Path(args.docs_png).write_bytes((out / "transfer.png").read_bytes())

    print(f"\nbest lr per width (final validation loss) {stamp(1, args.workers)}")
    kinds = present(points)
    print("| width | " + " | ".join(f"{'muP' if p == 'mup' else p} best lr (loss)" for p in kinds) + " | "
          + " | ".join(f"{'muP' if p == 'mup' else p} loss at lr {report[p]['fixed_lr']:.4g}" for p in kinds) + " |")
    print("|---" * (1 + 2 * len(kinds)) + "|")
    for w in widths:
        cells = [f"{report[p]['best_lr'][str(w)]:.4g} ({report[p]['best_loss'][str(w)]:.4f})" for p in kinds]
        cells += [f"{report[p]['loss_at_fixed_lr'][str(w)]:.4f}" if report[p]['loss_at_fixed_lr'][str(w)] is not None
                  else "diverged" for p in kinds]
        print(f"| {w} | " + " | ".join(cells) + " |")
    for p in kinds:
        r = report[p]
        print(f"{'muP' if p == 'mup' else p}: best lr moved {r['grid_steps_moved']} grid step(s) (x2) from width {widths[0]} "
              f"to {widths[-1]} (widest/narrowest {r['drift_narrow_to_wide']}); loss at lr {r['fixed_lr']:.4g} "
              f"{'falls' if r['loss_falls_with_width'] else 'does not fall'} monotonically with width"
              + (f"; best at the grid's edge for widths {r['edge']}" if r["edge"] else ""))
    if "mup" in report:
        print(f"target (muP: <= 1 grid step and monotone): {'met' if report['mup']['transfer_holds'] else 'NOT met'}")
    print(f"{len(points)} runs in {wall / 60:.1f} min wall, {summary['cpu_s_workers'] / 60:.1f} CPU-min "
          f"{stamp(1, args.workers)}")
    print(f"wrote {out / 'transfer.json'}, {out / 'transfer.png'}")


if __name__ == "__main__":
    sys.exit(main())
