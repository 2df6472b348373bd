"""`lmforge eval --tasks`: accuracy on multiple-choice cloze tasks, with 95% Wilson intervals."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from lmforge.data.sources import LONE_SURROGATE
from lmforge.errors import LmforgeError
from lmforge.tasks.cloze import MARK, Scorer, best, best_per_byte, check_choices, split_blank


BUILTIN_TASKS = "builtin"  # `--tasks builtin`: the task file shipped with lmforge (lmforge/tasks/)
BUILTIN_TASKS_FILE = "builtin_cloze.jsonl"


def tasks_path(tasks: str | Path) -> Path:
    if str(tasks) == BUILTIN_TASKS:
        return Path(str(resources.files("lmforge.tasks") / BUILTIN_TASKS_FILE))
    return Path(tasks)


def read_tasks(tasks: str | Path) -> list[dict]:
    """Lines {"context": "... [MASK] ...", "choices": [...], "answer": index}; a bad line is refused
    with its file and line number."""
    path = tasks_path(tasks)
    if not path.is_file():
        raise LmforgeError(f"task file {path} not found: give a JSONL file of "
                           '{"context": "... [MASK] ...", "choices": [...], "answer": index} lines, or builtin')
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"task file {path} is not UTF-8 text (byte {e.start:,}): give a JSONL file") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            task = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{where}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; nesting past the parser's stack
            raise LmforgeError(f"{where}: not JSON lmforge can read ({str(e)[:80]})") from None
        if not isinstance(task, dict) or not {"context", "choices", "answer"} <= set(task):
            raise LmforgeError(f'{where}: each line needs "context", "choices" and "answer"')
        context, choices, answer = task["context"], task["choices"], task["answer"]
        if not isinstance(context, str):
            raise LmforgeError(f'{where}: "context" must be a string holding one {MARK}')
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise LmforgeError(f'{where}: "choices" must be a list of at least two strings')
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise LmforgeError(f'{where}: "answer" must be the index (0 to {len(choices) - 1}) of the right choice')
        if any(LONE_SURROGATE.search(t) for t in (context, *choices)):
            raise LmforgeError(f"{where}: a lone surrogate escape (\\ud800-\\udfff) is half a character, not text")
        try:
            split_blank(context)
        except LmforgeError as e:
            raise LmforgeError(f"{where}: {e}") from None
        check_choices(choices, where)
        out.append({"context": context, "choices": choices, "answer": answer})
    if not out:
        raise LmforgeError(f"task file {path} holds no tasks")
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval for a binomial proportion."""
    if n == 0:
        raise ValueError("a Wilson interval needs at least one trial")
    p = successes / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_tasks(run_dir, tasks: str | Path = BUILTIN_TASKS, device: str = "cpu") -> dict:
    """Accuracy on multiple-choice cloze tasks (a task file, or `builtin`),
    scored as `lmforge fill --choices` scores (see lmforge.tasks.cloze): `accuracy` picks the choice
    `fill` ranks first (the highest summed log-probability); `accuracy_norm` the highest log-probability
    per UTF-8 byte of the scored tokens (the choice's tokens for a masked model, the completed
    sentence's for a causal one). Each with a 95% Wilson interval."""
    items = read_tasks(tasks)
    scorer = Scorer(run_dir, device)
    right = right_norm = truncated = 0
    scoring = ""
    for task in items:
        scoring, scored = scorer.score_choices(task["context"], task["choices"])
        right += best(scored) == task["answer"]
        right_norm += best_per_byte(scored) == task["answer"]
        truncated += any(s.truncated for s in scored)
    n = len(items)
    return {
        "tasks_file": str(tasks_path(tasks)), "tasks": n, "scoring": scoring, "model": scorer.objective,
        "accuracy": right / n, "accuracy_ci95": list(wilson_interval(right, n)),
        "accuracy_norm": right_norm / n, "accuracy_norm_ci95": list(wilson_interval(right_norm, n)),
        "normalisation": "log-probability per UTF-8 byte of the scored tokens",
        "chance": sum(1 / len(t["choices"]) for t in items) / n, "truncated": truncated,
        "checkpoint": str(scorer.checkpoint),
    }
