"""Faults, measured: random SIGKILLs of training and of prepare, each resumed, the final outputs
compared with an uninterrupted run; a corrupted newest checkpoint; two writers on one folder;
random bytes and values at the readers and the config loader; and what each command may touch:
existing --out folders, links, paths inside files, two tokenize at once, damaged tokenized folders,
a full disk (a small tmpfs; skipped with its reason where mount fails).

    OMP_NUM_THREADS=1 python benchmarks/faults.py --train-kills 20 --prepare-kills 20 [--seed 0]
    OMP_NUM_THREADS=1 python benchmarks/faults.py --only folders      # the folder classes alone, ~3 min

Prints kills survived, bit-identical results, documents lost (must be 0), fuzz cases tried, and per
folder class the cases with data loss, writes outside the named folder, tracebacks, silently wrong
results (all must be 0).
Tiny shapes, so the whole run takes minutes on one core; every run is a real `lmforge` subprocess.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file

from lmforge.config import load_config
from lmforge.data.sources import SourceStats, iter_documents
from lmforge.errors import LmforgeError
from lmforge.folders.run import RunDir, TrainRecord

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
        metrics = [r.step for r in RunDir(out).metrics() if isinstance(r, TrainRecord)]
        identical += same and metrics == list(range(1, STEPS + 1))
        print(f"  training run {runs - 1}: {got} kills (after loss records {landed}), weights {'bit-identical' if same else 'DIFFER'}, "
              f"loss records {'one per step' if metrics == list(range(1, STEPS + 1)) else 'WRONG'}", flush=True)
    return {"kills": delivered, "failures": failures, "runs": runs, "identical": identical,
            "uninterrupted_s": round(one_run, 1), "working_s": round(work_s, 1), "step_s": round(step_s, 3)}


def corpus(root: Path, name: str = "corpus", documents: int | None = None) -> Path:
    from pydoc_data.topics import topics

    folder = root / name
    folder.mkdir()
    for i, name in enumerate(sorted(topics)[:documents]):
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


# ---------------------------------------------------------------- folders: what a command may touch (issue 23)
#
# Each case is a real `lmforge` subprocess against a folder set up to tempt it, judged four ways:
#   data loss       a file of the user's (a sentinel) is gone or changed
#   writes outside  something changed outside the named folder: a link's target, the sources, the run
#   traceback       "Traceback" on stderr instead of one line
#   silently wrong  exit 0 where a refusal was due, or a wrong result (a count, a folder) with exit 0
# A case that finds nothing wrong finds nothing; the table counts cases, not files.

FOLDER_STEPS = 6
FOLDER_SETS = {**TRAIN_SETS, "train.checkpoint_interval": 3}
FOLDER_CLASSES = ("existing --out", "links", "paths in files", "concurrent tokenize", "damaged tokenized",
                  "disk full")


@dataclass
class Case:
    cls: str
    name: str
    args: list
    guard: list = field(default_factory=list)  # the user's files: each must stay as it is
    watch: list = field(default_factory=list)  # files and folders outside the named one: none may change
    refusal_due: bool = True


@dataclass
class Verdict:
    cls: str
    name: str
    rc: int
    data_loss: bool
    outside: bool
    traceback: bool
    wrong: bool
    said: str
    seconds: float = 0.0


def entry_state(path: Path):
    """What a path is, links not followed: a link's target, a file's hash, a folder, or None."""
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_file():
        return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return ("dir",) if path.is_dir() else None


def tree_state(*roots: Path) -> dict[str, tuple]:
    """Every entry under the roots (a link is an entry, never followed)."""
    state = {}
    for root in roots:
        state[str(root)] = entry_state(root)
        if root.is_dir() and not root.is_symlink():
            for folder, dirs, names in os.walk(root):
                for name in dirs + names:
                    path = Path(folder) / name
                    state[str(path)] = entry_state(path)
    return state


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:160] if lines else ""


def judge(case: Case, proc_rc: int, stderr: str, guarded: dict, watched: dict) -> Verdict:
    lost = any(entry_state(Path(p)) != before for p, before in guarded.items())
    outside = tree_state(*case.watch) != watched
    traceback = "Traceback" in stderr
    wrong = proc_rc == 0 and case.refusal_due
    return Verdict(case.cls, case.name, proc_rc, lost, outside, traceback, wrong, last_line(stderr))


def run_case(case: Case) -> Verdict:
    guarded = {str(p): entry_state(p) for p in case.guard}
    watched = tree_state(*case.watch)
    t0 = time.perf_counter()
    r = subprocess.run(lmforge_args(*case.args), capture_output=True, text=True, env=ENV, timeout=300)
    verdict = judge(case, r.returncode, r.stderr, guarded, watched)
    verdict.seconds = time.perf_counter() - t0
    return verdict


def user_folder(path: Path, *names: str) -> list[Path]:
    """A folder of the user's, with files under `names` (some of them names lmforge writes)."""
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text(f"the user's own {name}\n")
    return [path / name for name in names]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def check_call(*args) -> None:
    r = subprocess.run(lmforge_args(*args), capture_output=True, text=True, env=ENV, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"setup failed: lmforge {' '.join(map(str, args))}: {last_line(r.stderr)}")


@dataclass
class Ground:
    """What the cases start from: sources, a tokenized folder, a trained run with an export, a report
    and an inspect map, a prepared folder, and a folder standing for the rest of the disk."""

    root: Path
    src: Path
    tok: Path
    run: Path
    export: Path
    prep: Path
    outside: Path


TOKENIZE_SETS = {k: v for k, v in FOLDER_SETS.items() if k.startswith(("tokenizer.", "data."))}
PREPARE_FLAGS = ("--workers", 1, "--no-progress")
MAP_FLAGS = ("--top", 20, "--method", "pca")


def ground(root: Path) -> Ground:
    src = corpus(root, "src", documents=40)  # small: every case runs a command on it
    g = Ground(root, src, root / "tok", root / "run", root / "export", root / "prep", root / "outside")
    g.outside.mkdir()
    check_call("tokenize", src, "--out", g.tok, *sets(TOKENIZE_SETS))
    check_call("train", "--data", g.tok, "--out", g.run, "--max-steps", FOLDER_STEPS, *sets(FOLDER_SETS))
    check_call("export", g.run, g.export)
    check_call("report", g.run)
    check_call("inspect", "map", g.run, *MAP_FLAGS)
    check_call("prepare", src, "--out", g.prep, *PREPARE_FLAGS)
    return g


def existing_out_cases(g: Ground) -> list[Case]:
    """A non-empty folder that is not lmforge's, or the sources, or the run, named as --out: refused."""
    cls = "existing --out"
    inputs = files_under(g.src)
    cases = []
    for command, args, own in (("prepare", (g.src, "--out", "{}", *PREPARE_FLAGS), "report.json"),
                               ("tokenize", (g.src, "--out", "{}", *sets(TOKENIZE_SETS)), "meta.json"),
                               ("export", (g.run, "{}"), "config.json"),
                               ("inspect map", (g.run, *MAP_FLAGS, "--out", "{}"), "map-static.png")):
        folder = g.root / "foreign" / command.replace(" ", "-")
        mine = user_folder(folder, "notes.txt", own)
        cases.append(Case(cls, f"{command} into a non-empty foreign folder",
                          [*command.split(), *(folder if a == "{}" else a for a in args)], mine + inputs,
                          [g.src, g.run, g.outside]))
    # each of the cases below on a copy of its own: what they spoil must not spoil the next cases' ground
    for command, args in (("prepare", PREPARE_FLAGS), ("tokenize", sets(TOKENIZE_SETS))):
        src = shutil.copytree(g.src, g.root / "sources" / command)
        cases.append(Case(cls, f"{command} --out = the sources", [command, src, "--out", src, *args],
                          files_under(src), [g.src, g.run, g.outside]))
    for name, inside in (("RUN", lambda run: run), ("RUN/checkpoints/step-N", latest_checkpoint)):
        run = shutil.copytree(g.run, g.root / "runs" / name.replace("/", "-"))
        cases.append(Case(cls, f"export into {name}", ["export", run, inside(run)], files_under(run),
                          [g.src, g.outside, g.run]))
    return cases


def latest_checkpoint(run: Path) -> Path:
    return RunDir(run).latest_checkpoint(report=lambda _: None).path


def link_to_victim(link: Path, victim: Path) -> None:
    """Replace lmforge's own output file `link` by a symlink to a file of the user's elsewhere."""
    victim.write_text(f"the user's file that {link.name} points at\n")
    link.unlink(missing_ok=True)
    link.symlink_to(victim)


def link_cases(g: Ground) -> list[Case]:
    """lmforge's own output file turned into a link to a file elsewhere, then the command run again:
    it may refuse or replace the link, never write through it."""
    cls = "links"
    inspect_dir = RunDir(g.run).inspect_dir
    targets = (("prepare again", g.prep / "report.json", ["prepare", g.src, "--out", g.prep, *PREPARE_FLAGS]),
               ("tokenize again", g.tok / "meta.json", ["tokenize", g.src, "--out", g.tok, *sets(TOKENIZE_SETS)]),
               ("export again", g.export / "config.json", ["export", g.run, g.export]),
               ("report again", RunDir(g.run).report_path(), ["report", g.run]),
               ("inspect map again", inspect_dir / "map-static.png", ["inspect", "map", g.run, *MAP_FLAGS]))
    cases = []
    for name, link, args in targets:
        link_to_victim(link, g.outside / f"victim-{link.name}")
        cases.append(Case(cls, f"{name}, {link.parent.name}/{link.name} a link", args, [], [g.outside, g.src],
                          refusal_due=False))
    return cases


def edit_meta(folder: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def tokenized_copy(g: Ground, name: str) -> Path:
    folder = g.root / "tokenized" / name
    shutil.copytree(g.tok, folder)
    return folder


def train_on(g: Ground, folder: Path) -> list:
    return ["train", "--data", folder, "--out", g.root / "runs-on" / folder.name, "--max-steps", 2,
            *sets(FOLDER_SETS)]


def path_cases(g: Ground) -> list[Case]:
    """meta.json naming a shard outside its folder: reading it is refused (a path read from a file
    stays in its folder)."""
    victim = g.outside / "victim.bin"
    shutil.copyfile(g.tok / "train" / "shard_00000.bin", victim)  # valid tokens: only the path is wrong
    cases = []
    for name, path in (("../ in a shard path", os.path.relpath(victim, g.root / "tokenized" / "up" / "train")),
                       ("absolute shard path", str(victim))):
        folder = tokenized_copy(g, "up" if name.startswith("..") else "absolute")
        edit_meta(folder, lambda m, path=path: m["splits"]["train"]["shards"][0].update(file=path))
        cases.append(Case("paths in files", f"train on meta.json with a {name}", train_on(g, folder), [],
                          [g.outside, g.tok]))
    return cases


def damaged_cases(g: Ground) -> list[Case]:
    """Seven ways a tokenized folder can be damaged; training on each is refused in one line."""
    def drop_splits(m):
        del m["splits"]

    def put(folder: Path, split: str, data: bytes, mode: str = "wb") -> None:
        with open(folder / split / "shard_00000.bin", mode) as f:
            f.write(data)

    damage = {
        "invalid meta.json": lambda f: (f / "meta.json").write_text('{"format": "lmforge-tokens-v1", "dty'),
        "meta.json without splits": lambda f: edit_meta(f, drop_splits),
        "float dtype": lambda f: edit_meta(f, lambda m: m.update(dtype="float32")),
        "vocab too small": lambda f: edit_meta(f, lambda m: m.update(vocab_size=100)),
        "odd-sized shard": lambda f: put(f, "train", b"\x01", "ab"),
        "missing val shard": lambda f: (f / "val" / "shard_00000.bin").unlink(),
        "ids >= vocab": lambda f: put(f, "train", np.full(4096, 65000, dtype=np.uint16).tobytes(), "r+b"),
    }
    cases = []
    for i, (name, spoil) in enumerate(damage.items()):
        folder = tokenized_copy(g, f"damaged-{i}")
        spoil(folder)
        cases.append(Case("damaged tokenized", f"train on a tokenized folder: {name}", train_on(g, folder), [],
                          [g.outside, g.tok]))
    return cases


def concurrent_tokenize(g: Ground) -> Verdict:
    """Two `tokenize` into one folder at once: one may be refused; what is left equals one alone."""
    out = g.root / "tokenized-twice"
    args = lmforge_args("tokenize", g.src, "--out", out, *sets(TOKENIZE_SETS))
    watched = tree_state(g.outside, g.src)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)

    def relative(folder: Path) -> dict:
        return {os.path.relpath(k, folder): v for k, v in tree_state(folder).items()}

    same = out.is_dir() and relative(out) == relative(g.tok)
    wrong = 0 in codes and not same
    return Verdict("concurrent tokenize", f"two tokenize into one folder (exit codes {codes})", codes[-1], False,
                   tree_state(g.outside, g.src) != watched, any("Traceback" in e for e in errs),
                   wrong, " / ".join(last_line(e) for e in errs if e.strip()), time.perf_counter() - t0)


class Tmpfs:
    """A small tmpfs (we are root here) kept all but full: each case gets `free` bytes."""

    def __init__(self, path: Path, size: str = "16m"):
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        self.path, self.mounted = path, r.returncode == 0
        self.reason = last_line(r.stderr) or f"mount exited {r.returncode}"

    def leave_free(self, free: int = 16 * 1024) -> None:
        filler = self.path / "filler.bin"
        filler.unlink(missing_ok=True)
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - free))

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=False)


def disk_full_cases(g: Ground, disk: Tmpfs) -> list[Case]:
    """Every writer on a disk with 16 KiB left: one line, exit 2, and the run's files as they were
    (an earlier report.html and inspect map included)."""
    run = disk.path / "run"
    shutil.copytree(g.run, run, symlinks=True)
    kept = files_under(run)
    cls = "disk full"
    cases = [Case(cls, "prepare", ["prepare", g.src, "--out", disk.path / "prep", *PREPARE_FLAGS], kept, [g.src]),
             Case(cls, "tokenize", ["tokenize", g.src, "--out", disk.path / "tok", *sets(TOKENIZE_SETS)], kept, [g.src]),
             Case(cls, "export", ["export", run, disk.path / "export"], kept, [g.src]),
             Case(cls, "report", ["report", run], kept, [g.src]),
             Case(cls, "inspect map", ["inspect", "map", run, *MAP_FLAGS], kept, [g.src])]
    return cases


def folder_faults(root: Path) -> list[Verdict]:
    """The classes in an order where none spoils another's ground: the links come last, since they
    turn the run's own files into links."""
    t0 = time.perf_counter()
    (root / "folders").mkdir()
    g = ground(root / "folders")
    print(f"  set up in {time.perf_counter() - t0:.0f} s", flush=True)
    verdicts = [report_case(run_case(c)) for c in existing_out_cases(g) + path_cases(g)]
    verdicts.append(report_case(concurrent_tokenize(g)))
    verdicts += [report_case(run_case(c)) for c in damaged_cases(g)]
    disk = Tmpfs(g.root / "full")
    if disk.mounted:
        try:
            for case in disk_full_cases(g, disk):
                disk.leave_free()
                verdicts.append(report_case(run_case(case)))
        finally:
            disk.close()
    else:
        print(f"  disk full: skipped, a tmpfs cannot be mounted here ({disk.reason})")
    verdicts += [report_case(run_case(c)) for c in link_cases(g)]
    return verdicts


def report_case(v: Verdict) -> Verdict:
    found = [what for what, hit in (("DATA LOSS", v.data_loss), ("WRITES OUTSIDE", v.outside),
                                    ("TRACEBACK", v.traceback), ("SILENTLY WRONG", v.wrong)) if hit]
    print(f"  {v.cls}: {v.name}: exit {v.rc} in {v.seconds:.0f} s{', ' + ', '.join(found) if found else ', ok'}"
          + (f" ({v.said})" if v.said else ""), flush=True)
    return v


def folder_table(verdicts: list[Verdict]) -> str:
    rows = [("class", "cases", "data loss", "writes outside", "tracebacks", "silently wrong")]
    for cls in FOLDER_CLASSES:
        vs = [v for v in verdicts if v.cls == cls]
        if vs:
            rows.append((cls, len(vs), *(sum(getattr(v, k) for v in vs) for k in ("data_loss", "outside", "traceback",
                                                                                   "wrong"))))
    rows.append(("all", *(sum(r[i] for r in rows[1:]) for i in range(1, 6))))
    return "\n".join(f"{r[0]:<20} " + " ".join(f"{str(x):>14}" for x in r[1:]) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-kills", type=int, default=20)
    ap.add_argument("--prepare-kills", type=int, default=20)
    ap.add_argument("--kills-per-run", type=int, default=5)
    ap.add_argument("--fuzz", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="work in this folder and keep it")
    ap.add_argument("--only", choices=["folders"], help="folders: only the cases of what a command may touch "
                    "(existing --out, links, paths in files, concurrent tokenize, damaged tokenized, disk full)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(args.keep or tempfile.mkdtemp(prefix="lmforge-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.only == "folders":
        print(f"\n{folder_table(folder_faults(root))}")
        print(f"wall time: {time.perf_counter() - started:.0f} s")
        return
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
    print("folders: what each command may touch")
    table = folder_table(folder_faults(root))
    print(f"\nkills survived: {t['kills'] - t['failures']}/{t['kills']} training "
          f"(uninterrupted run {t['uninterrupted_s']} s, {t['step_s']} s a step with checkpoints), {p['kills'] - p['failures']}/{p['kills']} prepare "
          f"(uninterrupted {p['uninterrupted_s']} s, {p['working_s']} s after startup)")
    print(f"bit-identical results: {t['identical']}/{t['runs']} training runs (weights and one loss record per step), "
          f"{p['identical']}/{p['runs']} prepare outputs ({p['documents']} documents each)")
    print(f"documents lost: {p['lost']} (input documents in neither clean/ nor rejected/), "
          f"written twice: {p['twice']}")
    print(f"corrupted newest checkpoint survived: {corrupted}; concurrent writer refused, first intact: {concurrent}")
    print(f"fuzz cases tried: {tried}, tracebacks: {tracebacks}")
    print(f"folders, cases with each fault (all must be 0):\n{table}")
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
