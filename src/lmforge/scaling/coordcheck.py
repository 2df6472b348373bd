"""The coordinate check (Yang et al. 2022, "Tensor Programs V"): does a
parameterisation keep every activation's size independent of the width as training starts?

The same small model is built at each width under each parameterisation and trained for a few steps
on the same batches, at the config's learning rate held constant. After every step the mean
absolute value of each coordinate of the embedding output, each block's output (the residual
stream) and the logits is measured on one fixed batch. Under the standard parameterisation, one lr
for every width lets Adam's per-coordinate update add up over a wider fan-in, and the activations
grow with the width; under muP they stay flat. A flat check is what lets hyperparameters tuned on a
narrow model transfer to a wide one; it is not proof that they do (the transfer benchmark is).

Tokens drawn at random with Zipf's frequencies (one seeded stream, the same for every width) feed it:
the check is of the parameterisation's scales, and needs no corpus, only a signal the first steps
can learn (`zipf_batches`).

    OUT/coordcheck.json   widths, steps, every scale at every step, and each tensor's growth
    OUT/coordcheck.png    scale against width after the last step, one panel per parameterisation
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import torch

from lmforge.config import Config
from lmforge.errors import LmforgeError
from lmforge.files import atomic_write_bytes, atomic_write_json
from lmforge.model import GPT, model_config
from lmforge.training.device import resolve_device
from lmforge.training.optim import build_optimizers

RESULT_FILE = "coordcheck.json"
PLOT_FILE = "coordcheck.png"
PARAMETRIZATIONS = ("standard", "mup")


def probe_config(cfg: Config, width: int, parametrization: str, base_width: int, layers: int, context: int,
                 batch: int) -> Config:
    """`cfg` at `width` (heads as the config has them, so the head size grows with the width and the
    attention scale is checked too), on the check's small depth, context and batch."""
    model = replace(cfg.model, n_embd=width, n_layer=layers, seq_len=context, parametrization=parametrization,
                    mup_base_width=base_width, n_kv_head=0, mlp_hidden=0)
    return replace(cfg, model=model, train=replace(cfg.train, batch_size=batch)).validate()


def tensor_names(layers: int) -> list[str]:
    return ["embedding", *(f"block{i + 1}" for i in range(layers)), "logits"]


@torch.no_grad()
def measure(model: GPT, idx: torch.Tensor) -> list[float]:
    """Mean |x| of the embedding output, every block's output and the logits on `idx`."""
    logits, hidden = model(idx, return_hidden=True)
    return [float(t.abs().mean()) for t in (*hidden, logits)]


def trace(cfg: Config, vocab: int, batches: list[torch.Tensor]) -> list[list[float]]:
    """Scales at init and after each step on `batches` (each (B, T + 1), on the model's device),
    measured on the first batch."""
    torch.manual_seed(cfg.train.seed)
    model = GPT(model_config(cfg, vocab)).to(batches[0].device)
    optimizers = build_optimizers(model, cfg.train)
    probe = batches[0][:, :-1]
    scales = [measure(model, probe)]
    for batch in batches:
        loss = model(batch[:, :-1], targets=batch[:, 1:]) / batch[:, 1:].numel()
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        scales.append(measure(model, probe))
    return scales


def zipf_batches(vocab: int, batch: int, context: int, steps: int, seed: int) -> list[torch.Tensor]:
    """`steps` batches of (batch, context + 1) tokens drawn independently with P(rank r) ~ 1/r.

    Text's token frequencies fall so (Zipf's law), and they give the model something to learn from the
    first step: its frequent tokens. Uniform tokens would leave the logits nothing to learn but noise,
    whose effect on them shrinks with the width under any parameterisation."""
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    return [torch.multinomial(weights, batch * (context + 1), replacement=True, generator=gen).view(batch, context + 1)
            for _ in range(steps)]


def growth(by_width: dict[int, list[list[float]]], names: list[str]) -> dict[str, float]:
    """Each tensor's scale at the widest model over its scale at the narrowest, after the last step."""
    narrow, wide = by_width[min(by_width)][-1], by_width[max(by_width)][-1]
    return {name: wide[i] / narrow[i] for i, name in enumerate(names)}


def coordinate_check(cfg: Config, widths: list[int], steps: int = 10, layers: int = 2, context: int = 64,
                     batch: int = 8, vocab: int = 512, out: str | Path | None = None) -> dict:
    """The check under both parameterisations; `out` receives coordcheck.json and coordcheck.png.
    muP's base width is model.mup_base_width when set, else the narrowest width."""
    widths = sorted(set(widths))
    if len(widths) < 2:
        raise LmforgeError("scale coordcheck: --widths needs at least two widths to compare, e.g. 32,64,128,256,512")
    for flag, value in (("--steps", steps), ("--layers", layers), ("--context", context), ("--batch", batch)):
        if value <= 0:
            raise LmforgeError(f"scale coordcheck: {flag} {value} must be > 0")
    if vocab < 2:
        raise LmforgeError(f"scale coordcheck: --vocab {vocab} must be at least 2")
    heads = cfg.model.n_head
    odd = [w for w in widths if w <= 0 or w % heads or (w // heads) % 2]
    if odd:
        raise LmforgeError(f"scale coordcheck: width {odd[0]} must be a positive multiple of model.n_head={heads} "
                           f"with an even head size (rotary embedding); choose other --widths or --set model.n_head")
    base = cfg.model.mup_base_width or widths[0]
    device = resolve_device(cfg.train.device)
    batches = [b.to(device) for b in zipf_batches(vocab, batch, context, steps, cfg.train.seed)]
    names = tensor_names(layers)
    result = {"device": str(device), "widths": widths, "steps": steps, "layers": layers, "heads": heads,
              "context": context, "batch": batch, "vocab": vocab, "lr": cfg.train.lr, "optimizer": cfg.train.optimizer,
              "muon_lr": cfg.train.muon_lr if cfg.train.optimizer == "muon" else None, "mup_base_width": base,
              "tensors": names, "scale": "mean |x| per coordinate, on the first batch, at init and after each step",
              "parametrizations": {}}
    for parametrization in PARAMETRIZATIONS:
        by_width = {w: trace(probe_config(cfg, w, parametrization, base, layers, context, batch), vocab, batches)
                    for w in widths}
        ratios = growth(by_width, names)
        result["parametrizations"][parametrization] = {
            "scales": {str(w): [dict(zip(names, step)) for step in s] for w, s in by_width.items()},
            "growth": ratios,
            # the largest factor by which any tensor's scale moved from the narrowest to the widest model
            "max_growth": max(max(r, 1 / r) for r in ratios.values()),
        }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result["plot"] = str(plot(result, out / PLOT_FILE))
        result["file"] = str(out / RESULT_FILE)
        atomic_write_json(out / RESULT_FILE, result)
    return result


def plot(result: dict, path: Path) -> Path:
    """Scale against width after the last step, one line per tensor, one panel per parameterisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = result["widths"]
    fig, axes = plt.subplots(1, len(PARAMETRIZATIONS), figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, PARAMETRIZATIONS):
        part = result["parametrizations"][name]
        for tensor in result["tensors"]:
            ax.plot(widths, [part["scales"][str(w)][-1][tensor] for w in widths], marker="o", label=tensor)
        ax.set(xscale="log", yscale="log", xlabel="width (model.n_embd)",
               title=f"{'muP' if name == 'mup' else name}: largest change x{part['max_growth']:.2f}")
        ax.minorticks_off()  # log-scale minor labels would crowd out the widths
        ax.set_xticks(widths, [str(w) for w in widths])
    axes[0].set_ylabel(f"mean |x| after {result['steps']} steps")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())  # replaces a link at `path` rather than writing through it
    return path
