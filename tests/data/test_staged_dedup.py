"""Deduplication in partitions (keys by hash, buckets by band, verification of the candidates only):
the same prepared folder as when one process held the whole corpus, and no step holding every document."""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import make_prose
from lmforge.config import load_config
from lmforge.data import prepare as prepare_module
from lmforge.data.prepare import prepare
from lmforge.folders.prepared import read_jsonl_gz

sys.path.insert(0, str(Path(__file__).parent))
from staged_dedup_corpus import CONFIGS, digest, run  # noqa: E402

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "staged_dedup_main.json").read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_prepared_folder_as_the_single_process_decisions(tmp_path, name):
    """clean/, rejected/ and report.json (timings and memory aside) as main made them before dedup was
    staged: exact and near copies across shards, a repeated id, boilerplate lines."""
    got = run(tmp_path, name)
    assert got == FIXTURE[name]
    reasons = got["report.json"]["rejected_by_reason"]
    assert reasons["near_duplicate"] > 0 and reasons["exact_duplicate"] > 0


def test_a_process_pool_gives_the_same_folder(tmp_path):
    assert run(tmp_path, "default", workers=2) == FIXTURE["default"]


def test_ray_gives_the_same_folder(tmp_path):
    ray = pytest.importorskip("ray")
    try:
        assert run(tmp_path, "buckets", workers=2, executor="ray") == FIXTURE["buckets"]
    finally:
        ray.shutdown()


def test_decisions_hold_the_candidates_not_the_corpus(tmp_path, monkeypatch):
    """40 distinct documents and one near copy: the decision step holds the 2 documents that share a
    bucket, and each shard's removal list holds only its own rows."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"d{i:02d}.txt").write_text(make_prose(i))
    words = make_prose(3).split(" ")
    words[10] = "changed"
    (src / "zz_near_d03.txt").write_text(" ".join(words))
    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)  # keep work/ to look at
    c = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.workers=1"])
    prepare([str(src)], tmp_path / "out", c.prepare, c.data, log=lambda *_: None, progress=False)
    work = tmp_path / "out" / "work"
    decisions = json.loads((work / "dedup.json").read_text())
    assert decisions["candidate_documents"] == 2 and decisions["duplicates"] == 1
    assert decisions["candidate_pairs_checked"] == 1
    assert "ids" not in decisions and "dropped" not in decisions  # nothing per document in the shared file
    drops = {p.name: json.loads(p.read_text()) for p in sorted(work.glob("shard_*.drop.json"))}
    assert len(drops) == 11
    assert drops["shard_00010.drop.json"]["dropped"] == {
        "0": {"reason": "near_duplicate", "duplicate_of": str(src / "d03.txt"), "jaccard": pytest.approx(0.9, abs=0.1)}}
    assert not any(d["dropped"] for name, d in drops.items() if name != "shard_00010.drop.json")
    rejected = [r for p in sorted((tmp_path / "out" / "rejected").glob("dedup_*")) for r in read_jsonl_gz(p)]
    assert [r["id"] for r in rejected] == [str(src / "zz_near_d03.txt")]


def test_a_work_folder_without_removal_lists_is_decided_again(tmp_path):
    """A prepare killed while writing, by a version that kept every decision in dedup.json (no
    shard_N.drop.json): the rerun decides again instead of failing or trusting that file."""
    run(tmp_path, "default")  # the corpus, and the straight run's folder
    from test_prepare import CrashAfter, assert_same_output, cfg

    c = cfg()
    with pytest.raises(KeyboardInterrupt):
        prepare([str(tmp_path / "src")], tmp_path / "killed", c.prepare, c.data, log=lambda *_: None, progress=False,
                executor=CrashAfter("write_shard"))
    for path in (tmp_path / "killed" / "work").glob("shard_*.drop.json"):
        path.unlink()
    prepare([str(tmp_path / "src")], tmp_path / "killed", c.prepare, c.data, log=lambda *_: None, progress=False)
    straight = tmp_path / "straight"
    prepare([str(tmp_path / "src")], straight, c.prepare, c.data, log=lambda *_: None, progress=False)
    assert_same_output(straight, tmp_path / "killed")


# A partition per ~1 kB of input here (the corpus is ~47 kB): the keys scattered over about 47 parts.
MANY = {"prepare.key_partition_bytes": 1000}


def _partitions(work: Path) -> int:
    return json.loads((work / "partitions.json").read_text())["partitions"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_many_key_partitions_give_the_same_folder(tmp_path, monkeypatch, name):
    """The number of key partitions follows the input's size and changes no output byte."""
    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)
    assert run(tmp_path, name, **MANY) == FIXTURE[name]
    work = tmp_path / f"out_{name}_local_1" / "work"
    input_bytes = sum(p.stat().st_size for p in (tmp_path / "src").iterdir())
    assert _partitions(work) == -(-input_bytes // 1000) > 40
    assert len(list(work.glob("keys_*.json"))) == _partitions(work)


def test_a_key_task_reads_only_its_own_part_of_each_shard(tmp_path, monkeypatch):
    """Every byte of every shard's .keys overwritten but partition P's two offsets and its part: P decides
    the same."""
    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)
    run(tmp_path, "default", **MANY)
    work = tmp_path / "out_default_local_1" / "work"
    shards = sorted(work.glob("shard_*.keys"))
    offsets, documents = prepare_module.shard_offsets(work, len(shards))
    c = load_config("tiny", overrides=["prepare.boilerplate_min_documents=3"])
    written = {path: path.read_bytes() for path in shards}
    decided = {part: json.loads((work / f"keys_{part:05d}.json").read_text()) for part in range(_partitions(work))}
    busy = [part for part, d in decided.items() if d["renamed"] or d["exact"] or d["boilerplate"]]
    assert len(busy) >= 3  # a rename, exact copies, the boilerplate line: each in some partition
    for part in busy[:3] + [next(p for p in decided if p not in busy)]:
        for path in shards:
            data = written[path]
            start, end = (int.from_bytes(data[8 * i:8 * i + 8], "little") for i in (part, part + 1))
            kept = {*range(8 * part, 8 * part + 16), *range(start, end)}
            path.write_bytes(bytes(b if i in kept else ord("#") for i, b in enumerate(data)))
        prepare_module.key_partition(part, work, offsets, documents, c.prepare)
        got = json.loads((work / f"keys_{part:05d}.json").read_text())
        assert {k: v for k, v in got.items() if k != "peak_rss_bytes"} == \
            {k: v for k, v in decided[part].items() if k != "peak_rss_bytes"}


def test_a_resumed_prepare_keeps_the_partition_count_it_started_with(tmp_path):
    """Killed in the key partitions with ~47 of them, resumed under the default (8 for this size): the
    shards' keys were split ~47 ways, and the resumed run reads them so."""
    run(tmp_path, "default")  # writes the corpus
    from test_prepare import CrashAfter

    many = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.boilerplate_min_documents=3",
                                          "prepare.key_partition_bytes=1000"])
    here = os.getcwd()
    os.chdir(tmp_path)  # ids are paths relative to it, as in the fixture
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(["src"], Path("killed"), many.prepare, many.data, log=lambda *_: None, progress=False,
                    executor=CrashAfter("key_partition"))
        assert _partitions(Path("killed/work")) > 40
        default = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.boilerplate_min_documents=3"])
        prepare(["src"], Path("killed"), default.prepare, default.data, log=lambda *_: None, progress=False)
    finally:
        os.chdir(here)
    assert digest(tmp_path / "killed") == FIXTURE["default"]


def test_key_partitions_of_a_work_folder_that_recorded_no_count_are_redone(tmp_path):
    """A work/ left by a prepare that recorded no partition count (before the count followed the corpus)
    and was killed in the key tasks: its keys_P.json were split another way and are not reused."""
    run(tmp_path, "default")  # writes the corpus
    from test_prepare import CrashAfter

    many = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.boilerplate_min_documents=3",
                                          "prepare.key_partition_bytes=1000"])
    default = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.boilerplate_min_documents=3"])
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(["src"], Path("killed"), many.prepare, many.data, log=lambda *_: None, progress=False,
                    executor=CrashAfter("key_partition"))
        work = Path("killed/work")
        assert (work / "keys_00000.json").is_file()  # partition 0 of 47
        (work / "partitions.json").unlink()
        for path in work.glob("shard_*.keys"):  # such a work/ had none: its shards are filtered again
            path.unlink()
        prepare(["src"], Path("killed"), default.prepare, default.data, log=lambda *_: None, progress=False)
    finally:
        os.chdir(here)
    assert digest(tmp_path / "killed") == FIXTURE["default"]


# A partition per 100 bytes: ~470 key partitions, so each band split into ~8 bucket partitions.
MANY_BANDS = {"prepare.key_partition_bytes": 100}


def _band_partitions(work: Path) -> int:
    return json.loads((work / "partitions.json").read_text())["band_partitions"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bands_split_by_bucket_give_the_same_folder(tmp_path, monkeypatch, name):
    """Each band's buckets in several partitions, each task reading the signatures 3 rows at a time: the
    decisions read their union and the folder is main's, byte for byte."""
    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)
    monkeypatch.setattr(prepare_module, "BAND_CHUNK_ROWS", 3)  # shards of 4 documents: chunks cut inside them
    assert run(tmp_path, name, **MANY_BANDS) == FIXTURE[name]
    work = tmp_path / f"out_{name}_local_1" / "work"
    parts = _band_partitions(work)
    assert parts == prepare_module.band_partitions(_partitions(work)) > 4
    bands = load_config("tiny", overrides=[f"{k}={v}" for k, v in CONFIGS[name].items()]).prepare.minhash_bands
    assert len(list(work.glob("band_*_*.npy"))) == bands * parts


def _buckets(members) -> set[frozenset]:
    """A band file's buckets as sets of stream positions (bucket numbers are local to a file)."""
    by_bucket: dict[int, set] = {}
    for bucket, pos in members.tolist():
        by_bucket.setdefault(bucket, set()).add(pos)
    return {frozenset(b) for b in by_bucket.values()}


def test_a_band_task_holds_only_its_bucket_partition(tmp_path, monkeypatch):
    """Band task (B, q) keeps only the rows whose band value hashes to q, and the q tasks' buckets
    together are the band's buckets as one task over the whole band finds them."""
    import numpy as np

    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)
    run(tmp_path, "buckets", **MANY_BANDS)
    work = tmp_path / "out_buckets_local_1" / "work"
    c = load_config("tiny", overrides=[f"{k}={v}" for k, v in CONFIGS["buckets"].items()])
    parts = _band_partitions(work)
    offsets, _ = prepare_module.shard_offsets(work, len(list(work.glob("shard_*.done"))))
    sigs = np.concatenate([np.load(work / f"shard_{i:05d}.sig.npy") for i in range(len(offsets))])
    rows = c.prepare.minhash_rows
    for index in range(c.prepare.minhash_bands):
        value = sigs[:, index * rows:(index + 1) * rows]
        union = set()
        for part in range(parts):
            members = np.load(work / f"band_{index:05d}_{part:05d}.npy")
            assert (prepare_module.bucket_partition(value[members[:, 1]], parts) == part).all()
            union |= _buckets(members)
        prepare_module.band_buckets(index, 0, 1, work, offsets, c.prepare)  # the whole band in one task
        assert union == _buckets(np.load(work / f"band_{index:05d}_00000.npy"))
    assert len(union) > 1


def test_band_files_of_a_work_folder_that_recorded_no_band_count_are_redone(tmp_path, monkeypatch):
    """A work/ killed in the band tasks by a prepare that split no band (band_B.npy, no band_partitions
    in partitions.json): its band files go, the bands are split and decided again, the folder is main's."""
    run(tmp_path, "default")  # writes the corpus
    from test_prepare import CrashAfter

    monkeypatch.setattr(prepare_module, "_remove_work", lambda work: None)
    c = load_config("tiny", overrides=["prepare.shard_documents=4", "prepare.boilerplate_min_documents=3"])
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(["src"], Path("killed"), c.prepare, c.data, log=lambda *_: None, progress=False,
                    executor=CrashAfter("band_buckets"))
        work = Path("killed/work")
        counts = json.loads((work / "partitions.json").read_text())
        (work / "partitions.json").write_text(json.dumps({"partitions": counts["partitions"]}))
        (work / "band_00000_00000.npy").rename(work / "band_00000.npy")  # the older name
        prepare(["src"], Path("killed"), c.prepare, c.data, log=lambda *_: None, progress=False)
        assert not (work / "band_00000.npy").exists()
        assert _band_partitions(work) == 1
    finally:
        os.chdir(here)
    assert digest(tmp_path / "killed") == FIXTURE["default"]
