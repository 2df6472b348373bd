"""lmforge: train language models from raw text, end to end.

Every stage is a function over files on disk; the CLI (`lmforge ...`) is a thin face over these:

    cfg = lmforge.load_config("tiny", overrides=["train.max_steps=200"])
    lmforge.prepare(["books/", "web.warc.gz"], "out/prep", cfg.prepare, cfg.data)   # clean/, rejected/, report.json
    lmforge.tokenize(cfg.data, cfg.tokenizer, "out/tokens")
    summary = lmforge.train(cfg)                 # or lmforge.run(cfg) for the whole pipeline
    lmforge.evaluate("runs/tiny")                # {"val_loss", "perplexity", "bits_per_byte", ...}
    lmforge.RunDir("runs/tiny").summary()        # a run folder: config, tokenizer, metrics, checkpoints
    lmforge.generate("runs/tiny", "def ")
    lmforge.inspect("runs/tiny").neighbours("file")   # word vectors, logit lens, attention (lmforge.inspection)
    lmforge.fill("runs/tiny", "The [MASK] returns None.", choices=["function", "river"])
    lmforge.evaluate_tasks("runs/tiny", "builtin")   # cloze accuracy with 95% intervals
    lmforge.scaling.plan(cfg, 3e13, "sweep"); lmforge.scaling.run("sweep"); lmforge.scaling.fit("sweep")
"""

from importlib import import_module

# OpenMP's wait policy is left as OpenMP sets it (workers spin a while, then sleep). Setting PASSIVE
# here (issue 14) cost a fifth of every step on a quiet machine (nanoGPT's CPU shape, 2 threads:
# 111-120 ms a step against 88-93 without it, 2026-12-02); the harm it was set against, a spinning
# thread beside another busy process, the trainer now avoids by running only as many threads as
# there are free cores (training/device.py, ThreadGovernor). benchmarks/busy_cpu.py measures both.

from lmforge.config import Config, load_config
from lmforge.errors import LmforgeError

# Stages load on first use: a data-cleaning worker process should not pay for importing torch.
_LAZY = {
    "evaluate": ("lmforge.evaluation", "evaluate_run"),
    "evaluate_tasks": ("lmforge.tasks.accuracy", "evaluate_tasks"),
    "fill": ("lmforge.tasks.cloze", "fill"),
    "generate": ("lmforge.sampling", "generate"),
    "inspect": ("lmforge.inspection", "Inspector"),
    "prepare": ("lmforge.data.prepare", "prepare"),
    "run": ("lmforge.pipeline", "run"),
    "RunDir": ("lmforge.folders.run", "RunDir"),
    "scaling": ("lmforge.scaling", None),
    "tokenize": ("lmforge.tokenizing", "tokenize_corpus"),
    "train": ("lmforge.training.trainer", "train"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return import_module(module) if attr is None else getattr(import_module(module), attr)
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = ["Config", "LmforgeError", "RunDir", "evaluate", "evaluate_tasks", "fill", "generate", "inspect", "load_config",
           "prepare", "run", "scaling", "tokenize", "train"]
