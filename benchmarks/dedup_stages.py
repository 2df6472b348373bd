"""Deduplication's decision step, before and after it was staged (keys by hash, buckets by band,
verification of the candidates only), side by side on the same corpus and machine.

For each source tree (this checkout, and a checkout of main before the change: --old-src), in fresh
processes of one thread each:
  1. `prepare` of the corpus (/work/shared/data's texts and /usr/share/doc, or --source, capped at --max-bytes),
     one worker, work/ kept: its wall time;
  2. the decision step alone on that work/, timed, its peak RSS (VmHWM) next to a process that only
     imports lmforge: before, one process (decide_duplicates); after, the partition tasks (every key
     partition and band in turn, in one process: the peak of the largest of them, or more) and the
     verification (decide_duplicates) in another.
Both prepared folders must be identical (clean/ and rejected/ decompressed).

    python benchmarks/dedup_stages.py [--old-src /tmp/dedup-old/src] [--max-bytes 100000000] [--source DIR ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SOURCES = [str(p) for p in sorted((HERE.parent / "shared" / "data").glob("*.txt"))] + ["/usr/share/doc"]

STEP = r"""
import json, sys, time
from pathlib import Path
import lmforge
from lmforge.data import prepare as P
mode, folder, max_bytes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
c = lmforge.load_config("tiny", overrides=["prepare.workers=1", f"data.max_bytes={max_bytes}"])
work = folder / "work"
out = {}
t = time.perf_counter()
if mode == "prepare":
    P._remove_work = lambda w: None
    report = P.prepare(sys.argv[4:], folder, c.prepare, c.data, log=lambda *_: None, progress=False)
    out = {"documents": report["documents_kept"] + report["rejected_by_stage"].get("dedup", 0),
           "bytes": report["bytes_in"], "shards": report["shards"]}
elif mode in ("decide", "partitions"):
    n = len(list(work.glob("shard_*.done")))
    if not hasattr(P, "key_partition"):  # main: one process, the whole corpus
        d = P.decide_duplicates(work, n, c.prepare)
        out = {"candidate_pairs_checked": d["candidate_pairs_checked"], "ids_held": len(d["ids"])}
    else:
        offsets, docs = [], 0
        for i in range(n):
            offsets.append(docs)
            docs += json.loads((work / f"shard_{i:05d}.done").read_text())["kept"]
        # work/partitions.json: the count since phase 1 scatters the keys; before, P.KEY_PARTITIONS
        recorded = work / "partitions.json"
        counts = json.loads(recorded.read_text()) if recorded.is_file() else {}
        partitions = [counts["partitions"]] if counts else []
        bands_parts = [counts["band_partitions"]] if "band_partitions" in counts else []
        if mode == "partitions":  # every task in turn, as P.deduplicate submits them
            for part in range(*partitions or [P.KEY_PARTITIONS]):
                P.key_partition(part, work, offsets, docs, c.prepare)
            for band in range(c.prepare.minhash_bands):
                for part in range(*bands_parts or [1]):  # a band split by bucket since partitions.json's band_partitions
                    P.band_buckets(band, *((part, *bands_parts) if bands_parts else ()), work, offsets, c.prepare)
        else:
            d = P.decide_duplicates(work, offsets, *partitions, *bands_parts, c.prepare)
            out = {"candidate_pairs_checked": d["candidate_pairs_checked"], "ids_held": d["candidate_documents"]}
out["seconds"] = time.perf_counter() - t
# VmHWM, not ru_maxrss: that one keeps the forking parent's high-water mark across exec
out["peak_rss_mb"] = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps(out))
"""


def step(src: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", STEP, *map(str, args)], env=env, check=True, capture_output=True, text=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t}


def contents(folder: Path) -> dict:
    """Digests, so that this process stays small (its children's peaks are read, not its own)."""
    return {f"{p.parent.name}/{p.name}": hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
            for sub in ("clean", "rejected") for p in sorted((folder / sub).glob("*.jsonl.gz"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-src", default="/tmp/dedup-old/src")
    ap.add_argument("--max-bytes", type=int, default=100_000_000)
    ap.add_argument("--source", action="append", help="instead of the default sources (repeat for several)")
    args = ap.parse_args()
    print("load before:", os.getloadavg())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in (("before (main)", args.old_src), ("after (staged)", str(HERE / "src"))):
            folder = Path(tmp) / name.split()[0]
            prep = step(src, "prepare", folder, args.max_bytes, *(args.source or SOURCES))
            base = step(src, "import", folder, args.max_bytes)
            parts = step(src, "partitions", folder, args.max_bytes) if name.startswith("after") else None
            decide = step(src, "decide", folder, args.max_bytes)
            rows[name] = (prep, base, parts, decide, contents(folder))
        same = rows["before (main)"][4] == rows["after (staged)"][4]
    print(f"corpus: {rows['after (staged)'][0]['bytes'] / 1e6:.1f} MB, {rows['after (staged)'][0]['documents']:,} "
          f"documents kept by the filters, {rows['after (staged)'][0]['shards']} shards; outputs identical: {same}")
    print(f"{'':16} {'prepare s':>10} {'partitions s':>13} {'decide s':>9} {'import MB':>10} {'partitions MB':>14} "
          f"{'decide MB':>10} {'ids held':>9} {'pairs':>6}")
    for name, (prep, base, parts, decide, _) in rows.items():
        print(f"{name:16} {prep['seconds']:10.1f} {(format(parts['seconds'], '.2f') if parts else '-'):>13} "
              f"{decide['seconds']:9.2f} {base['peak_rss_mb']:10.0f} "
              f"{(format(parts['peak_rss_mb'], '.0f') if parts else '-'):>14} {decide['peak_rss_mb']:10.0f} "
              f"{decide['ids_held']:9,} {decide['candidate_pairs_checked']:6,}")
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
