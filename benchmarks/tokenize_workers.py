"""Tokenize sharded over workers (issue 27 item 5): wall time, peak memory of the whole process tree,
and the sha256 of every file, for `lmforge tokenize SOURCES --workers N` at each N (and, with
--baseline-src, the same command of another lmforge checkout, e.g. main's one-process tokenize).

    python benchmarks/tokenize_workers.py /work/shared/data /usr/share/doc --workers 1 2 \
        --baseline-src /tmp/main-checkout/src

The tree's memory: every process under the command is polled every 0.1 s for its VmHWM (the kernel's
high-water mark of its resident memory, so a peak between two polls is still seen, unless the process
exits right after it); the table gives the parent's, the largest worker's, and their sum (an upper
bound of what the tree held at once). The machine may be shared: the threads and `uptime` load
average are printed with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK_KEY = "worker_peak_rss_bytes"


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = []
        for task in tasks:
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def vm_hwm_kb(pid: int) -> int | None:
    try:
        return next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


def run(cmd: list[str], env: dict) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for pid in tree(proc.pid):
            kb = vm_hwm_kb(pid)
            if kb is not None:
                peaks[pid] = max(peaks.get(pid, 0), kb)
        time.sleep(0.1)
    output = proc.stdout.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{output}")
    workers = [kb for pid, kb in peaks.items() if pid != proc.pid]
    mb = 1024 / 1e6  # VmHWM counts KiB; the table and meta.json, MB
    return {"seconds": time.perf_counter() - started, "parent_mb": peaks.get(proc.pid, 0) * mb,
            "worker_mb": max(workers, default=0) * mb, "tree_sum_mb": sum(peaks.values()) * mb,
            "processes": len(peaks), "output": output}


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file; meta.json's without the worker peak (the one key that differs)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "meta.json":
                meta = json.loads(data)
                meta.pop(PEAK_KEY, None)
                data = json.dumps(meta).encode()
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--baseline-src", help="src/ of another lmforge checkout, run once with its own defaults")
    ap.add_argument("--keep", action="store_true", help="keep the tokenized folders")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    scratch = Path(tempfile.mkdtemp(prefix="tokenize_workers_"))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    runs = [(f"--workers {n}", here, ["--workers", str(n)]) for n in args.workers]
    if args.baseline_src:
        runs.insert(0, ("baseline", Path(args.baseline_src).resolve(), []))
    print(f"threads: OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs; sources: {' '.join(args.sources)}")
    print(f"{'run':12} {'seconds':>8} {'parent MB':>10} {'worker MB':>10} {'tree sum MB':>12} {'processes':>10}  "
          f"meta peak MB  load average before")
    results = {}
    for name, src, flags in runs:
        out = scratch / name.replace(" ", "").replace("-", "")
        load = os.getloadavg()
        r = run([sys.executable, "-m", "lmforge", "tokenize", *args.sources, "--out", str(out), "--no-progress", *flags],
                {**env, "PYTHONPATH": str(src)})
        meta = json.loads((out / "meta.json").read_text())
        results[name] = digests(out)
        print(f"{name:12} {r['seconds']:8.1f} {r['parent_mb']:10.0f} {r['worker_mb']:10.0f} {r['tree_sum_mb']:12.0f} "
              f"{r['processes']:10d}  {meta.get(PEAK_KEY, 0) / 1e6:12.0f}  {' '.join(f'{x:.2f}' for x in load)}")
        print("    " + r["output"].strip().splitlines()[-1])
    first = next(iter(results.values()))
    for name, got in results.items():
        same = got == first
        print(f"{name}: {'identical' if same else 'DIFFERENT'} to {next(iter(results))} "
              f"({len(got)} files; train/ {sum(1 for k in got if k.startswith('train/'))} shards)")
        for key in sorted(set(got) | set(first)):
            if got.get(key) != first.get(key):
                print(f"    differs: {key}")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if not args.keep:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
