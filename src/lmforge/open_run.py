"""Opening a run for reading: its newest usable checkpoint's model (torch), its tokenizer, its objective.

Above training (it loads the model through training/checkpoint.py), below every reader: eval, fill,
generate, inspect, export and lmforge run's samples. The run folder itself (lmforge/folders/run.py)
stays free of torch.

    opened = open_run(RunDir("runs/tiny"), "cpu")
    opened.model; opened.tokenizer; opened.causal; opened.checkpoint
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.config import Config
from lmforge.errors import LmforgeError
from lmforge.figures import plural
from lmforge.folders.run import CheckpointDir, RunDir


def load_run_model(run: RunDir, device: str = "cpu"):
    """The model of the run's newest usable checkpoint, on `device`, and that checkpoint."""
    from lmforge.training.checkpoint import load_model

    run.require()
    ckpt = run.latest_checkpoint()
    if ckpt is None and run.checkpoints():
        raise LmforgeError(f"none of the {plural(len(run.checkpoints()), 'checkpoint')} in {run.checkpoints_dir} is "
                           f"usable (each is named above with its damage): train again (lmforge train --out "
                           f"{run.path}; --resume needs a usable one)")
    if ckpt is None:
        raise LmforgeError(f"{run.path} holds no checkpoint: train first (lmforge train --out {run.path})")
    ckpt.check_objective(run.objective, str(run.config_path))
    model = load_model(ckpt, run.config)
    return model.to(device), ckpt


@dataclass
class OpenRun:
    """A run opened for reading: what eval, fill, generate and inspect share."""

    run: RunDir
    model: Any  # lmforge.model.GPT, in eval mode
    tokenizer: Any  # tokenizers.Tokenizer
    objective: str
    checkpoint: CheckpointDir

    @property
    def causal(self) -> bool:
        return self.objective != "masked"

    @property
    def config(self) -> Config | None:
        return self.run.config


def open_run(run: RunDir, device: str = "cpu") -> OpenRun:
    """Model (in eval mode), tokenizer, objective and config: what every reader of a run needs."""
    model, ckpt = load_run_model(run, device)
    model.eval()
    return OpenRun(run, model, run.tokenizer(), run.objective, ckpt)
