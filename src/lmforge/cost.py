"""What a training run costs: FLOPs, time, money, energy, CO2 and memory per device.

Pure arithmetic over a model shape, a token count and a hardware entry; nothing here trains.
Formulas and references (docs/cost.md has the derivations):
- FLOPs: 6·N·D (Kaplan et al. 2020) and the exact per-token count of PaLM appendix B,
  6·N + 12·L·H·Q·T (H heads of size Q, context T), plus one extra forward (2·N + 4·L·H·Q·T)
  under full activation recomputation, or of the attention core (4·L·H·Q·T) under selective.
- Memory of weights, gradients and optimizer state per parameter by precision and optimizer,
  sharded by ZeRO stage (Rajbhandari et al. 2020) over data-parallel ranks and by tensor parallelism.
- Activations per layer (Korthikanti et al. 2022, 16-bit): s·b·h·(34 + 5·a·s/h) without
  recomputation, s·b·h·34 with selective, 2·s·b·h with full; divided by tensor parallelism as there.
- Energy = devices x power x hours x PUE; CO2e = energy x grid intensity.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from lmforge.errors import LmforgeError

GB = 1e9


def parse_size(text: str | float | int, what: str) -> float:
    """'7B' -> 7e9, '1.4T' -> 1.4e12, '5e21' -> 5e21, '300M' -> 3e8, '64K' -> 64e3."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().replace("_", "").replace(",", "")
        scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}.get(s[-1:].upper(), None)
        try:
            value = float(s[:-1]) * scale if scale else float(s)
        except ValueError:
            raise LmforgeError(f"{what}: {text!r} is not a size (use e.g. 7B, 1.4T, 5e21)") from None
    if not math.isfinite(value) or value <= 0:
        raise LmforgeError(f"{what}: {text!r} must be a positive size")
    return value


# ---------------------------------------------------------------- hardware

@dataclass
class Hardware:
    name: str
    peak: dict[str, float]
    memory_gb: float
    power_w: float
    price_per_hour: float = 0.0

    def peak_flops(self, precision: str) -> float:
        key = {"bf16-mixed": "bf16", "fp16-mixed": "fp16", "bf16": "bf16", "fp16": "fp16", "fp32": "fp32",
               "fp8": "fp8", "tf32": "tf32"}.get(precision, precision)
        if key in self.peak:
            return self.peak[key]
        for fallback in ("bf16", "fp16", "tf32", "fp32"):  # the precision this device runs fastest at
            if fallback in self.peak:
                return self.peak[fallback]
        raise LmforgeError(f"hardware {self.name} lists no peak FLOP/s")


def load_catalogue(extra_file: str | None = None) -> dict[str, dict]:
    data = yaml.safe_load((resources.files("lmforge") / "hardware.yaml").read_text())
    if extra_file:
        try:
            user = yaml.safe_load(Path(extra_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LmforgeError(f"--hardware-file {extra_file}: cannot read it ({str(e).splitlines()[0]})") from None
        except ValueError:  # not UTF-8 text
            raise LmforgeError(f"--hardware-file {extra_file}: not a text file; give a YAML file like hardware.yaml") from None
        if not isinstance(user, dict) or not all(isinstance(v, dict) for v in user.values()):
            raise LmforgeError(f"--hardware-file {extra_file}: must map names to entries like hardware.yaml")
        data.update(user)
    return data


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


def _hardware(entry_name: str, entry: dict) -> Hardware:
    try:
        return Hardware(entry_name, {k: float(v) for k, v in entry["peak"].items()}, float(entry["memory_gb"]),
                        float(entry["power_w"]), float(entry.get("price_per_hour", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LmforgeError(f"hardware entry {entry_name!r} is incomplete ({e}): it needs peak, memory_gb, power_w") from None


def find_hardware(name: str, extra_file: str | None = None) -> Hardware:
    """A catalogue entry by name, alias or device name (torch.cuda.get_device_name's string);
    `cpu` measures this machine's matmul peak."""
    key = name.lower()
    if key == "cpu":
        return local_cpu()
    catalogue = load_catalogue(extra_file)
    for entry_name, entry in catalogue.items():
        if key == entry_name or key in [a.lower() for a in entry.get("aliases", [])]:
            return _hardware(entry_name, entry)
    by_device = hardware_for_device(name, extra_file)
    if by_device is not None:
        return by_device
    names = list(catalogue) + [a for e in catalogue.values() for a in e.get("aliases", [])] + ["cpu"]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(catalogue))}, cpu"
    raise LmforgeError(f"unknown hardware {name!r}{hint}")


def hardware_for_device(device_name: str, extra_file: str | None = None) -> Hardware | None:
    """The entry whose `device_names` match the whole of a device's name as torch reports it
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", ...), or None for a device not catalogued.
    Whole-name matching keeps apart what substrings confuse: H100 SXM, PCIe and NVL; L4 and L40S."""
    name = device_name.strip()
    for entry_name, entry in load_catalogue(extra_file).items():
        if any(re.fullmatch(pattern, name, flags=re.IGNORECASE) for pattern in entry.get("device_names", [])):
            return _hardware(entry_name, entry)
    return None


def local_cpu() -> Hardware:
    """This machine's CPU, its peak measured now (fp32 and bf16 matmuls, all torch threads)."""
    import os

    import torch

    from lmforge.probe import measured_matmul_flops

    fp32 = measured_matmul_flops("cpu", torch.float32)
    bf16 = measured_matmul_flops("cpu", torch.bfloat16, 512, 3)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return Hardware(f"cpu ({torch.get_num_threads()} threads)", {"fp32": fp32, "bf16": bf16}, mem, 15.0 * (os.cpu_count() or 1))


# ---------------------------------------------------------------- model shape and FLOPs

@dataclass
class Shape:
    layers: int
    width: int
    heads: int
    kv_heads: int = 0  # 0 = heads
    vocab: int = 50257
    context: int = 2048
    head_dim: int = 0  # 0 = width / heads
    params: float = 0.0  # 0 = counted from the shape (SwiGLU MLP at ~8/3 width, untied head)

    def __post_init__(self):
        for name in ("layers", "width", "heads", "vocab", "context"):
            if getattr(self, name) <= 0:
                raise LmforgeError(f"--{name}: {getattr(self, name)} must be > 0")
        if self.kv_heads < 0 or self.head_dim < 0:
            raise LmforgeError("--kv-heads and --head-dim must be >= 0")
        self.kv_heads = self.kv_heads or self.heads
        if self.heads % self.kv_heads:
            raise LmforgeError(f"--kv-heads {self.kv_heads} must divide --heads {self.heads} "
                               f"(each KV head serves a whole group of query heads)")
        if not self.head_dim and self.width % self.heads:
            raise LmforgeError(f"--width {self.width} must be divisible by --heads {self.heads}, or give --head-dim")
        self.head_dim = self.head_dim or self.width // self.heads
        if self.params <= 0:
            self.params = float(self.counted_params())

    def counted_params(self) -> int:
        d, hq, kv = self.width, self.heads * self.head_dim, self.kv_heads * self.head_dim
        mlp = 64 * math.ceil(8 * d / 3 / 64)
        per_layer = d * (hq + 2 * kv) + hq * d + 3 * d * mlp
        return self.layers * per_layer + 2 * self.vocab * d


def shape_from_model(cfg, vocab: int | None = None) -> Shape:
    """The shape of an lmforge config's model, its parameters counted by the model itself (tied
    embeddings, SwiGLU width and all), built on the meta device so nothing is allocated."""
    import torch

    from lmforge.model import GPT, model_config

    mcfg = model_config(cfg, vocab)
    with torch.device("meta"):
        params = GPT(mcfg).num_params()
    return Shape(layers=mcfg.n_layer, width=mcfg.n_embd, heads=mcfg.n_head, kv_heads=mcfg.n_kv_head,
                 vocab=mcfg.vocab_size, context=mcfg.seq_len, params=params)


def shape_from_params(params: float, context: int = 2048, vocab: int = 50257) -> Shape:
    """A plausible shape for a bare parameter count: aspect ratio width/layers ~ 128 (GPT-3, Llama)."""
    layers = max(2, round((params / (12 * 128**2)) ** (1 / 3)))
    width = max(64, 64 * round(128 * layers / 64))
    return Shape(layers=layers, width=width, heads=max(1, width // 128), vocab=vocab, context=context, params=params)


def flops_per_token(shape: Shape, recompute: str = "none") -> float:
    """Training FLOPs per token, PaLM appendix B (`lmforge.model.training_flops_per_token`, the one
    formula lmforge counts with), plus recomputation's extra forward: a whole forward (a third of
    training) under full recomputation, the attention core's under selective."""
    from lmforge.model import training_flops_per_token  # imports torch: only when FLOPs are counted

    base = training_flops_per_token(shape.params, shape.layers, shape.heads, shape.head_dim, shape.context)
    if recompute not in ("none", "selective", "full"):
        raise LmforgeError(f"--recompute {recompute!r}: choose none, selective or full")
    attention = base - 6 * shape.params
    return base + {"none": 0.0, "selective": attention / 3, "full": base / 3}[recompute]


# ---------------------------------------------------------------- memory

# bytes per parameter: (weights, gradients, optimizer state incl. fp32 master copy)
PRECISIONS = {
    "bf16-mixed": (2, 2), "fp16-mixed": (2, 2), "bf16-mixed-fp32-grads": (2, 4), "fp32": (4, 4), "bf16": (2, 2),
}
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1, "muon": 1}  # fp32 tensors per parameter (Adam: m and v; momentum)


def state_bytes(precision: str, optimizer: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter. Mixed precision keeps an fp32 master copy in
    the optimizer: AdamW = 2 + 2 + (4 + 4 + 4) = 16 bytes (ZeRO's K = 12), 18 with fp32 gradients."""
    if precision not in PRECISIONS:
        raise LmforgeError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if optimizer not in OPTIMIZER_STATES:
        raise LmforgeError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZER_STATES)}")
    w, g = PRECISIONS[precision]
    states = OPTIMIZER_STATES[optimizer]
    if precision == "bf16":  # pure bf16 training: no master copy, states in bf16
        return w, g, 2.0 * states
    master = 4 if w == 2 else 0
    return w, g, master + 4.0 * states


def activation_bytes(shape: Shape, micro_batch: int, recompute: str, tensor_parallel: int = 1) -> float:
    """Korthikanti et al. 2022, eq. 1-2 and section 5: 16-bit activations of all layers for one micro-batch."""
    s, b, h, a, t = shape.context, micro_batch, shape.width, shape.heads, tensor_parallel
    if recompute == "full":
        per_layer = 2 * s * b * h
    elif recompute == "selective":
        per_layer = s * b * h * (10 + 24 / t)
    elif recompute == "none":
        per_layer = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    else:
        raise LmforgeError(f"--recompute {recompute!r}: choose none, selective or full")
    return shape.layers * per_layer


def memory_per_device(params: float, precision: str, optimizer: str, zero_stage: int, data_parallel: int,
                      tensor_parallel: int = 1, activations: float = 0.0) -> dict[str, float]:
    """GB per device; ZeRO 1 shards optimizer state, 2 also gradients, 3 also weights (FSDP = 3)."""
    if zero_stage not in (0, 1, 2, 3):
        raise LmforgeError(f"--zero-stage {zero_stage}: choose 0, 1, 2 or 3")
    w, g, o = state_bytes(precision, optimizer)
    p = params / tensor_parallel
    dp = max(1, data_parallel)
    weights = p * w / (dp if zero_stage >= 3 else 1)
    grads = p * g / (dp if zero_stage >= 2 else 1)
    opt = p * o / (dp if zero_stage >= 1 else 1)
    out = {"weights": weights / GB, "gradients": grads / GB, "optimizer": opt / GB, "activations": activations / GB}
    out["total"] = sum(out.values())
    return out


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
    flops_exact: float
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

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(shape: Shape, tokens: float, hw: Hardware, count: int = 1, mfu: float = DEFAULT_MFU,
             batch: int = 0, precision: str = "bf16-mixed", optimizer: str = "adamw", zero_stage: int = 3,
             recompute: str = "none", tensor_parallel: int = 1, price_per_hour: float | None = None,
             power_watts: float | None = None, pue: float = 1.1, grid_kg_per_kwh: float = 0.385) -> Estimate:
    if count <= 0:
        raise LmforgeError(f"--count {count} must be > 0")
    if not 0 < mfu <= 1:
        raise LmforgeError(f"--mfu {mfu} must be in (0, 1]")
    if pue < 1:
        raise LmforgeError(f"--pue {pue} must be >= 1")
    tokens = parse_size(tokens, "--tokens")
    flops_6nd = 6 * shape.params * tokens
    flops_exact = flops_per_token(shape, recompute) * tokens
    seconds = flops_exact / (count * hw.peak_flops(precision) * mfu)
    device_hours = count * seconds / 3600
    price = hw.price_per_hour if price_per_hour is None else price_per_hour
    power = hw.power_w if power_watts is None else power_watts
    energy_kwh = device_hours * power * pue / 1000
    data_parallel = max(1, count // tensor_parallel)
    micro_batch = max(1, batch // data_parallel) if batch else 1
    act = activation_bytes(shape, micro_batch, recompute, tensor_parallel)
    mem = memory_per_device(shape.params, precision, optimizer, zero_stage, data_parallel, tensor_parallel, act)
    min_devices = devices_needed(shape, precision, optimizer, zero_stage, recompute, hw, tensor_parallel)
    notes = []
    if min_devices is None:
        if devices_needed(shape, precision, optimizer, 3, "full", hw, tensor_parallel) is None:
            raise LmforgeError(f"the model cannot fit on {hw.name} at all: even one sequence with full "
                               f"recomputation and ZeRO-3 exceeds its {hw.memory_gb:g} GB; use tensor parallelism "
                               f"(--tensor-parallel), a shorter --context or a larger device")
        notes.append(f"one sequence's activations alone exceed {hw.memory_gb:g} GB: use --recompute full")
        min_devices = 0
    elif mem["total"] > hw.memory_gb:
        notes.append(f"does not fit: {mem['total']:.1f} GB per device > {hw.memory_gb:g} GB; "
                     f"needs >= {min_devices} devices with ZeRO-3, or recomputation / tensor parallelism")
    return Estimate(shape.params, tokens, flops_6nd, flops_exact, flops_exact / flops_6nd, hw.name, count, mfu,
                    device_hours, seconds / 86400, device_hours * price, energy_kwh,
                    energy_kwh * grid_kg_per_kwh / 1000, mem, mem["total"] <= hw.memory_gb, min_devices, notes)


def devices_needed(shape: Shape, precision: str, optimizer: str, zero_stage: int, recompute: str, hw: Hardware,
                   tensor_parallel: int = 1) -> int | None:
    """Fewest devices (micro-batch 1 each) on which the model trains with its states sharded by ZeRO-3;
    None when one sequence's activations alone overflow a device."""
    act = activation_bytes(shape, 1, recompute, tensor_parallel) / GB
    w, g, o = state_bytes(precision, optimizer)
    states = shape.params * (w + g + o) / tensor_parallel / GB
    room = hw.memory_gb - act
    if room <= 0:
        return None
    return max(1, math.ceil(states / room)) * tensor_parallel


# ---------------------------------------------------------------- compute-optimal planning

FORMS = ("additive", "kaplan")


@dataclass
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (form "additive", Chinchilla's approach 3), or
    L(N, D) = E + ((A / N^alpha)^(1/beta) + (B / D^beta)^(1/beta))^beta (form "kaplan": Kaplan et
    al. 2020, eq. 1.5, with an irreducible loss E). Both have the same limits (D -> inf: E + A / N^alpha;
    N -> inf: E + B / D^beta); they differ where both terms matter: in Kaplan's the two add as a
    (1/beta)-norm, so the loss a model gains from more data grows with its size, which the
    additive form cannot express."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    form: str = "additive"

    def loss(self, n, d):
        if self.form == "kaplan":
            p = 1 / self.beta
            return self.E + ((self.A / n**self.alpha) ** p + (self.B / d**self.beta) ** p) ** self.beta
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def allocation(self) -> dict:
        """N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b. With the two terms x = A/N^alpha, y = B/D^beta
        combined as a p-norm, the optimum on 6ND = C has alpha x^p = beta y^p (Hoffmann et al. 2022,
        eq. 4, is p = 1), so x/y = (beta/alpha)^(1/p) whatever C, and both forms share the exponents."""
        s = self.alpha + self.beta
        p = 1 / self.beta if self.form == "kaplan" else 1.0
        ratio = (self.beta / self.alpha) ** (1 / p)
        return {"a": self.beta / s, "b": self.alpha / s, "G": (self.A / (ratio * self.B)) ** (1 / s)}

    def optimal(self, flops: float) -> tuple[float, float]:
        """N, D minimising L subject to 6·N·D = C."""
        alloc = self.allocation()
        n = alloc["G"] * (flops / 6) ** alloc["a"]
        return n, flops / (6 * n)


LAWS = {
    # Hoffmann et al. 2022, approach 3, as published (rounded)
    "chinchilla": ScalingLaw("chinchilla", 1.69, 406.4, 410.7, 0.34, 0.28),
    # Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt"), their re-fit as the paper
    # rounds it, all five constants from the one fit: epoch-research/analyzing-chinchilla,
    # data_analysis.ipynb prints A 482.00572, B 2085.43420, E 1.81686, alpha 0.34781, beta 0.36585.
    # (E 1.8172 belongs to their refit by Chinchilla's recipe, whose A is 477.8 and B 2143.9.)
    "epoch2024": ScalingLaw("epoch2024", 1.8169, 482.01, 2085.43, 0.3478, 0.3658),
}


def read_fit(source: str | Path) -> dict:
    """The fit written by `lmforge scale fit` (SWEEP/fit.json; a sweep folder stands for its fit.json),
    checked to hold the law's five numbers. The one reader of that file: `load_law` and the scaling
    lab both come here."""
    import json

    path = Path(source)
    if path.is_dir():
        path = path / "fit.json"
    if not path.is_file():
        raise LmforgeError(f"{source}: no fit.json; run lmforge scale fit {source} first")
    try:
        fit = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{path}: not readable as JSON ({e}); rerun lmforge scale fit") from None
    try:
        if not isinstance(fit, dict) or not all(math.isfinite(float(fit[k])) for k in ("E", "A", "B", "alpha", "beta")):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise LmforgeError(f"{path} is not a scaling-law fit (needs numbers E, A, B, alpha, beta)") from None
    if fit.get("form", "additive") not in FORMS:
        raise LmforgeError(f"{path}: unknown law form {fit['form']!r} (one of {', '.join(FORMS)}); rerun lmforge scale fit")
    return fit


def load_law(name: str) -> ScalingLaw:
    """A published law by name, or a fitted one (see `read_fit`)."""
    if name in LAWS:
        return LAWS[name]
    if not Path(name).exists():
        raise LmforgeError(f"--law {name!r}: choose one of {', '.join(LAWS)}, or give a fit.json from lmforge scale fit")
    d = read_fit(name)
    return ScalingLaw(str(name), float(d["E"]), float(d["A"]), float(d["B"]), float(d["alpha"]), float(d["beta"]),
                      d.get("form", "additive"))


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


def plan(budget: str, hw: Hardware, count: int | None, law: ScalingLaw, mfu: float = DEFAULT_MFU,
         precision: str = "bf16-mixed", price_per_hour: float | None = None, context: int = 2048, pue: float = 1.1,
         grid_kg_per_kwh: float = 0.385, days: float = DEFAULT_PLAN_DAYS) -> dict:
    """The compute-optimal model for a budget, then the run that trains it.

    First the law's optimum in the papers' convention, C = 6·N·D (Hoffmann et al. 2022 and
    Besiroglu et al. 2024 both allocate that way), so the answer reads as theirs. Then the
    engineering plan for that N and D: `count` devices, or else the fewest that finish within
    `days`; activation recomputation only when memory needs it (none, then selective, then full);
    and its time, cost, energy and predicted loss. The plan pays the exact FLOPs (attention, any
    recomputation), so it may cost a little more than the 6ND budget; `exact_over_budget` says how much.
    """
    if days <= 0:
        raise LmforgeError(f"--days {days}: must be > 0")
    flops, described = budget_flops(budget, hw, mfu, precision, price_per_hour)
    n, d = law.optimal(flops)
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
    if d / n > 40 and LAWS.get(law.name) is law:  # a note on the published fits; a fitted law speaks for itself
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


def _fitting_estimate(shape: Shape, tokens: float, hw: Hardware, count: int, mfu: float, precision: str,
                      price_per_hour: float | None, pue: float, grid_kg_per_kwh: float) -> tuple[Estimate, str]:
    """The estimate on `count` devices with the least recomputation that fits (full where none does)."""
    for recompute in ("none", "selective", "full"):
        est = estimate(shape, tokens, hw, count, mfu, precision=precision, price_per_hour=price_per_hour, pue=pue,
                       grid_kg_per_kwh=grid_kg_per_kwh, recompute=recompute)
        if est.fits:
            break
    return est, recompute


def from_run(run_dir: str | Path) -> dict:
    """Measured throughput of a finished lmforge run: tokens/s, MFU, FLOPs per token, devices (its summary)."""
    from lmforge.run_dir import RunDir

    s = RunDir(run_dir).summary()
    if not s or not s.get("complete"):
        raise LmforgeError(f"--from-run {run_dir}: not a finished lmforge run (no complete summary); "
                           "give a run folder that lmforge train finished")
    return {"tokens_per_s": s["tokens_per_s"], "mfu": s["mfu"], "flops_per_token": s["flops_per_token"],
            "devices": s.get("world_size", 1), "device": s.get("device", "cpu"), "params": s["params"]}
