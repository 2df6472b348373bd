"""`prepare` end to end on real files: nothing lost, duplicates recorded, resumable, parallel = serial."""

import gzip
import json

import pytest

from conftest import make_prose
from lmforge.config import load_config
from lmforge.data import prepare as prepare_module
from lmforge.data.prepare import prepare, read_jsonl_gz
from lmforge.data.sources import iter_documents
from lmforge.errors import LmforgeError

quiet = lambda *_: None  # noqa: E731


def cfg(**over):
    values = {"prepare.shard_documents": 4, "prepare.workers": 1, "prepare.boilerplate_min_documents": 3}
    values.update(over)
    return load_config("tiny", overrides=[f"{k}={v}" for k, v in values.items()])


def outputs(folder):
    clean = [r for p in sorted((folder / "clean").glob("*.jsonl.gz")) for r in read_jsonl_gz(p)]
    rejected = [r for p in sorted((folder / "rejected").glob("*.jsonl.gz")) for r in read_jsonl_gz(p)]
    return clean, rejected


@pytest.fixture
def messy(tmp_path):
    """Every kind of bad input next to good documents, duplicates included."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"good{i}.txt").write_text(make_prose(i))
    (src / "zcopy_of_good0.txt").write_text(make_prose(0))  # exact duplicate
    words = make_prose(1).split(" ")
    words[10] = "changed"
    (src / "znear_good1.txt").write_text(" ".join(words))  # near duplicate
    (src / "binary.bin").write_bytes(bytes(range(256)) * 50)
    (src / "empty.txt").write_text("")
    (src / "short.txt").write_text("Too short.")
    with gzip.open(src / "truncated.txt.gz", "wb") as f:
        f.write(make_prose(50).encode() * 5)
    data = (src / "truncated.txt.gz").read_bytes()
    (src / "truncated.txt.gz").write_bytes(data[: len(data) // 2])
    lines = [json.dumps({"id": "j1", "text": make_prose(7)}), "{not json", json.dumps({"body": "no text field"}),
             json.dumps({"id": "j2", "text": make_prose(8)}), json.dumps({"text": "x" * (9_000_000)})]
    (src / "records.jsonl").write_text("\n".join(lines) + "\n")
    return src


def test_every_document_is_kept_or_rejected_with_a_reason(messy, tmp_path):
    c = cfg()
    report = prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    assert report["documents_in"] == report["documents_kept"] + report["documents_rejected"] == len(clean) + len(rejected)
    ids = [r["id"] for r in clean + rejected]
    assert len(ids) == len(set(ids))
    reasons = {r["id"].split("/")[-1]: r["reason"] for r in rejected}
    assert reasons["binary.bin"] == "binary files"
    assert reasons["empty.txt"] == "empty files"
    assert reasons["short.txt"] == "gopher_quality:few_words"
    assert any(k.startswith("records.jsonl:2") and v == "invalid JSON lines" for k, v in reasons.items())
    assert any(k.startswith("records.jsonl:3") and "without a 'text'" in v for k, v in reasons.items())
    assert any(k.startswith("records.jsonl:5") and v == "over-long lines" for k, v in reasons.items())
    assert any(k.startswith("truncated.txt.gz") and v == "unreadable or truncated files" for k, v in reasons.items())
    by_id = {r["id"]: r for r in rejected}
    dup = by_id[str(messy / "zcopy_of_good0.txt")]
    assert dup["reason"] == "exact_duplicate" and dup["duplicate_of"] == str(messy / "good0.txt")
    near = by_id[str(messy / "znear_good1.txt")]
    assert near["reason"] == "near_duplicate" and near["duplicate_of"] == str(messy / "good1.txt")
    assert 0.75 <= near["jaccard"] < 1.0
    assert {"j1", "j2", str(messy / "good3.txt")} <= {r["id"] for r in clean}
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["rejected_by_reason"]["exact_duplicate"] == 1 and summary["duplicate_clusters"] == 2


def test_candidates_that_share_a_bucket_are_verified_not_removed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shared = make_prose(100, 2)
    for i in range(4):  # each pair shares half its text: Jaccard ~0.3, well below the threshold
        (src / f"d{i}.txt").write_text(shared + "\n\n" + make_prose(200 + i, 2))
    c = cfg(**{"prepare.minhash_rows": 1, "prepare.minhash_bands": 20})  # nearly every pair becomes a candidate
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    decisions = json.loads((tmp_path / "out" / "work" / "dedup.json").read_text())
    assert decisions["candidate_pairs_checked"] >= 3
    clean, rejected = outputs(tmp_path / "out")
    assert len(clean) == 4 and not [r for r in rejected if r["stage"] == "dedup"]


def test_a_cluster_of_copies_is_checked_against_its_kept_copy_not_pairwise(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    words = make_prose(300, 3).split(" ")
    for i in range(40):  # 40 near copies: one bucket, 780 pairs; each copy needs one check
        copy = list(words)
        copy[5 + i] = f"edit{i}"
        (src / f"c{i:02d}.txt").write_text(" ".join(copy))
    c = cfg(**{"prepare.shard_documents": 16})
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    decisions = json.loads((tmp_path / "out" / "work" / "dedup.json").read_text())
    clean, rejected = outputs(tmp_path / "out")
    assert [r["id"] for r in clean] == [str(src / "c00.txt")]
    assert all(r["duplicate_of"] == str(src / "c00.txt") for r in rejected)
    assert decisions["candidate_pairs_checked"] == 39


def test_boilerplate_lines_shared_by_many_documents_are_removed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    header = "This page is part of the example documentation set, version one."
    for i in range(5):
        (src / f"d{i}.txt").write_text(header + "\n\n" + make_prose(i))
    c = cfg()
    report = prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, _ = outputs(tmp_path / "out")
    assert len(clean) == 5 and all(header not in r["text"] for r in clean)
    assert report["boilerplate_lines_removed"] == 5


class CrashAfter:
    """An executor that runs tasks inline and dies after n of them, like a killed run."""

    def __init__(self, n):
        self.n = n

    def submit(self, fn, *args):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        fn(*args)

    def wait(self):
        pass


@pytest.mark.parametrize("crash_after", [1, 4])  # in the filter phase, and in the write phase
def test_resume_after_a_kill_gives_identical_output(messy, tmp_path, crash_after):
    c = cfg()
    prepare([str(messy)], tmp_path / "straight", c.prepare, c.data, log=quiet, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False, executor=CrashAfter(crash_after))
    prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False)
    for sub in ("clean", "rejected"):
        a = sorted((tmp_path / "straight" / sub).glob("*"))
        b = sorted((tmp_path / "resumed" / sub).glob("*"))
        assert [p.name for p in a] == [p.name for p in b]
        for pa, pb in zip(a, b):
            assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_process_pool_gives_the_same_output_as_one_process(messy, tmp_path):
    one, two = cfg(), cfg(**{"prepare.workers": 2})
    prepare([str(messy)], tmp_path / "one", one.prepare, one.data, log=quiet, progress=False)
    prepare([str(messy)], tmp_path / "two", two.prepare, two.data, log=quiet, progress=False)
    for sub in ("clean", "rejected"):
        for pa in sorted((tmp_path / "one" / sub).glob("*")):
            assert pa.read_bytes() == (tmp_path / "two" / sub / pa.name).read_bytes()


def test_prepared_folder_reads_as_its_clean_documents(messy, tmp_path):
    c = cfg()
    prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    docs = list(iter_documents([str(tmp_path / "out")]))
    clean, _ = outputs(tmp_path / "out")
    assert [d.id for d in docs] == [r["id"] for r in clean]


def test_nothing_usable_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"\x00" * 100)
    c = cfg()
    with pytest.raises(LmforgeError, match="nothing usable remains"):
        prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)


def test_report_is_reused_when_complete(messy, tmp_path):
    c = cfg()
    prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    messages = []
    prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=messages.append)
    assert "complete, skipping" in messages[0]
    assert prepare_module.FORMAT == json.loads((tmp_path / "out" / "report.json").read_text())["format"]


def test_ray_gives_the_same_output_as_the_local_pool(messy, tmp_path):
    ray = pytest.importorskip("ray")
    local, on_ray = cfg(), cfg(**{"prepare.executor": "ray", "prepare.workers": 2})
    prepare([str(messy)], tmp_path / "local", local.prepare, local.data, log=quiet, progress=False)
    try:
        prepare([str(messy)], tmp_path / "ray", on_ray.prepare, on_ray.data, log=quiet, progress=False)
    finally:
        ray.shutdown()
    for sub in ("clean", "rejected"):
        names = sorted(p.name for p in (tmp_path / "local" / sub).glob("*"))
        assert names == sorted(p.name for p in (tmp_path / "ray" / sub).glob("*"))
        for name in names:
            assert (tmp_path / "local" / sub / name).read_bytes() == (tmp_path / "ray" / sub / name).read_bytes()


def test_a_killed_process_resumes_to_identical_output(tmp_path):
    """A real SIGKILL in the middle of the run, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"d{i:02d}.txt").write_text(make_prose(i))
    args = [sys.executable, "-m", "lmforge", "prepare", str(src), "--workers", "1",
            "--set", "prepare.shard_documents=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(args + ["--out", str(tmp_path / "straight")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "work" / "shard_00002.done"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "report.json").exists()  # it really died mid-way
    subprocess.run(args + ["--out", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    for sub in ("clean", "rejected"):
        names = sorted(p.name for p in (tmp_path / "straight" / sub).glob("*"))
        assert names == sorted(p.name for p in (tmp_path / "killed" / sub).glob("*"))
        for name in names:
            assert (tmp_path / "straight" / sub / name).read_bytes() == (tmp_path / "killed" / sub / name).read_bytes()
