"""Faults, measured: random SIGKILLs of training and of prepare, each resumed, the final outputs
compared with an uninterrupted run; a corrupted newest checkpoint; two writers on one folder;
random bytes and values at the readers and the config loader.

    OMP_NUM_THREADS=1 python benchmarks/faults.py --train-kills 20 --prepare-kills 20 [--seed 0]

Prints kills survived, bit-identical results, documents lost (must be 0) and fuzz cases tried.
Tiny shapes, so the whole run takes minutes on one core; every run is a real `lmforge` subprocess.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmforge.config import load_config
from lmforge.data.sources import SourceStats, iter_documents
from lmforge.errors import LmforgeError
from lmforge.run_dir import RunDir

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN_SETS = {"tokenizer.vocab_size": 512, "tokenizer.train_bytes": 0, "data.val_fraction": 0.1, "model.n_layer": 2,
              "model.n_head": 2, "model.n_embd": 32, "model.seq_len": 32, "train.batch_size": 4, "train.warmup_steps": 2,
              "train.eval_interval": 10, "train.eval_tokens": 1024, "train.final_eval_tokens": 2048,
              "train.checkpoint_interval": 3, "train.progress": False, "train.threads": 1, "train.log_interval": 1}
STEPS = 30


def lmforge_args(*args) -> list[str]:
    return [sys.executable, "-m", "lmforge", *map(str, args)]


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def train_args(tokens: Path, out: Path, resume: bool) -> list[str]:
    return lmforge_args("train", "--data", tokens, "--out", out, "--max-steps", STEPS, *sets(TRAIN_SETS),
                        *(["--resume"] if resume else []))


def footprint(folder: Path) -> set:
    """Every file under the folder with its size and time: a change means the process is at work."""
    if not folder.is_dir():
        return set()
    return {(str(p), st.st_size, st.st_mtime_ns) for p in folder.rglob("*") if p.is_file() and (st := p.stat())}


def wait_for_work(proc: subprocess.Popen, folder: Path, before: set) -> float:
    """Poll until the process writes into its folder (its imports done) or exits; returns when that was."""
    while proc.poll() is None and footprint(folder) == before:
        time.sleep(0.02)
    return time.perf_counter()


def timed(args: list[str], folder: Path, progress, last: int) -> tuple[float, float, float]:
    """An uninterrupted run: (seconds in all, seconds from its first write in the folder to its exit,
    seconds from progress() 1 to `last`, per unit)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, text=True)
    working = wait_for_work(proc, folder, footprint(folder))
    first = end = None
    while proc.poll() is None:
        n = progress()
        first = first or (n >= 1 and time.perf_counter()) or None
        end = end or (n >= last and time.perf_counter()) or None
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: {proc.stderr.read().strip()[-300:]}")
    per_unit = (end - first) / max(1, last - 1) if first and end else 0.0
    return time.perf_counter() - t0, time.perf_counter() - working, per_unit


def at_random_time(folder: Path, work_s: float):
    """A moment drawn from the uninterrupted run's working time, counted from the process's first
    write (startup, seconds of imports on a busy machine, would otherwise take most kills)."""
    def wait(proc: subprocess.Popen, rng: random.Random, kills_left: int) -> None:
        wait_for_work(proc, folder, footprint(folder))
        time.sleep(rng.uniform(0, work_s))
    return wait


def at_random_step(run: Path, last: int, step_s: float):
    """A moment inside a random step after the checkpoint it resumes from, within this kill's share of
    the steps left, so that a run's kills spread over its training (drawn as that checkpoint's step:
    while it loads; as `last`: in the final evaluation and summary). Waits until this process has
    logged the step, then part of a step (every few steps that is a checkpoint write)."""
    def wait(proc: subprocess.Popen, rng: random.Random, kills_left: int) -> None:
        started = time.time()
        checkpoint = RunDir(run).latest_checkpoint(report=lambda _: None)
        start = checkpoint.step if checkpoint else 0
        target = rng.randint(start, start + (last - start) // kills_left)
        # records left by the killed process count only once this one has rewritten the file
        while proc.poll() is None and not (written_since(run / "metrics.jsonl", started)
                                           and loss_records(run) >= target):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, step_s))
    return wait


def written_since(path: Path, t: float) -> bool:
    try:
        return path.stat().st_mtime >= t
    except FileNotFoundError:
        return False


def run_to_end(args_for, done, progress, rng: random.Random, kills: int, moment) -> tuple[int, int, list]:
    """Start, SIGKILL at moment(), restart, `kills` times; then let it finish.
    Returns (kills delivered, failed restarts, progress() at each kill: where the kills landed)."""
    delivered = failures = 0
    landed = []
    while delivered < kills:
        proc = subprocess.Popen(args_for(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, text=True)
        moment(proc, rng, kills - delivered)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            delivered += 1
            proc.wait()
            landed.append(progress())
        proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            failures += 1
            print(f"  restart failed (rc {proc.returncode}): {proc.stderr.read().strip()[-300:]}")
        if done() and proc.returncode == 0:
            break
    final = subprocess.run(args_for(), capture_output=True, text=True, env=ENV) if not done() else None
    if final is not None and final.returncode != 0:
        failures += 1
        print(f"  final run failed: {final.stderr.strip()[-300:]}")
    return delivered, failures, landed


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(RunDir(run).latest_checkpoint().model_file))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def loss_records(run: Path) -> int:
    """How far a killed run got: the loss records it left (a kill before the first step leaves 0)."""
    path = run / "metrics.jsonl"
    return sum('"loss"' in line for line in path.read_text().splitlines()) if path.is_file() else 0


def training_kills(root: Path, tokens: Path, kills: int, per_run: int, rng: random.Random) -> dict:
    ref = root / "train-ref"
    one_run, work_s, step_s = timed(train_args(tokens, ref, False), ref, lambda: loss_records(ref), STEPS)
    runs = delivered = identical = failures = 0
    while delivered < kills:  # a run that finished before its kills came: the rest go to a new run
        out = root / f"train-killed-{runs}"
        n = min(per_run, kills - delivered)
        got, failed, landed = run_to_end(
            lambda: train_args(tokens, out, RunDir(out).latest_checkpoint(report=lambda _: None) is not None),
            lambda: RunDir(out).is_complete, lambda: loss_records(out), rng, n,
            at_random_step(out, STEPS, step_s))
        delivered, failures, runs = delivered + got, failures + failed, runs + 1
        same = same_weights(ref, out)
        metrics = [r["step"] for r in RunDir(out).metrics() if "loss" in r]
        identical += same and metrics == list(range(1, STEPS + 1))
        print(f"  training run {runs - 1}: {got} kills (after loss records {landed}), weights {'bit-identical' if same else 'DIFFER'}, "
              f"loss records {'one per step' if metrics == list(range(1, STEPS + 1)) else 'WRONG'}", flush=True)
    return {"kills": delivered, "failures": failures, "runs": runs, "identical": identical,
            "uninterrupted_s": round(one_run, 1), "working_s": round(work_s, 1), "step_s": round(step_s, 3)}


def corpus(root: Path) -> Path:
    from pydoc_data.topics import topics

    folder = root / "corpus"
    folder.mkdir()
    for i, name in enumerate(sorted(topics)):
        (folder / f"doc{i:03d}.txt").write_text(topics[name])
    return folder


def prepare_args(src: Path, out: Path) -> list[str]:
    return lmforge_args("prepare", src, "--out", out, "--workers", 2, "--no-progress",
                        *sets({"prepare.shard_documents": 20, "prepare.filters": "[gopher_quality,gopher_repetition,c4]"}))


def input_ids(src: Path) -> list[str]:
    """One document per .txt file, its id the file's path: what prepare must account for."""
    return sorted(str(p) for p in src.glob("*.txt"))


def ids_in(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            ids += [json.loads(line)["id"] for line in f if line.strip()]
    return ids


def unaccounted(src: Path, out: Path) -> tuple[int, int]:
    """(input documents in neither clean/ nor rejected/, documents in both or twice): both must be 0."""
    seen = ids_in(out / "clean") + ids_in(out / "rejected")
    return len(set(input_ids(src)) - set(seen)), len(seen) - len(set(seen))


def shards_written(out: Path) -> int:
    return len(list((out / "work").glob("shard_*.written"))) if (out / "work").is_dir() else 0


def clean_documents(out: Path) -> list[tuple[str, str]]:
    docs = []
    for path in sorted((out / "clean").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            docs += [(r["id"], r["text"]) for r in map(json.loads, f)]
    return docs


def prepare_kills(root: Path, src: Path, kills: int, per_run: int, rng: random.Random) -> dict:
    ref = root / "prep-ref"
    one_run, work_s, _ = timed(prepare_args(src, ref), ref, lambda: shards_written(ref), 1)
    expected = clean_documents(ref)
    ref_lost, ref_twice = unaccounted(src, ref)
    print(f"  uninterrupted: {len(input_ids(src))} documents in, {len(expected)} kept, {ref_lost} unaccounted, "
          f"{ref_twice} twice", flush=True)
    runs = delivered = identical = failures = twice = 0
    lost = ref_lost
    while delivered < kills:
        out = root / f"prep-killed-{runs}"
        n = min(per_run, kills - delivered)
        got, failed, landed = run_to_end(lambda: prepare_args(src, out), lambda: (out / "report.json").is_file(),
                                         lambda: shards_written(out), rng, n, at_random_time(out, work_s))
        delivered, failures, runs = delivered + got, failures + failed, runs + 1
        docs = clean_documents(out)
        run_lost, run_twice = unaccounted(src, out)
        lost, twice = lost + run_lost, twice + run_twice
        identical += docs == expected
        print(f"  prepare run {runs - 1}: {got} kills (after shards written {landed}), {len(docs)} documents kept "
              f"({'identical' if docs == expected else 'DIFFER'}), {run_lost} of the input unaccounted for, "
              f"{run_twice} twice", flush=True)
    return {"kills": delivered, "failures": failures, "runs": runs, "identical": identical, "lost": lost, "twice": twice,
            "documents": len(expected), "uninterrupted_s": round(one_run, 1),
            "working_s": round(work_s, 1)}


def corrupted_checkpoint(root: Path) -> bool:
    """Truncate the newest checkpoint of the reference run: eval must fall back, one warning, rc 0."""
    run = RunDir(root / "train-ref")
    newest = run.latest_checkpoint()
    data = newest.model_file.read_bytes()
    newest.model_file.write_bytes(data[: len(data) // 2])
    r = subprocess.run(lmforge_args("eval", run.path), capture_output=True, text=True, env=ENV)
    ok = r.returncode == 0 and "is unusable" in r.stderr and "Traceback" not in r.stderr
    newest.model_file.write_bytes(data)
    print(f"  corrupted newest checkpoint: eval rc {r.returncode}, fell back {'yes' if ok else 'NO'}")
    return ok


def concurrent_writers(root: Path, tokens: Path) -> bool:
    out = root / "train-twice"
    procs = [subprocess.Popen(train_args(tokens, out, False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=ENV) for _ in range(2)]
    errs = [p.communicate()[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    refused = next((e for p, e in zip(procs, errs) if p.returncode == 2), "")
    ok = codes == [0, 2] and "in use by pid" in refused and same_weights(root / "train-ref", out)
    print(f"  two writers on one folder: exit codes {codes}, the second refused "
          f"({refused.strip()[:90]}...), the first's weights {'identical' if ok else 'WRONG'}")
    return ok


def fuzz(root: Path, cases: int, rng: random.Random) -> tuple[int, int]:
    """Random bytes as every readable format, random config files: (tried, tracebacks)."""
    import zstandard

    tracebacks = 0
    formats = [".txt", ".txt.gz", ".txt.zst", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".warc", ".md"]
    for i in range(cases):
        folder = root / "fuzz" / str(i)
        folder.mkdir(parents=True)
        payload = rng.randbytes(rng.randint(0, 2000))
        kind = rng.choice(formats)
        if kind.endswith(".gz") and rng.random() < 0.5:
            payload = gzip.compress(payload)[: rng.randint(1, 200)]
        if kind.endswith(".zst") and rng.random() < 0.5:
            payload = zstandard.compress(payload)[: rng.randint(1, 200)]
        (folder / f"f{kind}").write_bytes(payload)
        (folder / "c.yaml").write_bytes(payload if rng.random() < 0.5 else rng.choice(
            [b"train: 5\n", b"model:\n  n_layer: -3\n", b"train: {lr: .nan}\n", b"{", b"- 1\n- 2\n"]))
        for job in (lambda: list(iter_documents([str(folder / f"f{kind}")], SourceStats())),
                    lambda: load_config("tiny", folder / "c.yaml")):
            try:
                job()
            except LmforgeError:
                pass
            except Exception as e:  # noqa: BLE001 - what the benchmark counts
                tracebacks += 1
                print(f"  fuzz case {i} ({kind}): {type(e).__name__}: {e}")
    return cases * 2, tracebacks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-kills", type=int, default=20)
    ap.add_argument("--prepare-kills", type=int, default=20)
    ap.add_argument("--kills-per-run", type=int, default=5)
    ap.add_argument("--fuzz", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="work in this folder and keep it")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="lmforge-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    src = corpus(root)
    tokens = root / "tokens"
    subprocess.run(lmforge_args("tokenize", src, "--out", tokens, *sets({k: v for k, v in TRAIN_SETS.items()
                                                                          if k.startswith(("tokenizer.", "data."))})),
                   check=True, capture_output=True, env=ENV)
    print(f"training: {STEPS} steps, checkpoint every {TRAIN_SETS['train.checkpoint_interval']}, "
          f"{args.train_kills} SIGKILLs, each inside a random step of those left")
    t = training_kills(root, tokens, args.train_kills, args.kills_per_run, rng)
    print(f"prepare: {args.prepare_kills} SIGKILLs at random moments")
    p = prepare_kills(root, src, args.prepare_kills, args.kills_per_run, rng)
    print("scenarios:")
    corrupted = corrupted_checkpoint(root)
    concurrent = concurrent_writers(root, tokens)
    tried, tracebacks = fuzz(root, args.fuzz, rng)
    print(f"\nkills survived: {t['kills'] - t['failures']}/{t['kills']} training "
          f"(uninterrupted run {t['uninterrupted_s']} s, {t['step_s']} s a step with checkpoints), {p['kills'] - p['failures']}/{p['kills']} prepare "
          f"(uninterrupted {p['uninterrupted_s']} s, {p['working_s']} s after startup)")
    print(f"bit-identical results: {t['identical']}/{t['runs']} training runs (weights and one loss record per step), "
          f"{p['identical']}/{p['runs']} prepare outputs ({p['documents']} documents each)")
    print(f"documents lost: {p['lost']} (input documents in neither clean/ nor rejected/), "
          f"written twice: {p['twice']}")
    print(f"corrupted newest checkpoint survived: {corrupted}; concurrent writer refused, first intact: {concurrent}")
    print(f"fuzz cases tried: {tried}, tracebacks: {tracebacks}")
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
