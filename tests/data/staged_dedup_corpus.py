"""A corpus with exact and near duplicates across shards, repeated ids and boilerplate lines, and the
digest of what prepare makes of it (tests/data/test_staged_dedup.py). `python staged_dedup_corpus.py OUT.json`
records the digests with whatever lmforge is on PYTHONPATH: the fixture holds main's (2b61dd1), before
deduplication was staged."""

import gzip
import hashlib
import json
import sys
from pathlib import Path

from conftest import make_prose

HEADER = "This page is part of the example documentation set, version one."
CONFIGS = {  # name -> overrides; "buckets": nearly every pair a candidate, many checks
    "default": {},
    "buckets": {"prepare.minhash_rows": 1, "prepare.minhash_bands": 20},
}


def near(text: str, *edits: int) -> str:
    words = text.split(" ")
    for i in edits:
        words[i] = f"edited{i}"
    return " ".join(words)


def write_corpus(src: Path) -> None:
    src.mkdir()
    for i in range(30):
        text = make_prose(i)
        (src / f"p{i:02d}.txt").write_text(HEADER + "\n\n" + text if i % 5 else text)
    (src / "q_copy_p03.txt").write_text(make_prose(3))  # exact, in a later shard
    (src / "q_copy_p03_spaced.txt").write_text(make_prose(3).upper().replace(" ", "  "))  # exact after normalising
    (src / "q_near_p05.txt").write_text(near(make_prose(5), 10))
    (src / "q_near_p05_b.txt").write_text(near(make_prose(5), 10, 20))
    (src / "q_near_p11.txt").write_text(HEADER + "\n\n" + near(make_prose(11), 7))
    shared = make_prose(100, 2)
    for i in range(4):  # half-shared texts: candidates under "buckets", never duplicates
        (src / f"s{i}.txt").write_text(shared + "\n\n" + make_prose(200 + i, 2))
    records = [{"id": "r1", "text": make_prose(40)}, {"id": "r2", "text": make_prose(7)},  # r2: exact copy of p07
               {"id": "r1", "text": make_prose(41)}, {"id": "r1", "text": near(make_prose(8), 3)},
               {"id": "r3", "text": make_prose(40)}]  # exact copy of the first r1
    (src / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def digest(folder: Path) -> dict:
    """Each clean/ and rejected/ file's decompressed sha256, and report.json but for timings, memory and
    the fingerprint (which names the temporary folder)."""
    out = {}
    for sub in ("clean", "rejected"):
        for p in sorted((folder / sub).glob("*.jsonl.gz")):
            out[f"{sub}/{p.name}"] = hashlib.sha256(gzip.decompress(p.read_bytes())).hexdigest()
    report = json.loads((folder / "report.json").read_text())
    for key in ("seconds", "worker_peak_rss_bytes", "peak_rss_by_step", "fingerprint", "completed_at"):
        report.pop(key, None)
    out["report.json"] = report
    return out


def run(tmp: Path, name: str, workers: int = 1, executor: str = "local", **overrides) -> dict:
    """prepare of the corpus under `name`'s settings (and `overrides`: setting -> value), 4 documents a
    shard; ids are paths relative to `tmp`."""
    import os

    from lmforge.config import load_config
    from lmforge.data.prepare import prepare

    values = {"prepare.shard_documents": 4, "prepare.workers": workers, "prepare.executor": executor,
              "prepare.boilerplate_min_documents": 3, **CONFIGS[name], **overrides}
    c = load_config("tiny", overrides=[f"{k}={v}" for k, v in values.items()])
    if not (tmp / "src").exists():
        write_corpus(tmp / "src")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        prepare(["src"], Path(f"out_{name}_{executor}_{workers}"), c.prepare, c.data, log=lambda *_: None, progress=False)
    finally:
        os.chdir(here)
    return digest(tmp / f"out_{name}_{executor}_{workers}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = {name: run(Path(tmp), name) for name in CONFIGS}
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
