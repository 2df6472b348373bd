"""Checkpoints that never need unpickling, written atomically.

    RUN/checkpoints/step-000500/
        model.safetensors   weights (the tied output head is stored once), metadata: model shape
        state.safetensors   optimizer tensors and RNG states
        state.json          step, tokens seen, data-loader position, optimizer hyper-parameters
                            and scalar state, the lr schedule's length, the run's config

What it holds besides the weights is a TrainState's state_dict (training/state.py).
    RUN/checkpoints/latest  name of the newest complete checkpoint

The names of these files belong to the run folder (lmforge/folders/run.py); this module writes and
reads their contents.

A checkpoint is written into `step-N.tmp/` and renamed into place, then `latest` is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact. state.json, written
last, holds the sha256 of each tensor file; readers verify them (RunDir.latest_checkpoint) and fall
back to the previous checkpoint when the newest is damaged. Older checkpoints are deleted only
after the new one has been read back and verified. Non-finite weights are never written.

Under FSDP2 the files are the same (whole tensors, so a run resumes on any number of processes),
and no rank holds the whole model and optimizer state unless it writes them: saving gathers one
tensor at a time and only the writer keeps it; loading reads one tensor at a time and each rank
keeps its shard.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmforge.config import Config
from lmforge.errors import LmforgeError, TrainingDiverged
from lmforge.files import as_readable_as_any
from lmforge.model import GPT, GPTConfig
from lmforge.folders.run import CONFIG_FILE, CheckpointDir, RunDir, file_sha256
from lmforge.training.distributed import gather_full, shard_like


def _stored(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors as a checkpoint stores them: the tied output head once, as the embedding."""
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def model_state(model: GPT, keep: bool = True) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU. With FSDP a collective (every rank calls it), gathered one tensor
    at a time; a rank that does not write (`keep=False`) drops each at once and returns {}."""
    state = {}
    for name, tensor in _stored(model).items():
        whole = gather_full(tensor.detach())
        if keep:
            state[name] = whole.contiguous().cpu()
    return state


class _TensorFile:
    """A safetensors file read one tensor at a time, its read errors as one-line LmforgeErrors."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt")
            self.names = set(self._file.keys())
        except (SafetensorError, OSError) as e:
            raise LmforgeError(f"cannot read checkpoint {path}: {e}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._file.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise LmforgeError(f"cannot read checkpoint {self.path}: {e}") from None


def load_model_weights(model: GPT, path: Path) -> None:
    """Load weights, refusing (with the differing shape named) a file from another architecture."""
    stored = _TensorFile(path)
    current = _stored(model)
    for name, tensor in current.items():  # a DTensor's shape is the whole tensor's
        if name not in stored.names:
            raise LmforgeError(f"checkpoint {path} has no tensor {name!r}: it was written by another architecture")
        if stored.shape(name) != tuple(tensor.shape):
            raise LmforgeError(
                f"checkpoint {path} is from another architecture: {name} has shape {stored.shape(name)}, "
                f"this model expects {tuple(tensor.shape)}; use the config the checkpoint was trained with"
            )
    extra = sorted(stored.names - set(current))
    if extra:
        raise LmforgeError(f"checkpoint {path} has unexpected tensors ({', '.join(extra[:3])}): another architecture")
    # one whole tensor in memory at a time; each rank keeps its shard of it
    model.load_state_dict({name: shard_like(stored.get(name), current[name]) for name in current}, strict=False)


def read_model_config(path: Path) -> GPTConfig:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise LmforgeError(f"cannot read checkpoint {path}: {e}") from None
    if "lmforge_model" not in meta:
        raise LmforgeError(f"{path} was not written by lmforge (no model metadata)")
    try:
        return GPTConfig(**json.loads(meta["lmforge_model"]))
    except (ValueError, TypeError) as e:  # invalid JSON, an unknown or missing key
        raise LmforgeError(f"{path} has damaged model metadata ({e}): use a checkpoint lmforge wrote") from None


# ---------------------------------------------------------------- optimizer state without pickle

def _flatten_optimizer(sd: dict, prefix: str, keep: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict as tensors (`prefix.pid.key`) and JSON (param groups, scalars)."""
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                whole = gather_full(value.detach())  # a collective under FSDP; kept by the writer only
                if keep:
                    tensors[f"{prefix}.{pid}.{key}"] = whole.contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(stored: _TensorFile, prefix: str, info: dict, params: list[torch.Tensor]) -> dict:
    """An optimizer's state_dict from the file, each moment laid out (sharded) as its parameter
    as soon as it is read."""
    state: dict[int, dict[str, Any]] = {}
    for name in sorted(stored.names):
        if name.startswith(prefix + "."):
            _, pid, key = name.split(".", 2)
            value = stored.get(name)
            if value.shape == params[int(pid)].shape:  # moments, not `step`
                value = shard_like(value, params[int(pid)])
            state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(run: RunDir, model: GPT, state: dict, config: dict, keep: int, write: bool = True) -> CheckpointDir:
    """The weights and a TrainState's `state_dict()` as step-N/ (N = state["step"]), with the run's
    config. With FSDP every rank calls this (gathering the shards is a collective) and one writes."""
    step = state["step"]
    weights = model_state(model, keep=write)
    tensors: dict[str, torch.Tensor] = {f"rng.{name}": t for name, t in state["rng"].items()}
    opt_info = []
    for i, sd in enumerate(state["optimizers"]):
        t, info = _flatten_optimizer(sd, f"opt{i}", keep=write)
        tensors.update(t)
        opt_info.append(info)
    record = {"step": step, "optimizers": opt_info, "tokens": state["tokens"], "loader": state["loader"],
              "train_time_s": state["train_time_s"], "schedule_steps": state["schedule_steps"], "config": config}
    final = run.checkpoint(step)
    if not write:
        return final
    bad = next((name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise TrainingDiverged(f"step {step}: tensor {bad} holds non-finite values; not saved (the previous "
                               f"checkpoint is kept): lower train.lr and resume from it or start again")
    tmp = run.checkpoint(step, temporary=True)
    shutil.rmtree(tmp.path, ignore_errors=True)
    try:
        tmp.path.mkdir(parents=True)
        save_file(weights, str(tmp.model_file), metadata={"lmforge_model": json.dumps(asdict(model.cfg))})
        save_file(tensors, str(tmp.state_tensors))
        for path in (tmp.model_file, tmp.state_tensors):
            as_readable_as_any(path)
        files = {p.name: file_sha256(p) for p in (tmp.model_file, tmp.state_tensors)}
        _write_synced(tmp.state_json, json.dumps({**record, "files": files},
                                                 indent=1))
    except (SafetensorError, OSError) as e:  # disk full, quota, a vanished folder
        shutil.rmtree(tmp.path, ignore_errors=True)
        raise LmforgeError(f"cannot write checkpoint {final} ({e}); earlier checkpoints are intact: "
                           f"free disk space, then continue with --resume") from None
    shutil.rmtree(final.path, ignore_errors=True)
    tmp.path.replace(final.path)
    problem = final.problem()
    if problem is not None:
        raise LmforgeError(f"checkpoint {final} did not read back ({problem}); earlier checkpoints are kept")
    run.point_latest(final)
    for old in run.checkpoints()[:-keep]:
        shutil.rmtree(old.path)
    return final


def branch_checkpoint(ckpt: CheckpointDir, into: RunDir, schedule_steps: int, config: dict) -> CheckpointDir:
    """A copy of `ckpt` as `into`'s latest checkpoint, for a run that continues from it under
    `config` with the lr schedule laid out over `schedule_steps`: a cooldown branched off a WSD
    run's stable phase (lmforge/scaling) resumes from it and decays as a run of that length would.
    Everything else, weights, optimizer state, RNG and data position, is the source's, so the
    branch trains as the run it stands for would have from that step."""
    info = ckpt.state()
    final = into.checkpoint(ckpt.step)
    tmp = into.checkpoint(ckpt.step, temporary=True)
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ckpt.path, tmp.path)
    # the tensor files' hashes stay valid: only state.json changes
    _write_synced(tmp.state_json, json.dumps({**info, "schedule_steps": schedule_steps, "config": config}, indent=1))
    shutil.rmtree(final.path, ignore_errors=True)
    tmp.path.replace(final.path)
    into.point_latest(final)
    return final


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(ckpt: CheckpointDir, model: GPT, optimizers: list[torch.optim.Optimizer]) -> dict:
    """Load the weights into `model`; return the rest as a TrainState's `state_dict()`, each optimizer
    moment laid out (sharded) as its parameter in `optimizers`."""
    load_model_weights(model, ckpt.model_file)
    info = ckpt.state()
    stored = _TensorFile(ckpt.state_tensors)
    if len(info["optimizers"]) != len(optimizers):
        raise LmforgeError(f"checkpoint {ckpt} was written with another train.optimizer: resume with the same config")
    states = []
    for i, opt in enumerate(optimizers):
        params = [p for group in opt.param_groups for p in group["params"]]  # state ids count in this order
        states.append(_unflatten_optimizer(stored, f"opt{i}", info["optimizers"][i], params))
    rng = {name.removeprefix("rng."): stored.get(name) for name in stored.names if name.startswith("rng.")}
    return {"step": info["step"], "tokens": info["tokens"], "train_time_s": info.get("train_time_s", 0.0),
            "loader": info["loader"], "rng": rng, "optimizers": states,
            # written since runs could be extended; before, the schedule always spanned the config's max_steps
            "schedule_steps": info.get("schedule_steps", info["config"]["train"]["max_steps"])}


def load_model(ckpt: CheckpointDir, run_cfg: Config | None = None) -> GPT:
    """A checkpoint's model, built from the shape stored with its weights; refused when the run's
    config names another architecture."""
    cfg = read_model_config(ckpt.model_file)
    if run_cfg is not None and (run_cfg.model.n_layer != cfg.n_layer or run_cfg.model.n_embd != cfg.n_embd):
        raise LmforgeError(f"{ckpt} does not match its run's {CONFIG_FILE}: the checkpoint is from another architecture")
    model = GPT(cfg)
    load_model_weights(model, ckpt.model_file)
    return model
