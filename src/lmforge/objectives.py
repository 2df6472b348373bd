"""Training objectives: how a window of tokens becomes inputs, targets and a summed loss.

An objective returns the *sum* of per-token losses and the number of target tokens, never a mean:
the training step divides by the number of targets across all micro-batches and ranks, so
gradient accumulation and data parallelism give the same update as one large batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class CausalLM:
    """Next-token prediction: position t sees tokens <= t and predicts token t+1."""

    name = "causal"
    causal_attention = True

    def batch(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # window: (B, T+1) -> inputs (B, T), targets (B, T)
        return window[:, :-1], window[:, 1:]

    def loss(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs, causal=self.causal_attention)  # (B, T, V)
        return token_losses_sum(logits, targets)


def token_losses_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over targets != IGNORE_INDEX, and how many there were."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, (targets != IGNORE_INDEX).sum()


OBJECTIVES = {"causal": CausalLM}


def get_objective(name: str):
    return OBJECTIVES[name]()
