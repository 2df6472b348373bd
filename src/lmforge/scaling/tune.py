"""Tune small, train big: the learning rate found on a narrow proxy under muP, written where a wider
run picks it up (`lmforge scale tune`).

Under muP (model.parametrization=mup, model/optim) the best train.lr of a model at
model.mup_base_width is, by construction, the best lr at every width (Tensor Programs V; the
transfer benchmark, benchmarks/transfer_cpu.py, measures how well it holds here). So the proxy is
the config's model at the width --width, which becomes model.mup_base_width, trained a few hundred
steps at each learning rate of a grid spaced x2 apart, each run an ordinary lmforge run folder on one
tokenized folder. The best is the grid point with the lowest final validation loss:

- a diverged run (a non-finite loss) counts as worse than every finished one;
- equal losses (to the 4th decimal, what the runs' noise cannot split) go to the smaller lr, the
  safer one when the model grows;
- a parabola through the best point and its two neighbours in log lr is reported beside it
  (`lr_parabola`), as many tuners report, but the chosen lr stays on the grid: one seed's losses near
  the optimum differ by about their run-to-run noise (~0.5%, docs/LOG.md), so the vertex of three
  noisy points can sit anywhere between the neighbours, while a grid point was actually trained;
- a best lr at either end of the grid is said to be so: the optimum may lie beyond it.

    OUT/tune.json     every point (lr, loss, steps, tokens, run), the best, the parabola, the proxy
    OUT/tune.png      final validation loss against lr
    OUT/tuned.yaml    the overlay a bigger run reads: model.parametrization=mup, model.mup_base_width,
                      model.tie_embeddings, train.lr, train.optimizer (`lmforge train --config OUT/tuned.yaml --set model.n_embd=512`; in a
                      sweep folder, SWEEP/tune/tuned.yaml, `lmforge scale plan --out SWEEP` and
                      `lmforge scale run SWEEP` use it)
    OUT/runs/lr<lr>/  the proxy runs (RUN folders); a finished one is not trained again
    OUT/tokens/       the tokenized sources, when sources rather than a tokenized folder were given
"""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import yaml

from lmforge.config import Config, config_from_dict, merge_dicts, with_data
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.files import OutputKind, atomic_write_bytes, atomic_write_json, atomic_write_text, claim_output
from lmforge.folders.run import RunDir
from lmforge.folders.sweep import TUNED_FILE, SweepDir
from lmforge.folders.tokenized import META, is_tokenized
from lmforge.scaling.design import size_config, warmup_steps

RESULT_FILE = "tune.json"
PLOT_FILE = "tune.png"
RUNS = "runs"
TOKENS = "tokens"
TIE_DIGITS = 4  # losses equal to this many decimals are a tie
ENTRIES = (TOKENS, RUNS, RESULT_FILE, PLOT_FILE, TUNED_FILE)
# a tune's --out is lmforge's when everything in it bears a tune's names (a killed tune has only tokens/ or runs/)
OWN_NAMES = ENTRIES + (f".{TOKENS}.lock", f".{TOKENS}.tokenize-building")  # tokenize's lock and building sibling
TUNE = OutputKind("tune folder", ENTRIES, RESULT_FILE,
                  lambda folder: all(entry.name in OWN_NAMES for entry in folder.iterdir()))


def lr_grid(lr_min: float, lr_max: float) -> list[float]:
    """lr_min, 2 lr_min, 4 lr_min, ... up to lr_max (a hair of float slack so 1e-3..8e-3 holds 8e-3)."""
    if not (0 < lr_min < lr_max) or not math.isfinite(lr_max):
        raise LmforgeError(f"scale tune: --lr-min {lr_min:g} and --lr-max {lr_max:g} must be positive, min < max")
    count = int(math.floor(math.log2(lr_max / lr_min) + 1e-9)) + 1
    return [lr_min * 2 ** k for k in range(count)]


def proxy_config(cfg: Config, width: int, lr: float, parametrization: str, base_width: int, steps: int,
                 out: Path) -> Config:
    """`cfg`'s model at `width`, its head size kept (heads = width / head size, as a sweep's family
    grows), trained `steps` steps at `lr` with the sweep's warmup rule, into `out`: one point of a tune
    or of the transfer benchmark. Only the final validation loss is evaluated."""
    m = cfg.model
    head = m.n_embd // m.n_head
    if width <= 0 or width % head:
        raise LmforgeError(f"scale tune: width {width} must be a positive multiple of the head size {head} "
                           f"(model.n_embd / model.n_head); choose another --width or set model.n_head")
    model = replace(m, n_embd=width, n_head=width // head, n_kv_head=0, mlp_hidden=0,
                    parametrization=parametrization, mup_base_width=base_width if parametrization == "mup" else 0)
    train = replace(cfg.train, lr=lr, max_steps=steps, warmup_steps=warmup_steps(cfg.scale, steps), eval_interval=0,
                    checkpoint_interval=0, keep_checkpoints=1, progress=False)
    return replace(cfg, model=model, train=train, run=replace(cfg.run, out=str(out), samples=0)).validate()


def train_point(cfg: Config, log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or read back when finished) the run of `cfg`; its lr, final validation loss
    (None when it diverged), steps and tokens."""
    from lmforge.training.trainer import train

    run = RunDir(cfg.run.out)
    point = {"lr": cfg.train.lr, "width": cfg.model.n_embd, "parametrization": cfg.model.parametrization,
             "run": str(run.path)}
    if run.diverged_path.is_file():
        return {**point, "loss": None, "steps": 0, "tokens": 0, "diverged": run.diverged_reason()}
    if not run.is_complete:
        try:
            train(cfg, resume=run.latest_checkpoint() is not None, log=log)
        except TrainingDiverged as e:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_diverged(str(e))
            return {**point, "loss": None, "steps": 0, "tokens": 0, "diverged": str(e)}
    else:
        changed = changed_setting(run.config, cfg)
        if changed:
            raise LmforgeError(f"scale tune: {run.path} was trained with {changed}; give another --out, or the "
                               "settings it was trained with")
    s = run.summary()
    if not s.complete:
        raise LmforgeError(f"scale tune: {run.path} stopped before its last step; run the command again to finish it")
    loss = s.val_loss if s.val_loss is not None and math.isfinite(s.val_loss) else None
    return {**point, "loss": loss, "steps": s.steps, "tokens": s.tokens_trained, "train_time_s": s.train_time_s,
            "diverged": None if loss is not None else "non-finite validation loss"}


def changed_setting(saved: Config, cfg: Config) -> str | None:
    """'train.max_steps 300, not 400 now': the first model or training setting of a finished point
    that differs from what is asked now (its loss would answer another question), or None."""
    from lmforge.training.trainer import RESUMABLE_CHANGES

    a, b = saved.to_dict(), cfg.to_dict()
    for section in ("model", "train"):
        for key, value in b[section].items():
            if f"{section}.{key}" not in RESUMABLE_CHANGES and a[section].get(key) != value:
                return f"{section}.{key} {a[section].get(key)!r}, not {value!r} now"
    return None


def best_index(points: list[dict]) -> int | None:
    """The point with the lowest loss (a tie to TIE_DIGITS decimals goes to the smaller lr); None if
    every run diverged."""
    finished = [i for i, p in enumerate(points) if p["loss"] is not None]
    if not finished:
        return None
    return min(finished, key=lambda i: (round(points[i]["loss"], TIE_DIGITS), points[i]["lr"]))


def parabola_vertex(points: list[dict], best: int) -> float | None:
    """The lr at the vertex of the parabola through the best point and its two neighbours in log lr,
    or None where it has not two finished neighbours or does not open upwards."""
    if not 0 < best < len(points) - 1 or any(points[i]["loss"] is None for i in (best - 1, best + 1)):
        return None
    x = [math.log(points[i]["lr"]) for i in (best - 1, best, best + 1)]
    y = [points[i]["loss"] for i in (best - 1, best, best + 1)]
    # the vertex of the quadratic through three points (Lagrange form, its derivative set to 0)
    d1, d2 = (y[1] - y[0]) / (x[1] - x[0]), (y[2] - y[1]) / (x[2] - x[1])
    curvature = (d2 - d1) / (x[2] - x[0])
    if curvature <= 0:
        return None
    return math.exp((x[0] + x[1]) / 2 - d1 / (2 * curvature))


def tune_tokens(cfg: Config, out: Path, log: Callable[[str], None]) -> Path:
    """The tokenized folder every point trains on: data.tokenized when set, else the sources
    tokenized once into OUT/tokens (kept when already complete)."""
    if cfg.data.tokenized:
        folder = Path(cfg.data.tokenized)
        if not is_tokenized(folder):
            raise LmforgeError(f"scale tune: {folder} is not a tokenized folder (no {META}): give the --out of "
                               "lmforge tokenize, or the raw sources")
        return folder
    from lmforge.tokenizing import is_complete, tokenize_corpus

    folder = out / TOKENS
    if not (is_tokenized(folder) and is_complete(folder, cfg.data, cfg.tokenizer, [out])):
        tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log, exclude=[out])
    return folder


def overlay(width: int, lr: float, tie_embeddings: bool = True, optimizer: str = "adamw") -> dict:
    """tuned.yaml's keys: what a bigger run must share with the proxy for the lr to transfer (a tied or
    untied head and the optimizer change what the lr means, so they travel with it)."""
    return {"model": {"parametrization": "mup", "mup_base_width": width, "tie_embeddings": tie_embeddings},
            "train": {"lr": lr, "optimizer": optimizer}}


def tune(cfg: Config, width: int, lrs: list[float], steps: int, out: str | Path,
         log: Callable[[str], None] = print) -> dict:
    """Train the proxy at `width` under muP for `steps` steps at each lr of `lrs`; write tune.json,
    tune.png and tuned.yaml into `out`; return tune.json's contents."""
    lrs = sorted(set(lrs))
    if len(lrs) < 3 or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise LmforgeError(f"scale tune: give at least 3 positive learning rates (--lrs or --lr-min/--lr-max), "
                           f"not {', '.join(f'{lr:g}' for lr in lrs) or 'none'}")
    if steps < 4:
        raise LmforgeError(f"scale tune: --steps {steps} is too few to tell learning rates apart; give at least 4")
    out = Path(out)
    proxy_config(cfg, width, lrs[0], "mup", width, steps, out)  # a bad width is refused before tokenizing
    if out.is_dir() and not out.is_symlink() and any(out.iterdir()) and not TUNE.is_own(out):
        raise LmforgeError(f"--out {out} holds files that are not a tune's ({', '.join(ENTRIES)}): "
                           "give a new or empty folder")  # the user's files are never written over
    claim_output(out, TUNE)  # links, a file in the way
    out.mkdir(parents=True, exist_ok=True)
    tokens = tune_tokens(cfg, out, log)
    points = []
    for lr in lrs:
        pcfg = with_data(proxy_config(cfg, width, lr, "mup", width, steps, out / RUNS / f"lr{lr:.4g}"),
                         tokenized=str(tokens.resolve()))
        log(f"tune: width {width}, lr {lr:.4g}: {steps} steps")
        point = train_point(pcfg, log=lambda *_: None)
        log(f"tune: lr {lr:.4g}: " + (f"val loss {point['loss']:.4f}" if point["loss"] is not None
                                      else f"diverged ({point['diverged']})"))
        points.append(point)
    best = best_index(points)
    if best is None:
        raise LmforgeError(f"scale tune: every run diverged (lr {lrs[0]:.4g} to {lrs[-1]:.4g}); give smaller --lrs")
    lr = points[best]["lr"]
    edge = "smallest" if best == 0 else "largest" if best == len(points) - 1 else None
    result = {
        "width": width, "mup_base_width": width, "steps": steps, "tokens_per_step": pcfg.tokens_per_step(),
        "warmup_steps": pcfg.train.warmup_steps, "schedule": pcfg.train.schedule, "optimizer": pcfg.train.optimizer,
        "n_layer": pcfg.model.n_layer, "n_head": pcfg.model.n_head, "tie_embeddings": pcfg.model.tie_embeddings,
        "tokenized": str(tokens),
        "points": points, "best": best, "lr": lr, "loss": points[best]["loss"],
        "lr_parabola": parabola_vertex(points, best), "at_edge": edge,
        "rule": f"lowest final validation loss on the grid; ties to {TIE_DIGITS} decimals go to the smaller lr; "
                "diverged runs count as worst; the parabola's vertex is reported, not chosen",
        "overlay": overlay(width, lr, pcfg.model.tie_embeddings, pcfg.train.optimizer),
    }
    result["plot"] = str(plot(result, out / PLOT_FILE))
    result["overlay_file"] = str(write_overlay(result, out / TUNED_FILE))
    result["file"] = str(out / RESULT_FILE)
    atomic_write_json(out / RESULT_FILE, result)
    return result


def write_overlay(result: dict, path: Path) -> Path:
    """tuned.yaml, with a header saying what the lr was tuned with (it transfers across width, not
    across batch size, schedule or run length)."""
    header = (f"# lmforge scale tune: train.lr {result['lr']:.4g} was the best of {len(result['points'])} learning rates "
              f"for a width-{result['width']} proxy under muP\n"
              f"# ({result['n_layer']} layers, {result['steps']} steps of {result['tokens_per_step']:,} tokens, "
              f"{result['schedule']} schedule, {result['optimizer']}). Use it with: lmforge train --config "
              f"{path.name} --set model.n_embd=WIDTH\n")
    atomic_write_text(path, header + yaml.safe_dump(result["overlay"], sort_keys=False))
    return path


def read_overlay(path: Path) -> dict:
    """tuned.yaml's keys, checked to be an overlay `scale tune` writes."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LmforgeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    lr = (data or {}).get("train", {}).get("lr") if isinstance(data, dict) else None
    if not isinstance(lr, (int, float)) or (data.get("model") or {}).get("parametrization") != "mup":
        raise LmforgeError(f"{path} is not an overlay of lmforge scale tune (model.parametrization: mup and "
                           "train.lr); run lmforge scale tune again or remove it")
    return data


def sweep_overlay(sweep_dir: str | Path | None) -> tuple[Path, dict] | None:
    """SWEEP/tune/tuned.yaml and its keys, when a tune was written into the sweep folder."""
    if sweep_dir is None or not SweepDir(sweep_dir).tuned_path.is_file():
        return None
    path = SweepDir(sweep_dir).tuned_path
    return path, read_overlay(path)


def sweep_proxy(cfg: Config, sweep_dir: str | Path, width: int, log: Callable[[str], None]) -> Config:
    """A sweep's config for its tune: the family's model at `width` (for a width knob: scale.depth
    layers of scale.head_dim heads), on the sweep's shared tokens."""
    from lmforge.scaling.runner import prepare_sweep_tokens

    if cfg.scale.knob == "width":
        cfg = size_config(cfg, width)
    return with_data(cfg, tokenized=str(prepare_sweep_tokens(cfg, Path(sweep_dir), log).resolve()))


def apply_to_sweep(sweep_dir: str | Path, log: Callable[[str], None]) -> None:
    """Before `scale run`: a SWEEP/tune/tuned.yaml the sweep was not planned with becomes its config
    (each run's lr by the design's rule under it, in sweep.yaml) while no run has started; after that
    it is refused, since one sweep's points must share their parameterisation."""
    found = sweep_overlay(sweep_dir)
    if found is None:
        return
    path, tuned = found
    sweep = SweepDir(sweep_dir)
    cfg, data = sweep.load()
    tuned_cfg = with_overlay(cfg, tuned)
    if tuned_cfg.to_dict() == cfg.to_dict():
        log(f"sweep: trained with {path} (lmforge scale tune): {describe(tuned)}")
        return
    from lmforge.scaling.runner import sweep_status

    if any(row["state"] != "pending" for row in sweep_status(sweep_dir)):
        raise LmforgeError(f"scale run: {path} ({describe(tuned)}) differs from the config this sweep's runs started "
                           f"with; plan a new sweep to use it (lmforge scale plan --out NEW, with it in NEW/tune/), or "
                           f"remove {sweep.tune_dir}")
    runs = [{**run, "lr": size_config(tuned_cfg, run["knob"]).train.lr} for run in data["runs"]]
    sweep.rewrite(tuned_cfg, {**data, "runs": runs})
    log(f"sweep: using {path} (lmforge scale tune): {describe(tuned)}; {sweep.sweep_file} updated")


def with_overlay(cfg: Config, tuned: dict) -> Config:
    """`cfg` with tuned.yaml's keys over it."""
    return config_from_dict(merge_dicts(cfg.to_dict(), tuned)).validate()


def describe(tuned: dict) -> str:
    """'muP, base width 64, train.lr 0.004': the overlay in a few words, for the screen."""
    return f"muP, base width {tuned['model']['mup_base_width']}, train.lr {tuned['train']['lr']:.4g}"


def plot(result: dict, path: Path) -> Path:
    """Final validation loss against lr, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [p for p in result["points"] if p["loss"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([p["lr"] for p in done], [p["loss"] for p in done], marker="o", label=f"width {result['width']}, muP")
    ax.plot([result["lr"]], [result["loss"]], marker="*", markersize=14, linestyle="none", label=f"chosen {result['lr']:.3g}")
    ax.set(xscale="log", xlabel="train.lr", ylabel="final validation loss (nats/token)",
           title=f"lr tune: {result['steps']} steps, {len(result['points'])} learning rates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
