"""What `lmforge estimate` and `lmforge plan` show: cost.py's figures with their human and JSON renderings."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge import figures
from lmforge.cost import Estimate, Hardware, Shape, kv_cache_bytes
from lmforge.figures import plural


@dataclass
class TrainingEstimate(figures.Result):
    """A training run's FLOPs, time, money, energy and memory, with the inputs its lines name."""

    estimate: Estimate
    shape: Shape
    hardware: Hardware
    recompute: str
    pue: float
    grid_kg_per_kwh: float

    def lines(self) -> list[str]:
        est, shape, m = self.estimate, self.shape, self.estimate.memory_gb
        recomputed = (f"; {self.recompute} recomputation runs {est.flops_hardware:.4g} (HFU {est.hfu:.0%})"
                      if est.flops_hardware != est.flops_exact else "")
        rows = [
            ("model", f"{est.params:.4g} parameters, {plural(shape.layers, 'layer')}, width {shape.width}, "
                      f"{plural(shape.heads, 'head')} ({shape.kv_heads} KV), context {shape.context}"),
            ("tokens", f"{est.tokens:.4g}"),
            ("compute", f"6ND {est.flops_6nd:.4g} FLOPs; exact {est.flops_exact:.4g} (x{est.exact_over_6nd:.3f})"
                        + recomputed),
            ("time", f"{est.days:,.2f} days on {est.count} x {est.hardware} at MFU {est.mfu:.0%}; "
                     f"{est.device_hours:,.0f} device-hours"),
            ("money", f"${est.cost_usd:,.0f}"),
            ("energy", f"{est.energy_kwh:,.0f} kWh (PUE {self.pue}); {est.tco2e:,.1f} tCO2e at "
                       f"{self.grid_kg_per_kwh} kg/kWh"),
            ("memory/device", f"weights {m['weights']:.2f} + gradients {m['gradients']:.2f} + optimizer "
                              f"{m['optimizer']:.2f} + activations {m['activations']:.2f} = {m['total']:.2f} GB of "
                              f"{self.hardware.memory_gb:g} ({'fits' if est.fits else 'does NOT fit'}); fewest "
                              f"devices: {est.min_devices or 'n/a'}"),
            *(("note", note) for note in est.notes),
        ]
        return [f"{k:>14}  {v}" for k, v in rows]

    def to_json(self) -> str:
        return figures.dumps(self.estimate.to_dict())


@dataclass
class KvCache(figures.Result):
    """The key/value cache of `batch` sequences of the model's whole context."""

    shape: Shape
    batch: int
    bytes_per_value: int

    @property
    def nbytes(self) -> float:
        return kv_cache_bytes(self.shape, self.batch, self.shape.context, self.bytes_per_value)

    def lines(self) -> list[str]:
        return [f"KV cache: {self.nbytes / 2**30:.3f} GiB for batch {self.batch} x {self.shape.context} tokens"]

    def to_json(self) -> str:
        s = self.shape
        return figures.dumps({"kv_cache_bytes": self.nbytes, "kv_cache_gib": self.nbytes / 2**30, "batch": self.batch,
                              "context": s.context, "layers": s.layers, "kv_heads": s.kv_heads, "head_dim": s.head_dim})


@dataclass
class Plan(figures.Result):
    """`cost.plan`'s compute-optimal model for a budget and the run that trains it."""

    plan: dict
    law: str  # as the user named it (a law's name, or a sweep's folder)
    hardware: Hardware

    def lines(self) -> list[str]:
        p, e, hw = self.plan, self.plan["estimate"], self.hardware
        recomputed = " and recomputation" if p["recompute"] != "none" else ""
        return [
            f"budget {p['budget']} = {p['budget_flops']:.3g} FLOPs ({p['budget_as']})",
            f"compute-optimal ({self.law}, C = 6ND as in the papers): {p['params']:.3g} parameters on "
            f"{p['tokens']:.3g} tokens ({p['tokens_per_param']:.1f} tokens/parameter), "
            f"predicted loss {p['predicted_loss']:.3f}",
            f"plan: {p['count']:,} x {hw.name} ({p['count_from']}), recompute {p['recompute']}, MFU {e['mfu']:.0%}: "
            f"{e['days']:,.1f} days, {e['device_hours']:,.0f} device-hours, ${e['cost_usd']:,.0f}, "
            f"{e['energy_kwh']:,.0f} kWh, {e['tco2e']:,.1f} tCO2e",
            f"      exact FLOPs {e['flops_exact']:.3g} (x{p['exact_over_budget']:.3f} the 6ND budget: attention"
            f"{recomputed}); memory {e['memory_gb']['total']:.1f} of {hw.memory_gb:g} GB/device, fewest devices "
            f"{e['min_devices'] or 'n/a'}",
            *(f"warning: {w}" for w in p["warnings"]),
        ]
