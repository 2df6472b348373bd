"""How the house reads: the walk from `lmforge train` to the model, and the largest functions.

    python scripts/house_metrics.py walk      # trace `lmforge train` up to the model's construction
    python scripts/house_metrics.py sizes     # the 12 longest functions and methods of src/lmforge

The walk records every call between two lmforge modules, in order, from `cli.main` until
`GPT.__init__` runs: `files` is the number of distinct modules visited, `steps` the number of
cross-module calls, `climbs` the calls from a lower layer into a higher one (the layers below,
from ARCHITECTURE.md), and `re-entries` the times control comes back into the trainer module
after leaving it.
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"

# higher number = higher layer; a call upwards is a climb
LAYERS = {
    "errors": 0, "files": 0, "config": 0, "probe": 0,
    "model": 1, "tokenizer": 1, "shards": 1, "objectives": 1, "data": 1, "cost": 1, "sampling": 1,
    "folders": 0, "open_run": 2, "training": 2, "evaluation": 3, "loss_eval": 2,
    "trainer": 3, "training.loop": 3, "training.trainer": 3,
    "cloze": 4, "tasks": 4, "inspection": 4, "scaling": 4, "pipeline": 4, "job": 4, "report": 4,
    "cli": 5, "__init__": 5, "__main__": 5,
}
TRAINER = ("training.loop", "training.trainer")


def module_of(filename: str) -> str | None:
    path = Path(filename).resolve()
    try:
        rel = path.relative_to(SRC)
    except ValueError:
        return None
    return ".".join(rel.with_suffix("").parts)


def layer(mod: str) -> int:
    for key in (mod, mod.split(".")[0]):
        if key in LAYERS:
            return LAYERS[key]
    return 2


def walk() -> dict:
    from lmforge import cli

    calls: list[tuple[str, str, str]] = []
    done = []

    def profile(frame, event, arg):
        if done or event != "call":
            return
        callee = module_of(frame.f_code.co_filename)
        if callee is None:
            return
        caller_frame = frame.f_back
        while caller_frame is not None and module_of(caller_frame.f_code.co_filename) is None:
            caller_frame = caller_frame.f_back
        caller = module_of(caller_frame.f_code.co_filename) if caller_frame else None
        if caller and caller != callee:
            calls.append((caller, callee, frame.f_code.co_name))
        if callee == "model" and frame.f_code.co_name == "__init__" and "GPT" in frame.f_code.co_qualname:
            done.append(True)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("".join(f"line {i} of a small corpus for the walk.\n" for i in range(400)))
        argv = ["train", "--data", str(corpus), "--out", str(Path(tmp) / "run"), "--max-steps", "1",
                "--no-progress", "--set", "tokenizer.vocab_size=300", "--set", "model.n_layer=1",
                "--set", "model.n_embd=32", "--set", "model.n_head=2", "--set", "model.seq_len=16",
                "--set", "train.batch_size=2", "--set", "prepare.enabled=false", "--threads", "1"]
        sys.setprofile(profile)
        try:
            cli.main(argv)
        finally:
            sys.setprofile(None)
    modules = []
    for a, b, _ in calls:
        for m in (a, b):
            if m not in modules:
                modules.append(m)
    climbs = sum(layer(b) > layer(a) for a, b, _ in calls)
    reentries = sum(b in TRAINER for a, b, _ in calls if a not in TRAINER)
    return {"files": len(modules), "steps": len(calls), "climbs": climbs, "re-entries": reentries,
            "modules": modules, "calls": [f"{a} -> {b}.{f}" for a, b, f in calls]}


def sizes(top: int = 12) -> list[tuple[int, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                found.append((n, f"{path.relative_to(SRC)}:{node.name}"))
    return sorted(found, reverse=True)[:top]


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    what = sys.argv[1] if len(sys.argv) > 1 else "walk"
    if what == "walk":
        r = walk()
        for line in r["calls"]:
            print("  " + line)
        print(f"files {r['files']}, steps {r['steps']}, climbs {r['climbs']}, trainer re-entries {r['re-entries']}")
    else:
        for n, name in sizes():
            print(f"{n:5d}  {name}")
