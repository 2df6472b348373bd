"""Running a sweep: every run an ordinary lmforge run folder, all on one tokenized folder
(the sweep folder's layout: lmforge/folders/sweep.py). A sweep run's folder holds, beside a run's
usual files, train.log (what it printed) and, instead of summary.json, diverged.json when the loss
went non-finite or error.txt when it failed.

A run whose summary.json says complete is skipped; one with a checkpoint resumes from it; runs go
longest first to `parallel` processes (spawned, each calling lmforge.training.trainer.train, the
function `lmforge train` calls) with the machine's threads split between them.

With scale.cooldowns=branched each size's trunk goes first (`grow_trunk`): it stops at each of its
runs' branch points in turn and branches the run off there (a checkpoint copied into the run's
folder); then the runs train from those checkpoints as resumed runs do. A killed trunk resumes from
its checkpoint, and a run already branched is not branched again.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shlex
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Callable

from lmforge.config import Config, config_from_dict, with_data
from lmforge.errors import Interrupted, LmforgeError, TrainingDiverged
from lmforge.figures import plural
from lmforge.folders.run import TRAIN_LOG, RunDir, Summary
from lmforge.folders.sweep import RUN_TOKENS, RUNS, VERIFY, SweepDir, run_name
from lmforge.folders.tokenized import is_tokenized, train_tokens
from lmforge.processes import end_with_parent
from lmforge.scaling.design import available_cpus, size_config


def run_config(cfg: Config, sweep_dir: Path, run: dict, folder: str = RUNS, threads: int = 0,
               device: str | None = None) -> Config:
    """The full lmforge config of one run: the base config, the run's shape, lr, length and seed
    (a repeat differs from its original only there), on `device` when given (else the sweep's)."""
    sized = size_config(cfg, run["knob"])
    model = replace(sized.model, n_layer=run["n_layer"], n_embd=run["n_embd"], n_head=run["n_head"])
    train = replace(sized.train, lr=run["lr"], max_steps=run["steps"], warmup_steps=run["warmup_steps"],
                    progress=False, threads=threads or sized.train.threads, seed=run.get("seed", sized.train.seed),
                    device=device or sized.train.device)
    shaped = replace(sized, model=model, train=train,
                     run=replace(sized.run, out=str(SweepDir(sweep_dir).run_dir(run["name"], folder))))
    return with_data(shaped, tokenized=RUN_TOKENS)


def run_state(run_dir: Path) -> str:
    """done | diverged | failed | partial (a checkpoint to resume) | pending."""
    run = RunDir(run_dir)
    if run.is_complete:
        return "done"
    if run.diverged_path.is_file():
        return "diverged"
    if run.error_path.is_file():
        return "failed"
    return "partial" if run.path.is_dir() and run.latest_checkpoint() is not None else "pending"


def diverged_reason(run_dir: Path) -> str:
    return RunDir(run_dir).diverged_reason()


def train_run(cfg: Config, log_path: Path | None = None, branches: list[Config] | None = None) -> dict:
    """Train (or resume) one run, recording divergence in diverged.json instead of failing the sweep;
    with `branches`, the run is their trunk (`grow_trunk`), and its divergence is theirs too."""
    from lmforge.training.trainer import train

    run = RunDir(cfg.run.out)
    run.path.mkdir(parents=True, exist_ok=True)
    run.error_path.unlink(missing_ok=True)
    logf = open(log_path, "a") if log_path else None

    def log(msg: str) -> None:
        if logf:
            logf.write(msg + "\n")
            logf.flush()

    try:
        if branches is not None:
            return grow_trunk(cfg, branches, log if logf else print)
        return train(cfg, resume=run.latest_checkpoint() is not None, log=log if logf else print)
    except TrainingDiverged as e:
        run.write_diverged(str(e))
        for b in branches or []:
            if not is_branched(Path(b.run.out)):
                RunDir(b.run.out).path.mkdir(parents=True, exist_ok=True)
                RunDir(b.run.out).write_diverged(f"its trunk {run.path.name} diverged: {e}")
        log(f"diverged: {e}")
        return {"complete": False, "diverged": str(e)}
    finally:
        if logf:
            logf.close()


def is_branched(run_dir: Path) -> bool:
    """Whether a run of a branched sweep is off its trunk: it holds a checkpoint, or has ended."""
    run = RunDir(run_dir)
    return run_state(run_dir) in ("done", "diverged") or (run.path.is_dir() and run.latest_checkpoint() is not None)


def grow_trunk(trunk_cfg: Config, branches: list[Config], log: Callable[[str], None]) -> dict:
    """Train the trunk to each branch's decay start in turn (WSD: up to there the branch's run and
    the trunk are one run) and copy that checkpoint into the branch's folder, its schedule laid out
    over the branch's steps; `branches` are the runs not yet branched. Stopped by a signal, the trunk
    has a checkpoint to resume from, as any run."""
    from lmforge.training.checkpoint import branch_checkpoint
    from lmforge.training.optim import wsd_decay_start
    from lmforge.training.trainer import train

    trunk = RunDir(trunk_cfg.run.out)
    tc = trunk_cfg.train
    result: dict = {}
    for bcfg in sorted(branches, key=lambda b: b.train.max_steps):
        if result.get("interrupted"):  # a signal came during the last step before a branch point: stop there
            return result
        branch = RunDir(bcfg.run.out)
        step = wsd_decay_start(bcfg.train.max_steps, tc.decay_fraction)
        ckpt = trunk.latest_checkpoint() if trunk.path.is_dir() else None
        if ckpt is None or ckpt.step < step:
            result = train(trunk_cfg, resume=ckpt is not None, stop_at=step, log=log)
            if result["step"] < step:  # stopped by a signal, after a checkpoint
                return result
            ckpt = trunk.latest_checkpoint()
        elif ckpt.step > step:  # its branch folder was deleted: the trunk may still hold that step
            ckpt = next((c for c in trunk.checkpoints() if c.step == step), None)
            if ckpt is None:
                raise LmforgeError(f"{trunk} is past step {step}, where {branch.path.name} branches off, and no longer "
                                   f"holds that checkpoint: delete {trunk} to train the trunk again")
        branch.path.mkdir(parents=True, exist_ok=True)
        if trunk.metrics_path.is_file():  # the branch's curve begins with the trunk's (cut at its branch point)
            shutil.copyfile(trunk.metrics_path, branch.metrics_path)
        branch_checkpoint(ckpt, branch, bcfg.train.max_steps, bcfg.to_dict())
        log(f"trunk: {branch.path.name} branched off at step {step}")
    return {"complete": True, "step": trunk.latest_checkpoint().step if trunk.latest_checkpoint() else 0}


def _worker_init(parent: int) -> None:
    """Workers ignore Ctrl-C between runs; inside a run, train's own handler saves a checkpoint and stops.
    On Linux a worker also gets SIGTERM when the sweep process dies, even by SIGKILL (which it cannot
    catch), so that no orphan keeps training; SIGTERM stops a run as Ctrl-C does."""
    import signal

    global _PARENT
    _PARENT = parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent, signal.SIGTERM)


_PARENT: int | None = None  # the sweep process, in a worker


def _orphaned() -> bool:
    return _PARENT is not None and os.getppid() != _PARENT


def _child(cfg_dict: dict, log_path: str, branches: list[dict] | None = None) -> None:
    """One run (or a trunk and the `branches` it grows) in a worker process; a failure leaves error.txt
    for the parent to report. A worker whose sweep process has died exits instead of taking the next
    queued run (the death signal stopped the current run; the runs it had already been handed would
    otherwise go on training)."""
    if _orphaned():
        os._exit(1)
    cfg = config_from_dict(cfg_dict)
    try:
        train_run(cfg, Path(log_path), None if branches is None else [config_from_dict(b) for b in branches])
    except Exception as e:  # reported by the parent, which owns the terminal
        RunDir(cfg.run.out).error_path.write_text(f"{type(e).__name__}: {e}")
    finally:
        # a run stopped by the parent's death returns here; the pool would then wait forever for a task
        # from the dead parent (holding multiprocessing's resource tracker alive too), so leave instead
        if _orphaned():
            os._exit(1)


def sweep_status(sweep_dir: str | Path) -> list[dict]:
    """One row per run: state, steps done of steps, FLOPs, and its validation loss when finished."""
    folder = SweepDir(sweep_dir)
    _, sweep = folder.load()
    rows = []
    for run in sweep["runs"]:
        run_dir = RunDir(folder.run_dir(run["name"]))
        state = run_state(run_dir.path)
        row = {"name": run["name"], "state": state, "steps": run["steps"], "params": run["params"],
               "tokens": run["tokens"], "flops": run["flops_exact"],
               "step": run["steps"] if state == "done" else run_dir.steps_done()}
        if state == "done":
            s = run_dir.summary()
            row.update(val_loss=s.val_loss, unigram_val_loss=s.unigram_val_loss, train_time_s=s.train_time_s)
        rows.append(row)
    return rows


def _progress_line(rows: list[dict], running: list[str], t0: float, flops_at_start: float,
                   trunks: list[str] = ()) -> str:
    total = sum(r["flops"] for r in rows)
    done = sum(r["flops"] * min(1.0, r["step"] / r["steps"]) for r in rows)
    n_done = sum(r["state"] == "done" for r in rows)
    n_div = sum(r["state"] == "diverged" for r in rows)
    by_name = {r["name"]: r for r in rows}
    now = [f"{n} {by_name[n]['step']}/{by_name[n]['steps']}" for n in running if n in by_name] + list(trunks)
    elapsed = time.time() - t0
    rate = (done - flops_at_start) / elapsed if elapsed > 0 else 0.0
    eta = f", ~{_minutes((total - done) / rate)} left" if rate > 0 and done < total else ""
    div = f" ({n_div} diverged)" if n_div else ""
    return (f"sweep: {n_done}/{len(rows)} done{div}, {len(now)} running [{', '.join(now)}], "
            f"{100 * done / total:.0f}% of FLOPs, {_minutes(elapsed)} elapsed{eta}")


def _minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def prepare_sweep_tokens(cfg: Config, sweep_dir: Path, log: Callable[[str], None]) -> Path:
    """The tokens every run shares. Once a run has started they are kept as they are, even where the
    sources changed since: the points of one sweep are measured on the same tokens."""
    from lmforge.tokenizing import is_complete, tokenize_corpus

    folder = SweepDir(sweep_dir).tokens_dir
    if is_tokenized(folder) and any(row["state"] != "pending" for row in sweep_status(sweep_dir)):
        if not is_complete(folder, cfg.data, cfg.tokenizer, [sweep_dir]):
            log(f"tokenize: {folder} holds the tokens this sweep's runs were trained on; the sweep keeps them")
        return folder
    tokenize_corpus(cfg.data, cfg.tokenizer, folder, log=log, exclude=[sweep_dir],  # a sweep folder holds no input
                    workers=cfg.prepare.workers, executor=cfg.prepare.executor)
    return folder


def warn_repeats(sweep_dir: Path, runs: list[dict], log: Callable[[str], None]) -> None:
    """Say which runs see their training tokens more than once: a law fitted on unique tokens does
    not hold for repeated ones (Muennighoff et al. 2023), so those points measure something else."""
    corpus = train_tokens(SweepDir(sweep_dir).tokens_dir)
    over = [r for r in runs if r["tokens"] > corpus]
    if over:
        worst = max(over, key=lambda r: r["tokens"])
        log(f"warning: {plural(len(over), 'run')} {'trains' if len(over) == 1 else 'train'} on more tokens than the corpus's {corpus:,} ({worst['name']}: "
            f"{worst['tokens'] / corpus:.1f} epochs); repeated tokens are not the law's unique ones: use a larger "
            f"corpus (data.sources, data.max_bytes) or a smaller --max-run-flops")


def run_sweep(sweep_dir: str | Path, parallel: int | None = None, threads: int | None = None,
              log: Callable[[str], None] = print, interval: float = 30.0, device: str | None = None) -> list[dict]:
    """Train every run of the sweep not yet complete (on `device` when given: cpu, cuda, cuda:N;
    else the sweep's train.device); returns the status rows at the end."""
    sweep_dir = Path(sweep_dir)
    cfg, sweep = SweepDir(sweep_dir).load()
    parallel = parallel or cfg.scale.parallel
    if parallel <= 0 or (threads is not None and threads <= 0):
        raise LmforgeError("scale run: --parallel and --threads must be > 0")
    threads = threads or cfg.train.threads or max(1, available_cpus() // parallel)
    prepare_sweep_tokens(cfg, sweep_dir, log)
    warn_repeats(sweep_dir, sweep["runs"], log)
    rows = sweep_status(sweep_dir)
    todo = [run for run, row in zip(sweep["runs"], rows) if row["state"] in ("pending", "partial", "failed")]
    skipped = [r["name"] for r in rows if r["state"] in ("done", "diverged")]
    # branched cooldowns: a run not yet off its trunk waits for it; the trunk trains first
    folder = SweepDir(sweep_dir)
    waiting = {t["name"]: [r for r in todo if r["name"] in t["branches"] and not is_branched(folder.run_dir(r["name"]))]
               for t in sweep.get("trunks") or []}
    trunks = [t for t in sweep.get("trunks") or [] if waiting[t["name"]]]
    held = {r["name"] for ws in waiting.values() for r in ws}
    waiting_stop = {t["name"]: t["stop"] for t in trunks}
    log(f"sweep: {plural(len(sweep['runs']), 'run')}, {len(skipped)} already finished (skipped), {len(todo)} to train "
        + (f"({len(held)} of them branched off {plural(len(trunks), 'trunk')} first) " if trunks else "")
        + f"on {plural(parallel, 'process', 'processes')} x {plural(threads, 'thread')}")
    todo = [r for r in todo if r["name"] not in held]
    todo.sort(key=lambda r: -r["flops_exact"])  # longest first packs the processes best
    trunks.sort(key=lambda t: -t["flops_exact"])
    failures: list[str] = []
    stopped: list[str] = []  # runs a signal to their worker stopped part-way
    t0, last = time.time(), time.time()
    flops_at_start = sum(r["flops"] * min(1.0, r["step"] / r["steps"]) for r in rows)
    # Worker processes live for the whole sweep: importing torch costs seconds per process, more
    # than a tiny run's training.
    pool = ProcessPoolExecutor(max_workers=min(parallel, max(1, len(todo) + len(held))),
                               mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),))
    active: dict = {}

    def submit(run: dict, branches: list[dict] | None = None) -> None:
        rcfg = run_config(cfg, sweep_dir, run, threads=threads, device=device)
        Path(rcfg.run.out).mkdir(parents=True, exist_ok=True)
        if run_state(Path(rcfg.run.out)) == "partial":
            step = RunDir(rcfg.run.out).steps_done()
            log(f"sweep: {run['name']} will " + (f"train its cooldown from step {step}, branched off {run['trunk']}"
                                                 if step == run.get("branch_step") else f"resume from step {step}"))
        grown = None if branches is None else [run_config(cfg, sweep_dir, b, threads=threads, device=device).to_dict()
                                                for b in branches]
        fut = pool.submit(_child, rcfg.to_dict(), str(RunDir(rcfg.run.out).train_log_path), grown)
        active[fut] = run

    try:
        for trunk in trunks:
            submit(trunk, branches=waiting[trunk["name"]])
        for run in todo:
            submit(run)
        while active:
            finished, _ = wait(list(active), timeout=max(0.1, interval - (time.time() - last)),
                               return_when=FIRST_COMPLETED)
            for fut in finished:
                run = active.pop(fut)
                fut.result()
                name, run_dir = run["name"], SweepDir(sweep_dir).run_dir(run["name"])
                if name in waiting:  # a trunk: its branches train now, longest first
                    grown = [r for r in waiting[name] if is_branched(folder.run_dir(r["name"]))
                             and run_state(folder.run_dir(r["name"])) != "diverged"]
                    for branch in sorted(grown, key=lambda r: -r["flops_exact"]):
                        submit(branch)
                    if RunDir(run_dir).error_path.is_file():
                        failures.append(f"{name}: {RunDir(run_dir).error_path.read_text().strip()}")
                        log(f"sweep: trunk {failures[-1]}")
                    elif RunDir(run_dir).diverged_path.is_file():
                        log(f"sweep: trunk {name} diverged ({diverged_reason(run_dir)}); so did its runs")
                    elif len(grown) < len(waiting[name]):
                        stopped.append(name)
                        log(f"sweep: trunk {name} stopped at step {RunDir(run_dir).steps_done()}; rerun lmforge "
                            f"scale run to continue it")
                    else:
                        log(f"sweep: trunk {name} done, {plural(len(grown), 'run')} branched off it")
                    continue
                state = run_state(run_dir)
                if state == "failed":
                    failures.append(f"{name}: {RunDir(run_dir).error_path.read_text().strip()}")
                    log(f"sweep: {name} failed: {failures[-1]}")
                elif state == "diverged":
                    log(f"sweep: {name} diverged ({diverged_reason(run_dir)})")
                elif state == "done":
                    s = RunDir(run_dir).summary()
                    log(f"sweep: {name} done, val loss {s.val_loss:.4f} in {s.train_time_s:.0f}s")
                else:
                    stopped.append(name)
                    log(f"sweep: {name} stopped at step {RunDir(run_dir).steps_done()}; rerun lmforge scale run to continue it")
            if time.time() - last >= interval and active:
                last = time.time()
                current = sweep_status(sweep_dir)
                # a run waiting at its branch point has not started; a trunk in work shows its step of its stop
                branch_at = {r["name"]: r.get("branch_step") for r in sweep["runs"]}
                running = [r["name"] for r in current if 0 < r["step"] < r["steps"] and r["state"] != "done"
                           and r["step"] != branch_at[r["name"]]]
                trunk_steps = {t["name"]: RunDir(folder.run_dir(t["name"])).steps_done() for t in active.values()
                               if t["name"] in waiting}
                growing = [f"{name} {step}/{waiting_stop[name]}" for name, step in trunk_steps.items() if step]
                log(_progress_line(current, running, t0, flops_at_start, growing))
    except KeyboardInterrupt:
        log("sweep: interrupted; running runs save a checkpoint and stop (rerun lmforge scale run to continue)")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    rows = sweep_status(sweep_dir)
    log(_progress_line(rows, [], t0, flops_at_start))
    if failures:
        raise LmforgeError(f"{plural(len(failures), 'run')} failed: {failures[0]} (details in SWEEP/{RUNS}/<name>/{TRAIN_LOG})")
    if stopped:
        raise Interrupted(f"sweep: {plural(len(stopped), 'run')} stopped part-way ({', '.join(stopped)}); continue with: "
                          f"lmforge scale run {shlex.quote(str(sweep_dir))}")
    return rows


def nearest_knob(cfg: Config, params: float, vocab: int) -> int:
    """The knob value whose model is closest to `params` parameters (in log), within the family's rules."""
    from lmforge.scaling.design import make_size

    step = cfg.scale.head_dim if cfg.scale.knob == "width" else 1
    lo = step
    best, best_gap = lo, math.inf
    value = lo
    while True:
        n = make_size(cfg, value, vocab).params
        gap = abs(math.log(n / params))
        if gap < best_gap:
            best, best_gap = value, gap
        if n > params:
            return best
        value += step
        if value > 1_000_000:
            raise LmforgeError(f"--params {params:.3g}: no model of this family is that large")


def train_target(sweep_dir: str | Path, params: float, tokens: float, threads: int | None = None,
                 log: Callable[[str], None] = print, device: str | None = None) -> Summary:
    """Train the family's model nearest `params` on `tokens` tokens into SWEEP/verify/<name>/
    (same data, tokenizer, schedule rule and evaluation as the sweep); resumable like a sweep run."""
    from lmforge.scaling.design import make_size, warmup_steps

    sweep_dir = Path(sweep_dir)
    cfg, sweep = SweepDir(sweep_dir).load()
    vocab = sweep.get("vocab_size") or cfg.tokenizer.vocab_size
    knob = nearest_knob(cfg, params, vocab)
    size = make_size(cfg, knob, vocab)
    steps = max(1, round(tokens / cfg.tokens_per_step()))
    warmup = warmup_steps(cfg.scale, steps)
    run = {"name": run_name(cfg.scale.knob, knob, f"s{steps}"), "knob": knob, "n_layer": size.n_layer,
           "n_embd": size.n_embd, "n_head": size.n_head, "lr": size.lr, "steps": steps, "warmup_steps": warmup}
    prepare_sweep_tokens(cfg, sweep_dir, log)
    warn_repeats(sweep_dir, [{**run, "tokens": steps * cfg.tokens_per_step()}], log)
    rcfg = run_config(cfg, sweep_dir, run, folder=VERIFY, threads=threads or cfg.train.threads or available_cpus(),
                      device=device)
    run_dir = Path(rcfg.run.out)
    if run_state(run_dir) != "done":
        log(f"verify: training {run['name']} ({size.params:,} parameters, {steps * cfg.tokens_per_step():,} tokens, "
            f"{plural(steps, 'step')}) into {run_dir}")
        result = train_run(rcfg, RunDir(run_dir).train_log_path)
        if result.get("diverged"):
            raise LmforgeError(f"verify: the target run diverged: {result['diverged']}")
        if not result.get("complete"):  # a signal stopped it, after a checkpoint
            raise Interrupted(f"verify: {run['name']} stopped at step {result['step']}; rerun the same command "
                              f"to continue it")
    else:
        log(f"verify: {run_dir} is already trained")
    return RunDir(run_dir).summary()


def collect_points(sweep_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(params, tokens, flops = 6ND, loss) of every finished run; runs that diverged, ended no better
    than the unigram baseline or are not trained yet come back in the second list with the reason."""
    from lmforge.scaling.fitting import bad_point_reason

    folder = SweepDir(sweep_dir)
    _, sweep = folder.load()
    points, excluded = [], []
    for run in sweep["runs"]:
        run_dir = folder.run_dir(run["name"])
        state = run_state(run_dir)
        if state == "diverged":
            excluded.append({"name": run["name"], "reason": diverged_reason(run_dir)})
            continue
        if state != "done":
            excluded.append({"name": run["name"], "reason": f"not trained ({state}): run lmforge scale run"})
            continue
        s = RunDir(run_dir).summary()
        point = {"name": run["name"], "params": s.params, "tokens": s.tokens_trained,
                 "flops": 6 * s.params * s.tokens_trained, "loss": s.val_loss}
        reason = bad_point_reason(point, s.unigram_val_loss)
        (excluded.append({"name": run["name"], "reason": reason}) if reason else points.append(point))
    return points, excluded
