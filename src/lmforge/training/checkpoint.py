"""Checkpoints that never need unpickling, written atomically.

    RUN/checkpoints/step-000500/
        model.safetensors   weights (the tied output head is stored once), metadata: model shape
        state.safetensors   optimizer tensors and RNG states
        state.json          step, tokens seen, data-loader position, optimizer hyper-parameters
                            and scalar state, metrics so far
    RUN/checkpoints/latest  name of the newest complete checkpoint

A checkpoint is written into `step-N.tmp/` and renamed into place, then `latest` is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.config import read_config
from lmforge.errors import LmforgeError
from lmforge.model import GPT, GPTConfig
from lmforge.tokenizer import load_tokenizer
from lmforge.training.distributed import gather_full, shard_like

MODEL_FILE = "model.safetensors"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_state(model: GPT) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU; with FSDP a collective (every rank calls it)."""
    state = {k: gather_full(v.detach()).contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_model(model: GPT, path: Path) -> None:
    save_file(model_state(model), str(path), metadata={"lmforge_model": json.dumps(asdict(model.cfg))})


def load_model_weights(model: GPT, path: Path) -> None:
    """Load weights, refusing (with the differing shape named) a file from another architecture."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LmforgeError(f"cannot read checkpoint {path}: {e}") from None
    expected = model_state(model)
    for name, tensor in expected.items():
        if name not in state:
            raise LmforgeError(f"checkpoint {path} has no tensor {name!r}: it was written by another architecture")
        if state[name].shape != tensor.shape:
            raise LmforgeError(
                f"checkpoint {path} is from another architecture: {name} has shape {tuple(state[name].shape)}, "
                f"this model expects {tuple(tensor.shape)}; use the config the checkpoint was trained with"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise LmforgeError(f"checkpoint {path} has unexpected tensors ({', '.join(extra[:3])}): another architecture")
    current = model.state_dict()
    model.load_state_dict({k: shard_like(v, current[k]) for k, v in state.items()}, strict=False)


def read_model_config(path: Path) -> GPTConfig:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "lmforge_model" not in meta:
        raise LmforgeError(f"{path} was not written by lmforge (no model metadata)")
    return GPTConfig(**json.loads(meta["lmforge_model"]))


# ---------------------------------------------------------------- optimizer state without pickle

def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = gather_full(value.detach()).contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], prefix: str, info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(run_dir: Path, step: int, model: GPT, optimizers: list[torch.optim.Optimizer],
                    extra: dict, keep: int, write: bool = True) -> Path:
    """With FSDP every rank calls this (gathering the shards is a collective) and one writes."""
    weights = model_state(model)
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    opt_info = []
    for i, opt in enumerate(optimizers):
        t, info = _flatten_optimizer(opt, f"opt{i}")
        tensors.update(t)
        opt_info.append(info)
    root = run_dir / "checkpoints"
    name = f"step-{step:06d}"
    if not write:
        return root / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(weights, str(tmp / MODEL_FILE), metadata={"lmforge_model": json.dumps(asdict(model.cfg))})
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizers": opt_info, **extra}, indent=1))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_text_atomic(root / "latest", name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / MODEL_FILE).is_file():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load_checkpoint(path: Path, model: GPT, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Restore weights, optimizer state and RNG; return state.json (step, loader position, ...)."""
    load_model_weights(model, path / MODEL_FILE)
    info = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    if len(info["optimizers"]) != len(optimizers):
        raise LmforgeError(f"checkpoint {path} was written with another train.optimizer: resume with the same config")
    for i, opt in enumerate(optimizers):
        sd = _unflatten_optimizer(tensors, f"opt{i}", info["optimizers"][i])
        params = [p for group in opt.param_groups for p in group["params"]]  # state ids count in this order
        for pid, pstate in sd["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor) and value.shape == params[pid].shape:  # moments, not `step`
                    pstate[key] = shard_like(value, params[pid])
        opt.load_state_dict(sd)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return info


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[GPT, "object", Path]:
    """The model of a run's newest checkpoint, its tokenizer, and the checkpoint path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmforgeError(f"run folder {run_dir} does not exist: train first (lmforge train or lmforge run)")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise LmforgeError(f"{run_dir} holds no checkpoint: train first (lmforge train --out {run_dir})")
    cfg = read_model_config(ckpt / MODEL_FILE)
    if (run_dir / "config.yaml").is_file():
        run_cfg = read_config(run_dir / "config.yaml")
        if run_cfg.model.n_layer != cfg.n_layer or run_cfg.model.n_embd != cfg.n_embd:
            raise LmforgeError(f"{ckpt} does not match {run_dir}/config.yaml: the checkpoint is from another architecture")
    model = GPT(cfg)
    load_model_weights(model, ckpt / MODEL_FILE)
    return model.to(device), load_tokenizer(run_dir), ckpt


def run_objective(run_dir: str | Path) -> str:
    """The objective a run was trained with ("causal" or "masked"; config.yaml's train.objective).
    It decides the attention every reader must use: causal, or bidirectional for "masked"."""
    path = Path(run_dir) / "config.yaml"
    return read_config(path).train.objective if path.is_file() else "causal"


def require_objective(run_dir: str | Path, wanted: str, feature: str) -> None:
    """Refuse `feature` on a run trained with another objective, in one line."""
    have = run_objective(run_dir)
    if have != wanted:
        hint = ("train one with --objective masked" if wanted == "masked"
                else "it reads text left to right, so train one with --objective causal; lmforge fill works with both")
        raise LmforgeError(f"{run_dir} was trained with the {have} objective: {feature} needs a {wanted} model ({hint})")
