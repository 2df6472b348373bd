"""lmforge: train language models from raw text, end to end.

Every stage is a function over files on disk; the CLI (`lmforge ...`) is a thin face over these:

    cfg = lmforge.load_config("tiny", overrides=["train.max_steps=200"])
    lmforge.prepare(["books/", "web.warc.gz"], "out/prep", cfg.prepare, cfg.data)   # clean/, rejected/, report.json
    lmforge.tokenize(cfg.data, cfg.tokenizer, "out/tokens")
    summary = lmforge.train(cfg)                 # or lmforge.run(cfg) for the whole pipeline
    lmforge.evaluate("runs/tiny")                # {"val_loss", "perplexity", "bits_per_byte", ...}
    lmforge.generate("runs/tiny", "def ")
"""

from lmforge.config import Config, load_config
from lmforge.data.pipeline import prepare
from lmforge.errors import LmforgeError
from lmforge.evaluation import evaluate_run as evaluate
from lmforge.generate import generate
from lmforge.pipeline import run
from lmforge.tokenizer import tokenize_corpus as tokenize
from lmforge.training.loop import train

__version__ = "0.1.0"
__all__ = ["Config", "LmforgeError", "evaluate", "generate", "load_config", "prepare", "run", "tokenize", "train"]
