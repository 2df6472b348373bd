"""TensorBoard event files beside metrics.jsonl, when `tensorboard` is installed (the `tensorboard` extra).

metrics.jsonl stays the source of truth (the report, the sweep fitter and resumption read it); the
events are a live view for `tensorboard --logdir runs/`: every number of a metrics record becomes a
scalar at its step, named "train/loss", "val/val_loss", ... in RUN/tensorboard/ (lmforge/folders/run.py names it).
A resumed run appends a new event file; TensorBoard shows the latest value written for each step.
"""

from __future__ import annotations

import importlib.util

from lmforge.folders.run import RunDir, TrainRecord, ValRecord

NOT_SCALARS = {"step", "tokens", "train_time_s"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLog:
    """Appends each record to metrics.jsonl and, with TensorBoard installed, to an event file."""

    def __init__(self, run: RunDir, write: bool = True):
        self.run, self.write_files = run, write
        self.writer = None
        if write and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.tensorboard_dir))

    def __call__(self, record: TrainRecord | ValRecord) -> None:
        if not self.write_files:
            return
        self.run.append_metrics(record)
        if self.writer is not None:
            group = "val" if isinstance(record, ValRecord) else "train"
            for key, value in record.to_dict().items():
                if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{group}/{key}", value, record.step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
