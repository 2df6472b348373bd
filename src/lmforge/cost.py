"""What a training run would cost, estimated: FLOPs, time, money, energy, CO2 and memory per device,
and the compute-optimal run a budget buys under a scaling law (`plan_run`).

Estimates, not measurements: functions of a model shape, a token count, a hardware entry
(`lmforge.hardware`) and, for a plan, a law (`lmforge.scaling.law`); nothing here trains or
imports torch. Formulas and references (docs/cost.md has the derivations):
- FLOPs: 6·N·D (Kaplan et al. 2020) and the exact per-token count of PaLM appendix B,
  6·N + 12·L·H·Q·T (H heads of size Q, context T), counted by `lmforge.model_counts`. Time is the
  model's FLOPs at the MFU (PaLM's definition, recomputation excluded); what activation
  recomputation runs again (under full, every block's forward but its last matmul; under
  selective, no matmul) is reported apart as hardware FLOPs and HFU.
- Memory of weights, gradients and optimizer state per parameter by precision and optimizer,
  sharded by ZeRO stage (Rajbhandari et al. 2020) over data-parallel ranks and by tensor parallelism.
- Activations: what autograd saves for lmforge's own model (fused attention, SwiGLU, grouped-query
  attention, RMSNorm, no dropout, the chunked loss), tensor by tensor, under each recomputation
  mode of `lmforge.model.run_block`, and the peak of a forward and backward above the weights and
  gradients (`activation_memory`; checked against torch's own counts by tests/test_memory.py and
  benchmarks/memory_check.py).
- Energy = devices x power x hours x PUE; CO2e = energy x grid intensity.
- Calibration: `from_run` takes the MFU a finished run measured (`estimate --from-run`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.config import RECOMPUTE
from lmforge.errors import LmforgeError
from lmforge.hardware import DEFAULT_GRID_KG_PER_KWH, DEFAULT_PUE, GB, Hardware
from lmforge.model_counts import Shape, loss_chunk_rows, model_config, state_bytes, training_flops

if TYPE_CHECKING:
    from lmforge.scaling.law import ScalingLaw


def parse_size(text: str | float | int, what: str) -> float:
    """'7B' -> 7e9, '1.4T' -> 1.4e12, '5e21' -> 5e21, '300M' -> 3e8, '64K' -> 64e3."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        digits = str(text).strip().replace("_", "").replace(",", "")
        scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}.get(digits[-1:].upper(), None)
        try:
            value = float(digits[:-1]) * scale if scale else float(digits)
        except ValueError:
            raise LmforgeError(f"{what}: {text!r} is not a size (use e.g. 7B, 1.4T, 5e21)") from None
    if not math.isfinite(value) or value <= 0:
        raise LmforgeError(f"{what}: {text!r} must be a positive size")
    return value


# ---------------------------------------------------------------- what a user gives

# every number a user gives the cost commands, and what it must be: the one place they are checked
COST_FLAGS = {
    "mfu": (lambda v: 0 < v <= 1, "must be in (0, 1], e.g. 0.4 for 40%"),
    "price_per_hour": (lambda v: v >= 0, "must be >= 0"),
    "power_watts": (lambda v: v > 0, "must be > 0"),
    "pue": (lambda v: v >= 1, "must be >= 1 (1.0 = every watt reaches the chips)"),
    "grid_kg_per_kwh": (lambda v: v >= 0, "must be >= 0"),
    "count": (lambda v: v >= 1, "must be >= 1"),
    "batch": (lambda v: v >= 0, "must be >= 0"),
    "tensor_parallel": (lambda v: v >= 1, "must be >= 1"),
}


def check_cost_flags(values: dict) -> None:
    """Refuse a cost flag outside its meaning (None = not given); --mfu 0 is not "the default"."""
    for name, (ok, requirement) in COST_FLAGS.items():
        value = values.get(name)
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise LmforgeError(f"--{name.replace('_', '-')} {value:g}: {requirement}")


# ---------------------------------------------------------------- model shapes (counted by model_counts)

def shape_from_model(cfg, vocab: int | None = None) -> Shape:
    """The shape of an lmforge config's model: the same `Shape` shape flags give."""
    return model_config(cfg, vocab).shape()


def _plan_width(layers: int) -> int:
    return max(64, 64 * round(128 * layers / 64))


def _params_range(layers: int) -> tuple[float, float]:
    """The counts shape_from_params gives `layers` layers (rounding the cube root of N / 12·128²)."""
    low = 0.0 if layers == 2 else 12 * 128**2 * (layers - 0.5) ** 3
    return low, 12 * 128**2 * (layers + 0.5) ** 3


def shape_from_params(params: float, context: int = 2048, vocab: int = 50257, tie_embeddings: bool = True) -> Shape:
    """A plausible shape for a bare parameter count: aspect ratio width/layers ~ 128 (GPT-3, Llama)."""
    layers = max(2, round((params / (12 * 128**2)) ** (1 / 3)))
    width = _plan_width(layers)
    return Shape(layers=layers, width=width, heads=max(1, width // 128), vocab=vocab, context=context,
                 tie_embeddings=tie_embeddings, params=params)


# ---------------------------------------------------------------- memory

# What one block saves for backward, per token, in bytes: d width, q = heads x head_dim, k = kv_heads
# x head_dim, f the SwiGLU width, H heads; c the bytes of the compute dtype (2 in bf16, 4 in fp32), w
# those of the weights as the forward reads them (4 under autocast over fp32 weights, which is also
# the residual stream's dtype; 2 where FSDP gathers bf16 weights). Enumerated op by op from
# lmforge.model.Block as autograd runs it (tests/test_memory.py counts the saved tensors):
#
#   op (forward order)        saves for backward                                     bytes per token
#   rms_norm (attention)      its input x as float32 (a 16-bit x is upcast and the   4·d + 4
#                             copy kept) and 1/rms
#   qkv matmul                its input, the normed x in the compute dtype           c·d
#   rotary (x1·cos, ...)      q, k and v as the matmul wrote them: one storage       c·(q + 2k)
#   fused attention (SDPA)    rotated q and k (one storage; v counted above), its    c·(q + k) + c·q + 4·H
#                             output, the float32 log-sum-exp per head; no T x T
#   output projection         its input: the attention output, a view of it          0
#   rms_norm (MLP)            x as float32 and 1/rms                                 4·d + 4
#   gate_up matmul            its input                                              c·d
#   silu(gate)                gate: the gate_up output (up shares the storage)       2c·f
#   silu(gate) · up           silu(gate)                                             c·f
#   down matmul               its input, silu(gate) · up                             c·f
#   (no dropout, no biases, no attention probabilities)
#
# Selective recomputation (lmforge.model's policy) keeps the block's input (w·d), the qkv output,
# the attention output and log-sum-exp, the two projections' outputs (c·d each) and the gate_up
# output; full keeps only the input. Autocast over fp32 weights holds a copy of every weight in the
# compute dtype for the forward (c bytes a weight) unless the block is recomputed. After the last
# block: the final rms_norm (4·d + 4), then the head and loss: one chunk keeps the head's input (c·d)
# and the float32 log-probabilities (4·V); more chunks (linear_cross_entropy) keep the input's
# gradient (c·d) and, per micro-batch, the head's float32 gradient (4·V·d). The token ids and
# targets are the caller's batch, not counted.
#
# The peak of forward and backward, beyond what is held when the forward returns: at the loss, the
# float32 gradients of the log-probabilities and of the logits (2 · 4·V a token; with chunks, one
# chunk's float32 logits and log-probabilities beside its 16-bit logits, and the head's gradient);
# in a block's backward, what its recomputation brings back, the residual stream's gradient (w·d),
# the two gradients of silu(gate)·up (2c·f) and the down weight's fresh gradient (w·d·f, before it
# is added to .grad); with a tied head, the head's gradient waits there for the embedding's (w·V·d).
# Under autocast with recomputation, every block's weight copy is alive at the end of the forward.

def _block_bytes_per_token(shape: Shape, recompute: str, c: int, w: int, t: int) -> float:
    """Bytes a block holds for backward per token (see the table above); tensor parallelism splits
    the heads and the MLP's width, not the residual side."""
    d, f, H = shape.width, shape.mlp_hidden / t, shape.heads / t
    q, k = shape.heads * shape.head_dim / t, shape.kv_heads * shape.head_dim / t
    qkv_out, attention = c * (q + 2 * k), c * q + 4 * H
    if recompute == "full":
        return w * d
    if recompute == "selective":
        return w * d + qkv_out + attention + 2 * c * d + 2 * c * f  # + the two projections' outputs
    norms = 2 * (4 * d + 4) + 2 * c * d
    return norms + qkv_out + c * (q + k) + attention + 4 * c * f


def _loss_bytes(n: int, d: int, v: int, c: int, w: int) -> tuple[float, float, float, float]:
    """Of the final norm, head and loss over n tokens (see the table above): bytes held for backward,
    of them autocast's copy of the head, and the loss's transients in forward and in backward."""
    rows = loss_chunk_rows(v)
    cast = c if c < 4 else 0  # the 16-bit tensor a float32 copy is made from, or none
    if n <= rows:  # one chunk: log-probabilities kept, their gradient and the logits' made in backward
        head_copy = c * v * d if w > c else 0.0
        return n * (4 * d + 4 + c * d + 4 * v), head_copy, (4 + cast) * n * v, 2 * 4 * n * v
    # more: the input's and the head's gradients made in the forward, chunk by chunk, from the
    # loss's own compute-dtype copies of its input and the head's weight
    recast = c if c != w else 0
    forward = recast * (n + v) * d + max((8 + cast) * rows * v, (4 + cast) * rows * v + c * v * d)
    backward = n * d * (c + recast) + 4 * v * d + (w * v * d if w != 4 else 0)
    return n * (4 * d + 4 + c * d) + 4 * v * d, 0.0, forward, backward


def activation_memory(shape: Shape, micro_batch: int, recompute: str = "none", compute_bytes: int = 2,
                      weight_bytes: int = 4, tensor_parallel: int = 1) -> dict[str, float]:
    """Bytes of activation memory for one micro-batch of `micro_batch` sequences of shape.context
    tokens on one device, by the table above: held by the blocks ("blocks"), by the final norm, head
    and loss ("head"), autocast's weight copies ("weight_copies"), their sum when the forward returns
    ("held"), and the most allocated at once during forward and backward beyond the weights and
    gradients ("peak")."""
    if recompute not in RECOMPUTE:
        raise LmforgeError(f"--recompute {recompute!r}: choose {', '.join(RECOMPUTE)}")
    c, w, t = compute_bytes, weight_bytes, tensor_parallel
    n, d, v, f = micro_batch * shape.context, shape.width, shape.vocab, shape.mlp_hidden
    blocks = shape.layers * n * _block_bytes_per_token(shape, recompute, c, w, t)
    block_copy = c * shape.layer_params / t if w > c else 0.0
    head, head_copy, loss_forward, loss_backward = _loss_bytes(n, d, v, c, w)
    # autocast caches every weight copy until the forward returns; a recomputed block's copies are
    # then dropped, and made again one block at a time in its backward
    copies = (shape.layers * block_copy if recompute == "none" else 0.0) + head_copy
    held = blocks + head + copies
    forward_peak = loss_forward + (shape.layers * block_copy if recompute != "none" else 0.0)
    recomputed = n * (_block_bytes_per_token(shape, "none", c, w, t) - _block_bytes_per_token(shape, recompute, c, w, t))
    block_peak = (recomputed + (block_copy if recompute != "none" else 0.0) + n * (w * d + 2 * c * f / t)
                  + w * d * f / t + (w * v * d if shape.tie_embeddings else 0.0) - head - head_copy)
    peak = held + max(forward_peak, loss_backward, block_peak)
    return {"blocks": blocks, "head": head, "weight_copies": copies, "held": held, "peak": peak}


def activation_bytes(shape: Shape, micro_batch: int, recompute: str, tensor_parallel: int = 1,
                     precision: str = "bf16-mixed", zero_stage: int = 3) -> float:
    """The peak activation memory a device needs beside its weights, gradients and optimizer
    state (`activation_memory`), with the dtypes lmforge trains in at `precision`: autocast over
    float32 weights, or bf16 weights where ZeRO-3/FSDP gathers them in bf16 (or pure bf16)."""
    compute = 4 if precision == "fp32" else 2
    weights = compute if precision == "bf16" or zero_stage >= 3 else 4
    return activation_memory(shape, micro_batch, recompute, compute, weights, tensor_parallel)["peak"]


def memory_per_device(params: float, precision: str, optimizer: str, zero_stage: int, data_parallel: int,
                      tensor_parallel: int = 1, activations: float = 0.0) -> dict[str, float]:
    """GB per device; ZeRO 1 shards optimizer state, 2 also gradients, 3 also weights (FSDP = 3)."""
    if zero_stage not in (0, 1, 2, 3):
        raise LmforgeError(f"--zero-stage {zero_stage}: choose 0, 1, 2 or 3")
    weight_bytes, grad_bytes, optimizer_bytes = state_bytes(precision, optimizer)
    local = params / tensor_parallel  # a tensor-parallel rank's share
    ranks = max(1, data_parallel)
    memory = {"weights": local * weight_bytes / (ranks if zero_stage >= 3 else 1) / GB,
              "gradients": local * grad_bytes / (ranks if zero_stage >= 2 else 1) / GB,
              "optimizer": local * optimizer_bytes / (ranks if zero_stage >= 1 else 1) / GB,
              "activations": activations / GB}
    memory["total"] = sum(memory.values())
    return memory


def kv_cache_bytes(shape: Shape, batch: int, context: int, bytes_per_value: float = 2) -> float:
    """Keys and values of every layer: 2 · L · kv_heads · head_dim · context · batch · bytes."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * context * batch * bytes_per_value


# ---------------------------------------------------------------- the estimate

DEFAULT_MFU = 0.40  # typical of well-tuned dense training (nanochat 41-46% on H100; PaLM 46%; torchtitan 33-39%)


@dataclass
class Estimate:
    params: float
    tokens: float
    flops_6nd: float
    flops_exact: float  # the model's FLOPs (PaLM appendix B): what MFU and the time count
    exact_over_6nd: float
    hardware: str
    count: int
    mfu: float
    device_hours: float
    days: float
    cost_usd: float
    energy_kwh: float
    tco2e: float
    memory_gb: dict[str, float]
    fits: bool
    min_devices: int
    notes: list[str] = field(default_factory=list)
    flops_hardware: float = 0.0  # flops_exact plus the forward that activation recomputation runs again
    hfu: float = 0.0  # hardware FLOPs utilisation: the MFU given, with the recomputed FLOPs counted too

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(shape: Shape, tokens: float, hw: Hardware, count: int = 1, mfu: float = DEFAULT_MFU,
             batch: int = 0, precision: str = "bf16-mixed", optimizer: str = "adamw", zero_stage: int = 3,
             recompute: str = "none", tensor_parallel: int = 1, price_per_hour: float | None = None,
             power_watts: float | None = None, pue: float = DEFAULT_PUE,
             grid_kg_per_kwh: float = DEFAULT_GRID_KG_PER_KWH) -> Estimate:
    """Training `shape` on `tokens` tokens on `count` devices of `hw` at `mfu`: its FLOPs, time, money,
    energy, CO2e and memory per device (None for price or power: the catalogue's)."""
    check_cost_flags({"count": count, "mfu": mfu, "pue": pue, "grid_kg_per_kwh": grid_kg_per_kwh, "batch": batch,
                      "tensor_parallel": tensor_parallel, "price_per_hour": price_per_hour, "power_watts": power_watts})
    tokens = parse_size(tokens, "--tokens")
    flops_6nd = 6 * shape.params * tokens
    per_token = training_flops(shape, recompute)
    flops_exact, flops_hardware = per_token.model * tokens, per_token.hardware * tokens
    # MFU counts the model's FLOPs only (PaLM): the time recomputation takes is already in it
    seconds = flops_exact / (count * hw.peak_flops(precision) * mfu)
    hfu = mfu * flops_hardware / flops_exact
    device_hours = count * seconds / 3600
    price = hw.price_per_hour if price_per_hour is None else price_per_hour
    power = hw.power_w if power_watts is None else power_watts
    energy_kwh = device_hours * power * pue / 1000
    data_parallel = max(1, count // tensor_parallel)
    micro_batch = max(1, batch // data_parallel) if batch else 1
    activations = activation_bytes(shape, micro_batch, recompute, tensor_parallel, precision, zero_stage)
    memory = memory_per_device(shape.params, precision, optimizer, zero_stage, data_parallel, tensor_parallel,
                               activations)
    min_devices = devices_needed(shape, precision, optimizer, zero_stage, recompute, hw, tensor_parallel)
    notes = []
    if hfu > 1:
        notes.append(f"MFU {mfu:.0%} with {recompute} recomputation means HFU {hfu:.0%}, beyond the device's peak: "
                     f"lower --mfu")
    if min_devices is None:
        if devices_needed(shape, precision, optimizer, 3, "full", hw, tensor_parallel) is None:
            raise LmforgeError(f"the model cannot fit on {hw.name} at all: even one sequence with full "
                               f"recomputation and ZeRO-3 exceeds its {hw.memory_gb:g} GB; use tensor parallelism "
                               f"(--tensor-parallel), a shorter --context or a larger device")
        notes.append(f"one sequence's activations alone exceed {hw.memory_gb:g} GB: use --recompute full")
        min_devices = 0
    elif memory["total"] > hw.memory_gb:
        notes.append(f"does not fit: {memory['total']:.1f} GB per device > {hw.memory_gb:g} GB; "
                     f"needs >= {min_devices} devices with ZeRO-3, or recomputation / tensor parallelism")
    return Estimate(shape.params, tokens, flops_6nd, flops_exact, flops_exact / flops_6nd, hw.name, count, mfu,
                    device_hours, seconds / 86400, device_hours * price, energy_kwh,
                    energy_kwh * grid_kg_per_kwh / 1000, memory, memory["total"] <= hw.memory_gb, min_devices, notes,
                    flops_hardware, hfu)


def devices_needed(shape: Shape, precision: str, optimizer: str, zero_stage: int, recompute: str, hw: Hardware,
                   tensor_parallel: int = 1) -> int | None:
    """Fewest devices (micro-batch 1 each) on which the model trains with its states sharded by ZeRO-3;
    None when one sequence's activations alone overflow a device."""
    activations = activation_bytes(shape, 1, recompute, tensor_parallel, precision, zero_stage) / GB
    states = shape.params * sum(state_bytes(precision, optimizer)) / tensor_parallel / GB
    room = hw.memory_gb - activations
    if room <= 0:
        return None
    return max(1, math.ceil(states / room)) * tensor_parallel


# ---------------------------------------------------------------- compute-optimal planning

def budget_flops(budget: str, hw: Hardware, mfu: float, precision: str,
                 price_per_hour: float | None) -> tuple[float, str]:
    """'10000usd' | '5e21flops' | '2000gpu-hours' -> training FLOPs it buys."""
    text = budget.strip().lower().replace("$", "")
    for unit in ("usd", "flops", "gpu-hours", "device-hours", "hours"):
        if text.endswith(unit):
            amount = parse_size(text[: -len(unit)], "--budget")
            break
    else:
        raise LmforgeError(f"--budget {budget!r}: give an amount with a unit, e.g. 10000usd, 5e21flops, 2000gpu-hours")
    rate = hw.peak_flops(precision) * mfu  # FLOP/s per device
    if unit == "flops":
        return amount, f"{amount:.3g} FLOPs"
    if unit == "usd":
        price = hw.price_per_hour if price_per_hour is None else price_per_hour
        if price <= 0:
            raise LmforgeError(f"--budget in usd needs a price: --price-per-hour (none catalogued for {hw.name})")
        hours = amount / price
    else:
        hours = amount
    return hours * 3600 * rate, f"{hours:,.0f} device-hours"


DEFAULT_PLAN_DAYS = 30.0  # `plan --days`: a month of wall-clock, the length of a typical large run


def min_plan_params(context: int = 2048, vocab: int = 50257) -> int:
    """The parameter count from which a plan can draw a model for every budget: the shape that
    shape_from_params picks must hold its own vocabulary (V·d) besides its blocks. V·d grows with
    the width that the count picks, so small counts alternate between shapes that do and shapes
    that do not; past the last gap every count does. A budget whose optimum is smaller has no model
    to plan ("0.6 parameters" on 1 FLOP)."""
    start = None  # where the current run of plannable counts began
    for layers in range(2, 1000):
        low, high = _params_range(layers)
        width = _plan_width(layers)
        shape = Shape(layers=layers, width=width, heads=max(1, width // 128), vocab=vocab, context=context)
        first = max(math.ceil(low), shape.params - shape.block_params + 1)
        if first >= high:  # no count in this range holds the vocabulary
            start = None
        elif first > math.ceil(low) or start is None:
            start = first
        if first == math.ceil(low) and start is not None:
            return start  # V·d grows linearly in the layers, the range cubically: no gap after this one
    raise AssertionError("unreachable: the blocks outgrow the vocabulary")


def plan_run(budget: str, hw: Hardware, count: int | None, law: ScalingLaw, mfu: float = DEFAULT_MFU,
             precision: str = "bf16-mixed", price_per_hour: float | None = None, context: int = 2048,
             pue: float = DEFAULT_PUE, grid_kg_per_kwh: float = DEFAULT_GRID_KG_PER_KWH,
             days: float = DEFAULT_PLAN_DAYS) -> dict:
    """The compute-optimal model for a budget, then the run that trains it.

    First the law's optimum in the papers' convention, C = 6·N·D (Hoffmann et al. 2022 and
    Besiroglu et al. 2024 both allocate that way), so the answer reads as theirs. Then the
    engineering plan for that N and D: `count` devices, or else the fewest that finish within
    `days`; activation recomputation only when memory needs it (none, then selective, then full);
    and its time, cost, energy and predicted loss. The plan pays the model's exact FLOPs (attention
    included; recomputation is within the MFU), so it may cost a little more than the 6ND budget;
    `exact_over_budget` says how much.
    """
    if days <= 0:
        raise LmforgeError(f"--days {days}: must be > 0")
    flops, described = budget_flops(budget, hw, mfu, precision, price_per_hour)
    n, d = law.optimal(flops)
    least = min_plan_params(context)
    if n < least:
        raise LmforgeError(f"--budget {budget}: {flops:.3g} FLOPs make a compute-optimal model of {n:.3g} parameters "
                           f"under {law.name}; the smallest model a plan draws ({least:,} parameters, its "
                           f"vocabulary included) needs at least {_round_up(law.budget_for(least))} FLOPs")
    shape = shape_from_params(n, context=context)
    rate = hw.peak_flops(precision) * mfu  # FLOP/s per device
    def on(devices: int) -> tuple[Estimate, str]:
        return _fitting_estimate(shape, d, hw, devices, mfu, precision, price_per_hour, pue, grid_kg_per_kwh)

    if count is None:
        # the fewest devices that finish in time at the FLOPs of the recomputation memory needs there;
        # more devices shard the states but not one sequence's activations, so two rounds settle it
        devices, count_from = 1, f"the fewest that finish within {days:g} days"
        for _ in range(3):
            est, recompute = on(devices)
            in_time = max(1, math.ceil(est.flops_exact / (rate * days * 86400)))
            devices = max(in_time, est.min_devices if not est.fits else 1)
        est, recompute = on(devices)
        if in_time < devices:
            count_from = f"the fewest on which the model fits ({days:g} days would need only {in_time})"
    else:
        devices, count_from = count, "given (--count)"
        est, recompute = on(devices)
    warnings = []
    if d / n > 40 and law.published:  # a note on the published fits; a fitted law speaks for itself
        warnings.append(f"the {law.name} fit recommends {d / n:,.0f} tokens per parameter; Chinchilla's published "
                        f"allocations (e.g. 70B on 1.4T tokens) use ~20 - the rounded constants of the published "
                        f"fit are known to over-weight data (Besiroglu et al. 2024); compare --law epoch2024")
    if count is not None and est.days > days:
        warnings.append(f"{count} x {hw.name} take {est.days:,.1f} days, more than --days {days:g}; "
                        f"leave out --count for the device count that finishes in time")
    return {"budget": budget, "budget_flops": flops, "budget_as": described, "law": asdict(law),
            "convention": "C = 6ND (as Hoffmann et al. 2022 and Besiroglu et al. 2024 allocate)",
            "params": n, "tokens": d, "tokens_per_param": d / n, "predicted_loss": law.loss(n, d),
            "count": devices, "count_from": count_from, "days_limit": days, "recompute": recompute,
            "exact_over_budget": est.flops_exact / flops, "estimate": est.to_dict(), "warnings": warnings + est.notes}


def _round_up(x: float) -> str:
    """`x` to two significant digits, rounded up: a budget of the figure shown is then enough."""
    unit = 10.0 ** (math.floor(math.log10(x)) - 1)
    return f"{math.ceil(x / unit) * unit:.2g}"


def _fitting_estimate(shape: Shape, tokens: float, hw: Hardware, count: int, mfu: float, precision: str,
                      price_per_hour: float | None, pue: float, grid_kg_per_kwh: float) -> tuple[Estimate, str]:
    """The estimate on `count` devices with the least recomputation that fits (full where none does)."""
    for recompute in RECOMPUTE:
        est = estimate(shape, tokens, hw, count, mfu, precision=precision, price_per_hour=price_per_hour, pue=pue,
                       grid_kg_per_kwh=grid_kg_per_kwh, recompute=recompute)
        if est.fits:
            break
    return est, recompute


def from_run(run_dir: str | Path) -> dict:
    """Measured throughput of a finished lmforge run: tokens/s, MFU, FLOPs per token, devices (its summary)."""
    from lmforge.folders.run import RunDir

    s = RunDir(run_dir).summary()
    if not s or not s.complete:
        raise LmforgeError(f"--from-run {run_dir}: not a finished lmforge run (no complete summary); "
                           "give a run folder that lmforge train finished")
    return {"tokens_per_s": s.tokens_per_s, "mfu": s.mfu, "flops_per_token": s.flops_per_token,
            "devices": s.world_size, "device": s.device, "params": s.params}
