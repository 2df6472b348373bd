"""Shared fixtures: a small real corpus on disk, tokenized once, and a tiny config.

Tests run torch on one thread: on shared 2-core machines several threads per process can
collapse under contention, and one thread keeps float reductions in a fixed order.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

from lmforge.config import load_config  # noqa: E402
from lmforge.tokenizing import tokenize_corpus  # noqa: E402


def corpus_texts() -> list[str]:
    """Real prose and code that every Python ships: the documentation topics."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)][:60]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    for i, text in enumerate(corpus_texts()):
        folder = root / "sub" if i % 3 == 0 else root
        (folder / f"doc{i:03d}.txt").write_text(text)
    return root


def tiny_overrides(**extra) -> list[str]:
    values = {
        "tokenizer.vocab_size": 512, "tokenizer.train_bytes": 0, "data.val_fraction": 0.1,
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.seq_len": 32,
        "train.batch_size": 4, "train.max_steps": 20, "train.warmup_steps": 2, "train.lr": 3e-3,
        "train.eval_interval": 0, "train.eval_tokens": 2048, "train.final_eval_tokens": 4096,
        "train.checkpoint_interval": 0, "train.progress": False, "train.threads": 1, "train.log_interval": 5,
        # fp32 on every CPU: `auto` picks bf16 where the CPU has AMX, and bf16 rounding breaks the fp32-level
        # equalities the tests assert (DDP against one process: 2e-5)
        "train.dtype": "float32",
        "run.samples": 1, "run.sample_tokens": 8,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def tiny_config(tmp_path, corpus_dir):
    def make(**extra):
        overrides = tiny_overrides(**extra)
        cfg = load_config("tiny", overrides=overrides + [f"run.out={tmp_path / 'run'}"])
        cfg.data.sources = [str(corpus_dir)]
        return cfg

    return make


@pytest.fixture(scope="session")
def tokens_dir(tmp_path_factory, corpus_dir) -> Path:
    cfg = load_config("tiny", overrides=tiny_overrides())
    cfg.data.sources = [str(corpus_dir)]
    out = tmp_path_factory.mktemp("tok") / "tokens"
    tokenize_corpus(cfg.data, cfg.tokenizer, out, log=lambda *_: None)
    return out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


WORDS = (
    "the of and to in is was that for on with as by at from his her they this which be have are one had not but "
    "all were when we there can an your what their if would about into time has more two may other its could "
    "people only first then some them these so her over new years after most many like well such where water "
    "long made way through little called back years came day work part great world found house river town bridge "
    "valley farm market winter summer spring autumn morning evening children family mother father garden road "
    "village mountain forest field stone window door table letter story teacher school city church music song "
    "language history island harbour ship sailor captain storm light night moon star bird horse tree flower"
).split()


def make_prose(seed: int, paragraphs: int = 4) -> str:
    """Readable-enough English that passes the quality filters: varied sentences, stop words, punctuation."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(3, 5)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    return [int(p) for t in Path(f"/proc/{pid}/task").iterdir() for p in (t / "children").read_text().split()]


def wait_for_exit(pids: list[int], hang_guard_s: float = 300) -> list[int]:
    """Block until each process has exited (a pidfd becomes readable at its exit: no polling, and no
    parent needed, which an orphan no longer has); returns those still running when the guard,
    there only so that a broken build cannot hang the suite, ran out."""
    import os
    import select
    import time

    deadline = time.time() + hang_guard_s
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        try:
            if not select.select([fd], [], [], max(0.0, deadline - time.time()))[0]:
                left.append(pid)
        finally:
            os.close(fd)
    return left
