import json
import os
import subprocess
import sys

import numpy as np

from lmforge.config import DataConfig, TokenizerConfig
from lmforge.data.sources import iter_documents
from lmforge.tokenizer import EOT, MASK, PAD, load_tokenizer, token_byte_lengths, train_tokenizer
from lmforge.folders.tokenized import load_shards, read_meta
from lmforge.tokenizing import (is_complete, is_validation, source_prefixes, split_key,
                            tokenize_corpus)

SAMPLES = ["Hello, world!", "def f(x):\n    return x ** 2\n", "naïve café — 東京 🚀", "  spaces\t\ttabs\n\n"]


def test_round_trip_is_lossless_on_any_text():
    tok = train_tokenizer(SAMPLES * 20, vocab_size=300)
    for text in SAMPLES + ["unseen words: zyzzyva ∑ \x00 \r\n"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_special_tokens_exist_and_are_single_ids(tokens_dir):
    tok = load_tokenizer(tokens_dir)
    ids = [tok.token_to_id(special) for special in (EOT, PAD, MASK)]
    assert None not in ids and len(set(ids)) == 3


FORGED = "Before <|endoftext|> after <|mask|> and <|pad|> end.\n"


def test_special_token_text_in_a_document_stays_text(tmp_path):
    """A document holding the special tokens' text (30 of each, as in the issue) cannot forge document
    boundaries, masks or padding: the only special ids are the <|endoftext|> lmforge puts before each
    document, and the document decodes back to its literal text."""
    from conftest import corpus_texts, tiny_overrides
    from lmforge.config import load_config

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(corpus_texts()[:20]):
        (corpus / f"doc{i:03d}.txt").write_text(text)
    (corpus / "forged.txt").write_text(FORGED * 30)
    cfg = load_config("tiny", overrides=tiny_overrides())
    cfg.data.sources = [str(corpus)]
    tokenize_corpus(cfg.data, cfg.tokenizer, tmp_path / "tokens", log=lambda *_: None)
    tok = load_tokenizer(tmp_path / "tokens")
    meta = read_meta(tmp_path / "tokens")
    stream = np.concatenate([a for s in ("train", "val") for a in load_shards(tmp_path / "tokens", s)])
    eot, pad, mask = (tok.token_to_id(t) for t in (EOT, PAD, MASK))
    assert int((stream == pad).sum()) == 0 and int((stream == mask).sum()) == 0
    assert int((stream == eot).sum()) == 21 == sum(v["documents"] for v in meta["splits"].values())
    starts = np.flatnonzero(stream == eot).tolist() + [len(stream)]
    documents = [tok.decode(stream[a + 1:b].tolist(), skip_special_tokens=False) for a, b in zip(starts, starts[1:])]
    assert FORGED * 30 in documents
    for text in (EOT, PAD, MASK, FORGED):  # encoded on their own, too: text, never the special id
        ids = tok.encode(text, add_special_tokens=False).ids
        assert not {eot, pad, mask} & set(ids) and tok.decode(ids, skip_special_tokens=False) == text


def test_shards_hold_every_document_once_with_a_boundary(tokens_dir, corpus_dir):
    meta = read_meta(tokens_dir)
    tok = load_tokenizer(tokens_dir)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 512
    docs = list(iter_documents([str(corpus_dir)]))
    splits = {s: np.concatenate(load_shards(tokens_dir, s)) for s in ("train", "val")}
    eot = tok.token_to_id(EOT)
    n_docs = sum(int((splits[s] == eot).sum()) for s in splits)
    assert n_docs == len(docs) == meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"]
    assert meta["splits"]["val"]["documents"] > 0
    assert meta["val_split"]["rule"] == "hash"  # many documents: whole ones give the split
    for s in splits:
        assert len(splits[s]) == meta["splits"][s]["tokens"]
    # the train stream decodes back to the train documents, in order
    prefixes = source_prefixes([str(corpus_dir)])
    train_docs = [d.text for d in docs if not is_validation(split_key(d.id, prefixes), 0.1)]
    decoded = tok.decode(splits["train"].tolist(), skip_special_tokens=False).split(EOT)[1:]
    assert decoded[:5] == train_docs[:5]
    assert meta["bytes_per_token"]["train"] > 1.5


def test_token_byte_lengths_sum_to_utf8_bytes(tokens_dir):
    tok = load_tokenizer(tokens_dir)
    lengths = token_byte_lengths(tok)
    for text in SAMPLES:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert lengths[ids].sum() == len(text.encode("utf-8"))
    assert lengths[tok.token_to_id(EOT)] == 0


def test_validation_split_is_by_document_and_stable():
    ids = [f"doc{i}" for i in range(2000)]
    picked = [is_validation(i, 0.1) for i in ids]
    # the same in another process with another string-hash seed: the split never depends on hash()
    code = ("from lmforge.tokenizing import is_validation; "
            "print(''.join('1' if is_validation(f'doc{i}', 0.1) else '0' for i in range(2000)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == "".join("1" if p else "0" for p in picked)
    assert 0.07 < sum(picked) / len(ids) < 0.13
    assert [is_validation(i, 0.2) for i in ids].count(True) > sum(picked)  # a larger fraction holds out more


def test_tokenize_skips_when_complete(tokens_dir, corpus_dir):
    from lmforge.config import load_config
    from conftest import tiny_overrides

    cfg = load_config("tiny", overrides=tiny_overrides())
    cfg.data.sources = [str(corpus_dir)]
    before = (tokens_dir / "meta.json").stat().st_mtime_ns
    messages = []
    tokenize_corpus(cfg.data, cfg.tokenizer, tokens_dir, log=messages.append)
    assert "skipping" in messages[0] and (tokens_dir / "meta.json").stat().st_mtime_ns == before
    assert json.loads((tokens_dir / "meta.json").read_text())["format"] == "lmforge-tokens-v1"


def test_split_is_the_same_wherever_the_corpus_lies(tmp_path, monkeypatch):
    from lmforge.config import DataConfig, TokenizerConfig

    texts = {f"d{i:02d}.txt": f"document number {i} " * 20 for i in range(30)}
    for where in ("a/deep/copy", "b"):
        (tmp_path / where).mkdir(parents=True)
        for name, text in texts.items():
            (tmp_path / where / name).write_text(text)
    tk = TokenizerConfig(vocab_size=300, train_bytes=0)
    splits = []
    for source in (str(tmp_path / "a/deep/copy"), "b"):
        monkeypatch.chdir(tmp_path)
        out = tmp_path / f"tok-{len(splits)}"
        tokenize_corpus(DataConfig(sources=[source], val_fraction=0.3), tk, out, log=lambda *_: None)
        splits.append([len(s) for s in load_shards(out, "val")] + [len(s) for s in load_shards(out, "train")])
    assert splits[0] == splits[1]


def test_a_few_documents_hold_out_the_tail_of_the_stream(tmp_path):
    """Two files hash to one side or split unevenly; the tail is cut at a document start when one is near."""
    for name, n in (("a.txt", 900), ("b.txt", 100)):
        (tmp_path / name).write_text("".join(f"{name} line {i} goes here.\n" for i in range(n)))
    out = tmp_path / "tok"
    meta = tokenize_corpus(DataConfig(sources=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], val_fraction=0.1),
                           TokenizerConfig(vocab_size=300, train_bytes=0), out, log=lambda *_: None)
    val, train = meta["splits"]["val"], meta["splits"]["train"]
    assert val["tokens"] > 0 and train["documents"] + val["documents"] == 2
    stream = np.concatenate(load_shards(out, "train") + load_shards(out, "val"))
    assert len(stream) == val["tokens"] + train["tokens"]
    if meta["val_split"]["rule"] == "tail":
        assert val["tokens"] >= 0.05 * len(stream)
    assert sum(s["tokens"] for s in val["shards"]) == val["tokens"] == sum(len(s) for s in load_shards(out, "val"))


def test_a_long_document_holds_out_its_own_end():
    from lmforge.tokenizing import split_document

    ids = np.arange(1000)
    (train, train_bytes), (val, val_bytes) = split_document(ids, 3001, 0.1)
    assert np.array_equal(np.concatenate([train, val]), ids) and len(val) == 100
    assert train_bytes + val_bytes == 3001


def test_one_large_document_does_not_take_the_validation_split(tmp_path):
    """Whole documents by hash: one that holds most of the corpus and hashes to validation makes
    validation most of the corpus. A long document holds out its own end instead: validation gets
    its share, and the short documents are still split whole."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    big = next(f"big{i}.txt" for i in range(1000) if is_validation(f"big{i}.txt", 0.1))
    (corpus / big).write_text("".join(f"Line {i} of the long book, with words {i % 97} and {i % 89}.\n"
                                      for i in range(3000)))
    for i in range(40):
        (corpus / f"note{i:02d}.txt").write_text(f"A short note, number {i}, about one thing.\n")
    tk = TokenizerConfig(vocab_size=300, train_bytes=0)
    shares, metas = {}, {}
    for long_tokens in (10**9, 512):
        meta = tokenize_corpus(DataConfig(sources=[str(corpus)], val_fraction=0.1, long_document_tokens=long_tokens),
                               tk, tmp_path / f"tok{long_tokens}", log=lambda *_: None)
        val, train = meta["splits"]["val"], meta["splits"]["train"]
        assert train["documents"] + val["documents"] == 41  # a document counts where it starts
        shares[long_tokens], metas[long_tokens] = val["tokens"] / (val["tokens"] + train["tokens"]), meta
    assert shares[10**9] > 0.8  # the book, whole, in validation
    assert 0.08 < shares[512] < 0.2
    notes_in_val = sum(is_validation(f"note{i:02d}.txt", 0.1) for i in range(40))
    assert metas[512]["splits"]["val"]["documents"] == notes_in_val
    assert "1 long one" in metas[512]["val_split"]["detail"]


def test_batches_cut_by_bytes_give_the_same_token_shards(tmp_path, tokens_dir, corpus_dir):
    """Documents encoded five at a time and at most 10 KB at a time (a longer one in pieces) give the
    folder that one batch of all 60 gives, byte for byte: batching bounds memory and changes no token."""
    from conftest import tiny_overrides
    from lmforge.config import load_config
    from lmforge.data.sources import batched

    cfg = load_config("tiny", overrides=tiny_overrides(**{"tokenizer.encode_batch_documents": 5,
                                                          "tokenizer.encode_batch_bytes": 10_000}))
    cfg.data.sources = [str(corpus_dir)]
    batches = list(batched(iter_documents([str(corpus_dir)]), 5, 10_000))
    size = lambda batch: sum(len(d.text.encode("utf-8")) for d in batch)  # noqa: E731
    assert all(len(b) <= 5 and (size(b) <= 10_000 or len(b) == 1) for b in batches)
    assert any(len(b) == 1 and size(b) > 10_000 for b in batches) and any(len(b) == 5 for b in batches)
    tokenize_corpus(cfg.data, cfg.tokenizer, tmp_path / "tok", log=lambda *_: None)
    made = sorted(p.relative_to(tmp_path / "tok") for p in (tmp_path / "tok").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(tokens_dir) for p in tokens_dir.rglob("*") if p.is_file())
    for path in made:
        if path.name == "meta.json":  # the same but for the peak memory of a worker
            got, want = (json.loads((folder / path).read_text()) for folder in (tmp_path / "tok", tokens_dir))
            assert got.pop("worker_peak_rss_bytes") > 0 and want.pop("worker_peak_rss_bytes") > 0
            assert got == want
        else:
            assert (tmp_path / "tok" / path).read_bytes() == (tokens_dir / path).read_bytes(), path
    assert is_complete(tokens_dir, cfg.data, cfg.tokenizer)  # other batching alone: nothing to tokenize again


def test_a_long_document_encoded_in_pieces_gives_the_whole_documents_ids(tokens_dir):
    """Real long documents (every pydoc topic: prose and code; the same with Windows line ends; the
    source of argparse) cut into pieces of about 500 characters encode, piece after piece, to the ids of
    the whole document: tokenize may encode a book a piece at a time."""
    import argparse
    from pathlib import Path

    from pydoc_data.topics import topics

    from lmforge.tokenizing import text_pieces

    tok = load_tokenizer(tokens_dir)
    prose = "\n".join(topics[name] for name in sorted(topics))
    for text in (prose, prose.replace("\n", "\r\n"), Path(argparse.__file__).read_text(encoding="utf-8")):
        pieces = text_pieces(text, 500)
        assert "".join(pieces) == text and len(pieces) > len(text) / 1000
        encoded = [i for enc in tok.encode_batch_fast(pieces, add_special_tokens=False) for i in enc.ids]
        assert encoded == tok.encode(text, add_special_tokens=False).ids


# ---------------------------------------------------------------- what the tokenizer learns from

SAMPLE_BYTES = 40_000


def three_sources(root):
    """Books that sort first and alone exceed the sample, then code, then web records; each kind with a
    word of its own, frequent enough to be one token when that kind is learned from."""
    import json

    from conftest import make_prose

    books, code, web = root / "a_books", root / "b_code", root / "c_web"
    for folder in (books, code, web):
        folder.mkdir(parents=True)
    for i in range(40):
        (books / f"book{i:02d}.txt").write_text(make_prose(i, 8))
    for i in range(30):
        (code / f"mod{i:02d}.py").write_text("".join(f"def frobnicate_{j}(quux):\n    return quux * {i + j}\n\n"
                                                     for j in range(40)))
    (web / "pages.jsonl").write_text("".join(
        json.dumps({"id": f"page{i}", "text": f"Zorblat page {i}. {make_prose(100 + i, 2)}" + " zorblat" * 20}) + "\n"
        for i in range(60)))
    assert sum(p.stat().st_size for p in books.iterdir()) > SAMPLE_BYTES
    return root


def tokenize_sampled(corpus, out):
    return tokenize_corpus(DataConfig(sources=[str(corpus)], val_fraction=0.1),
                           TokenizerConfig(vocab_size=400, train_bytes=SAMPLE_BYTES), out, log=lambda *_: None)


def test_the_tokenizer_learns_from_every_source_not_the_first_in_sorted_order(tmp_path):
    corpus = three_sources(tmp_path / "corpus")
    meta = tokenize_sampled(corpus, tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    for word in (" frobnicate", " zorblat"):  # code's and the web pages' own words: learned, so one token each
        assert len(tok.encode(word, add_special_tokens=False).ids) == 1, word
    sample = meta["tokenizer_sample"]
    assert set(sample["by_kind"]) == {"prose", "code", "web"}
    assert all(k["documents"] > 0 for k in sample["by_kind"].values())
    largest = max(len(d.text.encode()) for d in iter_documents([str(corpus)]))
    assert SAMPLE_BYTES <= sample["bytes"] < SAMPLE_BYTES + largest  # just enough documents to reach train_bytes
    assert sample["corpus_bytes"] == meta["reader"]["bytes"]
    assert sample["bytes"] == sum(k["bytes"] for k in sample["by_kind"].values())


def test_the_sample_is_the_same_every_time_and_wherever_the_corpus_lies(tmp_path):
    import shutil

    corpus = three_sources(tmp_path / "corpus")
    shutil.copytree(corpus, tmp_path / "elsewhere" / "copy")
    metas = [tokenize_sampled(source, tmp_path / f"tok{i}")
             for i, source in enumerate((corpus, corpus, tmp_path / "elsewhere" / "copy"))]
    tokenizers = {(tmp_path / f"tok{i}" / "tokenizer.json").read_bytes() for i in range(3)}
    assert len(tokenizers) == 1
    assert metas[0]["tokenizer_sample"] == metas[1]["tokenizer_sample"] == metas[2]["tokenizer_sample"]


def test_the_sample_compresses_held_out_text_better_than_a_prefix_of_the_same_size(tmp_path):
    """The rule before the sample, trained on the first train_bytes in reading order, against the
    tokenizer tokenize trains, on the documents the split holds out."""
    corpus = three_sources(tmp_path / "corpus")
    tokenize_sampled(corpus, tmp_path / "tok")
    docs = list(iter_documents([str(corpus)]))
    prefix, size = [], 0
    for d in docs:
        if size >= SAMPLE_BYTES:
            break
        prefix.append(d.text)
        size += len(d.text.encode())
    prefixes = source_prefixes([str(corpus)])
    held_out = [d.text for d in docs if is_validation(split_key(d.id, prefixes), 0.1)]
    held_bytes = sum(len(t.encode()) for t in held_out)

    def bytes_per_token(tok) -> float:
        return held_bytes / sum(len(e.ids) for e in tok.encode_batch(held_out, add_special_tokens=False))

    sampled = bytes_per_token(load_tokenizer(tmp_path / "tok"))
    assert sampled > bytes_per_token(train_tokenizer(prefix, vocab_size=400)) * 1.05


def test_a_document_larger_than_the_sample_gives_it_pieces_not_all_of_itself(tmp_path):
    from conftest import make_prose
    from lmforge.tokenizing import SAMPLE_PIECE_CHARS, sample_rank

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # named so that its id hashes lowest: drawn whole, it alone would be 20 times train_bytes
    big = next(f"big{i}.txt" for i in range(10_000) if sample_rank(f"big{i}.txt") < 2**64 // 1000)
    (corpus / big).write_text("\n\n".join(make_prose(i, 8) for i in range(450)))
    for i in range(40):
        (corpus / f"note{i:02d}.txt").write_text(make_prose(1000 + i, 2))
    assert (corpus / big).stat().st_size > 20 * SAMPLE_BYTES
    sample = tokenize_sampled(corpus, tmp_path / "tok")["tokenizer_sample"]
    assert SAMPLE_BYTES <= sample["bytes"] < SAMPLE_BYTES + SAMPLE_PIECE_CHARS + 10_000  # one piece past it at most
