"""Where a training run is, as one object: what a checkpoint holds besides the weights.

`TrainState` follows torchtitan's `Stateful`: `state_dict()` gives, and `load_state_dict()` takes,
the step, the tokens seen, the training time, the data loader's position, the RNG, the optimizers'
state and the length of the lr schedule. training/checkpoint.py writes that dict to disk and reads
it back in the same shape, so what is saved and what is restored cannot drift apart.
"""

from __future__ import annotations

import torch

from lmforge.config import TrainConfig
from lmforge.training.data import TrainLoader
from lmforge.training.optim import lr_factor, set_lr


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class TrainState:
    """The step about to be taken (steps done so far), tokens trained on, seconds trained, the
    loader's position, the optimizers, and `schedule_steps`: the steps the lr schedule was laid out
    over when the run began. A run extended past its max_steps keeps it, so the schedule continues
    (the added steps train at its final lr) rather than warming up and decaying again."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], loader: TrainLoader, schedule_steps: int):
        self.optimizers, self.loader = optimizers, loader
        self.step, self.tokens_seen, self.train_time_s = 0, 0, 0.0
        self.schedule_steps = schedule_steps

    def set_lr(self, tc: TrainConfig) -> None:
        """The schedule's lr for the step about to be taken."""
        set_lr(self.optimizers, lr_factor(self.step, tc, self.schedule_steps))

    def advance(self, tokens: int) -> None:
        self.step += 1
        self.tokens_seen += tokens

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens_seen, "train_time_s": self.train_time_s,
                "loader": self.loader.state_dict(), "schedule_steps": self.schedule_steps, "rng": rng_state(),
                "optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        set_rng_state(state["rng"])
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens_seen, self.train_time_s = state["step"], state["tokens"], state["train_time_s"]
        self.schedule_steps = state["schedule_steps"]
