"""The command line as a user meets it: real subprocesses, real files, exit codes."""

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def lmforge(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def sets(**extra):
    return [a for o in tiny_overrides(**extra) for a in ("--set", o)]


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmforge: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_dir):
    run = tmp_path_factory.mktemp("cli") / "run"
    r = lmforge("train", "--data", corpus_dir, "--out", run, "--max-steps", 30, "--seed", 7, *sets())
    assert r.returncode == 0, r.stderr
    (run.parent / "train.out").write_text(r.stdout)
    return run


def test_train_eval_generate(trained_run):
    r = lmforge("eval", trained_run, "--json", "--max-tokens", 2048)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {"val_loss", "perplexity", "bits_per_byte"} <= set(result)
    assert result["perplexity"] == pytest.approx(2.718281828 ** result["val_loss"], rel=1e-6)
    outs = [lmforge("generate", trained_run, "The ", "--max-tokens", 12, "--seed", 3) for _ in range(2)]
    assert outs[0].returncode == 0, outs[0].stderr
    assert outs[0].stdout.startswith("The ") and outs[0].stdout == outs[1].stdout
    for name in ("config.yaml", "metrics.jsonl", "tokenizer.json", "summary.json"):
        assert (trained_run / name).is_file()
    assert list(trained_run.glob("checkpoints/*/model.safetensors"))


def test_a_prompt_ending_in_a_space_is_continued_with_a_word(trained_run):
    """Issue 28: "The " encodes as "The", " ", after which the model writes a second space ("The  boy")
    or glues a word piece on ("The liners"); the space is asked of the first new token instead."""
    for seed in range(6):
        r = lmforge("generate", trained_run, "The ", "--max-tokens", 4, "--seed", seed)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("The ") and r.stdout[4:5].strip(), r.stdout


def test_special_token_text_in_prompts_stays_text(trained_run):
    """generate and inspect read prompts with the run's tokenizer, fill with its Scorer: the literal
    text "<|endoftext|>", "<|mask|>" or "<|pad|>" is text there, and only fill's own [MASK] is a blank."""
    from lmforge.folders.run import RunDir
    from lmforge.open_run import open_run
    from lmforge.tasks.cloze import Scorer
    from lmforge.tokenizer import SPECIAL_TOKENS

    prompt = "One <|endoftext|> two <|mask|> three <|pad|>"
    tok = open_run(RunDir(trained_run)).tokenizer
    special = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert not special & set(ids) and tok.decode(ids) == prompt
    scorer = Scorer(trained_run)
    blank = scorer.blank(prompt + " [MASK] four <|endoftext|>")
    read = blank.prefix[len(scorer.lead_in):]
    assert not special & set(read + blank.suffix)
    assert tok.decode(read) == prompt and tok.decode(blank.suffix) == " four <|endoftext|>"


def test_run_whole_pipeline_then_skips_finished_stages(tmp_path, corpus_dir):
    args = ("run", corpus_dir, "--out", tmp_path / "r", "--max-steps", 10, *sets())
    first = lmforge(*args)
    assert first.returncode == 0, first.stderr
    assert "final: val loss" in first.stdout and "bits per byte" in first.stdout and "sample:" in first.stdout
    assert "prepare:" in first.stdout and "kept" in first.stdout  # the cleaning summary
    assert first.stdout.count("neighbours of '") == 4  # run.inspect_words
    for name in ("map-static.png", "map-static.html"):
        assert (tmp_path / "r" / "inspect" / name).stat().st_size > 1000
    report = json.loads((tmp_path / "r" / "prepared" / "report.json").read_text())
    assert report["documents_in"] == report["documents_kept"] + report["documents_rejected"]
    # issue 28: blanks and prompts from the user's validation text, not the built-in Python corpus's
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    cloze = summary["cloze"]
    assert cloze["label"] == f"fill-in-the-blank accuracy on {cloze['tasks']} blanks from your validation text"
    assert f"cloze: {cloze['label']}: " in first.stdout and f"chance {cloze['chance']:.3f}" in first.stdout
    assert cloze["label"] in (tmp_path / "r" / "report.html").read_text()
    assert 0 <= cloze["accuracy_norm_ci95"][0] <= cloze["accuracy_norm"] <= cloze["accuracy_norm_ci95"][1]
    from lmforge.folders.run import RunDir
    from lmforge.tasks.validation import sample_prompts, validation_passages

    run = RunDir(tmp_path / "r")
    passages = validation_passages(run.tokens_dir, run.tokenizer())
    val_text = "\n".join(p.text for p in passages)
    tasks = [json.loads(line) for line in (tmp_path / "r" / "cloze_tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == cloze["tasks"] >= 20
    assert all(t["context"].replace("[MASK]", t["choices"][t["answer"]]) in val_text for t in tasks)
    prompt = sample_prompts(passages, 1, run.config.train.seed)[0]
    assert summary["samples"][0].startswith(prompt) and prompt == prompt.strip()
    assert any(p.document_start and p.text.lstrip().startswith(prompt) for p in passages)
    again = lmforge(*args)
    assert again.returncode == 0, again.stderr
    assert "already trained, skipping training" in again.stdout


def test_a_resumed_run_keeps_the_data_it_was_trained_on(tmp_path, corpus_dir):
    """A newer lmforge may prepare or tokenize the same sources otherwise (its defaults changed: the
    folders' fingerprints no longer match). A run being resumed keeps RUN/prepared and RUN/tokens as
    they are: rebuilt, they would hold other data than its checkpoint was trained on."""
    args = ("run", corpus_dir, "--out", tmp_path / "r", "--max-steps", 10, *sets())
    assert lmforge(*args).returncode == 0
    markers = [tmp_path / "r" / "prepared" / "report.json", tmp_path / "r" / "tokens" / "meta.json"]
    for marker in markers:  # what an older version's folders look like to this one
        marker.write_text(marker.read_text().replace('"fingerprint": "', '"fingerprint": "older-'))
    before = [m.read_bytes() for m in markers]
    (tmp_path / "r" / "summary.json").unlink()  # so that training resumes (at its last step) and reads the tokens
    again = lmforge(*args)
    assert again.returncode == 0, again.stderr
    assert "holds the data this run was trained on" in again.stdout
    assert "holds the tokens this run was trained on" in again.stdout
    assert [m.read_bytes() for m in markers] == before
    assert (tmp_path / "r" / "summary.json").is_file()


def test_missing_path(tmp_path):
    assert_user_error(lmforge("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r", *sets()),
                      "nowhere", "does not exist")


def test_empty_and_all_binary_corpus(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("   \n")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "a.bin").write_bytes(bytes(range(256)) * 40)
    for folder in (empty, binary):
        assert_user_error(lmforge("train", "--data", folder, "--out", tmp_path / "r", *sets()), "no text found")
    assert not (tmp_path / "r" / "tokens").exists()


def test_corpus_too_small_for_one_batch(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "one.txt").write_text("just a few words of text here.")
    (tmp_path / "c" / "two.txt").write_text("and a second tiny document.")
    assert_user_error(lmforge("train", "--data", tmp_path / "c", "--out", tmp_path / "r", *sets()),
                      "corpus too small for one batch")


def test_invalid_config_value(tmp_path):
    assert_user_error(lmforge("train", "--out", tmp_path / "r", "--set", "train.lr=fast"), "train.lr")
    assert_user_error(lmforge("run", "--set", "model.n_head=3"), "model.n_embd")
    assert_user_error(lmforge("run", "--preset", "nope"), "unknown preset")


def test_checkpoint_from_another_architecture(trained_run, corpus_dir):
    r = lmforge("train", "--data", corpus_dir, "--out", trained_run, "--resume", *sets(**{"model.n_layer": 3}))
    assert_user_error(r, "model.n_layer")
    assert_user_error(lmforge("eval", trained_run.parent / "missing"), "does not exist")


def test_argparse_errors_exit_2():
    assert lmforge("train", "--max-steps", "many").returncode == 2


def test_estimate_from_a_measured_run(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())
    r = lmforge("estimate", "--from-run", trained_run, "--preset", "tiny", "--tokens", "100M", "--hardware", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mfu"] == summary["mfu"] and out["days"] > 0
    assert "warning" not in r.stderr  # measured on this CPU, estimated for it
    gpu = lmforge("estimate", "--from-run", trained_run, "--preset", "tiny", "--tokens", "100M", "--hardware", "h100")
    assert gpu.returncode == 0 and "measured on a CPU" in gpu.stderr  # a CPU's MFU says little of an H100's


def test_python_api_names_stay_functions_after_every_submodule_is_imported():
    """`lmforge.generate` etc. load lazily; a submodule of the same name would replace them on import."""
    import importlib
    import pkgutil

    import lmforge

    for module in pkgutil.walk_packages(lmforge.__path__, "lmforge."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name, (module, attr) in lmforge._LAZY.items():
        value = getattr(lmforge, name)
        if attr is None:  # a lazily imported subpackage (lmforge.scaling)
            assert value.__name__ == module
        else:
            assert callable(value) and not isinstance(value, type(lmforge)), name


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as most JSON parsers outside Python do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_a_single_text_file_trains_and_evaluates_to_finite_figures(tmp_path):
    """One file is one document, long: it holds out its own last data.val_fraction."""
    text = tmp_path / "book.txt"
    text.write_text("".join(f"Line {i} of the only book: the {['cat', 'dog', 'owl'][i % 3]} sat on mat {i % 7}.\n"
                            for i in range(1500)))
    run = tmp_path / "run"
    r = lmforge("train", "--data", text, "--out", run, *sets())
    assert r.returncode == 0, r.stderr
    assert "nan" not in (r.stdout + r.stderr).lower()
    meta = strict_json((run / "tokens" / "meta.json").read_text())
    assert "the last val_fraction of each of 1 long one" in meta["val_split"]["detail"]
    val, train = meta["splits"]["val"]["tokens"], meta["splits"]["train"]["tokens"]
    assert val == pytest.approx(0.1 * (val + train), rel=0.01)  # data.val_fraction of the stream
    summary = strict_json((run / "summary.json").read_text())
    for key in ("val_loss", "perplexity", "bits_per_byte", "unigram_val_loss"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    r = lmforge("eval", run, "--json")
    assert r.returncode == 0, r.stderr
    assert strict_json(r.stdout)["val_loss"] == pytest.approx(summary["val_loss"], rel=0.05)


def test_no_validation_text_is_null_with_a_reason_never_nan(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("".join(f"sentence {i} is here.\n" for i in range(800)))
    run = tmp_path / "run"
    # a val_fraction so small that the held-out tail is shorter than one window of seq_len + 1
    r = lmforge("train", "--data", text, "--out", run, *sets(**{"data.val_fraction": 0.001}))
    assert r.returncode == 0, r.stderr
    assert "nan" not in (r.stdout + r.stderr).lower() and "n/a" in r.stderr + r.stdout
    summary = strict_json((run / "summary.json").read_text())
    assert summary["val_loss"] is None and "no validation targets" in summary["val_reason"]
    r = lmforge("eval", run, "--json")
    result = strict_json(r.stdout)
    assert result["val_loss"] is None and result["bits_per_byte"] is None and "reason" in result
    r = lmforge("eval", run)
    assert r.returncode == 0 and "no validation figures" in r.stdout


# ---------------------------------------------------------------- exit codes: 0 done, 2 bad input, 130 interrupted

@pytest.mark.parametrize("command, signum", [("train", "SIGINT"), ("train", "SIGTERM"), ("run", "SIGINT")])
def test_a_signal_stops_training_with_exit_130_and_the_command_to_go_on(tmp_path, corpus_dir, tokens_dir, command,
                                                                         signum):
    """Stopped by a signal, train (and run) saves its checkpoint and exits 130 (it exited 0, as if
    finished), says so on a line of its own (it ended the progress bar's line) and prints the command
    that goes on, alone on the last line, which does: the run ends complete. For train that command
    is `lmforge train --out RUN --resume`: the run folder holds the rest. Progress to a pipe is dated
    lines, never a bar's carriage returns. A planned --stop-at is no interruption: exit 0."""
    import shlex
    import signal
    import time

    data = ["--data", str(tokens_dir)] if command == "train" else [str(corpus_dir)]
    args = [command, *data, "--out", str(tmp_path / "run"), "--max-steps", "600",
            *sets(**{"train.log_interval": 1, "train.progress": True})]
    # unbuffered, both streams in one pipe: the order a terminal shows them in
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**ENV, "PYTHONUNBUFFERED": "1"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count('"loss"') >= 3):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signum))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "\r" not in out, out[-2000:]
    lines = out.splitlines()
    stop = [line for line in lines if "stop requested" in line]
    assert len(stop) == 1 and stop[0].startswith("train: stop requested; saving step"), out[-2000:]
    said, last = lines[-2:]
    assert said.startswith("lmforge: interrupted: training stopped at step ") and "Traceback" not in out, out[-2000:]
    assert said.endswith("continue with:")
    again = shlex.split(last)
    # run resumes by itself; train reads all but the run folder from it
    assert again == (["lmforge", "train", "--out", str(tmp_path / "run"), "--resume"] if command == "train"
                     else ["lmforge", *args])
    finished = lmforge(*again[1:])
    assert finished.returncode == 0, finished.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 600
    if command == "train":
        planned = lmforge(*args[:4], str(tmp_path / "planned"), *args[5:], "--stop-at", "2")
        assert planned.returncode == 0 and "interrupted" not in planned.stderr, planned.stderr


def test_resume_reads_the_run_folder_alone_from_anywhere_and_extends_a_finished_run(tmp_path, corpus_dir):
    """`train --out RUN --resume` takes the config, data and tokens from RUN: nothing else repeated (it
    failed: "data.tokenized was ... but is '' now"), from another directory too, since config.yaml keeps
    data.sources relative to the run folder (an older config.yaml's, relative to where lmforge ran,
    still reads). A finished run is extended by a higher --max-steps or by --more-steps, its lr schedule
    continued at its final lr: said on screen and recorded in summary.json. Lowering is refused."""
    import shutil

    import yaml

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(corpus_dir, work / "corpus")
    first = lmforge("train", "--data", "corpus", "--out", "runs/r", "--max-steps", 6, *sets(), cwd=work)
    assert first.returncode == 0, first.stderr
    run = work / "runs" / "r"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["sources"] == ["../../corpus"]
    longer = lmforge("train", "--out", run, "--resume", "--max-steps", 9, cwd=elsewhere)
    assert longer.returncode == 0, longer.stderr
    assert "lr schedule (cosine, laid out over 6 steps) is continued" in longer.stdout, longer.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["schedule_steps"], summary["extended_schedule"]) == (9, 6, "continued")
    assert_user_error(lmforge("train", "--out", run, "--resume", "--max-steps", 7, cwd=elsewhere),
                      "train.max_steps", "can only be raised")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["sources"] = ["corpus"]  # as lmforge wrote it before: relative to where it ran
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    more = lmforge("train", "--out", "runs/r", "--resume", "--more-steps", 2, cwd=work)
    assert more.returncode == 0, more.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 11
    floor = cfg["train"]["lr"] * cfg["train"]["min_lr_ratio"]
    lrs = [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert steps == [5, 6, 9, 10, 11]
    assert lrs[1:] == pytest.approx([floor] * 4)  # the schedule's last step, then the added ones at its final lr


def test_a_closed_stdout_ends_the_command_quietly_with_141():
    """`lmforge ... | head -2`: once the reader has gone, the next write fails (EPIPE). That was a
    BrokenPipeError traceback; now the command stops with a shell's status for SIGPIPE, silently."""
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "estimate", "--params", "7B", "--tokens", "1T"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    proc.stdout.close()  # before the command writes its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "nan", "--temperature nan: must be a finite number >= 0"),  # NaN logits: multinomial raised
    ("--temperature", "inf", "--temperature inf: must be a finite number >= 0"),
    ("--top-k", "-3", "--top-k -3: must be >= 0"),  # torch.topk raised
    ("--top-p", "0", "--top-p 0.0: must be in (0, 1]"),
    ("--max-tokens", "-1", "--max-tokens -1: must be >= 0"),
])
def test_generate_refuses_a_bad_sampling_setting_naming_its_flag(trained_run, flag, value, message):
    r = lmforge("generate", trained_run, "The ", f"{flag}={value}")
    assert_user_error(r)
    assert r.stderr.startswith(f"lmforge: error: {message}"), r.stderr


def test_duplicate_answer_choices_are_refused_naming_the_option_or_line(trained_run, tmp_path):
    """The same choice twice halves its probability and, in a task file, makes the answer ambiguous."""
    r = lmforge("fill", trained_run, "The [MASK] returns None.", "--choices", "function, value,function")
    assert_user_error(r, "--choices: choices 1 and 3 are both 'function': give each choice once")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"context": "The [MASK] returns.", "choices": ["def", "class"], "answer": 0}) + "\n"
                     + json.dumps({"context": "A [MASK] here.", "choices": ["cat", "dog", " cat"], "answer": 1}) + "\n")
    r = lmforge("eval", trained_run, "--tasks", tasks)
    assert_user_error(r, f"{tasks}:2: choices 1 and 3 are both 'cat'")


def test_a_hostile_config_is_one_line_and_exit_2(tmp_path):
    """A vocabulary of a billion tokens aborted inside the Rust tokenizer trainer (it allocates before
    it checks); 10,000 nested brackets ended in RecursionError in the YAML composer."""
    r = lmforge("tokenize", "--out", tmp_path / "tok", "--set", "tokenizer.vocab_size=1000000000")
    assert_user_error(r, "tokenizer.vocab_size=1000000000 is invalid: must be in [259, 1048576]")
    assert not (tmp_path / "tok").exists()
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert_user_error(lmforge("train", "--config", deep, "--out", tmp_path / "run"),
                      f"config file {deep}:1: nested deeper than 32 levels")


def test_prepare_kind_flag_sets_a_sources_kind(tmp_path):
    """`--kind [SOURCE=]KIND` (data.kinds): a folder of records read as prose; a kind that is none, one line."""
    from conftest import make_prose

    (tmp_path / "stories.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": make_prose(i)}) + "\n"
                                                    for i in range(6)))
    done = lmforge("prepare", tmp_path / "stories.jsonl", "--out", tmp_path / "p", "--kind", "prose",
                   "--workers", 1, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "kinds: prose 6 of 6 kept" in done.stdout
    assert json.loads((tmp_path / "p" / "report.json").read_text())["documents_by_kind"] == {"prose": {"in": 6, "kept": 6}}
    assert_user_error(lmforge("prepare", tmp_path / "stories.jsonl", "--out", tmp_path / "q", "--kind", "novel"),
                      "data.kinds", "prose, book, play, web, code")
    assert_user_error(lmforge("prepare", tmp_path / "stories.jsonl", "--out", tmp_path / "q", "--kind", "x.jsonl=web"),
                      "data.kinds", "names no source")


# ---------------------------------------------------------------- wording

def test_every_argument_of_every_command_says_what_it_is():
    """`lmforge X --help` lists each argument with a description (RUN, --device, --json had none), and
    every command's help prints (`inspect analogy --help` raised ValueError on its tuple metavar)."""
    import argparse

    from lmforge.cli import build_parser

    bare = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest: choice.help for choice in action._choices_actions}
                for sub, subparser in action.choices.items():
                    if sub in helped:  # not an alias (neighbors)
                        assert helped[sub], f"{name} {sub}"
                        walk(subparser, f"{name} {sub}")
            elif not action.help or action.help == argparse.SUPPRESS:
                bare.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "lmforge")
    assert not bare, bare


def test_counts_are_worded_in_the_right_number():
    """'1 threads', '1 process(es)', '1 layers': a count says its noun once, in the right number."""
    import re
    from pathlib import Path

    from lmforge.figures import plural

    assert [plural(1, "thread"), plural(2, "thread"), plural(1, "process", "processes"),
            plural(1500, "process", "processes"), plural(0, "file")] == \
        ["1 thread", "2 threads", "1 process", "1,500 processes", "0 files"]
    src = Path(__file__).parent.parent / "src" / "lmforge"
    hedged = [f"{path.relative_to(src)}:{i}" for path in sorted(src.rglob("*.py"))
              for i, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\}[ a-z]*[a-z]\((s|es)\)|[a-z]\((s|es)\) \{\S", line)]  # "{n} run(s)", "column(s) {..."
    assert not hedged, hedged


def test_train_says_the_unigram_baseline_in_bits_per_byte_too(trained_run):
    """The baseline was given in nats/token only, beside the run's bits/byte: the two did not compare.
    Both figures in both units, over the same validation windows: the ratios agree."""
    import re

    out = (trained_run.parent / "train.out").read_text()
    assert ", 1 thread, 1 process;" in out  # 'train: ... 1 threads, 1 process(es)'
    m = re.search(r"val loss ([\d.]+) nats/token, ([\d.]+) bits/byte \(unigram baseline ([\d.]+) nats/token, "
                  r"([\d.]+) bits/byte\)", out)
    assert m, out
    loss, bpb, unigram, unigram_bpb = map(float, m.groups())
    summary = json.loads((trained_run / "summary.json").read_text())
    assert unigram == pytest.approx(summary["unigram_val_loss"], abs=1e-4)
    assert loss == pytest.approx(summary["val_loss"], abs=1e-4) and bpb == pytest.approx(summary["bits_per_byte"], abs=1e-4)
    assert 0 < unigram_bpb < 16  # a byte holds 8 bits; a 512-token vocabulary stays well under twice that


def test_the_unigram_baseline_in_bits_per_byte_counts_as_the_models_figure_does():
    """Over the targets that stand for text (not <|endoftext|>, 0 bytes), over their bytes: by hand."""
    import math

    import numpy as np

    from lmforge.training.loss_eval import unigram_baseline

    train = [np.array([1, 1, 2, 2], dtype=np.uint16)]  # frequencies add-one smoothed over 3 ids: 1/7, 3/7, 3/7
    val = [np.array([1, 2, 0, 1], dtype=np.uint16)]  # one window of 3 + 1: targets 2, 0, 1
    got = unigram_baseline(train, val, 3, 3, token_bytes=np.array([0, 1, 2]))
    assert got["val_loss"] == pytest.approx(-(math.log(3 / 7) + math.log(1 / 7) + math.log(3 / 7)) / 3)
    assert got["bits_per_byte"] == pytest.approx(-(math.log2(3 / 7) + math.log2(3 / 7)) / (2 + 1))


def test_tokenize_counts_the_users_files_not_the_prepared_shards(tmp_path):
    """`lmforge run` tokenizes RUN/prepared/clean: 'from 1 files' counted the shard prepare wrote,
    not the user's 12 files."""
    from conftest import corpus_texts

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(corpus_texts()[:12]):
        (corpus / f"doc{i}.txt").write_text(text)
    assert lmforge("prepare", corpus, "--out", tmp_path / "prep", "--no-progress").returncode == 0
    for source in (tmp_path / "prep" / "clean", tmp_path / "prep"):  # as lmforge run names it, and as a user
        r = lmforge("tokenize", source, "--out", tmp_path / f"tok-{source.name}", "--no-progress",
                    "--set", "tokenizer.vocab_size=300", "--set", "data.val_fraction=0.2")
        assert r.returncode == 0, r.stderr
        line = next(line for line in r.stdout.splitlines() if "MB from" in line)
        assert "from 12 files (cleaned into 1 shard by lmforge prepare)" in line, line


@pytest.mark.parametrize("argv, expected", [
    (["scale", "plan", "--budget", "1e13", "--sizes", "32,64", "--knob", "depth", "--design", "grid", "--levels", "4",
      "--points-per-size", "3", "--parallel", "2", "--max-run-flops", "2e12flops", "--repeats", "1", "--prior",
      "epoch2024", "--noise", "0.02", "--target", "1M:10M", "--target", "2M:20M", "--max-steps", "7", "--seed", "5",
      "--threads", "3", "--device", "cpu", "--no-progress", "--cooldowns", "branched"],
     {"scale.cooldowns": "branched", "scale.sizes": [32, 64], "scale.knob": "depth", "scale.design": "grid", "scale.levels": 4,
      "scale.points_per_size": 3, "scale.parallel": 2, "scale.max_run_flops": 2e12, "scale.repeats": 1,
      "scale.prior": "epoch2024", "scale.noise": 0.02, "scale.targets": ["1M:10M", "2M:20M"], "train.max_steps": 7,
      "train.seed": 5, "train.threads": 3, "train.device": "cpu", "train.progress": False}),
    (["train", "--objective", "masked", "--init-from", "."], {"train.objective": "masked", "train.init_from": "CWD"}),
    (["prepare", "--out", "x", "--workers", "3"], {"prepare.workers": 3}),
    (["tokenize", "--out", "x", "--workers", "2", "--executor", "ray"], {"prepare.workers": 2, "prepare.executor": "ray"}),
    (["run", "--workers", "4", "--executor", "local"], {"prepare.workers": 4, "prepare.executor": "local"}),
])
def test_each_config_flag_sets_its_key(argv, expected):
    """The flags of CONFIG_FLAGS, each set through the one table, land in the config as `--set KEY=VALUE` would."""
    from lmforge.cli import CONFIG_FLAGS, _resolve, build_parser

    cfg = _resolve(build_parser().parse_args(argv), None).to_dict()
    for key, value in expected.items():
        section, name = key.split(".")
        assert cfg[section][name] == (os.getcwd() if value == "CWD" else value), key
    given = {a for a in argv if a.startswith("--")}
    assert {CONFIG_FLAGS[f].key for f in given & set(CONFIG_FLAGS)} == set(expected)


def test_every_config_flag_is_tested_above():
    from lmforge.cli import CONFIG_FLAGS

    tested = {a for params in test_each_config_flag_sets_its_key.pytestmark[0].args[1] for a in params[0]}
    assert set(CONFIG_FLAGS) <= tested
