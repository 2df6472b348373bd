"""`lmforge scale tune`: a real tune of a tiny proxy under muP on real subprocesses, the overlay it
writes read by `lmforge train` and by a sweep's plan and run, its choice rule, and bad input."""

import json
import math

import pytest
import yaml

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.folders.sweep import SweepDir
from lmforge.scaling.tune import apply_to_sweep, best_index, lr_grid, overlay, parabola_vertex, write_overlay
from test_cli import assert_user_error, lmforge, sets
from test_scaling import plan_too_small_to_fit, sweep_flags

LRS = [1e-3, 4e-3, 1.6e-2]


def without_lr(flags: list[str]) -> list[str]:
    """--set pairs less train.lr, which would win over the overlay's."""
    pairs = [flags[i:i + 2] for i in range(0, len(flags) - 1, 2)]
    return [x for pair in pairs if not pair[1].startswith("train.lr=") for x in pair] + flags[len(pairs) * 2:]


@pytest.fixture(scope="module")
def tuned(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "t"
    r = lmforge("scale", "tune", corpus_dir, "--preset", "tiny", *sets(), "--width", 32,
                "--lrs", ",".join(map(str, LRS)), "--steps", 12, "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_tune_writes_its_points_plot_and_overlay(tuned):
    out, stdout = tuned
    result = json.loads((out / "tune.json").read_text())
    assert [p["lr"] for p in result["points"]] == LRS
    for p in result["points"]:
        assert p["steps"] == 12 and p["tokens"] == 12 * 4 * 32 and math.isfinite(p["loss"])
        assert yaml.safe_load(open(out / "runs" / f"lr{p['lr']:.4g}" / "config.yaml"))["model"]["mup_base_width"] == 32
    losses = [p["loss"] for p in result["points"]]
    assert result["lr"] == LRS[losses.index(min(losses))] and result["loss"] == min(losses)
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((out / "tuned.yaml").read_text()) == {
        "model": {"parametrization": "mup", "mup_base_width": 32, "tie_embeddings": True},
        "train": {"lr": result["lr"], "optimizer": "adamw"}}
    assert f"best: train.lr {result['lr']:.4g}" in stdout and "lmforge train --config" in stdout
    assert "SWEEP/tune" in stdout  # how a sweep would pick it up
    assert result["tie_embeddings"] and "model.tie_embeddings=false" in stdout  # the tiny preset ties them


def test_a_wider_run_takes_the_tuned_lr_and_base_width(tuned, tmp_path):
    out, _ = tuned
    lr = json.loads((out / "tune.json").read_text())["lr"]
    run = tmp_path / "wide"
    r = lmforge("train", "--config", out / "tuned.yaml", "--data", out / "tokens", "--out", run,
                *without_lr(sets(**{"train.max_steps": 3})), "--set", "model.n_embd=64")
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["lr"] == lr and saved["model"]["n_embd"] == 64
    assert saved["model"]["parametrization"] == "mup" and saved["model"]["mup_base_width"] == 32
    groups = {g["name"]: g["lr"] for g in json.loads((run / "summary.json").read_text())["param_groups"]}
    assert groups["hidden"] == pytest.approx(lr / 2) and groups["embedding+head"] == pytest.approx(lr)


def test_an_untied_tune_makes_the_wider_run_untied(tuned, tmp_path):
    """The lr of an untied proxy is not the lr of a tied model: the head's tying travels in tuned.yaml."""
    out, _ = tuned
    overlay_file = tmp_path / "tuned.yaml"
    write_overlay({**_result(32, 0.01), "overlay": overlay(32, 0.01, tie_embeddings=False, optimizer="muon")},
                  overlay_file)
    run = tmp_path / "wide"
    r = lmforge("train", "--config", overlay_file, "--data", out / "tokens", "--out", run,
                *without_lr(sets(**{"train.max_steps": 2})), "--set", "model.n_embd=64")
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["tie_embeddings"] is False and saved["train"]["optimizer"] == "muon"


def test_a_finished_tune_is_read_back_not_trained_again(tuned, corpus_dir):
    out, _ = tuned
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    r = lmforge("scale", "tune", out / "tokens", "--preset", "tiny", *sets(), "--width", 32,
                "--lrs", ",".join(map(str, LRS)), "--steps", 12, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["lr"] == json.loads((out / "tune.json").read_text())["lr"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps} and len(stamps) == 3
    # the same --out asked for other steps: its points answer another question
    r = lmforge("scale", "tune", out / "tokens", "--preset", "tiny", *sets(), "--width", 32,
                "--lrs", ",".join(map(str, LRS)), "--steps", 14, "--out", out)
    assert_user_error(r, "train.max_steps 12, not 14 now", "another --out")


def test_the_best_is_the_lowest_loss_ties_to_the_smaller_lr_diverged_last():
    pts = lambda *losses: [{"lr": 2.0 ** k, "loss": l} for k, l in enumerate(losses)]  # noqa: E731
    assert best_index(pts(5.0, 4.2, 4.3)) == 1
    assert best_index(pts(5.0, 4.20001, 4.2)) == 1  # equal to 4 decimals: the smaller lr
    assert best_index(pts(None, 4.9, None)) == 1
    assert best_index(pts(None, None)) is None


def test_parabola_vertex_in_log_lr():
    # loss = (log2 lr - 1.5)^2 + 4: the vertex at lr 2^1.5, between the grid's 2 and 4
    points = [{"lr": 2.0 ** k, "loss": (k - 1.5) ** 2 + 4} for k in range(4)]
    assert parabola_vertex(points, 1) == pytest.approx(2 ** 1.5)
    assert parabola_vertex(points, 0) is None  # no neighbour below
    flat = [{"lr": 2.0 ** k, "loss": 4.0 - k} for k in range(3)]
    assert parabola_vertex(flat, 1) is None  # a line has no minimum


def test_lr_grid_doubles_from_min_to_max():
    assert lr_grid(1e-3, 8e-3) == pytest.approx([1e-3, 2e-3, 4e-3, 8e-3])
    with pytest.raises(LmforgeError, match="--lr-min"):
        lr_grid(4e-3, 1e-3)


def test_bad_input_is_one_line(corpus_dir, tmp_path):
    base = ["scale", "tune", corpus_dir, "--preset", "tiny", *sets(), "--steps", 8]
    assert_user_error(lmforge(*base, "--lrs", "1e-3,abc", "--out", tmp_path / "a"), "--lrs", "abc")
    assert_user_error(lmforge(*base, "--lrs", "1e-3,2e-3", "--out", tmp_path / "a"), "at least 3")
    assert_user_error(lmforge(*base, "--lrs", "1e-3,2e-3,4e-3", "--lr-min", "1e-3", "--out", tmp_path / "a"), "not both")
    assert_user_error(lmforge(*base, "--width", 33, "--out", tmp_path / "a"), "width 33", "head size")
    assert_user_error(lmforge(*base, "--lr-min", "1e-2", "--lr-max", "1e-3", "--out", tmp_path / "a"), "--lr-min")
    assert_user_error(lmforge(*base), "--out")
    assert_user_error(lmforge("scale", "tune", corpus_dir, "--preset", "tiny", *sets(), "--steps", 1, "--out",
                              tmp_path / "a"), "--steps")
    assert not (tmp_path / "a").exists()  # refused before anything was written


def sweep_plan(corpus_dir, out) -> list[str]:
    return ["scale", "plan", "--budget", "2.4e10", "--sizes", "16,24,32", "--levels", "1",
            *without_lr(sweep_flags(corpus_dir)), "--out", str(out)]


def test_a_tune_in_the_sweep_folder_is_planned_with(corpus_dir, tmp_path, capsys):
    out = tmp_path / "sw"
    (out / "tune").mkdir(parents=True)
    write_overlay({**_result(16, 0.02), "overlay": overlay(16, 0.02)}, out / "tune" / "tuned.yaml")
    assert plan_too_small_to_fit(sweep_plan(corpus_dir, out)) == 0
    assert f"plan: using {out / 'tune' / 'tuned.yaml'} (lmforge scale tune): muP, base width 16, train.lr 0.02" \
        in capsys.readouterr().out
    cfg, data = SweepDir(out).load()
    assert (cfg.model.parametrization, cfg.model.mup_base_width, cfg.train.lr) == ("mup", 16, 0.02)
    assert {r["lr"] for r in data["runs"]} == {0.02}  # muP: one lr, the optimizer scales it per width
    apply_to_sweep(out, log=print)  # scale run's step: already planned with it
    assert "trained with" in capsys.readouterr().out


def test_a_tune_of_a_planned_sweep_is_applied_by_run_before_any_run_started(corpus_dir, tmp_path, capsys):
    """`scale tune SWEEP`: the family's model at --width on the sweep's tokens, into SWEEP/tune; `scale
    run` then makes it the sweep's config, unless a run has started. The coordinate check and the tune
    land in the sweep's report."""
    out = tmp_path / "sw"
    assert plan_too_small_to_fit(sweep_plan(corpus_dir, out)) == 0
    standard = {r["name"]: r["lr"] for r in SweepDir(out).load()[1]["runs"]}
    assert len(set(standard.values())) == 3  # lr ~ width^-1/2 under the standard parameterisation
    capsys.readouterr()
    assert main(["scale", "tune", str(out), "--width", "16", "--lrs", "5e-3,1e-2,2e-2", "--steps", "12"]) == 0
    shown = capsys.readouterr().out
    assert f"lmforge scale run {out} uses it" in shown
    result = json.loads((out / "tune" / "tune.json").read_text())
    assert (result["n_layer"], result["n_head"], result["tokenized"]) == (2, 2, str((out / "tokens").resolve()))
    lr = result["lr"]
    (out / "runs" / "width016-c0").mkdir(parents=True)
    (out / "runs" / "width016-c0" / "error.txt").write_text("RuntimeError: a run that started")
    with pytest.raises(LmforgeError, match="plan a new sweep"):
        apply_to_sweep(out, log=print)
    (out / "runs" / "width016-c0" / "error.txt").unlink()
    apply_to_sweep(out, log=print)
    assert "sweep.yaml updated" in capsys.readouterr().out
    cfg, data = SweepDir(out).load()
    assert (cfg.model.parametrization, cfg.model.mup_base_width, cfg.train.lr) == ("mup", 16, lr)
    assert {r["lr"] for r in data["runs"]} == {lr} and [r["name"] for r in data["runs"]] == list(standard)

    assert main(["scale", "coordcheck", str(out), "--widths", "16,32", "--steps", "3"]) == 0
    assert (out / "coordcheck" / "coordcheck.png").is_file()
    assert main(["report", str(out), "--format", "md"]) == 0
    page = (out / "report.md").read_text()
    assert "Hyperparameters across widths" in page
    assert "coordinate-check-across-widths.png" in page and "learning-rate-tune-of-the-proxy.png" in page


def _result(width: int, lr: float) -> dict:
    return {"lr": lr, "width": width, "points": [{}] * 3, "n_layer": 2, "steps": 10, "tokens_per_step": 256,
            "schedule": "cosine", "optimizer": "adamw"}


def test_plan_refuses_a_tuned_yaml_that_is_not_one(corpus_dir, tmp_path, capsys):
    out = tmp_path / "sw"
    (out / "tune").mkdir(parents=True)
    (out / "tune" / "tuned.yaml").write_text("train: {lr: fast}\n")
    assert main(sweep_plan(corpus_dir, out)) == 2
    assert "not an overlay of lmforge scale tune" in capsys.readouterr().err
    assert not (out / "sweep.yaml").exists()



def test_tune_refuses_an_out_holding_the_users_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "tune.json").write_text("my own notes")
    (out / "notes.txt").write_text("mine")
    assert_user_error(lmforge("scale", "tune", "--width", 32, "--lrs", "0.004,0.008,0.016", "--steps", 4,
                              "--out", out), "holds files that are not a tune's")
    assert (out / "tune.json").read_text() == "my own notes" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "tune.json"]
