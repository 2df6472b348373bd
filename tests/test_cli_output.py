"""What the commands print, kept as it was: every line and JSON key of `estimate`, `plan`, `scale fit`
and `scale predict` on fixed inputs, compared with tests/golden/cli_output.json (recorded from main
before the commands' printing moved into result objects). Pure arithmetic, so the same on any machine.

A change of wording or figures on purpose: rerun with LMFORGE_WRITE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from lmforge.cli import main

GOLDEN = Path(__file__).parent / "golden" / "cli_output.json"

COMMANDS = {
    "estimate": ["estimate", "--params", "7B", "--tokens", "1T"],
    "estimate-json": ["estimate", "--params", "7B", "--tokens", "1T", "--json"],
    "estimate-recompute": ["estimate", "--preset", "tiny", "--tokens", "100M", "--hardware", "a100", "--count", "8",
                           "--recompute", "full", "--batch", "64"],
    "estimate-notes": ["estimate", "--params", "70B", "--tokens", "1.4T", "--count", "1", "--mfu", "0.9",
                       "--recompute", "full"],
    "estimate-kv": ["estimate", "kv-cache", "--params", "7B", "--batch", "4"],
    "estimate-kv-json": ["estimate", "kv-cache", "--layers", "4", "--width", "256", "--heads", "4", "--kv-heads",
                         "2", "--context", "512", "--json"],
    "plan": ["plan", "--budget", "10000usd"],
    "plan-json": ["plan", "--budget", "10000usd", "--json"],
    "plan-count": ["plan", "--budget", "5e21flops", "--count", "2", "--law", "epoch2024", "--days", "3"],
    "fit": ["scale", "fit", "{csv}", "--bootstrap", "8"],
    "fit-json": ["scale", "fit", "{csv}", "--bootstrap", "8", "--json"],
    "fit-out": ["scale", "fit", "{csv}", "--bootstrap", "12", "--out", "{tmp}/fit", "--no-plots", "--form", "kaplan"],
    "predict": ["scale", "predict", "{tmp}/fit/fit.json", "--params", "1e9", "--tokens", "2e10", "--within", "5"],
    "predict-flops": ["scale", "predict", "{tmp}/fit/fit.json", "--flops", "1e21"],
    "predict-json": ["scale", "predict", "{tmp}/fit/fit.json", "--flops", "1e21", "--within", "50", "--json"],
}


def points_csv(path: Path) -> Path:
    """36 points of a Chinchilla-like law with a fixed, deterministic wobble (no random numbers)."""
    rows = ["params,tokens,loss"]
    for i, n in enumerate([3e7, 6e7, 1.2e8, 2.4e8, 4.8e8, 9.6e8]):
        for j, d in enumerate([6e8, 1.5e9, 4e9, 1e10, 2.5e10, 6e10]):
            loss = (1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28) * (1 + 0.004 * math.sin(7 * i + 3 * j))
            rows.append(f"{n:g},{d:g},{loss:.6f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def outputs(tmp_path: Path, capsys) -> dict[str, str]:
    csv = points_csv(tmp_path / "points.csv")
    seen = {}
    for name, argv in COMMANDS.items():  # in order: fit-out writes the fit.json that predict reads
        code = main([a.format(csv=csv, tmp=tmp_path) for a in argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        seen[name] = out.replace(str(tmp_path), "TMP")
    return seen


def test_commands_print_what_they_printed(tmp_path, capsys):
    seen = outputs(tmp_path, capsys)
    if os.environ.get("LMFORGE_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(seen, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(seen) == set(golden)
    for name in golden:
        assert seen[name] == golden[name], name


def test_a_within_claim_on_a_fit_without_intervals_is_refused_in_words(tmp_path, capsys):
    """A fit with too few bootstrap resamples has no interval: `predict --within` raised TypeError."""
    csv = points_csv(tmp_path / "points.csv")
    assert main(["scale", "fit", str(csv), "--bootstrap", "0", "--out", str(tmp_path / "fit"), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["scale", "predict", str(tmp_path / "fit"), "--params", "1e9", "--tokens", "2e10", "--within", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("cannot call this forecast within 5%: it has no 95% interval "
                                                         "(fit with --bootstrap of 10 or more)")
