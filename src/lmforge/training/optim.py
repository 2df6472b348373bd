"""Optimizers and the learning-rate schedule.

AdamW: weight decay on matrices only (embeddings included, as in nanoGPT), fused where the
device supports it. Muon (`torch.optim.Muon`): orthogonalised momentum for the hidden
weight matrices of the blocks, AdamW for the embedding, output head and anything not 2-D.
"""

from __future__ import annotations

import math

import torch

from lmforge.config import TrainConfig


def _adamw(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=True)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if cfg.optimizer == "muon":
        hidden = [p for n, p in params.items() if p.dim() == 2 and n.startswith("blocks.")]
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in params.values() if id(p) not in hidden_ids]
        muon = torch.optim.Muon(
            hidden, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum, nesterov=True,
            adjust_lr_fn="original",
        )
        adam = _adamw([{"params": rest, "weight_decay": 0.0}], cfg, device)
        return [adam, muon]
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [_adamw(groups, cfg, device)]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier on each group's base lr at optimizer step `step` (0-based).

    Linear warmup over `warmup_steps`, then cosine to `min_lr_ratio`, or warmup-stable-decay
    (constant, then a linear decay over the last `decay_fraction` of steps), or constant.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_start = int(cfg.max_steps * (1 - cfg.decay_fraction))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, cfg.max_steps - decay_start)
        return 1.0 - (1.0 - floor) * min(progress, 1.0)
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * factor
