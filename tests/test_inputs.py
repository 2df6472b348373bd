"""Issue 23's "nothing outside the folder you named": what a stage reads is the user's files, listed
once, and a rerun after they change redoes the stage. Real files and real `python -m lmforge`."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import corpus_texts
from test_faults import ENV, lmforge, one_line_error, sets
from lmforge.locks import FolderLock

N_DOCS = 12


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for i, text in enumerate(corpus_texts()[:N_DOCS]):
        folder = root / "sub" if i % 3 == 0 else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{i:03d}.txt").write_text(text)
    return root


def tokenize(*args):
    r = lmforge("tokenize", *args, *sets())
    assert r.returncode == 0, r.stderr
    return r


def reader(tok):
    return json.loads((tok / "meta.json").read_text())["reader"]


def prepare(*args):
    r = lmforge("prepare", *args, "--workers", 1, "--no-progress", *sets())
    assert r.returncode == 0, r.stderr
    return r


# ---------------------------------------------------------------- a changed corpus is redone

def test_tokenize_again_after_a_source_is_edited_or_added_redoes_it(tmp_path, corpus):
    tok = tmp_path / "tok"
    tokenize(corpus, "--out", tok)
    assert "is complete, skipping" in tokenize(corpus, "--out", tok).stdout  # nothing changed
    edited = corpus / "doc001.txt"
    edited.write_text(edited.read_text() + "\nA new closing paragraph, added after the first tokenize.\n")
    again = tokenize(corpus, "--out", tok)
    assert "is complete, skipping" not in again.stdout
    (corpus / "new.txt").write_text("A document the user added after tokenizing. " * 20)
    tokenize(corpus, "--out", tok)
    assert reader(tok)["files"] == N_DOCS + 1


def test_prepare_again_after_a_source_is_edited_redoes_it(tmp_path, corpus):
    prep = tmp_path / "prep"
    prepare(corpus, "--out", prep)
    assert "is complete, skipping" in prepare(corpus, "--out", prep).stdout
    (corpus / "new.txt").write_text("A document the user added after preparing, long enough to be kept. " * 20)
    assert "is complete, skipping" not in prepare(corpus, "--out", prep).stdout
    report = json.loads((prep / "report.json").read_text())
    assert report["reader"]["files"] == N_DOCS + 1


def test_prepare_again_with_other_workers_skips_and_leaves_no_work_folder(tmp_path, corpus):
    """How many processes clean the shards changes no output file, so a finished prepare is not redone
    for it; and its intermediate work/ is gone once report.json is written."""
    prep = tmp_path / "prep"
    prepare(corpus, "--out", prep)  # --workers 1
    assert not (prep / "work").exists()
    again = lmforge("prepare", corpus, "--out", prep, "--workers", 2, "--no-progress", *sets())
    assert again.returncode == 0, again.stderr
    assert "is complete, skipping" in again.stdout


def test_every_phase_of_prepare_and_tokenize_says_when_it_starts(tmp_path, corpus):
    said = prepare(corpus, "--out", tmp_path / "prep").stdout
    phases = ["prepare: listing", "prepare: reading and filtering", "prepare: deciding exact and near duplicates",
              "prepare: writing clean/", "prepare: counting the report"]
    assert [p for line in said.splitlines() for p in phases if line.startswith(p)] == phases, said
    said = tokenize(tmp_path / "prep", "--out", tmp_path / "tok").stdout
    phases = ["tokenize: reading the corpus for the tokenizer", "tokenize: learned", "tokenize: encoding"]
    assert [p for line in said.splitlines() for p in phases if line.startswith(p)] == phases, said
    assert "prose" in next(line for line in said.splitlines() if line.startswith("tokenize: learned"))  # train_bytes=0


def test_a_count_off_a_terminal_is_dated_lines():
    import re

    from lmforge.progress import Meter

    lines = []
    meter = Meter("prepare: read", "document", lines.append, interval=0)  # stdout is a pipe under pytest
    meter.update(1000)
    meter.update(500)
    meter.close()
    assert len(lines) == 2 and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d prepare: read 1,500 documents", lines[1])


# ---------------------------------------------------------------- never an output folder as input

def test_a_half_written_prepared_folder_is_refused_and_a_complete_one_read_as_its_clean_part(tmp_path, corpus):
    prep = tmp_path / "prep"
    prepare(corpus, "--out", prep)
    kept = json.loads((prep / "report.json").read_text())["documents_kept"]
    tokenize(prep, "--out", tmp_path / "tok")
    assert reader(tmp_path / "tok")["documents"] == kept  # clean/ only, not rejected/ or work/
    (prep / "report.json").unlink()  # as a killed prepare leaves it
    r = lmforge("tokenize", prep, "--out", tmp_path / "tok2", *sets())
    one_line_error(r, str(prep), "half-written prepared folder", "lmforge prepare")
    assert not (tmp_path / "tok2").exists()


def test_tokenize_into_a_folder_inside_its_source_reads_only_the_users_files(corpus):
    tok = corpus / "tok"
    tokenize(corpus, "--out", tok)  # its temporary folder, written during the second pass, unread
    assert reader(tok)["files"] == N_DOCS and reader(tok)["documents"] == N_DOCS
    tokenize(corpus, "--out", tok, "--set", "tokenizer.vocab_size=600")  # a rerun beside its own output
    assert reader(tok)["files"] == N_DOCS and not reader(tok)["skipped"]
    other = corpus.parent / "other"
    tokenize(corpus, "--out", other)  # another command: the earlier output is skipped, and counted
    assert reader(other)["files"] == N_DOCS
    assert reader(other)["skipped"] == {"lmforge tokenized folders (token ids, not text)": 1}


def test_prepare_into_a_folder_inside_its_source_reads_only_the_users_files(corpus):
    prep = corpus / "prep"
    prepare(corpus, "--out", prep)
    assert json.loads((prep / "report.json").read_text())["reader"]["files"] == N_DOCS
    prepare(corpus, "--out", prep, "--set", "prepare.near_dedup=false")  # other settings: redone beside itself
    report = json.loads((prep / "report.json").read_text())
    assert report["reader"]["files"] == N_DOCS and report["documents_in"] == N_DOCS
    tok = corpus.parent / "tok"
    tokenize(corpus, "--out", tok)  # the raw files, not also their cleaned copies
    assert reader(tok)["files"] == N_DOCS
    assert list(reader(tok)["skipped"]) == ["lmforge prepared folders inside a source (name one as a source to "
                                            "read its clean/)"]
    tokenize(f"{corpus}/*", "--out", tok)  # a glob names the folder: its clean/ is read, beside the raw files
    assert reader(tok)["files"] == N_DOCS + 1  # clean/ is one shard


def test_train_into_a_folder_inside_its_data_reads_only_the_users_files(corpus):
    run = corpus / "run"
    r = lmforge("train", "--data", corpus, "--out", run, "--max-steps", 2, *sets())
    assert r.returncode == 0, r.stderr
    assert reader(run / "tokens")["files"] == N_DOCS
    r = lmforge("train", "--data", corpus, "--out", corpus / "run2", "--max-steps", 2, *sets())
    assert r.returncode == 0, r.stderr
    assert reader(corpus / "run2" / "tokens")["files"] == N_DOCS
    assert reader(corpus / "run2" / "tokens")["skipped"] == {"lmforge run folders (a model and its logs, not text)": 1}
    r = lmforge("tokenize", run, "--out", corpus.parent / "tok", *sets())
    one_line_error(r, str(run), "run folder", "sources it was trained on")


def test_a_tokenized_folder_beside_raw_text_is_refused(tmp_path, corpus, tokens_dir):
    r = lmforge("train", "--data", tokens_dir, corpus, "--out", tmp_path / "run", "--max-steps", 2, *sets())
    one_line_error(r, str(tokens_dir), "tokenized folder", "alone")
    assert not (tmp_path / "run" / "tokens").exists()
    r = lmforge("train", "--data", tokens_dir, "--out", tmp_path / "alone", "--max-steps", 2, *sets())
    assert r.returncode == 0, r.stderr  # alone, it is still the tokens to train on


def test_a_recursive_glob_reads_each_file_once(tmp_path, corpus):
    tokenize(f"{corpus}/**", "--out", tmp_path / "tok")
    assert reader(tmp_path / "tok")["files"] == N_DOCS


# ---------------------------------------------------------------- one tokenize per folder

def test_second_tokenize_into_the_same_folder_is_refused(tmp_path, corpus):
    out = tmp_path / "tok"
    holder = subprocess.Popen([sys.executable, "-c", "from lmforge.locks import FolderLock; import time; "
                               f"FolderLock({str(tmp_path / '.tok.lock')!r}, 'x').acquire(); print(1, flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        holder.stdout.readline()
        r = lmforge("tokenize", corpus, "--out", out, *sets())
        one_line_error(r, "tokenize output folder", f"in use by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()
    with FolderLock(tmp_path / ".tok.lock", "tokenize output folder"):  # the holder's death freed it
        pass


# ---------------------------------------------------------------- nothing skipped silently

def unprivileged():
    """A command prefix under which file permissions hold: root reads a mode-000 folder unless it
    gives up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode-000 folder stays readable")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_an_unreadable_subfolder_is_counted_and_reported(tmp_path, corpus):
    locked = corpus / "locked"
    locked.mkdir()
    (locked / "secret.txt").write_text("Text nobody may read. " * 20)
    locked.chmod(0)
    try:
        r = subprocess.run([*unprivileged(), sys.executable, "-m", "lmforge", "tokenize", str(corpus),
                            "--out", str(tmp_path / "tok"), *sets()], capture_output=True, text=True, env=ENV,
                           timeout=300)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable folders" in r.stdout
    assert reader(tmp_path / "tok")["skipped"] == {"unreadable folders": 1}
    assert str(locked) in reader(tmp_path / "tok")["skipped_examples"]["unreadable folders"]


def test_a_link_to_a_folder_is_counted_not_followed(tmp_path, corpus):
    from lmforge.data.sources import SourceStats, iter_documents

    (corpus / "loop").symlink_to(corpus, target_is_directory=True)  # followed, it would never end
    stats = SourceStats()
    assert len(list(iter_documents([str(corpus)], stats))) == N_DOCS
    assert stats.skipped == {"links to folders (not followed)": 1}
    assert stats.skipped_examples["links to folders (not followed)"] == str(corpus / "loop")


def test_a_link_out_of_the_source_folder_is_counted_not_read(tmp_path, corpus):
    """A corpus folder holding a link to /etc/passwd: it was read, rejected as another language, and its
    lines kept in rejected/ and shown in report.html. A link to a file inside the folder is read."""
    from lmforge.data.sources import SourceStats, iter_documents

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    (corpus / "outside.txt").symlink_to(secret)
    inside = sorted(p for p in corpus.rglob("*") if p.is_file())[0]
    (corpus / "again.txt").symlink_to(inside)
    stats = SourceStats()
    docs = list(iter_documents([str(corpus)], stats))
    assert len(docs) == N_DOCS + 1 and not any("root:x:0:0" in d.text for d in docs)
    assert stats.skipped == {"links out of the source folder (not followed)": 1}
    assert stats.skipped_examples["links out of the source folder (not followed)"] == str(corpus / "outside.txt")


def test_a_killed_tokenize_leaves_a_folder_that_is_refused_as_a_source(tmp_path, corpus):
    tok = tmp_path / "tok"
    tokenize(corpus, "--out", tok)
    building = tmp_path / ".tok.tokenize-building"
    tok.rename(building)  # what a tokenize killed while encoding leaves: no meta.json yet
    (building / "meta.json").unlink()
    r = lmforge("train", "--data", building, "--out", tmp_path / "run", "--max-steps", 2, *sets())
    one_line_error(r, "half-written tokenized folder", "lmforge tokenize")
