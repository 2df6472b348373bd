"""Checkpoints that never need unpickling, written atomically.

    RUN/checkpoints/step-000500/
        model.safetensors   weights (the tied output head is stored once), metadata: model shape
        state.safetensors   optimizer tensors and RNG states
        state.json          step, tokens seen, data-loader position, optimizer hyper-parameters
                            and scalar state, the run's config
    RUN/checkpoints/latest  name of the newest complete checkpoint

The names of these files belong to the run folder (lmforge/run_dir.py); this module writes and
reads their contents.

A checkpoint is written into `step-N.tmp/` and renamed into place, then `latest` is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.config import Config
from lmforge.errors import LmforgeError
from lmforge.model import GPT, GPTConfig
from lmforge.run_dir import CONFIG_FILE, CheckpointDir, RunDir
from lmforge.training.distributed import gather_full, shard_like


def model_state(model: GPT) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU; with FSDP a collective (every rank calls it)."""
    state = {k: gather_full(v.detach()).contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


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


def save_checkpoint(run: RunDir, step: int, model: GPT, optimizers: list[torch.optim.Optimizer],
                    extra: dict, keep: int, write: bool = True) -> CheckpointDir:
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
    final = run.checkpoint(step)
    if not write:
        return final
    tmp = run.checkpoint(step, temporary=True)
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.path.mkdir(parents=True)
    save_file(weights, str(tmp.model_file), metadata={"lmforge_model": json.dumps(asdict(model.cfg))})
    save_file(tensors, str(tmp.state_tensors))
    tmp.state_json.write_text(json.dumps({"step": step, "optimizers": opt_info, **extra}, indent=1))
    shutil.rmtree(final.path, ignore_errors=True)
    tmp.path.replace(final.path)
    run.point_latest(final)
    for old in run.checkpoints()[:-keep]:
        shutil.rmtree(old.path)
    return final


def load_checkpoint(ckpt: CheckpointDir, model: GPT, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Restore weights, optimizer state and RNG; return state.json (step, loader position, ...)."""
    load_model_weights(model, ckpt.model_file)
    info = json.loads(ckpt.state_json.read_text())
    tensors = load_file(str(ckpt.state_tensors))
    if len(info["optimizers"]) != len(optimizers):
        raise LmforgeError(f"checkpoint {ckpt} was written with another train.optimizer: resume with the same config")
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


def load_model(ckpt: CheckpointDir, run_cfg: Config | None = None) -> GPT:
    """A checkpoint's model, built from the shape stored with its weights; refused when the run's
    config names another architecture."""
    cfg = read_model_config(ckpt.model_file)
    if run_cfg is not None and (run_cfg.model.n_layer != cfg.n_layer or run_cfg.model.n_embd != cfg.n_embd):
        raise LmforgeError(f"{ckpt} does not match its run's {CONFIG_FILE}: the checkpoint is from another architecture")
    model = GPT(cfg)
    load_model_weights(model, ckpt.model_file)
    return model
