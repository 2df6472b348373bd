"""Issue 23's reader cases: whatever a file holds, a reader counts it, refuses it in one line naming
the file and the fix, or stays inside its folder; it never dies with a traceback or reads on silently.
Real files, the real tokenizer, real `python -m lmforge` where the exit code is the point."""

import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import tiny_overrides
from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.data.sources import SourceStats, iter_documents
from lmforge.export import export
from lmforge.folders.run import RunDir
from lmforge.folders.tokenized import META, load_shards, read_meta
from lmforge.tokenizing import tokenize_corpus
from lmforge.training.trainer import train
from test_faults import lmforge, one_line_error, sets

quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokens_dir):
    """A tiny causal run; tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("readers") / "run"
    cfg = load_config("tiny", overrides=tiny_overrides(**{"train.max_steps": 4}) + [f"run.out={out}"])
    train(cfg, data=[str(tokens_dir)], log=quiet)
    return RunDir(out)


def copy_run(trained, tmp_path) -> RunDir:
    """A copy whose data.tokenized (relative to the run) still names the shared tokens."""
    run = RunDir(tmp_path / "run")
    shutil.copytree(trained.path, run.path)
    cfg = run.config
    cfg.data.tokenized = str(trained.tokens_dir.resolve())
    cfg.run.out = str(run.path)
    run.save_config(cfg)
    return run


# ---------------------------------------------------------------- JSONL records and compressed files

BAD_RECORDS = {
    "an integer of 5,001 digits": '{"text": "a number", "n": ' + "7" * 5001 + "}",
    "100,000-deep nesting": "[" * 100_000 + "]" * 100_000,
    "a lone surrogate": '{"text": "half a pair \\ud800 here"}',
    "a lone surrogate in the id": '{"text": "fine text", "id": "x\\udfff"}',
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_jsonl_line_no_reader_can_take_is_counted_with_its_line(tmp_path, case):
    path = tmp_path / "records.jsonl"
    good = [json.dumps({"text": f"document {i} reads fine"}) for i in range(3)]
    path.write_text("\n".join([good[0], BAD_RECORDS[case], *good[1:]]) + "\n")
    stats = SourceStats()
    docs = [d.text for d in iter_documents([str(path)], stats)]
    assert docs == [f"document {i} reads fine" for i in range(3)]
    assert sum(stats.skipped.values()) == 1
    assert list(stats.skipped_examples.values()) == [f"{path}:2"]


def test_a_gz_with_a_corrupt_body_is_counted_and_the_rest_read(tmp_path, corpus_dir):
    body = gzip.compress(("Some text that compresses. " * 400).encode())
    bad = tmp_path / "src" / "bad.txt.gz"
    bad.parent.mkdir()
    bad.write_bytes(body[:20] + bytes(200) + body[220:])  # header intact, deflate stream broken
    (tmp_path / "src" / "good.txt").write_text("A good file that reads.\n")
    stats = SourceStats()
    docs = list(iter_documents([str(tmp_path / "src")], stats))
    assert [d.source for d in docs] == [str(tmp_path / "src" / "good.txt")]
    assert stats.skipped == {"unreadable or truncated files": 1}
    assert str(bad) in stats.skipped_examples["unreadable or truncated files"]


def test_a_corrupt_gz_as_the_only_source_is_one_line(tmp_path):
    body = gzip.compress(("Some text that compresses. " * 400).encode())
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(body[:20] + bytes(200) + body[220:])
    result = lmforge("tokenize", bad, "--out", tmp_path / "tok", *sets())
    one_line_error(result, "no text found", "unreadable or truncated")


def test_a_binary_blocklist_is_one_line(tmp_path, corpus_dir):
    blocklist = tmp_path / "words.txt"
    blocklist.write_bytes(bytes(range(256)) * 8)  # not UTF-8
    result = lmforge("prepare", corpus_dir, "--out", tmp_path / "prep", "--workers", 1,
                     *sets(**{"prepare.blocklist": blocklist}))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"prepare.blocklist {str(blocklist)!r} is not a UTF-8 text file" in result.stderr


# ---------------------------------------------------------------- a damaged tokenized folder

def _damage(folder, case):
    meta = json.loads((folder / META).read_text())
    if case == "invalid meta.json":
        (folder / META).write_text('{"dtype": "uint16", ')
        return
    if case == "no splits":
        del meta["splits"]
    elif case == "float dtype":
        meta["dtype"] = "float16"  # same item size: every shard still has the size meta.json says
    elif case == "vocab too small":
        meta["vocab_size"] = 100
    elif case == "odd-sized shard":
        with open(folder / "train" / meta["splits"]["train"]["shards"][0]["file"], "ab") as f:
            f.write(b"\x01")
    elif case == "missing val shard":
        (folder / "val" / meta["splits"]["val"]["shards"][0]["file"]).unlink()
    elif case == "ids >= vocab":
        shard = np.memmap(folder / "val" / meta["splits"]["val"]["shards"][0]["file"], dtype=np.uint16, mode="r+")
        shard[7] = meta["vocab_size"]
        shard.flush()
    elif case == "shard path out of the folder":
        outside = folder.parent / "outside.bin"
        np.zeros(meta["splits"]["val"]["tokens"], dtype=np.uint16).tofile(outside)  # the right size, so only
        meta["splits"]["val"]["shards"][0]["file"] = "../../outside.bin"  # the path gives it away
    (folder / META).write_text(json.dumps(meta))


DAMAGE = {
    "invalid meta.json": "meta.json is not valid JSON",
    "no splits": "no `splits`",
    "float dtype": "dtype is 'float16'",
    "vocab too small": "vocab_size 100 is smaller than its tokenizer.json's 512",
    "odd-sized shard": "not the",
    "missing val shard": "val/shard_00000.bin is missing",
    "ids >= vocab": "holds id 512, outside vocab_size 512",
    "shard path out of the folder": "'../../outside.bin', which is not a file inside",
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_tokenized_folder_is_one_line_naming_the_damage(tmp_path, tokens_dir, case):
    folder = tmp_path / "tok"
    shutil.copytree(tokens_dir, folder)
    _damage(folder, case)
    with pytest.raises(LmforgeError) as e:
        for split in ("train", "val"):
            load_shards(folder, split)
    message = str(e.value)
    assert message.startswith(f"tokenized folder {folder} is damaged: ") and DAMAGE[case] in message, message
    assert "lmforge tokenize" in message and "\n" not in message


def test_training_on_a_damaged_tokenized_folder_exits_2(tmp_path, tokens_dir):
    folder = tmp_path / "tok"
    shutil.copytree(tokens_dir, folder)
    _damage(folder, "ids >= vocab")
    result = lmforge("train", "--data", folder, "--out", tmp_path / "run", *sets())
    one_line_error(result, "tokenized folder", "val/shard_00000.bin holds id 512, outside vocab_size 512")


def test_a_complete_but_damaged_tokenized_folder_is_made_again(tmp_path, corpus_dir):
    cfg = load_config("tiny", overrides=tiny_overrides())
    cfg.data.sources = [str(corpus_dir)]
    out = tmp_path / "tok"
    tokenize_corpus(cfg.data, cfg.tokenizer, out, log=quiet)
    _damage(out, "missing val shard")
    said = []
    meta = tokenize_corpus(cfg.data, cfg.tokenizer, out, log=said.append)
    assert "val/shard_00000.bin is missing" in said[0] and "tokenizing again" in said[0]
    assert read_meta(out) == meta


# ---------------------------------------------------------------- run folders

def test_eval_of_a_run_without_config_yaml_is_one_line(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    run.config_path.unlink()
    one_line_error(lmforge("eval", run.path), "has no config.yaml", "copy it back")


def test_a_state_json_step_that_is_not_its_folders_is_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    ckpt = run.latest_checkpoint()
    state = json.loads(ckpt.state_json.read_text())
    ckpt.state_json.write_text(json.dumps({**state, "step": -5}))
    assert ckpt.problem() == f"state.json says step -5, its folder step {ckpt.step}"
    result = lmforge("train", "--data", trained.tokens_dir, "--out", run.path, "--resume",
                     *sets(**{"train.max_steps": 4}))
    one_line_error(result, "holds no checkpoint to resume from")
    assert "state.json says step -5" in result.stderr
    result = lmforge("eval", run.path)
    one_line_error(result, "none of the 1 checkpoint in", "is usable")
    assert "state.json says step -5" in result.stderr


@pytest.mark.parametrize("field, value", [("tokens", -640), ("loader.epoch", -1), ("loader.cursor", "20")])
def test_a_state_json_count_that_is_not_a_count_is_refused(trained, tmp_path, field, value):
    run = copy_run(trained, tmp_path)
    ckpt = run.latest_checkpoint()
    state = json.loads(ckpt.state_json.read_text())
    *outer, last = field.split(".")
    holder = state[outer[0]] if outer else state
    holder[last] = value
    ckpt.state_json.write_text(json.dumps(state))
    assert ckpt.problem() == f"state.json {field} is {value!r}, not a count"


def test_a_checksum_table_cannot_name_a_file_outside_the_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    ckpt = run.latest_checkpoint()
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"not this checkpoint's")
    state = json.loads(ckpt.state_json.read_text())
    state["files"]["../../../elsewhere.bin"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    ckpt.state_json.write_text(json.dumps(state))
    assert ckpt.problem() == "state.json names '../../../elsewhere.bin', which is not a file inside the checkpoint"


def test_a_stray_step_folder_is_not_a_checkpoint(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    newest = run.latest_checkpoint()
    shutil.copytree(newest.path, run.checkpoints_dir / f"{newest.path.name}.bak")
    assert [c.path.name for c in run.checkpoints()] == [newest.path.name]
    assert run.latest_checkpoint() == newest


def test_an_objective_edited_in_config_yaml_is_refused_not_scored(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    text = run.config_path.read_text()
    assert "objective: causal" in text
    run.config_path.write_text(text.replace("objective: causal", "objective: masked"))
    one_line_error(lmforge("eval", run.path), "says train.objective masked", "was trained causal",
                   "set train.objective: causal back")
    cfg = RunDir(run.path).config  # resuming it as masked is refused too, before any step
    with pytest.raises(LmforgeError, match="was trained causal"):
        train(cfg, resume=True, log=quiet)


def test_init_from_a_folder_with_another_tokenizer_is_refused(trained, tmp_path, corpus_dir):
    export(trained.path, tmp_path / "hf")
    cfg = load_config("tiny", overrides=tiny_overrides())
    cfg.data.sources = [str(p) for p in sorted(corpus_dir.glob("*.txt"))[:30]]  # other text, same vocab size
    tokenize_corpus(cfg.data, cfg.tokenizer, tmp_path / "other", log=quiet)
    assert read_meta(tmp_path / "other")["vocab_size"] == read_meta(trained.tokens_dir)["vocab_size"]
    again = trained.config
    again.run.out = str(tmp_path / "again")
    again.train.init_from = str(tmp_path / "hf")
    with pytest.raises(LmforgeError, match=r"its tokenizer.json is not the training data's .* drop --init-from"):
        train(again, data=[str(tmp_path / "other")], log=quiet)
    (tmp_path / "hf" / "tokenizer.json").unlink()
    with pytest.raises(LmforgeError, match="has no tokenizer.json"):
        train(again, data=[str(trained.tokens_dir)], log=quiet)


def test_report_on_a_tokenized_folder_is_refused_and_writes_nothing(tokens_dir):
    before = sorted(p.name for p in tokens_dir.iterdir())
    one_line_error(lmforge("report", tokens_dir), "not a run or sweep folder", "tokenized folder")
    assert sorted(p.name for p in tokens_dir.iterdir()) == before


def test_a_sweep_run_name_cannot_lead_out_of_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    run = {"name": "../../elsewhere", "knob": 32, "n_layer": 2, "n_embd": 32, "n_head": 2, "lr": 1e-3, "steps": 10,
           "warmup_steps": 1, "params": 1000, "tokens": 1000, "flops": 6e6, "flops_exact": 6e6}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"config": load_config("scaling").to_dict(), "runs": [run]}))
    one_line_error(lmforge("scale", "status", sweep), "run name '../../elsewhere' is not a plain folder name")
    assert not (tmp_path.parent / "elsewhere").exists()


BAD_TASK_LINES = {
    "an integer of 5,001 digits": '{"context": "a [MASK] b", "choices": ["x", "y"], "answer": ' + "7" * 5001 + "}",
    "100,000-deep nesting": "[" * 100_000 + "]" * 100_000,
    "a lone surrogate": '{"context": "a [MASK] b", "choices": ["x\\ud800", "y"], "answer": 0}',
}


@pytest.mark.parametrize("case", BAD_TASK_LINES)
def test_a_task_line_no_reader_can_take_is_refused_with_its_line(tmp_path, case):
    from lmforge.tasks.accuracy import read_tasks

    path = tmp_path / "tasks.jsonl"
    path.write_text('{"context": "a [MASK] c", "choices": ["b", "d"], "answer": 0}\n' + BAD_TASK_LINES[case] + "\n")
    with pytest.raises(LmforgeError, match=f"^{path}:2: "):
        read_tasks(path)


def test_a_binary_task_file_is_refused(tmp_path):
    from lmforge.tasks.accuracy import read_tasks

    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b'{"context": "\xff\xfe"}\n')
    with pytest.raises(LmforgeError, match="is not UTF-8 text"):
        read_tasks(path)
