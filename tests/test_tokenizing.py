"""Tokenize sharded over the data stages' executors (lmforge/tokenizing.py): a local pool or Ray gives
the folder one process gives, byte for byte, and an interrupted run leaves nothing that looks complete."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import corpus_texts
from lmforge import tokenizing
from lmforge.config import DataConfig, TokenizerConfig
from lmforge.tokenizing import is_validation, tokenize_corpus

PEAK = "worker_peak_rss_bytes"  # a worker's memory: the one key that may differ between runs


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a tokenized folder, meta.json without the peak memory of a worker."""
    made = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    meta = json.loads(made.pop("meta.json"))
    meta.pop(PEAK)
    return {**made, "meta.json": json.dumps(meta).encode()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """60 real documents (the pydoc topics: prose and code) and one long one, every topic in one file."""
    root = tmp_path_factory.mktemp("corpus")
    texts = corpus_texts()
    for i, text in enumerate(texts):
        (root / f"doc{i:03d}.txt").write_text(text)
    (root / "long.txt").write_text("\n".join(texts))
    return root


# pieces of at most 8 documents and 20 KB: the 61 documents in 16 pieces, the long document (~265 KB) alone in
# one and encoded there in pieces of at most 20,000 characters; shards of 5,000 tokens end inside documents and pieces
PIECES = TokenizerConfig(vocab_size=400, train_bytes=0, shard_tokens=5_000, encode_batch_documents=8,
                         encode_batch_bytes=20_000)
LONG = DataConfig(val_fraction=0.1, long_document_tokens=40_000)  # the long document (~100K tokens) holds out its own end


def tokenize(data: DataConfig, corpus: Path, out: Path, **processes) -> tuple[dict, list[str]]:
    said: list[str] = []
    data = DataConfig(**{**data.__dict__, "sources": [str(corpus)]})
    meta = tokenize_corpus(data, PIECES, out, log=said.append, progress=False, **processes)
    return meta, said


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "tok"
    meta, said = tokenize(LONG, corpus, out, workers=1)
    assert "1 long one" in meta["val_split"]["detail"] and len(meta["splits"]["train"]["shards"]) > 10
    pieces = next(int(line.split()[3]) for line in said if line.startswith("tokenize: read all"))
    assert pieces > 10
    return out


def test_a_pool_of_two_gives_the_folder_of_one_process(corpus, one_process, tmp_path):
    meta, said = tokenize(LONG, corpus, tmp_path / "tok", workers=2)
    assert folder_bytes(tmp_path / "tok") == folder_bytes(one_process)
    assert not (tmp_path / ".tok.tokenize-building").exists() and not (tmp_path / "tok" / "work").exists()
    assert 20e6 < meta[PEAK] < 2e9  # a Python process with numpy and the tokenizer, at least
    for phase in ("reading the corpus", "learned 400 tokens", "encoding 61 documents", "waiting for the last"):
        assert any(phase in line for line in said), phase


def test_ray_gives_the_folder_of_one_process(corpus, one_process, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        tokenize(LONG, corpus, tmp_path / "tok", workers=2, executor="ray")
    finally:
        ray.shutdown()
    assert folder_bytes(tmp_path / "tok") == folder_bytes(one_process)


def test_the_tail_held_out_across_pieces_is_the_one_process_tail(tmp_path):
    """Documents that all hash to train: val is the tail of the stream, cut across the pieces' tokens
    the parent appended, and it is the same as one process cuts."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = corpus_texts()[:30]
    names = [n for n in (f"doc{i:04d}.txt" for i in range(1000)) if not is_validation(n, 0.1)][:len(texts)]
    for name, text in zip(names, texts):
        (corpus / name).write_text(text)
    tail = DataConfig(val_fraction=0.1, long_document_tokens=10**9)
    metas = [tokenize(tail, corpus, tmp_path / f"tok{n}", workers=n)[0] for n in (1, 2)]
    assert metas[0]["val_split"]["rule"] == "tail" and metas[0]["splits"]["val"]["tokens"] > 0
    assert folder_bytes(tmp_path / "tok1") == folder_bytes(tmp_path / "tok2")


def test_an_interrupted_tokenize_leaves_nothing_complete_and_a_rerun_is_the_same(corpus, one_process, tmp_path,
                                                                                 monkeypatch):
    """A KeyboardInterrupt in the third piece's task (encoded in this process, one worker): no
    meta.json, no building folder, no work files; the same command again gives the straight folder."""
    encode = tokenizing.encode_piece

    def interrupted(index, *args):
        if index == 2:
            raise KeyboardInterrupt("killed")
        encode(index, *args)

    monkeypatch.setattr(tokenizing, "encode_piece", interrupted)
    out = tmp_path / "tok"
    with pytest.raises(KeyboardInterrupt):
        tokenize(LONG, corpus, out, workers=1)
    assert not (out / "meta.json").exists() and not (tmp_path / ".tok.tokenize-building").exists()
    monkeypatch.setattr(tokenizing, "encode_piece", encode)
    tokenize(LONG, corpus, out, workers=1)
    assert folder_bytes(out) == folder_bytes(one_process)


def test_workers_and_executor_are_flags_outside_the_fingerprint(corpus, tmp_path):
    """`lmforge tokenize --workers 2 --executor local`, then the same with one worker: complete, skipping."""
    def run(*flags):
        return subprocess.run([sys.executable, "-m", "lmforge", "tokenize", str(corpus), "--out", str(tmp_path / "tok"),
                               "--set", "tokenizer.vocab_size=400", "--set", "tokenizer.encode_batch_bytes=40000",
                               "--no-progress", *flags], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    first = run("--workers", "2", "--executor", "local")
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert f"peak memory per worker {meta[PEAK] / 1e6:,.0f} MB" in first.stdout
    second = run("--workers", "1")
    assert second.returncode == 0, second.stderr
    assert "complete, skipping" in second.stdout
