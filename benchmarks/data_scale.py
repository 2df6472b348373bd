"""prepare and tokenize on nested real corpora, ~30 MB to ~1 GB: how time, CPU and memory grow (issue 27).

The corpora are the text this machine has: the books of /work/shared/data first, then the files of
/usr/share/doc, the standard library (/usr/lib/python3*) and the site-packages of the venv running this,
in an order fixed by a hash of each path, so that a larger corpus holds every file of the smaller ones
and each is the same mix. A file is text when its first 8 kB hold no NUL and decode as UTF-8 (a .gz
is counted decompressed, as lmforge reads it); files over data.max_document_bytes and record formats
(JSONL, Parquet, WARC) are left out. Every 50th file by hash is held out of every corpus: the text on
which tokenizers are compared. Each corpus is a folder of hard links (copies where a link cannot be
made), never symbolic links (lmforge lists a link, it does not follow it).

At each size, in a fresh process each, on --workers workers and one thread per process:
  lmforge prepare CORPUS --out PREP --workers W
  lmforge tokenize PREP/clean --out TOK  (--workers W when tokenize has it)
measuring wall time, CPU seconds of the process tree (user + system, of every process it waited for),
the peak RSS of the whole tree (the largest sum of VmRSS over the tree in 0.1 s samples, and the sum of
each process's own VmHWM, an upper bound), report.json's peak per step, the output's disk and the
documents. Then: the log-log slope of each figure against the bytes read; a projection to 100 GB and
1 TB (CPU from the cost per byte at the largest size; each step's memory per step, see `projection`:
the peak at the largest size plus what the step's own holdings grow with -- per input byte of a key
partition, per band row, per candidate document, per file listed -- at the slope the steps-alone runs
measured; a step bounded by settings held at its peak: a larger figure at a larger size is a worst case
over more shards, not growth); and, unless --skip-full-tokenizer, the held-out bytes per token of
the default tokenizer (trained on tokenizer.train_bytes, a sample) against one trained on all of the
largest corpus (tokenizer.train_bytes=0, trained as tokenize trains it, in a fresh process, without
tokenize's encoding pass).

    python benchmarks/data_scale.py [--sizes 30,100,300,1000] [--workers 2] [--skip-full-tokenizer]
                                    [--out /tmp/data_scale.json] [--root /tmp/data_scale]
    python benchmarks/data_scale.py --rows /tmp/data_scale.json --out /tmp/data_scale2.json   (analyse a run again)

The memory projection needs --steps-alone (it adds each phase-2 step alone and the file listing alone,
in fresh processes, at each size); without it every growing step is reported "not measured".
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
MAX_DOCUMENT_BYTES = 8_000_000  # data.max_document_bytes: a longer file is not one document
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".parquet", ".warc", ".zst"}  # read as records, not as text
HELD_OUT_EVERY = 50
HELD_OUT_BYTES = 10_000_000
TARGETS = {"prepare_tree_gb": 3.0, "tokenize_tree_gb": 1.5, "time_exponent": 1.05, "step_gb_at_100gb": 16.0,
           "bytes_per_token_gap": 0.02}
STEPS = ("filter", "keys", "buckets", "decisions", "write", "parent")


# ---------------------------------------------------------------- the corpora

def sources() -> list[tuple[str, Path]]:
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    return [("books", Path("/work/shared/data")), ("doc", Path("/usr/share/doc")),
            *[("stdlib", p) for p in sorted(Path("/usr/lib").glob("python3*"))], ("site-packages", site)]


def text_bytes(path: Path) -> int | None:
    """The bytes lmforge would read from `path` as one text document, or None."""
    if path.suffix in RECORD_SUFFIXES or path.name.endswith((".warc.gz", ".jsonl.gz")):
        return None
    try:
        if path.suffix == ".gz":
            data = gzip.decompress(path.read_bytes())
        else:
            with open(path, "rb") as f:
                data = f.read(8192)
            n = path.stat().st_size
    except (OSError, EOFError, gzip.BadGzipFile, Exception):
        return None
    head = data[:8192]
    if b"\0" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not a character cut at the end of the head
            return None
    n = len(data) if path.suffix == ".gz" else n
    return n if 0 < n <= MAX_DOCUMENT_BYTES else None


def inventory() -> list[dict]:
    """Every text file of the sources: {"source", "path", "rel", "bytes"}, books first, then by hash."""
    files, seen = [], set()
    for name, root in sources():
        if not root.is_dir():
            continue
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for n in sorted(names):
                p = Path(folder) / n
                if p.is_symlink() or not p.is_file():
                    continue
                st = p.stat()
                if (st.st_dev, st.st_ino) in seen:  # a file the sources share (a venv's copy of the stdlib)
                    continue
                seen.add((st.st_dev, st.st_ino))
                size = text_bytes(p)
                if size is None or (name == "books" and p.suffix != ".txt"):
                    continue
                files.append({"source": name, "path": str(p), "rel": f"{name}/{p.relative_to(root)}", "bytes": size})
    rank = lambda f: (f["source"] != "books", hashlib.blake2b(f["path"].encode(), digest_size=8).digest())  # noqa: E731
    return sorted(files, key=rank)


def held_out(f: dict) -> bool:
    return f["source"] != "books" and int(hashlib.blake2b(f["path"].encode(), digest_size=8).hexdigest(), 16) % HELD_OUT_EVERY == 0


def materialize(files: list[dict], folder: Path) -> None:
    """`folder` holds exactly `files` (a finished one is reused), as hard links or copies."""
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == str(len(files)):
        return
    if folder.exists():
        shutil.rmtree(folder)
    for f in files:
        dest = folder / f["rel"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f["path"], dest)
        except OSError:
            shutil.copyfile(f["path"], dest)
    marker.write_text(str(len(files)))


# ---------------------------------------------------------------- measuring a process tree

def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"threads: OMP_NUM_THREADS=1 per process, {os.cpu_count()} CPUs; load average {load} ({uptime})"


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"VmRSS:", b"VmHWM:")):
                    out[line[:5].decode()] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


class TreeSampler(threading.Thread):
    """Every `interval` s: the sum of VmRSS over the process tree of `root` (its largest is the tree's
    peak, to the sampling), and each process's VmHWM (a peak between samples is in it)."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_sum, self.hwm, self.processes = 0, {}, set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            for pid in _tree(self.root):
                s = _status(pid)
                total += s.get("VmRSS", 0)
                if "VmHWM" in s:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), s["VmHWM"])
                    self.processes.add(pid)
            self.peak_sum = max(self.peak_sum, total)
            self.done.wait(self.interval)


def measure(cmd: list[str], label: str) -> dict:
    """Run `cmd` in a fresh process: wall, CPU of the tree, peak RSS of the tree; stdout kept."""
    print(f"[{label}] before: {machine()}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(HERE / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    output = proc.stdout.read()
    rc = proc.wait()
    wall = time.perf_counter() - t
    sampler.done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        print(output)
        raise SystemExit(f"[{label}] {' '.join(cmd)} exited {rc}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"[{label}] after:  {machine()}", flush=True)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tree_peak_rss_bytes": sampler.peak_sum,
            "tree_hwm_sum_bytes": sum(sampler.hwm.values()), "largest_process_hwm_bytes": max(sampler.hwm.values(), default=0),
            "processes": len(sampler.processes), "output_tail": output.strip().splitlines()[-14:]}


def disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.exists() else 0


def lmforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", *args]


def tokenize_has_workers() -> bool:
    help_text = subprocess.run(lmforge("tokenize", "--help"), capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(HERE / "src")}).stdout
    return "--workers" in help_text


# ---------------------------------------------------------------- one size

def run_size(corpus: Path, root: Path, workers: int, tok_workers: bool, label: str) -> dict:
    prep, tok = root / f"prep_{label}", root / f"tok_{label}"
    for folder in (prep, tok):
        shutil.rmtree(folder, ignore_errors=True)
    p = measure(lmforge("prepare", str(corpus), "--out", str(prep), "--workers", str(workers), "--no-progress"),
                f"prepare {label}")
    report = json.loads((prep / "report.json").read_text())
    p.update(bytes_in=report["bytes_in"], bytes_kept=report["bytes_kept"], documents_in=report["documents_in"],
             documents_kept=report["documents_kept"], shards=report["shards"],
             candidate_pairs_checked=report["candidate_pairs_checked"], documents_by_kind=report["documents_by_kind"],
             worker_peak_rss_bytes=report["worker_peak_rss_bytes"],
             peak_rss_by_step=report.get("peak_rss_by_step", {}),
             disk_bytes=disk(prep), work_disk_bytes=disk(prep / "work"), clean_disk_bytes=disk(prep / "clean"))
    t = measure(lmforge("tokenize", str(prep / "clean"), "--out", str(tok), "--no-progress",
                        *(["--workers", str(workers)] if tok_workers else [])), f"tokenize {label}")
    meta = json.loads((tok / "meta.json").read_text())
    t.update(meta_summary(meta), disk_bytes=disk(tok))
    return {"prepare": p, "tokenize": t}


def meta_summary(meta: dict) -> dict:
    splits = meta.get("splits", {})
    tokens = sum(s.get("tokens", 0) for s in splits.values())
    n_bytes = sum(s.get("bytes", 0) for s in splits.values())
    return {"tokens": tokens, "bytes": n_bytes, "bytes_per_token": round(n_bytes / max(tokens, 1), 4),
            "documents": meta.get("reader", {}).get("documents", 0),
            "tokenizer_sample": meta.get("tokenizer_sample", {})}


# ---------------------------------------------------------------- each step of phase 2 alone

# In a pool worker or the main process a step's peak includes what the process held before it (the
# filter stack's models, the heap the reading left): growth of the step's own holdings can hide under it.
# Here each runs alone in a fresh process on a kept work/, beside a process that only imports.
STEP_ALONE = r"""
import json, sys
from pathlib import Path
import lmforge
from lmforge.data import prepare as P
mode, folder = sys.argv[1], Path(sys.argv[2])
config = lmforge.load_config("tiny", overrides=["data.max_bytes=0"])  # as the CLI reads named sources: whole
cfg = config.prepare
work = folder / "work"
if mode == "prepare":
    P._remove_work = lambda w: None
    P.prepare(sys.argv[3:], folder, cfg, config.data, log=lambda *_: None, progress=False)
elif mode == "listing":  # what the main process holds for the whole run, per file listed
    inputs = P.list_prepare_inputs(sys.argv[3:], folder)
    print(sum(1 for _ in inputs.all_files()))
elif mode != "import":
    offsets, docs = [], 0
    for i in range(len(list(work.glob("shard_*.done")))):
        offsets.append(docs)
        docs += json.loads((work / f"shard_{i:05d}.done").read_text())["kept"]
    counts = json.loads((work / "partitions.json").read_text())
    if mode.startswith("keys"):
        P.key_partition(int(mode[4:]), work, offsets, docs, cfg)
    elif mode.startswith("band"):
        index, part = map(int, mode[4:].split("_"))
        P.band_buckets(index, part, counts["band_partitions"], work, offsets, cfg)
    else:
        d = P.decide_duplicates(work, offsets, counts["partitions"], counts["band_partitions"], cfg)
        print(json.dumps({"candidate_documents": d["candidate_documents"], "duplicates": d["duplicates"],
                          "phase1_documents": docs}))
print(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024)
"""


def steps_alone(corpus: Path, root: Path, label: str) -> dict:
    """Each phase-2 step's peak alone in a fresh process (every key partition, the band of the most
    members, the decisions), the import-only process's, and what work/ holds, on a prepare of `corpus`."""
    folder = root / f"prep_{label}_work"
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(HERE / "src"), "OMP_NUM_THREADS": "1"}

    def run(mode: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", STEP_ALONE, mode, str(folder),
                               *([str(corpus)] if mode in ("prepare", "listing") else [])],
                              env=env, check=True, capture_output=True, text=True)
        return done.stdout.splitlines()

    run("prepare")
    work = folder / "work"
    bands = sorted(work.glob("band_*.npy"), key=lambda p: p.stat().st_size)
    partitions = len(list(work.glob("keys_*.json")))
    listed = run("listing")
    out = {"import": int(run("import")[-1]), "listing": int(listed[-1]), "files_listed": int(listed[0]),
           "key_partitions": partitions,
           "band_partitions": json.loads((work / "partitions.json").read_text())["band_partitions"], "keys": max(int(run(f"keys{part}")[-1]) for part in range(partitions)),
           "buckets": int(run(f"band{bands[-1].name[5:16]}")[-1]) if bands else 0}
    decided = run("decisions")
    out["decisions"] = int(decided[-1])
    out.update(json.loads(decided[0]))
    out["work_bytes"] = {kind: sum(p.stat().st_size for p in work.glob(pattern)) for kind, pattern in
                         (("keys", "shard_*.keys"), ("signatures", "*.sig.npy"),
                          ("bands", "band_*.npy"), ("kept", "*.kept.jsonl.gz"), ("all", "*"))}
    shutil.rmtree(folder)
    return out


# ---------------------------------------------------------------- fits and projections

def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (the growth exponent); None with fewer than 2 positive points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 3) if sxx else None


def line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def memory_figures(rows: list[dict]) -> dict[str, list[int]]:
    """Each measured memory figure per size: the prepare tree, tokenize's, and prepare's steps."""
    figures = {"prepare tree": [r["prepare"]["tree_peak_rss_bytes"] for r in rows],
               "tokenize tree": [r["tokenize"]["tree_peak_rss_bytes"] for r in rows]}
    for step in STEPS:
        figures[f"step {step}"] = [r["prepare"]["peak_rss_by_step"].get(step, 0) for r in rows]
    return figures


def growth(rows: list[dict]) -> dict:
    xs = [r["prepare"]["bytes_in"] for r in rows]
    out = {f"prepare {k}": slope(xs, [r["prepare"][k] for r in rows]) for k in ("wall_s", "cpu_s")}
    out.update({f"tokenize {k}": slope(xs, [r["tokenize"][k] for r in rows]) for k in ("wall_s", "cpu_s")})
    out.update({f"{name} peak": slope(xs, ys) for name, ys in memory_figures(rows).items()})
    return out


TARGET_BYTES = {"100 GB": 100e9, "1 TB": 1e12}
# what each step's memory grows with (measured by the steps alone: its peak's slope against that unit);
# filter and write hold one shard (shard_bytes, max_document_bytes), tokenize one batch per worker
# (encode_batch_bytes) and the tokenizer sample (train_bytes): bounded by settings, held constant
GROWS_WITH = {"filter": None, "keys": "input byte per key partition",
              "buckets": "band row (document kept by the filters) per bucket partition",
              "decisions": "candidate document", "write": None, "parent": "file listed", "tokenize": None}


def key_partitions_at(n_bytes: float) -> int:
    """The key partitions prepare makes for `n_bytes` of input (8 before their number followed the corpus)."""
    code = ("import lmforge\nfrom lmforge.data import prepare as P\n"
            f"c = lmforge.load_config('tiny')\nprint(P.key_partitions({int(n_bytes)}, c.prepare) if hasattr(P, 'key_partitions') else 8)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(HERE / "src")}).stdout)


def band_partitions_at(key_partitions: int) -> int:
    """The bucket partitions of each band prepare makes with `key_partitions` (1 before bands were split)."""
    code = ("from lmforge.data import prepare as P\n"
            f"print(P.band_partitions({key_partitions}) if hasattr(P, 'band_partitions') else 1)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(HERE / "src")}).stdout)


def step_units(row: dict) -> dict[str, float | None]:
    """Each growing step's unit count in one steps-alone row (None where that run did not record it)."""
    a = row["steps_alone"]
    return {"keys": row["text_bytes"] / a.get("key_partitions", 8),
            "buckets": a["phase1_documents"] / a.get("band_partitions", 1) if "phase1_documents" in a else None,
            "decisions": a["candidate_documents"], "parent": a.get("files_listed")}


def step_alone_peak(row: dict, step: str) -> int | None:
    """The steps-alone peak above a process that only imports lmforge; the parent's growing part is its listing."""
    a = row["steps_alone"]
    figure = a.get("listing") if step == "parent" else a[step]
    return None if figure is None else figure - a["import"]


def run_peak(rows: list[dict], step: str) -> int:
    """The step's largest peak in the full runs (what a worker or the main process held besides the step)."""
    if step == "tokenize":
        return max((r["tokenize"]["tree_peak_rss_bytes"] for r in rows if "tokenize" in r), default=0)
    return max((r["prepare"]["peak_rss_by_step"].get(step, 0) for r in rows if "prepare" in r), default=0)


def projection(rows: list[dict], workers: int, partitions_at: dict[str, int]) -> dict:
    """At 100 GB and 1 TB of this mix: CPU at the largest size's cost per byte (its wall on `workers`
    busy cores), documents at its bytes per document, output disk at its ratio; and each step's peak memory

        peak(step, target) = peak in the full run at the largest size
                             + per unit x (units at the target - units at the largest size)

    where the unit is what the step's own holdings grow with (GROWS_WITH), `per unit` the least-squares
    slope of its peak alone (fresh process, above one that only imports) against that unit over the
    steps-alone sizes (never below 0), and the units at a size the largest steps-alone size's units per
    byte times its bytes (a key partition's: the bytes over `partitions_at`, prepare's rule). A step bounded by settings (filter,
    write, tokenize) is held at its largest measured peak: a larger figure at a larger size is a worst case
    over more shards, not growth."""
    last = rows[-1]
    alone = [r for r in rows if "steps_alone" in r]
    bytes_in = last["text_bytes"]  # as listed: what the reader will read
    doc_bytes = bytes_in / last["prepare"]["documents_in"] if "prepare" in last else None
    out = {}
    for target, n_bytes in TARGET_BYTES.items():
        p = {"documents": round(n_bytes / doc_bytes)} if doc_bytes else {}
        for cmd in ("prepare", "tokenize"):
            if cmd in last:
                cpu = last[cmd]["cpu_s"] / bytes_in * n_bytes
                p[f"{cmd} cpu_hours"] = round(cpu / 3600, 1)
                p[f"{cmd} wall_hours on {workers} cores"] = round(cpu / workers / 3600, 1)
                p[f"{cmd} disk_gb"] = round(last[cmd]["disk_bytes"] / bytes_in * n_bytes / 1e9, 1)
        memory = {}
        for step, unit in GROWS_WITH.items():
            base = run_peak(rows, step)
            m = {"grows_with": unit or "bounded by settings", "at_largest_gb": round(base / 1e9, 3)}
            units = [step_units(r)[step] for r in alone] if unit else []
            peaks = [step_alone_peak(r, step) for r in alone] if unit else []
            if unit and len(units) > 1 and None not in units and None not in peaks:
                per_unit = max(line(units, peaks)[1], 0.0)
                at = lambda n: units[-1] / alone[-1]["text_bytes"] * n  # noqa: E731  (units of n bytes of this mix)
                units_then = n_bytes / partitions_at[target] if step == "keys" else at(n_bytes)
                if step == "buckets":  # a band's rows over its bucket partitions, the rule prepare follows
                    rows_per_byte = alone[-1]["steps_alone"]["phase1_documents"] / alone[-1]["text_bytes"]
                    units_then = rows_per_byte * n_bytes / band_partitions_at(partitions_at[target])
                base += per_unit * (units_then - at(bytes_in))  # from the full run's largest size
                m.update(per_unit_bytes=round(per_unit, 4 if per_unit < 10 else 1), units=round(units_then))
            elif unit:
                m["grows_with"] += " (not measured: run --steps-alone)"
            m["gb"] = round(base / 1e9, 2)
            m["under 16 GB"] = m["gb"] <= TARGETS["step_gb_at_100gb"]
            memory[step] = m
        p["key_partitions"] = partitions_at[target]
        p["memory"] = memory
        p["bounds_memory"] = max(memory, key=lambda k: memory[k]["gb"])
        p["every step under 16 GB"] = all(m["under 16 GB"] for m in memory.values())
        out[target] = p
    return out


# ---------------------------------------------------------------- tokenizers compared

def bytes_per_token(tokenizer_json: Path, texts: list[str]) -> float:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_json))
    tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return sum(len(t.encode("utf-8")) for t in texts) / tokens


def read_text(path: str) -> str:
    data = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else Path(path).read_bytes()
    return data.decode("utf-8", errors="replace")


# the tokenizer `lmforge tokenize --set tokenizer.train_bytes=0` learns, without its encoding pass
TRAIN_ALL = r"""
import sys
from pathlib import Path
import lmforge
from lmforge.data.sources import SourceStats, iter_documents
from lmforge.tokenizer import train_tokenizer
from lmforge.tokenizing import TokenizerSample, list_tokenize_inputs, source_prefixes
source, out = sys.argv[1], Path(sys.argv[2])
c = lmforge.load_config("tiny", overrides=["data.max_bytes=0", "tokenizer.train_bytes=0"])
c.data.sources = [source]
docs = iter_documents(list_tokenize_inputs(c.data, out), SourceStats(), c.data.text_field, c.data.max_bytes,
                      c.data.max_document_bytes)
texts = TokenizerSample(c.tokenizer.train_bytes, source_prefixes(c.data.sources)).texts(docs)
out.mkdir(parents=True, exist_ok=True)
train_tokenizer(texts, c.tokenizer.vocab_size, c.tokenizer.min_frequency).save(str(out / "tokenizer.json"))
"""


def tokenizer_comparison(root: Path, label: str, held: list[dict]) -> dict:
    prep, full = root / f"prep_{label}", root / f"tok_{label}_all"
    shutil.rmtree(full, ignore_errors=True)
    m = measure([sys.executable, "-c", TRAIN_ALL, str(prep / "clean"), str(full)],
                f"tokenizer {label} trained on all of it")
    texts = [read_text(f["path"]) for f in held]
    sampled = bytes_per_token(root / f"tok_{label}" / "tokenizer.json", texts)
    every = bytes_per_token(full / "tokenizer.json", texts)
    return {"held_out_files": len(held), "held_out_bytes": sum(len(t.encode()) for t in texts),
            "sampled_bytes_per_token": round(sampled, 4), "all_bytes_per_token": round(every, 4),
            "gap": round(every / sampled - 1, 4), "train_all": m}


# ---------------------------------------------------------------- the report

def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| corpus | MB in | docs in | docs kept | prepare s | CPU s | MB/CPU-s | tree GB (sum VmHWM) | "
            + " | ".join(f"{s} MB" for s in STEPS) + " | out MB | tokenize s | CPU s | MB/CPU-s | tree GB | tokens | B/token | out MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p, t = r["prepare"], r["tokenize"]
        lines.append(
            f"| {r['label']} | {p['bytes_in'] / 1e6:,.0f} | {p['documents_in']:,} | {p['documents_kept']:,} | {p['wall_s']:,.0f} "
            f"| {p['cpu_s']:,.0f} | {p['bytes_in'] / 1e6 / p['cpu_s']:.2f} | {gb(p['tree_peak_rss_bytes'])} ({gb(p['tree_hwm_sum_bytes'])}) | "
            + " | ".join(f"{p['peak_rss_by_step'].get(s, 0) / 1e6:,.0f}" for s in STEPS)
            + f" | {p['disk_bytes'] / 1e6:,.0f} | {t['wall_s']:,.0f} | {t['cpu_s']:,.0f} | {t['bytes'] / 1e6 / t['cpu_s']:.2f} "
              f"| {gb(t['tree_peak_rss_bytes'])} | {t['tokens']:,} | {t['bytes_per_token']:.3f} | {t['disk_bytes'] / 1e6:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="30,100,300,1000", help="corpus sizes in MB, ascending")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-full-tokenizer", action="store_true", help="no tokenizer trained on all of the largest corpus")
    ap.add_argument("--out", default="/tmp/data_scale.json", help="every number, as JSON")
    ap.add_argument("--root", default="/tmp/data_scale", help="corpora and outputs (reused across runs)")
    ap.add_argument("--steps-alone", action="store_true",
                    help="also each phase-2 step alone in a fresh process, on a prepare that keeps work/ (one more prepare per size)")
    ap.add_argument("--rows", help="a JSON this wrote before: its rows are analysed (and the tokenizers compared), no size is run again")
    ap.add_argument("--no-run", action="store_true", help="with --steps-alone: only that (corpora made as for a run)")
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    print(machine())

    files = inventory()
    held = [f for f in files if held_out(f)]
    held = [f for i, f in enumerate(held) if sum(h["bytes"] for h in held[:i]) < HELD_OUT_BYTES]
    held_paths = {f["path"] for f in held}
    pool = [f for f in files if not held_out(f)]
    by_source: dict[str, list[int]] = {}
    for f in files:
        by_source.setdefault(f["source"], []).append(f["bytes"])
    total = sum(f["bytes"] for f in pool)
    print(f"text on this machine: {len(files):,} files, {sum(f['bytes'] for f in files) / 1e6:,.1f} MB ("
          + ", ".join(f"{k} {len(v):,} files {sum(v) / 1e6:,.1f} MB" for k, v in by_source.items())
          + f"); held out: {len(held):,} files {sum(f['bytes'] for f in held) / 1e6:.1f} MB; corpus pool {total / 1e6:,.1f} MB")

    sizes = [int(s) * 1_000_000 for s in args.sizes.split(",")]
    if sizes[-1] > total:
        print(f"this machine has {total / 1e6:,.0f} MB of distinct text, less than {sizes[-1] / 1e6:,.0f} MB: "
              f"the largest corpus is all of it")
        sizes = [s for s in sizes if s < total] + [total]
    tok_workers = tokenize_has_workers()
    print(f"tokenize --workers: {'yes' if tok_workers else 'no (tokenize runs in one process)'}")

    saved = json.loads(Path(args.rows).read_text()) if args.rows else {"rows": []}
    rows = saved["rows"]
    for extra in saved.get("steps_alone", []):  # steps alone measured in a separate --no-run, by label
        next((r for r in rows if r["label"] == extra["label"]), {}).setdefault("steps_alone", extra["steps_alone"])
    # the rule of the lmforge measured: prepare's (a saved run that recorded no key partition count had 8)
    counted = not args.rows or any("key_partitions" in r.get("steps_alone", {}) for r in rows)
    partitions_at = saved.get("key_partitions_at") or {t: key_partitions_at(n) if counted else 8 for t, n in TARGET_BYTES.items()}
    for target in [] if args.rows else sizes:
        chosen, n = [], 0
        for f in pool:
            if n >= target:
                break
            chosen.append(f)
            n += f["bytes"]
        label = f"{round(n / 1e6)}MB"
        corpus = root / f"corpus_{label}"
        materialize(chosen, corpus)
        mix = {}
        for f in chosen:
            mix[f["source"]] = mix.get(f["source"], 0) + f["bytes"]
        print(f"\n== {label}: {len(chosen):,} files, " + ", ".join(f"{k} {v / n:.0%}" for k, v in mix.items()), flush=True)
        row = {"label": label, "files": len(chosen), "text_bytes": n, "mix": mix}
        if args.steps_alone:
            row["steps_alone"] = steps_alone(corpus, root, label)
            print(f"steps alone: {json.dumps(row['steps_alone'])}", flush=True)
        if args.no_run:
            rows.append(row)
            continue
        row.update(run_size(corpus, root, args.workers, tok_workers, label))
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))  # what is measured so far survives a stop

    if args.no_run:
        Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))
        print(machine())
        return 0
    result = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "workers": args.workers,
              "tokenize_workers": tok_workers, "held_out": sorted(held_paths), "rows": rows,
              "growth_exponents": growth(rows) if len(rows) > 1 else {}, "key_partitions_at": partitions_at,
              "projection": projection(rows, args.workers, partitions_at)}
    if not args.skip_full_tokenizer:
        result["tokenizers"] = tokenizer_comparison(root, rows[-1]["label"], held)
    Path(args.out).write_text(json.dumps(result, indent=1))

    print("\n" + table(rows))
    print("\ngrowth exponents (log-log slope against bytes read):")
    print("| figure | exponent |\n|---|---|")
    for k, v in result["growth_exponents"].items():
        print(f"| {k} | {v} |")
    for target, p in result["projection"].items():
        print(f"\nprojection to {target} ({p.get('documents', 0):,} documents of this mix, {p['key_partitions']:,} key partitions):")
        print(", ".join(f"{k} {v}" for k, v in p.items() if k not in ("memory", "documents", "key_partitions")))
        print("| step | grows with | bytes per unit | units | peak at largest GB | projected GB | under 16 GB |\n"
              "|---|---|---|---|---|---|---|")
        for name, m in p["memory"].items():
            units = f"{m['units']:,}" if "units" in m else "-"
            print(f"| {name} | {m['grows_with']} | {m.get('per_unit_bytes', '-')} | {units} "
                  f"| {m['at_largest_gb']} | {m['gb']} | {'yes' if m['under 16 GB'] else 'NO'} |")
    if "tokenizers" in result:
        c = result["tokenizers"]
        print(f"\nbytes per token on {c['held_out_files']:,} held-out files ({c['held_out_bytes'] / 1e6:.1f} MB): "
              f"default sample {c['sampled_bytes_per_token']}, trained on all {c['all_bytes_per_token']} "
              f"(gap {c['gap']:+.2%}, target within {TARGETS['bytes_per_token_gap']:.0%}); training on all of it: "
              f"{c['train_all']['wall_s']:.0f} s, {c['train_all']['cpu_s']:.0f} CPU s, "
              f"peak {gb(c['train_all']['tree_peak_rss_bytes'])} GB")
    print(f"\n{machine()}\nevery number: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
