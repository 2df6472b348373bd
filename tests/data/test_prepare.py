"""`prepare` end to end on real files: nothing lost, duplicates recorded, resumable, parallel = serial."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from conftest import children_of, make_prose, wait_for_exit
from lmforge.config import load_config
from lmforge.data import prepare as prepare_module
from lmforge.data.prepare import prepare
from lmforge.folders.prepared import read_jsonl_gz
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
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["candidate_pairs_checked"] >= 3
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
    report = prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    assert [r["id"] for r in clean] == [str(src / "c00.txt")]
    assert all(r["duplicate_of"] == str(src / "c00.txt") for r in rejected)
    assert report["candidate_pairs_checked"] == 39


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
    """An executor that runs tasks inline and dies when asked for the second task of `phase` (a task
    function's name), like a run killed there."""

    def __init__(self, phase):
        self.phase, self.seen = phase, 0

    def submit(self, fn, *args):
        if fn.__name__ == self.phase:
            self.seen += 1
            if self.seen == 2:
                raise KeyboardInterrupt("killed")
        fn(*args)

    def wait(self):
        pass


def assert_same_output(a, b):
    """clean/ and rejected/ byte for byte."""
    for sub in ("clean", "rejected"):
        names = sorted(p.name for p in (a / sub).glob("*"))
        assert names == sorted(p.name for p in (b / sub).glob("*"))
        for name in names:
            assert (a / sub / name).read_bytes() == (b / sub / name).read_bytes(), name


@pytest.mark.parametrize("crash_in", ["filter_shard", "key_partition", "band_buckets", "write_shard"])
def test_resume_after_a_kill_gives_identical_output(messy, tmp_path, crash_in):
    c = cfg()
    prepare([str(messy)], tmp_path / "straight", c.prepare, c.data, log=quiet, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False, executor=CrashAfter(crash_in))
    prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False)
    assert_same_output(tmp_path / "straight", tmp_path / "resumed")


def test_resume_after_a_kill_in_the_decisions_gives_identical_output(messy, tmp_path, monkeypatch):
    """The decisions run in the main process, not as tasks: killed there just after the first shard's
    removal list is written (the others and dedup.json not yet), a rerun decides again to the same folder."""
    c = cfg()
    prepare([str(messy)], tmp_path / "straight", c.prepare, c.data, log=quiet, progress=False)
    write_json = prepare_module.atomic_write_json

    def killed_after_a_drop_list(path, data):
        write_json(path, data)
        if path.name.endswith(".drop.json"):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(prepare_module, "atomic_write_json", killed_after_a_drop_list)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False)
    work = tmp_path / "resumed" / "work"
    assert [p.name for p in work.glob("*.drop.json")] == ["shard_00000.drop.json"] and len(list(work.glob("*.done"))) > 1
    assert not (work / "dedup.json").exists()
    monkeypatch.setattr(prepare_module, "atomic_write_json", write_json)
    prepare([str(messy)], tmp_path / "resumed", c.prepare, c.data, log=quiet, progress=False)
    assert_same_output(tmp_path / "straight", tmp_path / "resumed")


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
    with pytest.raises(LmforgeError, match="nothing usable remains.*1 as 'binary files'"):
        prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)


def test_records_whose_text_is_in_another_field_name_the_option(tmp_path):
    """Every record of a JSONL file lacks the `text` field: the error says which option reads another."""
    import json

    (tmp_path / "posts.jsonl").write_text("".join(json.dumps({"id": i, "body": "A post."}) + "\n" for i in range(3)))
    c = cfg()
    said = []
    with pytest.raises(LmforgeError, match=r"3 as \"records without a 'text' string\".*set data.text_field=NAME"):
        prepare([str(tmp_path / "posts.jsonl")], tmp_path / "out", c.prepare, c.data, log=said.append, progress=False)
    assert any("records without a 'text' string" in line for line in "\n".join(said).splitlines())  # the summary too


def test_report_is_reused_when_complete(messy, tmp_path):
    c = cfg()
    prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    messages = []
    prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=messages.append)
    assert "complete, skipping" in messages[-1]  # after the listing it compared
    assert prepare_module.FORMAT == json.loads((tmp_path / "out" / "report.json").read_text())["format"]


def test_ray_gives_the_same_output_as_the_local_pool(messy, tmp_path):
    ray = pytest.importorskip("ray")
    local, on_ray = cfg(), cfg(**{"prepare.executor": "ray", "prepare.workers": 2})
    prepare([str(messy)], tmp_path / "local", local.prepare, local.data, log=quiet, progress=False)
    try:
        prepare([str(messy)], tmp_path / "ray", on_ray.prepare, on_ray.data, log=quiet, progress=False)
    finally:
        ray.shutdown()
    assert_same_output(tmp_path / "local", tmp_path / "ray")


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
    assert_same_output(tmp_path / "straight", tmp_path / "killed")


@pytest.mark.skipif(not hasattr(__import__("os"), "pidfd_open"), reason="waits on Linux pidfds")
def test_a_killed_prepare_leaves_no_worker_behind(tmp_path):
    """SIGKILL of `prepare --workers 2`: its pool workers used to wait forever for a task from the
    dead parent (with multiprocessing's resource tracker): 29 such processes after the fault
    benchmark's 20 kills. The kernel now ends them with their parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"d{i:03d}.txt").write_text(make_prose(i))
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "prepare", str(src), "--workers", "2", "--out",
                             str(tmp_path / "out"), "--set", "prepare.shard_documents=3"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        while proc.poll() is None and not list((tmp_path / "out" / "work").glob("shard_*.done")):
            time.sleep(0.01)  # a shard done: the pool's workers are at work
        children = children_of(proc.pid)
        assert proc.poll() is None and len(children) >= 2, "prepare ended before it could be killed mid-way"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_for_exit(children, hang_guard_s=60) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in wait_for_exit(children, hang_guard_s=0):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- cleaning that does no harm (issue 13)

def _stdlib_sample() -> list:
    """Standard-library files that the old cleaning broke, and a spread of others: repeated code
    lines (encodings' tables, the pickle tests' loops), float literals, UUIDs, test IP addresses."""
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    named = ["colorsys.py", "uuid.py", "ipaddress.py", "test/pickletester.py", "test/test_pickle.py",
             "test/test_ipaddress.py", "test/test_uuid.py", "smtplib.py", "email/utils.py"]
    files = [root / n for n in named if (root / n).is_file()]
    files += sorted((root / "encodings").glob("cp*.py"))[:40]  # 128-row tables repeated file to file
    files += sorted(root.glob("test/test_p*.py"))[:40]
    files += sorted(root.glob("*.py"))[::6]
    return list(dict.fromkeys(files))


def test_every_kept_stdlib_python_file_still_parses(tmp_path):
    import ast
    import shutil

    src = tmp_path / "src"
    for path in _stdlib_sample():
        target = src / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    c = cfg(**{"prepare.shard_documents": 64, "prepare.boilerplate_min_documents": 3})
    report = prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    kept_py = [r for r in clean if r["source"].endswith(".py")]
    assert len(kept_py) > 0.8 * len(clean + rejected) and all(r["kind"] == "code" for r in kept_py)  # the rest: near copies
    for r in kept_py:
        ast.parse(r["text"], r["id"])  # a SyntaxError here names the file cleaning broke
        original = open(r["source"], encoding="utf-8", newline="").read()
        redactions = [e for e in r.get("edits", []) if e["rule"].startswith("pii:")]
        assert r["text"] == original or redactions, r["id"]  # code keeps its bytes apart from redactions
    assert report["boilerplate_lines_removed"] == 0


def _wrap(paragraph: str, width: int = 70) -> list[str]:
    import textwrap

    return textwrap.wrap(paragraph, width)


BOOK_HEADER = "This text is offered free of charge to anyone who wants to read it."


def _book_chunks(n: int) -> list[str]:
    """Hard-wrapped chapters in a Gutenberg book's layout: headings, paragraphs whose last line is a
    word or two ("smile."), dialogue, and a header line repeated in every chunk (boilerplate)."""
    from conftest import make_prose

    chunks = []
    for i in range(n):
        lines = [BOOK_HEADER, "", f"CHAPTER {['I', 'II', 'III', 'IV', 'V', 'VI', 'VII', 'VIII'][i % 8]}{'I' * (i // 8)}", ""]
        for p, paragraph in enumerate(make_prose(1000 + i, 5).split("\n\n")):
            paragraph = paragraph.rstrip(".") + (" and she answered him with a quiet smile." if p % 2 else ".")
            wrapped = _wrap(paragraph)
            if p % 2 and len(wrapped[-1].split()) > 1:
                wrapped = _wrap(paragraph, len(paragraph) - len(paragraph.split()[-1]) - 1)[:1] + [paragraph.split()[-1]] \
                    if len(paragraph) < 70 else wrapped[:-1] + _wrap(wrapped[-1].rsplit(" ", 1)[0]) + [wrapped[-1].rsplit(" ", 1)[1]]
            lines += wrapped + [""]
            if p == 2:
                lines += ["\u201cAre you coming?\u201d", "", "\u201cYes.\u201d", ""]
        chunks.append("\n".join(lines) + "\n")
    return chunks


@pytest.mark.parametrize("line_rules", ["web", "prose"])  # prose: C4 and FineWeb on books too
def test_book_chunks_keep_every_line_but_the_boilerplate(tmp_path, line_rules):
    src = tmp_path / "book"
    src.mkdir()
    chunks = _book_chunks(8)
    assert any(len(l.split()) == 1 and l.endswith("smile.") for l in chunks[0].splitlines())  # a paragraph's tail
    for i, chunk in enumerate(chunks):
        (src / f"chunk{i:02d}.txt").write_text(chunk)
    c = cfg(**{"prepare.line_rules": line_rules, "prepare.shard_documents": 8})
    report = prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    assert not rejected and len(clean) == len(chunks)
    for record, chunk in zip(clean, chunks):
        expected = [l for l in chunk.split("\n") if l != BOOK_HEADER]
        assert record["text"].split("\n") == expected  # every other line, in place, headings and tails included
        assert record["edits"] == [{"rule": "boilerplate", "lines": [1]}]
    assert report["boilerplate_lines_removed"] == len(chunks)


SCRIPT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

First Citizen:
First, you know Caius Marcius is chief enemy to the people.

All:
We know't, we know't.

First Citizen:
Let us kill him, and we'll have corn at our own price.
Is't a verdict?

All:
No more talking on't; let it be done: away, away!

Second Citizen:
One word, good citizens.

First Citizen:
We are accounted poor citizens, the patricians good.
What authority surfeits on would relieve us: if they
would yield us but the superfluity, while it were
wholesome, we might guess they relieved us humanely;
but they think we are too dear: the leanness that
afflicts us, the object of our misery, is as an
inventory to particularise their abundance; our
sufferance is a gain to them. Let us revenge this with
our pikes, ere we become rakes: for the gods know I
speak this in hunger for bread, not in thirst for revenge.
"""


def test_a_play_keeps_its_speaker_labels_and_lines(tmp_path):
    src = tmp_path / "plays"
    src.mkdir()
    (src / "coriolanus.txt").write_text(SCRIPT)
    c = cfg(**{"prepare.line_rules": "prose"})
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    assert not rejected and clean[0]["text"] == SCRIPT


def test_rejected_records_hold_the_text_exactly_as_read(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw_short = "Too  short,\r\nand doesnâ€™t matter.   \r\n\r\n\r\n\x07"
    (src / "a_short.txt").write_bytes(raw_short.encode("utf-8"))
    original = make_prose(5).replace("\n\n", "\r\n\r\n\r\n") + "  \r\n"
    (src / "b_original.txt").write_bytes(original.encode("utf-8"))
    copy = original.replace("  \r\n", "\t\r\n")  # the same text after repairs: an exact duplicate
    (src / "c_copy.txt").write_bytes(copy.encode("utf-8"))
    c = cfg(**{"prepare.boilerplate": "false"})
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "out")
    by_name = {r["id"].split("/")[-1]: r for r in rejected}
    assert by_name["a_short.txt"]["stage"] == "gopher_quality"
    assert by_name["a_short.txt"]["text"].encode("utf-8") == raw_short.encode("utf-8")
    assert by_name["c_copy.txt"]["reason"] == "exact_duplicate"
    assert by_name["c_copy.txt"]["text"].encode("utf-8") == copy.encode("utf-8")
    assert "\r" not in clean[0]["text"] and clean[0]["text"] != original


def test_a_capped_run_reports_what_it_left_unread(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"d{i:02d}.txt").write_text(make_prose(i))
    c = cfg(**{"data.max_bytes": 3 * len(make_prose(0))})
    messages = []
    report = prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=messages.append, progress=False)
    reader = report["reader"]
    opened = reader["files"]  # those read, and one opened to see that more was there
    assert reader["capped"] and report["documents_in"] == opened - 1 < 12
    assert reader["stopped_in"] == str(src / f"d{opened - 1:02d}.txt")
    assert reader["unread_files"] == 12 - opened
    assert reader["unread_bytes"] == sum((src / f"d{i:02d}.txt").stat().st_size for i in range(opened, 12))
    assert any("left unread" in m and "data.max_bytes" in m for m in messages)
    whole = cfg()
    report = prepare([str(src)], tmp_path / "whole", whole.prepare, whole.data, log=quiet, progress=False)
    assert not report["reader"]["capped"] and report["documents_in"] == 12


def test_named_sources_are_read_whole_unless_the_user_caps_them(tmp_path):
    from lmforge.cli import _resolve, build_parser

    def resolved(*argv):
        return _resolve(build_parser().parse_args(["prepare", *argv, "--out", str(tmp_path / "o")]), None,
                        [a for a in argv if not a.startswith("-") and "=" not in a])

    assert load_config("tiny").data.max_bytes > 0  # the preset caps its built-in corpus
    assert resolved(str(tmp_path)).data.max_bytes == 0
    assert resolved(str(tmp_path), "--set", "data.max_bytes=1000").data.max_bytes == 1000
    assert resolved("builtin").data.max_bytes == load_config("tiny").data.max_bytes


def test_filter_registry_is_the_one_list_config_and_stack_read():
    from lmforge.config import PrepareConfig
    from lmforge.data import FILTERS
    from lmforge.data.clean import REGISTRY

    assert PrepareConfig().filters == list(FILTERS) and set(REGISTRY) == set(FILTERS)
    with pytest.raises(LmforgeError, match="prepare.filters"):
        load_config("tiny", overrides=["prepare.filters=[gopher_quality, nonsense]"])
    stack = prepare_module.FilterStack(load_config("tiny", overrides=["prepare.filters=[c4, language]"]).prepare)
    assert [f.name for f in stack.filters] == ["language", "c4"]  # registry order: language first


def test_report_counts_every_step(messy, tmp_path):
    c = cfg()
    report = prepare([str(messy)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)
    steps = report["steps"]
    assert steps["gopher_quality"]["dropped:few_words"] == report["rejected_by_reason"]["gopher_quality:few_words"]
    assert steps["language"]["documents"] >= steps["gopher_quality"]["documents"]
    filtered = report["documents_in"] - report["rejected_by_stage"]["read"]
    assert steps["repair"]["documents"] == filtered


def _shard_texts(folder) -> list[list[str]]:
    return [[r["text"] for r in read_jsonl_gz(p)] for p in sorted((folder / "clean").glob("shard_*.jsonl.gz"))]


def test_shards_are_cut_by_bytes_and_a_larger_document_goes_alone(tmp_path):
    """Real documents of 1-50 KB and one of ~470 KB (every pydoc topic), under a 40 KB cap: each shard
    holds at most the cap unless it is one larger document alone, each is cut only where the next
    document would not fit, and together they are the input stream in order."""
    from pydoc_data.topics import topics

    from conftest import corpus_texts

    src = tmp_path / "src"
    src.mkdir()
    for i, text in enumerate(corpus_texts()[:40]):
        (src / f"doc{i:03d}.txt").write_text(text)
    (src / "doc020_all_topics.txt").write_text("\n".join(topics[name] for name in sorted(topics)))
    cap = 40_000
    c = cfg(**{"prepare.shard_documents": 1000, "prepare.shard_bytes": cap})
    c.prepare.filters, c.prepare.repair, c.prepare.pii, c.prepare.boilerplate = [], False, False, False
    c.prepare.exact_dedup = c.prepare.near_dedup = False  # every document kept as read: shards show the cut
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=quiet, progress=False)

    shards = _shard_texts(tmp_path / "out")
    size = lambda texts: sum(len(t.encode("utf-8")) for t in texts)  # noqa: E731
    stream = [d.text for d in iter_documents([str(src)])]
    assert [t for s in shards for t in s] == stream
    larger = [[t] for t in stream if size([t]) > cap]
    assert [s for s in shards if size(s) > cap] == larger
    assert [(src / "doc020_all_topics.txt").read_text()] in larger
    for shard, following in zip(shards, shards[1:]):
        assert size(shard) + len(following[0].encode("utf-8")) > cap  # full: the next document did not fit
    assert len(shards) > len(larger) + 1  # 1,000 documents a shard alone would give one


def test_a_byte_cap_on_shards_changes_no_decision(messy, tmp_path):
    """The same documents kept, edited, rejected and deduplicated whether the stream is cut every few
    kilobytes or every four documents."""
    by_documents, by_bytes = cfg(), cfg(**{"prepare.shard_bytes": 3_000})
    prepare([str(messy)], tmp_path / "docs", by_documents.prepare, by_documents.data, log=quiet, progress=False)
    prepare([str(messy)], tmp_path / "bytes", by_bytes.prepare, by_bytes.data, log=quiet, progress=False)
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("docs", "bytes")]
    assert reports[1]["shards"] > reports[0]["shards"]
    key = lambda r: r["id"]  # noqa: E731
    (clean_a, rejected_a), (clean_b, rejected_b) = outputs(tmp_path / "docs"), outputs(tmp_path / "bytes")
    assert clean_a == clean_b
    assert sorted(rejected_a, key=key) == sorted(rejected_b, key=key)


def test_report_holds_the_peak_memory_of_the_workers(messy, tmp_path):
    """report.json and the printed summary give the largest peak resident memory of a worker, and each
    step's: at most the largest the kernel saw in the process tree (the main process and its two
    workers, as their parent sees them when they exit), and at least what a Python process with numpy
    holds."""
    tree = [sys.executable, "-c", "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(r.returncode)"]  # Linux: KiB
    out = tmp_path / "out"
    r = subprocess.run([*tree, sys.executable, "-m", "lmforge", "prepare", str(messy), "--out", str(out),
                        "--workers", "2", "--no-progress"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    # the kernel counts resident pages per CPU in batches: VmHWM (read by prepare) and the maxrss kept at
    # exit may differ by a few of them (160 kB seen here)
    tree_peak = int(r.stdout.strip().splitlines()[-1]) + 2**20
    report = json.loads((out / "report.json").read_text())
    peak = report["worker_peak_rss_bytes"]
    assert 20e6 < peak <= tree_peak
    assert f"peak memory per worker: {peak / 1e6:,.0f} MB" in r.stdout
    # each step's own peak, every one of them run: in the workers, or (decisions, parent) in the main process
    steps = report["peak_rss_by_step"]
    assert list(steps) == ["filter", "keys", "buckets", "decisions", "write", "parent"]
    assert all(20e6 < n <= tree_peak for n in steps.values()), steps
    assert max(steps["filter"], steps["write"]) == peak
    assert steps["decisions"] <= steps["parent"]
    assert "peak memory by step: " + ", ".join(f"{k} {n / 1e6:,.0f} MB" for k, n in steps.items()) in r.stdout


# a play's scene as JSONL and Parquet record it: its lines repeat ("We know't, we know't."), as a play's do
PLAY = "\n\n".join(f"{who}:\n{line}" for who, line in [
    ("First Citizen", "Before we proceed any further, hear me speak."), ("All", "Speak, speak."),
    ("First Citizen", "You are all resolved rather to die than to famish?"), ("All", "Resolved. resolved."),
    ("First Citizen", "First, you know Caius Marcius is chief enemy to the people."), ("All", "We know't, we know't."),
    ("First Citizen", "Let us kill him, and we'll have corn at our own price.\nIs't a verdict?"),
    ("All", "No more talking on't; let it be done: away, away!"), ("Second Citizen", "One word, good citizens."),
    ("First Citizen", "We are accounted poor citizens, the patricians good."), ("All", "We know't, we know't."),
    ("Second Citizen", "Would you proceed especially against Caius Marcius?"),
    ("All", "No more talking on't; let it be done: away, away!")]) + "\n"


@pytest.mark.parametrize("form", ["jsonl", "parquet"])
def test_a_play_as_records_is_cleaned_as_prose_and_a_web_record_as_web(tmp_path, form):
    """Issue 28: records were always web pages, so FineWeb's duplicate-line rule (web only) removed
    plays; a record is now guessed from its layout, as a file is from its suffix, and counted per kind."""
    records = [{"id": "coriolanus", "text": PLAY}, {"id": "page", "text": make_prose(3, 4)},
               {"id": "tool", "text": "def main():\n    return 0\n", "path": "src/tool.py"}]
    source = tmp_path / f"corpus.{form}"
    if form == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{"path": "", **r} for r in records]), source)
    report = prepare([str(source)], tmp_path / "p", cfg().prepare, cfg().data, log=quiet, progress=False)
    clean, rejected = outputs(tmp_path / "p")
    assert rejected == []
    assert {r["id"]: r["kind"] for r in clean} == {"coriolanus": "prose", "page": "web", "tool": "code"}
    assert report["documents_by_kind"] == {k: {"in": 1, "kept": 1} for k in ("prose", "web", "code")}


def test_data_kinds_set_a_sources_kind(tmp_path):
    (tmp_path / "plays.jsonl").write_text(json.dumps({"id": "coriolanus", "text": PLAY}) + "\n")
    (tmp_path / "notes.txt").write_text(make_prose(5, 4))
    sources = [str(tmp_path / "plays.jsonl"), str(tmp_path / "notes.txt")]
    c = cfg(**{"data.kinds": f"[{tmp_path / 'plays.jsonl'}=web]"})
    report = prepare(sources, tmp_path / "p", c.prepare, c.data, log=quiet, progress=False)
    assert report["rejected_by_reason"] == {"fineweb:duplicate_line_chars": 1}  # judged as the web page it was said to be
    assert report["documents_by_kind"] == {"web": {"in": 1, "kept": 0}, "prose": {"in": 1, "kept": 1}}
    every = cfg(**{"data.kinds": "[web]"}).data
    assert [d.kind for d in iter_documents(prepare_module.list_prepare_inputs(sources, tmp_path / "q", kinds=every.kinds))] == ["web", "web"]
    with pytest.raises(LmforgeError, match=r"data.kinds: 'other.txt=web' names no source"):
        prepare_module.list_prepare_inputs(sources, tmp_path / "q", kinds=["other.txt=web"])
    # the names: a book or a play is read by prose's rules
    books = cfg(**{"data.kinds": f"[{tmp_path / 'plays.jsonl'}=play, book]"}).data
    assert [d.kind for d in iter_documents(prepare_module.list_prepare_inputs(sources, tmp_path / "q", kinds=books.kinds))] == ["prose", "prose"]
    with pytest.raises(LmforgeError, match=r"data.kinds=.*novel.*prose, book, play, web, code"):
        cfg(**{"data.kinds": "[novel]"})


def test_the_summary_says_sizes_counts_and_line_edits_as_a_person_reads_them(tmp_path):
    """Issue 28's trial: "1 documents (0.0 MB)" for a 24 kB corpus, "repair:documents: 60" (a tally, not a
    repair) and C4 removing "The end." from 30 kept stories without a word on screen."""
    from lmforge.figures import size
    from lmforge.folders.prepared import PrepareReport

    story = make_prose(3) + "\n\nThe end.\n"
    (tmp_path / "stories.jsonl").write_text(json.dumps({"id": "s1", "text": story}) + "\n")
    said: list[str] = []
    c = cfg(**{"data.kinds": "[web]"})
    prepare([str(tmp_path / "stories.jsonl")], tmp_path / "p", c.prepare, c.data, log=said.append, progress=False)
    text = "\n".join(said)
    report = PrepareReport.from_dict(json.loads((tmp_path / "p" / "report.json").read_text()))
    assert report.steps["c4"]["edited"] == 1
    assert f"prepare: 1 document ({size(report.bytes_in)}) in -> 1 kept" in text, text
    assert "lines removed from kept documents: c4 in 1 document" in text
    assert "repair:documents" not in text
    assert [size(24_100), size(3_300_000), size(1.2e9), size(512)] == ["24.1 kB", "3.3 MB", "1.20 GB", "512 bytes"]
