import gzip
import json

import pytest

from lmforge.data.sources import SourceStats, builtin_corpus, iter_documents
from lmforge.errors import LmforgeError


def read(sources, **kw):
    stats = SourceStats()
    return list(iter_documents([str(s) for s in sources], stats, **kw)), stats


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.md").write_text("# title\nmarkdown body")
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / ".hidden").write_text("not a document")
    docs, stats = read([tmp_path])
    assert [d.id for d in docs] == [str(tmp_path / "a.py"), str(tmp_path / "b" / "z.md")]
    assert docs[1].source == str(tmp_path / "b" / "z.md") and docs[1].text.startswith("# title")
    assert stats.documents == 2 and stats.files == 2


def test_glob_and_gzip(tmp_path):
    with gzip.open(tmp_path / "one.txt.gz", "wt") as f:
        f.write("compressed text\n")
    (tmp_path / "two.txt").write_text("plain text\n")
    (tmp_path / "skip.log").write_text("not matched\n")
    docs, _ = read([tmp_path / "*.txt*"])
    assert sorted(d.text for d in docs) == ["compressed text\n", "plain text\n"]


def test_jsonl_text_field_ids_and_bad_lines_counted(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"id": "x1", "body": "first"}), "{not json", json.dumps({"body": "second"}),
             json.dumps({"other": 1}), ""]
    path.write_text("\n".join(lines))
    docs, stats = read([path], text_field="body")
    assert [(d.id, d.text) for d in docs] == [("x1", "first"), (f"{path}:3", "second")]
    assert stats.skipped["invalid JSON lines"] == 1
    assert stats.skipped["records without a 'body' string"] == 1


def test_a_saved_web_page_is_read_as_its_main_text(tmp_path):
    page = ("<html><head><title>t</title><script>var tracking = 1;</script></head><body><nav><a href='/'>Home</a></nav>"
            "<article><p>The lighthouse keeper climbed the stairs every evening to light the lamp.</p></article>"
            "</body></html>")
    (tmp_path / "page.html").write_text(page)
    with gzip.open(tmp_path / "saved.htm.gz", "wt") as f:
        f.write(page)
    (tmp_path / "blank.xhtml").write_text("<html><body><script>x()</script></body></html>")
    docs, stats = read([tmp_path])
    assert [d.id for d in docs] == [str(tmp_path / "page.html"), str(tmp_path / "saved.htm.gz")]
    for d in docs:
        assert "lighthouse keeper climbed" in d.text and "<" not in d.text and "tracking" not in d.text
        assert d.kind == "web"
    assert stats.skipped["web pages without text"] == 1


def test_a_broken_link_or_a_pipe_is_counted_not_opened(tmp_path):
    import os

    (tmp_path / "ok.txt").write_text("text")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    os.mkfifo(tmp_path / "pipe.txt")  # opened, it would wait for a writer forever
    docs, stats = read([tmp_path])
    assert [d.text for d in docs] == ["text"]
    assert stats.skipped["not regular files (broken links, pipes, devices)"] == 2 and stats.files == 3


def test_a_glob_that_matches_folders_reads_them(tmp_path):
    (tmp_path / "part1").mkdir()
    (tmp_path / "part1" / "a.txt").write_text("first")
    (tmp_path / "part2" / "deep").mkdir(parents=True)
    (tmp_path / "part2" / "deep" / "b.txt").write_text("second")
    docs, _ = read([tmp_path / "part*"])
    assert [d.text for d in docs] == ["first", "second"]
    (tmp_path / "prep" / "clean").mkdir(parents=True)  # a prepared folder matched: its kept documents only
    (tmp_path / "prep" / "rejected").mkdir()
    (tmp_path / "prep" / "report.json").write_text("{}")
    (tmp_path / "prep" / "clean" / "kept.txt").write_text("kept")
    (tmp_path / "prep" / "rejected" / "gone.txt").write_text("rejected")
    docs, _ = read([tmp_path / "pre*"])
    assert [d.text for d in docs] == ["kept"]


def test_binary_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "img.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "ok.txt").write_text("text")
    docs, stats = read([tmp_path])
    assert [d.text for d in docs] == ["text"]
    assert stats.skipped["binary files"] == 1


def test_long_file_is_streamed_as_parts(tmp_path):
    (tmp_path / "book.txt").write_text("".join(f"line {i}\n" for i in range(1000)))
    docs, _ = read([tmp_path], max_document_bytes=1000)
    assert len(docs) > 5
    assert "".join(d.text for d in docs) == "".join(f"line {i}\n" for i in range(1000))
    assert len({d.id for d in docs}) == len(docs)


def test_max_bytes_stops_the_stream(tmp_path):
    for i in range(20):
        (tmp_path / f"{i:02d}.txt").write_text("x" * 100)
    docs, stats = read([tmp_path], max_bytes=350)
    assert len(docs) == 4 and stats.bytes == 400


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(LmforgeError, match="does not exist"):
        read([tmp_path / "nope"])
    with pytest.raises(LmforgeError, match="matches no files"):
        read([tmp_path / "*.nothing"])


def test_builtin_corpus_mixes_docs_code_and_docstrings():
    stats = SourceStats()
    kinds = set()
    for i, doc in enumerate(builtin_corpus(stats, 1_000_000)):
        kinds.add(doc.id.split(":")[0] if ":" in doc.id else "file")
        if i > 40:
            break
    assert {"pydoc_data.topics", "stdlib", "stdlib-docstrings"} <= kinds


def test_a_blank_piece_of_a_long_file_is_counted_not_made_a_document(tmp_path):
    """A file cut into max_document_bytes pieces at line ends: a piece of only blank lines (here
    4,096 carriage returns, which hypothesis found) is no document; it is counted as skipped."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"x\n" + b"\r" * 9000 + b"y\n")
    stats = SourceStats()
    docs = list(iter_documents([str(path)], stats, max_document_bytes=4096))
    assert [len(d.text) for d in docs] == [4096, 812] and all(d.text.strip() for d in docs)
    assert stats.skipped["blank pieces of long files"] == 1
    assert sum(len(d.text) for d in docs) + 4096 == path.stat().st_size  # every byte a document or counted
