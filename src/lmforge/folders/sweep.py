"""The sweep folder: its layout, sweep.yaml, run names, and where each run's folder and tokens are
(written by lmforge scale plan / run / fit / verify; lmforge/scaling/).

    SWEEP/sweep.yaml        the base config, the design and its runs (edit a run's lr or steps here
                            before it starts, if you must; a started run refuses changed settings)
    SWEEP/tokens/           tokenized once from the base config's sources: one tokenizer, one split
    SWEEP/runs/<name>/      ordinary RUN folders (lmforge/folders/run.py), each training on ../../tokens;
                            with scale.cooldowns=branched also each size's trunk (below)
    SWEEP/points.csv        the points of the last fit: name, params, tokens, flops, loss
    SWEEP/fit.json          the fitted law and its intervals (lmforge scale fit)
    SWEEP/plots/            the fit's pictures
    SWEEP/verify/<name>/    target models trained by `lmforge scale verify` (RUN folders too)
    SWEEP/verify.json       every verified target: predicted and actual loss
    SWEEP/coordcheck/       lmforge scale coordcheck's output, when it reads the sweep
    SWEEP/tune/             lmforge scale tune's output (scaling/tune.py); its tuned.yaml, the learning rate
                            and muP base width found on a narrow proxy, is applied by scale plan --out SWEEP
                            over the config, and by scale run SWEEP to a sweep none of whose runs has started

A run is named by its size knob and value, then what sets its length: `width032-c0` (compute level 0),
`width032-d1` (token count 1 of a grid), `width032-dmax`, `width032-s800` (a verify target of 800 steps);
a repeat with another seed adds `-r1`.

scale.cooldowns=branched (Hagele et al. 2024): sweep.yaml's `trunks` lists, per size (and seed), one
run `width032-trunk` trained with the WSD schedule of that size's longest run, and stopped at its
last branch point (its `stop`, the longest run's decay start): up to there every run of the size is
the same run, at constant lr after one warmup (`warmup_steps`, the shortest run's, in every run of
the size). The trunk stops at each run's branch point in turn (the run's `branch_step`: its own decay
start) and copies that checkpoint into the run's folder, with the schedule laid out over the run's
steps (training/checkpoint.branch_checkpoint); the run, named as under `separate`, resumes from it and
decays over its own last train.decay_fraction of steps. Its metrics.jsonl begins with the trunk's
records up to the branch point. A run folder holding a checkpoint has been branched: a rerun skips
it in the trunk. The points are the runs, as under `separate`; the trunks are no points.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmforge.config import Config, config_from_dict
from lmforge.errors import LmforgeError
from lmforge.files import atomic_write_text, inside
from lmforge.locks import FolderLock

SWEEP_FILE = "sweep.yaml"
TOKENS = "tokens"
RUNS = "runs"
VERIFY = "verify"
POINTS_FILE = "points.csv"
FIT_FILE = "fit.json"
PLOTS = "plots"
VERIFY_FILE = "verify.json"
COORDCHECK = "coordcheck"
TRUNK = "trunk"
TUNE = "tune"
TUNED_FILE = "tuned.yaml"
# data.tokenized of a run at SWEEP/runs/<name>/ or SWEEP/verify/<name>/: relative, so a sweep folder
# can be moved or copied whole
RUN_TOKENS = f"../../{TOKENS}"


def run_name(knob: str, value: int, length: str) -> str:
    """`width032-c0`: the knob, its value, and what sets the run's length."""
    return f"{knob}{value:03d}-{length}"


def trunk_name(knob: str, value: int) -> str:
    """`width032-trunk`: the run whose stable phase a size's cooldowns branch off."""
    return run_name(knob, value, TRUNK)


def repeat_name(name: str) -> str:
    """The run trained again with another seed."""
    return f"{name}-r1"


def fit_path(source: str | Path) -> Path:
    """fit.json: `source` itself, or the one in a sweep folder (a sweep folder stands for its fit)."""
    path = Path(source)
    return path / FIT_FILE if path.is_dir() else path


class SweepDir:
    """A sweep folder: sweep.yaml, the shared tokens, the runs' folders, the fit and the verified targets."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def sweep_file(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def tokens_dir(self) -> Path:
        return self.path / TOKENS

    def run_dir(self, name: str, folder: str = RUNS) -> Path:
        """SWEEP/runs/<name>/ (or SWEEP/verify/<name>/ for a verify target)."""
        return self.path / folder / name

    @property
    def points_path(self) -> Path:
        return self.path / POINTS_FILE

    @property
    def fit_path(self) -> Path:
        return self.path / FIT_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    @property
    def verify_path(self) -> Path:
        return self.path / VERIFY_FILE

    @property
    def coordcheck_dir(self) -> Path:
        return self.path / COORDCHECK

    @property
    def tune_dir(self) -> Path:
        return self.path / TUNE

    @property
    def tuned_path(self) -> Path:
        """SWEEP/tune/tuned.yaml: the overlay of lmforge scale tune, when one was run into the sweep."""
        return self.tune_dir / TUNED_FILE

    def is_sweep(self) -> bool:
        return self.sweep_file.is_file()

    def write(self, plan: dict, cfg: Config) -> Path:
        """sweep.yaml: the base config and the plan; never over an existing one."""
        if self.sweep_file.is_file():
            raise LmforgeError(f"{self.sweep_file} already exists: choose another --out, or run it with lmforge "
                               f"scale run {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        self.sweep_file.write_text(yaml.safe_dump({"config": cfg.to_dict(), **plan}, sort_keys=False))
        return self.sweep_file

    def rewrite(self, cfg: Config, data: dict) -> Path:
        """sweep.yaml with another base config and runs (a tune applied before any run started)."""
        atomic_write_text(self.sweep_file, yaml.safe_dump({**data, "config": cfg.to_dict()}, sort_keys=False))
        return self.sweep_file

    def load(self) -> tuple[Config, dict]:
        """The base config and sweep.yaml's contents, every run's name checked to be a plain folder name."""
        path = self.sweep_file
        if not path.is_file():
            raise LmforgeError(f"{self.path} is not a sweep (no {SWEEP_FILE}): create one with lmforge scale plan --out")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise LmforgeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict) or "config" not in data or not isinstance(data.get("runs"), list):
            raise LmforgeError(f"{path} must hold `config` and `runs` (as written by lmforge scale plan)")
        for run in data["runs"] + (data.get("trunks") or []):
            name = run.get("name") if isinstance(run, dict) else None
            # a run's folder is runs/<name>: a name read from the file must not lead out of runs/
            if inside(self.path / RUNS, name) is None or Path(name).name != name:
                raise LmforgeError(f"{path}: run name {name!r} is not a plain folder name: give each run a name "
                                   "without / or .. (as lmforge scale plan writes them)")
        saved = data["config"]
        if isinstance(saved.get("scale"), dict) and "min_warmup_steps" not in saved["scale"]:
            # planned before the warmup floor: its targets are verified under the rule its runs had
            saved = {**saved, "scale": {**saved["scale"], "min_warmup_steps": 0}}
        return config_from_dict(saved), data

    def verified(self) -> list[dict]:
        """verify.json's targets, or none."""
        return json.loads(self.verify_path.read_text()) if self.verify_path.is_file() else []

    def verify_lock(self) -> FolderLock:
        """Targets may be verified by several processes at once: each waits for the others' writes."""
        return FolderLock(self.path / f"{VERIFY_FILE}.lock", str(self.verify_path), wait=True)

    def add_verified(self, result: dict) -> list[dict]:
        """Record one verified target (replacing an earlier one of the same run), under `verify_lock`;
        returns them all."""
        done = [v for v in self.verified() if v["run"] != result["run"]] + [result]
        tmp = self.path / f"{VERIFY_FILE}.tmp"
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(self.verify_path)
        return done
