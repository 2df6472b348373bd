"""TensorBoard event files during training, read back with TensorBoard's own reader."""

import pytest

from lmforge.folders.run import RunDir, TrainRecord, ValRecord
from lmforge.training.trainer import train

pytest.importorskip("tensorboard", reason="tensorboard is an extra: pip install -e '.[tensorboard]' (in .[test] too)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def test_tensorboard_reader_finds_the_logged_scalars(tiny_config, tokens_dir):
    cfg = tiny_config(**{"train.max_steps": 10, "train.log_interval": 2, "train.eval_interval": 5})
    train(cfg, data=[str(tokens_dir)], log=lambda *_: None)
    run = RunDir(cfg.run.out)
    events = EventAccumulator(str(run.tensorboard_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/mfu", "val/val_loss", "val/val_bpb"} <= tags
    records = run.metrics()  # the source of truth: every number in it is in the events, at its step
    losses = {r.step: r.loss for r in records if isinstance(r, TrainRecord)}
    assert {e.step: round(e.value, 5) for e in events.Scalars("train/loss")} == pytest.approx(losses)
    vals = {r.step: r.val_loss for r in records if isinstance(r, ValRecord)}
    assert {e.step: e.value for e in events.Scalars("val/val_loss")} == pytest.approx(vals, rel=1e-6)
    assert sorted(vals) == [5, 10]
