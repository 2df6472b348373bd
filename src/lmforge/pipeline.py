"""`lmforge run`: the whole pipeline on one config, skipping stages whose output is complete.

    sources -> RUN/prepared/ (clean) -> RUN/tokens/ (tokenize) -> RUN/ (train, checkpoints) -> eval -> samples
            -> fill-in-the-blank accuracy (summary.json "cloze")
            -> a first look inside (nearest neighbours of a few words, RUN/inspect/map-static.{png,html})

Samples and blanks come from the user's corpus: the prompts are the first words of validation
documents, and the blanks are made from the validation text (lmforge/tasks/validation.py, tasks
written to RUN/cloze_tasks.jsonl); the built-in Python-documentation tasks are scored on the
built-in corpus only, unless run.tasks names them.

A rerun of the same command finds the tokenized folder complete (its fingerprint matches),
resumes training from the newest checkpoint if it was interrupted, and skips training when
`summary.json` says the run is complete.
"""

from __future__ import annotations

import json
from typing import Callable

from lmforge.config import BUILTIN_SOURCE, Config, with_data
from lmforge.data.prepare import prepare, prepared_otherwise
from lmforge.figures import fmt
from lmforge.files import atomic_write_text
from lmforge.folders.run import RunDir, Summary
from lmforge.open_run import open_run
from lmforge.sampling import continue_text
from lmforge.tasks.accuracy import BUILTIN_TASKS, evaluate_tasks, read_tasks
from lmforge.tasks.validation import cloze_tasks, sample_prompts, validation_passages
from lmforge.training.trainer import check_resumable, train

CLOZE_TASKS = "cloze_tasks.jsonl"  # in the run folder: the blanks made from its validation text


def prepared_config(cfg: Config, run: RunDir) -> Config:
    """`cfg` training on RUN/prepared/clean, the cleaned sources (nothing is read or written)."""
    if not cfg.prepare.enabled or cfg.data.tokenized:
        return cfg
    # the byte cap was applied while reading for prepare; the clean folder is used whole
    return with_data(cfg, sources=[str(run.prepared.clean_dir)], max_bytes=0)


def prepare_sources(cfg: Config, run: RunDir, log: Callable[[str], None], resuming: bool) -> None:
    """Clean the configured sources into RUN/prepared. A run being resumed keeps the folder it was
    trained on, even where this lmforge would build it otherwise (sources edited since, a newer
    version's defaults)."""
    if not cfg.prepare.enabled or cfg.data.tokenized:
        return
    written = run.written_paths()  # `lmforge run S --out S/run`: the run's own files are no input
    if resuming and prepared_otherwise(cfg.data.sources, run.prepared_dir, cfg.prepare, cfg.data, written):
        log(f"prepare: {run.prepared_dir} holds the data this run was trained on; resuming keeps it as it is")
        return
    prepare(cfg.data.sources, run.prepared_dir, cfg.prepare, cfg.data, log=log, progress=cfg.train.progress,
            exclude=written)


def run(cfg: Config, log: Callable[[str], None] = print) -> dict:
    run_dir = RunDir(cfg.run.out)
    run_dir.claim()  # before prepare writes RUN/prepared
    builtin_corpus = cfg.data.sources == [BUILTIN_SOURCE] and not cfg.data.tokenized
    if cfg.run.tasks not in ("", "builtin", "validation", "none"):
        read_tasks(cfg.run.tasks)  # a task file that cannot be read fails before training, not after
    resumable = run_dir.latest_checkpoint() is not None
    prepared = prepared_config(cfg, run_dir)
    if run_dir.config is not None and resumable:
        check_resumable(run_dir.config, prepared)  # before anything is rebuilt
    prepare_sources(cfg, run_dir, log, resumable)
    cfg = prepared
    summary = run_dir.summary()
    if summary and summary.complete:
        log(f"run: {run_dir} is already trained, skipping training")
    else:
        trained = train(cfg, resume=resumable, log=log)
        if not trained.get("complete"):
            return trained
        summary = Summary.from_dict(trained)
    if cfg.train.objective == "causal":
        summary.samples = samples(run_dir, cfg)
        for text in summary.samples:
            log("sample: " + text.replace("\n", "\n        ") + "\n")
    else:
        log("run: no samples (a masked model fills blanks rather than continuing text: try lmforge fill)")
    summary.cloze = fill_in_the_blank(run_dir, cfg, builtin_corpus, log)
    looked = first_look(run_dir, cfg, log)
    if looked is not None:
        summary.neighbours, summary.map = looked
    run_dir.write_summary(summary)
    from lmforge.report import report  # after the summary: the page shows it

    log(f"run: the whole run on one page: {report(run_dir.path)}")
    log(f"run: everything is in {run_dir}/ ({', '.join(sorted(p.name for p in run_dir.path.iterdir() if not p.name.startswith('.')))})")
    if cfg.train.objective == "masked":  # its loss per byte does not compare with a causal run's bits per byte
        log(f"final: masked-token loss {fmt(summary.val_loss)} nats/token (unigram baseline "
            f"{fmt(summary.unigram_val_loss)}), masked-token accuracy {fmt(summary.val_accuracy, '.3f')}")
    else:
        log(f"final: val loss {fmt(summary.val_loss)} nats/token (unigram baseline "
            f"{fmt(summary.unigram_val_loss)}), perplexity {fmt(summary.perplexity, '.2f')}, "
            f"{fmt(summary.bits_per_byte)} bits per byte")
    return summary.to_dict()


def samples(run: RunDir, cfg: Config) -> list[str]:
    opened = open_run(run)
    prompts = cfg.run.sample_prompts or sample_prompts(
        validation_passages(run.tokens_dir_for(cfg), opened.tokenizer), cfg.run.samples, cfg.train.seed) or [""]
    return [continue_text(opened.model, opened.tokenizer, prompts[i % len(prompts)], cfg.run.sample_tokens,
                          cfg.run.temperature, cfg.run.top_k, seed=cfg.train.seed + i)
            for i in range(cfg.run.samples)]


def fill_in_the_blank(run: RunDir, cfg: Config, builtin_corpus: bool, log: Callable[[str], None]) -> dict | None:
    """Accuracy on the tasks run.tasks names (summary.json "cloze", with a `label` saying what they
    are), or None, with the reason logged, where there are none."""
    which = cfg.run.tasks or ("builtin" if builtin_corpus else "validation")
    if which == "none":
        return None
    if which == "validation":
        tasks, why = cloze_tasks(validation_passages(run.tokens_dir_for(cfg), run.tokenizer()), cfg.train.seed)
        if not tasks:
            log(f"cloze: no fill-in-the-blank accuracy: {why}")
            return None
        path = run.path / CLOZE_TASKS
        atomic_write_text(path, "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks))
        label = f"fill-in-the-blank accuracy on {len(tasks)} blanks from your validation text"
    elif which == BUILTIN_TASKS:
        path = BUILTIN_TASKS
        mine = "" if builtin_corpus else ", not from your corpus"
        label = f"fill-in-the-blank accuracy on {len(read_tasks(path))} blanks from Python's documentation{mine}"
    else:
        path = which
        label = f"fill-in-the-blank accuracy on {len(read_tasks(path))} tasks from {path}"
    cloze = evaluate_tasks(run.path, path)
    cloze["label"] = label
    lo, hi = cloze["accuracy_ci95"]
    log(f"cloze: {label}: {cloze['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, chance {cloze['chance']:.3f}) "
        f"by summed log-probability, as lmforge fill ranks; {cloze['accuracy_norm']:.3f} per byte; "
        f"scoring {cloze['scoring']}; tasks in {cloze['tasks_file']}")
    return cloze


def first_look(run: RunDir, cfg: Config, log: Callable[[str], None] = print) -> tuple[dict, dict | None] | None:
    """Nearest neighbours of a few frequent words (static vectors) and the map of the most frequent ones
    (summary.json's `neighbours` and `map`), or None when the config asks for neither."""
    if not cfg.run.inspect_words and not cfg.run.map_words:
        return None
    from lmforge.inspection import Inspector  # matplotlib loads only here

    insp = Inspector(run.path)
    neighbours: dict = {}
    word_map = None
    # words of four letters or more: the most frequent short ones are function words
    for word in insp.frequent_words(cfg.run.inspect_words, min_length=4):
        found = insp.neighbours(word, k=8)["neighbours"]
        neighbours[word] = found
        log(f"neighbours of {word!r}: " + ", ".join(f"{n['word']} {n['similarity']:.2f}" for n in found))
    if cfg.run.map_words >= 3 and len(insp.words().words) >= 3:
        result = insp.word_map(top=cfg.run.map_words, method="pca")  # UMAP's JIT start-up costs ~30 s
        word_map = {"png": result["png"], "html": result["html"], "method": result["method"]}
        log(f"inspect: map of {len(result['points'])} words in {result['png']} and {result['html']} "
            f"(more: lmforge inspect --help)")
    return neighbours, word_map
