"""Optimizers and the learning-rate schedule.

AdamW: weight decay on matrices only (embeddings and output head included, as in nanoGPT), the
fused implementation (one kernel for all parameters, CPU and CUDA alike). Muon: orthogonalised
momentum, with weight decay, for the hidden weight matrices of the blocks, each of Q, K, V, gate and up on its own (as nanochat keeps them) although the model
stacks them into one matmul; AdamW without weight decay for the embedding, output head and
anything not 2-D. That split is nanochat's ("weight decay ... only used in Muon"), the recipe this
Muon follows: decoupled decay shrinks every embedding row each step while a row learns only on the
steps its token appears, so rare tokens decay towards zero; Keller Jordan's README decays all groups.

Under muP (`model.parametrization=mup`) the learning rate of each group follows the width, as
Tensor Programs V's Table 3 and Cerebras-GPT's muP table give it for Adam: the hidden matrices'
AdamW lr is train.lr / m_d (m_d = width / model.mup_base_width), while the embedding and output
head, whose other dimension is the vocabulary, keep train.lr. Muon's lr needs no such factor: its
update of a fan_out x fan_in matrix has spectral norm ~lr * sqrt(max(1, fan_out / fan_in)), which
is already the spectral condition of Yang, Simon and Bernstein (2023) for every width, since each
hidden matrix keeps its aspect ratio as the model widens. torch's AdamW decays each weight by
lr * weight_decay, so a hidden matrix's decay shrinks with its lr.
"""

from __future__ import annotations

import math

import torch

from lmforge.config import TrainConfig
from lmforge.training.distributed import is_sharded


def _adamw(groups: list[dict], cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=True)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """The optimizers of `model`, each parameter group named ("name") for `describe_groups`."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    hidden = {n: p for n, p in params.items() if p.dim() == 2 and n.startswith("blocks.")}
    if cfg.optimizer == "muon":
        stacked = model.stacked_matrices()
        groups: dict[tuple, list] = {}  # one group per way of splitting rows
        for n, p in hidden.items():
            groups.setdefault(tuple(stacked.get(n, ())), []).append(p)
        muon = Muon([{"params": ps, "splits": list(splits), "name": "hidden"} for splits, ps in groups.items()],
                    lr=cfg.muon_lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum)
        hidden_ids = {id(p) for p in hidden.values()}
        rest = [p for p in params.values() if id(p) not in hidden_ids]
        return [_adamw([{"params": rest, "weight_decay": 0.0, "name": "embedding+head"}], cfg), muon]
    if model.cfg.parametrization == "mup":
        return [_adamw(_mup_adamw_groups(params, hidden, cfg, model.cfg.width_multiplier), cfg)]
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "name": "matrices"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "vectors"})
    return [_adamw(groups, cfg)]


def _mup_adamw_groups(params: dict[str, torch.nn.Parameter], hidden: dict[str, torch.nn.Parameter],
                      cfg: TrainConfig, width_multiplier: float) -> list[dict]:
    """muP's AdamW groups: the hidden matrices at train.lr / m_d, the embedding and output head at
    train.lr (both decayed, as in the standard groups), anything not 2-D undecayed at train.lr."""
    hidden_ids = {id(p) for p in hidden.values()}
    vocab = [p for p in params.values() if p.dim() >= 2 and id(p) not in hidden_ids]
    no_decay = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": list(hidden.values()), "weight_decay": cfg.weight_decay, "lr": cfg.lr / width_multiplier,
               "name": "hidden"},
              {"params": vocab, "weight_decay": cfg.weight_decay, "name": "embedding+head"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "vectors"})
    return groups


def describe_groups(optimizers: list[torch.optim.Optimizer]) -> list[dict]:
    """Each parameter group's optimizer, name, peak lr (before the schedule's factor), weight decay
    and parameter count: what a run records of how it was optimised."""
    return [{"optimizer": type(opt).__name__.lower(), "name": group.get("name", ""),
             "lr": group.get("base_lr", group["lr"]), "weight_decay": group["weight_decay"],
             "params": sum(p.numel() for p in group["params"])}
            for opt in optimizers for group in opt.param_groups]


def orthogonalise(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """~U V^T of g = U S V^T by Newton-Schulz in bf16, the quintic of Keller Jordan's Muon (the
    same iteration as torch.optim.Muon): singular values pushed into ~[0.7, 1.2], not exactly 1."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (momentum as an average, Nesterov, Newton-Schulz, lr scaled by
    sqrt(max(1, rows / cols)), decoupled weight decay) on weights that stack several matrices:
    a group's `splits` lists the rows of each, and each is orthogonalised and scaled on its own.
    Orthogonalising the stack would tie Q's update to K's and V's. Under FSDP2 the update is
    made whole (an all-gather), orthogonalised on every rank, and each keeps its own rows."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float, nesterov: bool = True,
                 ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, splits=[]))

    @torch.no_grad()
    def step(self, closure=None):
        # `found_inf` (set by the trainer, as GradScaler sets it for fused AdamW): 1.0 on the device
        # skips the step, weights and momentum untouched, without the host looking at it
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                # elementwise work on this rank's rows (all of them without FSDP2)
                weight, grad, buf = _local(p), _local(p.grad), _local(buf)
                keep = 1.0
                if found_inf is not None:
                    keep = 1.0 - found_inf.to(weight.device)
                    grad = torch.where(keep.bool(), grad, 0.0)  # a NaN gradient must not reach the buffer
                buf.lerp_(grad, (1 - momentum) * keep)
                update = _whole(grad.lerp(buf, momentum) if group["nesterov"] else buf, p)  # (rows, cols)
                parts = update.split(group["splits"] or [update.size(0)])
                update = torch.cat([orthogonalise(m, group["ns_steps"]).float() * math.sqrt(max(1.0, m.size(0) / m.size(1)))
                                    for m in parts])
                weight.mul_(1 - lr * group["weight_decay"] * keep)
                weight.add_(_own_rows(update, p).to(weight.dtype) * keep, alpha=-lr)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (in place edits reach the tensor); others as they are."""
    return t.to_local() if is_sharded(t) else t


def _whole(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The whole matrix from every rank's rows of it, laid out as `like` (an all-gather)."""
    if not is_sharded(like):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape,
                              stride=like.stride()).full_tensor()


def _own_rows(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's rows of `full`, as `like` holds them; no communication (every rank computed
    the same whole update)."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


def lr_factor(step: int, cfg: TrainConfig, steps: int | None = None) -> float:
    """Multiplier on each group's base lr at optimizer step `step` (0-based), of a schedule laid
    out over `steps` (default train.max_steps).

    Linear warmup over `warmup_steps`, then cosine to `min_lr_ratio`, or warmup-stable-decay
    (constant, then a linear decay over the last `decay_fraction` of steps), or constant. The
    decay ends at the schedule's last step, steps - 1: its lr is min_lr_ratio exactly, and so is
    that of every step after it (a run extended past its schedule continues at its final lr).
    """
    steps = cfg.max_steps if steps is None else steps
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_start = wsd_decay_start(steps, cfg.decay_fraction)
        if step < decay_start:
            return 1.0
        return floor + (1.0 - floor) * (1.0 - _progress(step, decay_start, steps - 1))
    progress = _progress(step, cfg.warmup_steps, steps - 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_decay_start(steps: int, decay_fraction: float) -> int:
    """The first step of a WSD schedule's decay over `steps`: up to it the lr is constant, so a run
    of any length that shares the warmup is the same run until there (scale.cooldowns=branched)."""
    return int(steps * (1 - decay_fraction))


def _progress(step: int, start: int, last: int) -> float:
    """How far `step` is from `start` (0) to `last` (1, and after it); a decay of one step is all the way."""
    return 1.0 if step >= last else max(0.0, (step - start) / (last - start))


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * factor
