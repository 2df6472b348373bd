"""The `lmforge` command: parse, load the config, call one stage function, print what it returns.

Two tables say it all: COMMANDS (each command's arguments and handler) and CONFIG_FLAGS (each flag
that stands for a config key). What a stage returns renders itself (`figures.Result`: `lines()` for a
person, `to_json()` for `--json`), in a class beside the stage: cost_results.py, scaling/results.py,
tasks/results.py, inspection/results.py, evaluation.py, export.py.

Errors the user can fix (`LmforgeError`) print one line and exit with code 2; an interrupted
command exits with 130 (see `main`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from lmforge import cost, figures, hardware
from lmforge.config import BUILTIN_SOURCE, Config, config_from_dict, load_config, merge_dicts, preset_names, sets_key
from lmforge.errors import Interrupted, LmforgeError
from lmforge.folders import prepared, sweep, tokenized
from lmforge.folders.run import RunDir, warn
from lmforge.scaling.law import load_law


@dataclass(frozen=True)
class ConfigFlag:
    """A flag that sets one config key: `--max-steps 200` is `--set train.max_steps=200`. The key is
    named here only; `help` may show it as {key}."""

    flag: str
    key: str
    help: str
    options: dict = field(default_factory=dict)  # argparse's type, choices, action, metavar
    value: Callable[[Any], Any] = lambda given: given  # the parsed value as the override writes it; None: unset

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(self.flag, help=self.help.format(key=self.key), **self.options)

    def override(self, args: argparse.Namespace) -> str | None:
        given = getattr(args, self.dest, None)
        value = None if given is None else self.value(given)
        return None if value is None else f"{self.key}={value}"


CONFIG_FLAGS = {f.flag: f for f in [
    ConfigFlag("--max-steps", "train.max_steps", "optimizer steps to train for ({key})", {"type": int}),
    ConfigFlag("--seed", "train.seed", "seed of the initial weights and the data order ({key})", {"type": int}),
    ConfigFlag("--threads", "train.threads", "torch threads ({key}); default: torch's count, lowered while other "
               "processes keep cores busy", {"type": int}),
    ConfigFlag("--device", "train.device", "{key}: auto, cpu, cuda, cuda:N"),
    ConfigFlag("--no-progress", "train.progress", "no progress bar (nor, when stdout is not a terminal, its dated "
               "count lines)", {"action": "store_true"}, value=lambda on: "false" if on else None),
    ConfigFlag("--objective", "train.objective", "{key}: causal (next token) or masked (missing tokens, "
               "bidirectional)", {"choices": ["causal", "masked"]}),
    ConfigFlag("--init-from", "train.init_from", "start from the weights of a Hugging Face Llama folder (lmforge "
               f"export, or a Llama of this shape) whose {tokenized.TOKENIZER_FILE} is the data's", {"metavar": "HF_FOLDER"},
               value=lambda folder: Path(folder).resolve()),
    ConfigFlag("--workers", "prepare.workers", "processes of the data stages ({key}; default one per core)",
               {"type": int}),
    ConfigFlag("--executor", "prepare.executor", "where the data stages run their tasks ({key}): local (a process "
               "pool) or ray (a Ray cluster: RAY_ADDRESS, else a local one)", {"choices": ["local", "ray"]}),
    ConfigFlag("--sizes", "scale.sizes", "knob values, comma-separated ({key}), e.g. 32,48,64,96,128",
               value=lambda sizes: f"[{sizes}]"),
    ConfigFlag("--knob", "scale.knob", "the size knob ({key})", {"choices": ["width", "depth"]}),
    ConfigFlag("--design", "scale.design", "IsoFLOP profiles, a sizes x tokens grid, or the runs that pin alpha and "
               "beta most per FLOP", {"choices": ["isoflop", "grid", "optimal"]}),
    ConfigFlag("--levels", "scale.levels", "isoflop: compute levels ({key})", {"type": int}),
    ConfigFlag("--points-per-size", "scale.points_per_size", "grid: token counts per size ({key})", {"type": int}),
    ConfigFlag("--parallel", "scale.parallel", "training processes at once ({key})", {"type": int}),
    ConfigFlag("--max-run-flops", "scale.max_run_flops", "optimal: no run above this 6ND ({key})",
               value=lambda text: _flops_arg(text, "--max-run-flops")),
    ConfigFlag("--cooldowns", "scale.cooldowns", "separate: one run per token count; branched: one WSD run per size, "
               "each token count a cooldown off it (needs train.schedule=wsd) ({key})",
               {"choices": ["separate", "branched"]}),
    ConfigFlag("--repeats", "scale.repeats", "cheapest runs trained again with another seed ({key})", {"type": int}),
    ConfigFlag("--prior", "scale.prior", "law the design is judged under: chinchilla, epoch2024, SWEEP or "
               f"{sweep.FIT_FILE} ({{key}})"),
    ConfigFlag("--noise", "scale.noise", "assumed run-to-run noise of a final loss, relative ({key})", {"type": float}),
    ConfigFlag("--target", "scale.targets", "report the forecast interval at N params on D tokens, e.g. 350k:4M "
               "(repeatable; {key})", {"action": "append", "metavar": "N:D"},
               value=lambda targets: f"[{','.join(targets)}]"),
]}


def _flags(p: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        CONFIG_FLAGS[flag].add_to(p)


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = "tiny") -> None:
    p.add_argument("--preset", help=f"named config: {', '.join(preset_names())} (default: the one --config "
                                     f"names, else {default_preset})")
    p.add_argument("--config", metavar="FILE", help="YAML config file, applied over the preset (a `preset:` "
                                                    "in it chooses the preset)")
    p.set_defaults(default_preset=default_preset)
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set train.lr=1e-3 --set model.n_layer=6 (repeatable)")
    _flags(p, "--max-steps", "--seed", "--threads", "--device", "--no-progress")


def _resolve(args: argparse.Namespace, out: str | None, sources: list[str] | None = None,
             base: Callable[[list[str]], Config] | None = None) -> Config:
    """The config a command runs with: preset, then --config (or `base(overrides)` in place of both when
    given), then --set, then the flags of CONFIG_FLAGS."""
    overrides = [*args.overrides, *filter(None, (f.override(args) for f in CONFIG_FLAGS.values()))]
    extra: dict = {}
    if out:
        extra.setdefault("run", {})["out"] = out
    if sources:
        extra.setdefault("data", {})["sources"] = list(sources)
        if list(sources) != [BUILTIN_SOURCE] and not sets_key(args.config, args.overrides, "data.max_bytes"):
            extra["data"]["max_bytes"] = 0  # named sources are read whole unless the user caps them
    if getattr(args, "kind", None):
        extra.setdefault("data", {})["kinds"] = list(args.kind)
    cfg = base(overrides) if base else load_config(args.preset, args.config, overrides, default_preset=args.default_preset)
    if extra:
        cfg = config_from_dict(merge_dicts(cfg.to_dict(), extra))
    return cfg


SWEEP_HELP = "a sweep folder (lmforge scale plan --out)"
RUN_HELP = "a run folder (the --out of lmforge train or run)"
DEVICE_HELP = "where the model runs: cpu (default), cuda or cuda:N"
SHAPE_HELP = {"layers": "transformer blocks", "width": "model width (d_model)", "heads": "attention heads",
              "kv-heads": "key/value heads (grouped-query attention; default: --heads)",
              "vocab": "vocabulary size (default 50257, GPT-2's)", "context": "tokens per sequence (default 2048)",
              "head-dim": "width of one head (default: width / heads)"}


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="take the model shape from an lmforge preset")
    p.add_argument("--config", metavar="FILE", help="take the model shape from an lmforge config file")
    p.add_argument("--params", help="parameter count N (e.g. 7B); with no shape flags a typical shape is assumed")
    for flag in SHAPE_HELP:
        p.add_argument(f"--{flag}", type=int, help=SHAPE_HELP[flag])
    p.add_argument("--mlp-hidden", type=int, help="SwiGLU hidden width (default: 8/3 width, a multiple of 64, as lmforge's model)")
    p.add_argument("--untied", action="store_true", help="an output head apart from the input embedding "
                                                          "(default: tied, as lmforge's model)")


def _hardware_args(p: argparse.ArgumentParser, count_help: str = "number of devices", count_default: int | None = 1) -> None:
    p.add_argument("--hardware", default="h100", help="catalogue name (h100, a100, tpu-v4, ...) or cpu (measured)")
    p.add_argument("--hardware-file", help="YAML file of extra hardware entries")
    p.add_argument("--count", type=int, default=count_default, help=count_help)
    p.add_argument("--mfu", type=float, help=f"model FLOPs utilisation (default {cost.DEFAULT_MFU})")
    p.add_argument("--price-per-hour", type=float, help="USD per device-hour (default: the catalogue's)")
    p.add_argument("--power-watts", type=float, help="watts per device (default: the catalogue's)")
    p.add_argument("--pue", type=float, default=hardware.DEFAULT_PUE, help="data-centre power usage effectiveness")
    p.add_argument("--grid-kg-per-kwh", type=float, default=hardware.DEFAULT_GRID_KG_PER_KWH, help="grid carbon intensity, kg CO2e/kWh")


def _shape(args: argparse.Namespace) -> cost.Shape:
    flags = {k: getattr(args, k) for k in ("layers", "width", "heads", "kv_heads", "vocab", "context", "head_dim",
                                           "mlp_hidden")}
    params = cost.parse_size(args.params, "--params") if args.params else 0.0
    if args.preset or args.config:
        cfg = load_config(args.preset, args.config)
        shape = cost.shape_from_model(cfg, flags["vocab"])
        if any(flags.values()) or params or args.untied:
            raise LmforgeError("give the model either as --preset/--config or by --params and shape flags, not both")
        return shape
    if flags["layers"] or flags["width"] or flags["heads"]:
        missing = [f"--{k}" for k in ("layers", "width", "heads") if not flags[k]]
        if missing:
            raise LmforgeError(f"a model shape needs {', '.join(missing)} too (or give only --params)")
        return cost.Shape(**{k: v for k, v in flags.items() if v}, tie_embeddings=not args.untied, params=params)
    if params:
        return cost.shape_from_params(params, flags["context"] or 2048, flags["vocab"] or 50257, not args.untied)
    raise LmforgeError("describe the model: --params 7B, or --layers/--width/--heads, or --preset NAME")


def _show(result: figures.Result, as_json: bool = False) -> int:
    print(result.to_json() if as_json else result)
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from lmforge.cost_results import KvCache, TrainingEstimate

    cost.check_cost_flags(vars(args))
    shape = _shape(args)
    if args.what == "kv-cache":
        return _show(KvCache(shape, max(args.batch, 1), 4 if args.precision == "fp32" else 2), args.json)
    if not args.tokens:
        raise LmforgeError("--tokens is required (e.g. --tokens 300B)")
    mfu = args.mfu
    if args.from_run:
        measured = cost.from_run(args.from_run)
        if not mfu and measured["device"] == "cpu" and args.hardware.lower() != "cpu":
            warn(f"--from-run {args.from_run}: its MFU ({measured['mfu']:.1%}) was measured on a CPU, and a "
                 f"{args.hardware} reaches another; train a step there (or pass --mfu) for a calibrated estimate")
        mfu = mfu or measured["mfu"]
    hw = hardware.find_hardware(args.hardware, args.hardware_file)
    est = cost.estimate(shape, args.tokens, hw, args.count, mfu or cost.DEFAULT_MFU, args.batch, args.precision,
                        args.optimizer, args.zero_stage, args.recompute, args.tensor_parallel, args.price_per_hour,
                        args.power_watts, args.pue, args.grid_kg_per_kwh)
    return _show(TrainingEstimate(est, shape, hw, args.recompute, args.pue, args.grid_kg_per_kwh), args.json)


def _plan(args: argparse.Namespace) -> int:
    from lmforge.cost_results import Plan

    cost.check_cost_flags(vars(args))
    law = load_law(args.law)
    hw = hardware.find_hardware(args.hardware, args.hardware_file)
    result = cost.plan_run(args.budget, hw, args.count, law, args.mfu or cost.DEFAULT_MFU, args.precision,
                           args.price_per_hour, args.context, args.pue, args.grid_kg_per_kwh, args.days)
    return _show(Plan(result, args.law, hw), args.json)


def _eval(args: argparse.Namespace) -> int:
    import lmforge
    from lmforge.evaluation import Evaluation
    from lmforge.tasks.results import TaskScores

    if args.tasks:
        return _show(TaskScores(lmforge.evaluate_tasks(args.run_dir, args.tasks, device=args.device)), args.json)
    result = lmforge.evaluate(args.run_dir, max_tokens=args.max_tokens, device=args.device, objective=args.objective)
    return _show(Evaluation(result, args.run_dir), args.json)


def _fill(args: argparse.Namespace) -> int:
    import lmforge
    from lmforge.tasks.results import Filled

    choices = [c.strip() for c in args.choices.split(",")] if args.choices is not None else None
    return _show(Filled(lmforge.fill(args.run_dir, args.text, choices, args.top_k, args.device)), args.json)


def _launcher() -> str:
    """How this process was started: `lmforge`, or torchrun with this node's process count."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return "lmforge"
    one_node = os.environ.get("WORLD_SIZE") == os.environ.get("LOCAL_WORLD_SIZE")  # one node's processes, or every node's
    nproc = f"--nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE')}" if one_node else "<the same options>"
    return f"torchrun {nproc} -m lmforge"


def _command_again(args: argparse.Namespace, *flags: str) -> str:
    """This command line, with `flags` added where it lacks them: what the user runs to go on."""
    return f"{_launcher()} {shlex.join([*args.argv, *(f for f in flags if f not in args.argv)])}"


def _check_finished(result: dict, args: argparse.Namespace, *flags: str) -> None:
    """A training stopped by a signal saved its checkpoint; the command still ends as interrupted."""
    if result.get("interrupted"):
        raise Interrupted(f"training stopped at step {result['step']} with a checkpoint; "
                          f"continue with:\n{_command_again(args, *flags)}")


def _run(args: argparse.Namespace) -> int:
    import lmforge

    _check_finished(lmforge.run(_resolve(args, args.out, args.sources or None)), args)  # a rerun resumes
    return 0


def _prepare(args: argparse.Namespace) -> int:
    import lmforge

    cfg = _resolve(args, None, args.sources or None)
    lmforge.prepare(cfg.data.sources, args.out, cfg.prepare, cfg.data, progress=not args.no_progress, force=args.force)
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    import lmforge

    cfg = _resolve(args, None, args.sources or None)
    lmforge.tokenize(cfg.data, cfg.tokenizer, args.out, force=args.force, progress=not args.no_progress,
                     workers=cfg.prepare.workers, executor=cfg.prepare.executor)
    return 0


def _train(args: argparse.Namespace) -> int:
    import lmforge
    from lmforge.training.trainer import saved_run_config

    if args.allow_new_tokenizer and not args.init_from:
        raise LmforgeError("--allow-new-tokenizer goes with --init-from HF_FOLDER (the model whose tokenizer differs)")
    if args.resume and args.out and not (args.config or args.preset or args.data) and RunDir(args.out).config_path.is_file():
        cfg = _resolve(args, args.out, base=lambda overrides: saved_run_config(args.out, overrides))  # all from RUN
    else:
        cfg = _resolve(args, args.out)
    summary = lmforge.train(cfg, data=args.data, resume=args.resume, stop_at=args.stop_at, more_steps=args.more_steps,
                            allow_new_tokenizer=args.allow_new_tokenizer)
    if summary.get("interrupted"):  # the run folder holds all it needs: no other flag to repeat
        raise Interrupted(f"training stopped at step {summary['step']} with a checkpoint; continue with:\n"
                          f"{_launcher()} {shlex.join(['train', '--out', args.out or summary['run_dir'], '--resume'])}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from lmforge.export import Exported, export

    return _show(Exported(export(args.run_dir, args.out, args.format, force=args.force)), args.json)


def _report(args: argparse.Namespace) -> int:
    from lmforge.report import report

    print(f"report: {report(args.run_dir, args.format, args.open)}")
    return 0


def _args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN|SWEEP", help="a run folder, or a sweep folder (lmforge scale plan --out)")
    p.add_argument("--format", default="html", choices=["html", "md"],
                   help="html: one self-contained page (default); md: Markdown with PNGs in report-files/")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("out", metavar="OUT", help="folder to write (new, empty or an earlier export; never inside a run folder)")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: a Hugging Face transformers Llama folder")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUT that holds no export: lmforge's files go beside yours, never over them")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _generate(args: argparse.Namespace) -> int:
    import lmforge

    print(lmforge.generate(args.run_dir, args.prompt, args.max_tokens, args.temperature, args.top_k,
                           args.top_p, args.seed, args.device))
    return 0


def _flops_arg(text: str | None, flag: str) -> float | None:
    """'3e13', '3e13flops', '30T' -> FLOPs."""
    if text is None:
        return None
    t = str(text).strip().lower()
    return cost.parse_size(t[:-5] if t.endswith("flops") else t, flag)


def _target_args(q: argparse.ArgumentParser, verb: str) -> None:
    q.add_argument("--params", help="N, e.g. 2M (verify trains the family's nearest model)")
    q.add_argument("--tokens", help="D, e.g. 40M")
    q.add_argument("--flops", help=f"C: {verb} the compute-optimal N and D of the fit")
    q.add_argument("--json", action="store_true", help="print one JSON object")


def _scale_plan(args: argparse.Namespace) -> int:
    import lmforge.scaling as scaling
    from lmforge.scaling.results import SweepPlan

    from lmforge.scaling.tune import describe, sweep_overlay

    base = None
    found = sweep_overlay(args.out)
    if found:  # SWEEP/tune/tuned.yaml goes over the preset and --config, under --set and the flags
        path, tuned = found
        base = lambda overrides: load_config(args.preset, args.config, [tuned, *overrides],  # noqa: E731
                                             default_preset=args.default_preset)
        print(f"plan: using {path} (lmforge scale tune): {describe(tuned)}", file=sys.stderr if args.json else sys.stdout)
    result = scaling.plan(_resolve(args, None, base=base), _flops_arg(args.budget, "--budget"), args.out, args.within)
    return _show(SweepPlan(result, args.out), args.json)


def _scale_coordcheck(args: argparse.Namespace) -> int:
    from lmforge.scaling.coordcheck import coordinate_check
    from lmforge.scaling.results import CoordCheck
    from lmforge.folders.sweep import SweepDir
    from lmforge.training.device import set_threads

    out = args.out
    if args.sweep:
        if args.preset or args.config or args.overrides:
            raise LmforgeError(f"scale coordcheck: the config comes from SWEEP/{sweep.SWEEP_FILE}; drop --preset, --config "
                               "and --set, or the SWEEP")
        cfg = SweepDir(args.sweep).load()[0]
        out = out or str(SweepDir(args.sweep).coordcheck_dir)
    else:
        cfg = _resolve(args, None)
    widths = [32, 64, 128, 256, 512]
    if args.widths:
        widths = [_positive_int(w, "--widths") for w in args.widths.split(",")]
    elif args.sweep and cfg.scale.knob == "width":
        widths = list(cfg.scale.sizes)
    set_threads(cfg.train.threads)
    result = coordinate_check(cfg, widths, args.steps, args.layers, args.context, args.batch, args.vocab, out)
    return _show(CoordCheck(result), args.json)


def _scale_tune(args: argparse.Namespace) -> int:
    from lmforge.config import with_data
    from lmforge.folders.sweep import SweepDir
    from lmforge.scaling import tune
    from lmforge.scaling.results import Tune
    from lmforge.training.device import set_threads

    folder = args.data[0] if len(args.data) == 1 else None
    sweep_dir = folder if folder and SweepDir(folder).is_sweep() else None
    if sweep_dir:
        if args.preset or args.config or args.overrides:
            raise LmforgeError(f"scale tune: the config comes from SWEEP/{sweep.SWEEP_FILE}; drop --preset, --config "
                               "and --set, or the SWEEP")
        cfg, out = SweepDir(sweep_dir).load()[0], args.out or str(SweepDir(sweep_dir).tune_dir)
    elif not args.out:
        raise LmforgeError("scale tune: give --out DIR (or a SWEEP folder, which the tune writes into: SWEEP/tune)")
    else:
        is_tokens = folder is not None and tokenized.is_tokenized(folder)
        cfg, out = _resolve(args, None, None if is_tokens else args.data), args.out
        if is_tokens:
            cfg = with_data(cfg, tokenized=str(Path(folder).resolve()))
    if args.lrs and (args.lr_min or args.lr_max):
        raise LmforgeError("scale tune: give --lrs or --lr-min/--lr-max, not both")
    if args.lrs:
        lrs = [_positive_float(x, "--lrs") for x in args.lrs.split(",")]
    else:  # x2 steps around the config's lr
        lrs = tune.lr_grid(args.lr_min or cfg.train.lr / 8, args.lr_max or cfg.train.lr * 4)
    width = args.width or (min(cfg.scale.sizes) if sweep_dir and cfg.scale.knob == "width" else cfg.model.n_embd)
    set_threads(cfg.train.threads)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print  # stdout holds the one JSON object
    if sweep_dir:
        cfg = tune.sweep_proxy(cfg, sweep_dir, width, log)
    return _show(Tune(tune.tune(cfg, width, lrs, args.steps, out, log), sweep_dir), args.json)


def _positive_float(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and value != float("inf")):
        raise LmforgeError(f"{flag}: {text.strip()!r} is not a positive number (give e.g. 1e-3,2e-3,4e-3)")
    return value


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise LmforgeError(f"{flag}: {text.strip()!r} is not a positive whole number (give e.g. 32,64,128)")
    return value


def _scale(args: argparse.Namespace) -> int:
    import lmforge.scaling as scaling
    from lmforge.scaling import results
    from lmforge.scaling.runner import sweep_status

    if args.action == "plan":
        return _scale_plan(args)
    if args.action == "coordcheck":
        return _scale_coordcheck(args)
    if args.action == "tune":
        return _scale_tune(args)
    if args.action == "run":
        rows = scaling.run(args.sweep, args.parallel, args.threads, interval=args.interval, device=args.device)
        return _show(results.SweepStatus(rows))
    if args.action == "status":
        return _show(results.SweepStatus(sweep_status(args.sweep)), args.json)
    if args.action == "fit":
        fit = scaling.fit(args.source, args.bootstrap, args.out, plots=not args.no_plots, interval=args.interval,
                          fixed_e=args.fixed_e, form=args.form)
        return _show(results.Fit(fit), args.json)
    params = cost.parse_size(args.params, "--params") if args.params else None
    tokens = cost.parse_size(args.tokens, "--tokens") if args.tokens else None
    flops = _flops_arg(args.flops, "--flops")
    if args.action == "predict":
        return _show(results.Prediction(scaling.predict(args.source, params, tokens, flops, args.within)), args.json)
    verified = scaling.verify(args.sweep, params, tokens, flops, args.threads, device=args.device,
                              within_pct=args.within)
    return _show(results.Verification(verified), args.json)


def _kind_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", action="append", metavar="[SOURCE=]KIND",
                   help="clean a source's documents as prose (book and play are prose too), web or code (data.kinds; "
                        "repeatable; without SOURCE= every source); default: guessed per file or record")


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    _kind_arg(p)
    p.add_argument("--out", help="run folder (default: run.out of the preset, runs/tiny)")
    _flags(p, "--objective", "--workers", "--executor")
    _config_args(p)


def _force_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"write into a non-empty --out that holds no {what}: lmforge's files go beside yours, never over them")


def _args_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders, globs: text, JSONL, Parquet, WARC (default: built-in)")
    _kind_arg(p)
    p.add_argument("--out", required=True, help=f"prepared folder to write ({prepared.CLEAN}/, {prepared.REJECTED}/, {prepared.REPORT})")
    _flags(p, "--workers", "--executor")
    _force_arg(p, "prepared folder")
    _config_args(p)


def _args_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    p.add_argument("--out", required=True, help="tokenized folder to write")
    _flags(p, "--workers", "--executor")
    _force_arg(p, "tokenized folder")
    _config_args(p)


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", metavar="PATH", help="a tokenized folder, or raw sources (default: config)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out, with the config, data and tokens saved there "
                        "(unless --config, --preset or --data is given); a higher --max-steps extends a finished run")
    p.add_argument("--more-steps", type=int, metavar="N",
                   help="with --resume: train N steps past the checkpoint (the lr schedule continues at its final lr)")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop after STEP with a checkpoint (resume later)")
    _flags(p, "--init-from", "--objective")
    p.add_argument("--allow-new-tokenizer", action="store_true",
                   help="with --init-from: a model of another tokenizer; its embedding is remapped to the data's "
                        "(tokens both hold keep their rows, the rest start fresh)")
    _config_args(p)


def _args_estimate(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["train", "kv-cache"], default="train",
                   help="train: a training run (default); kv-cache: the key/value cache of inference at full context")
    _shape_args(p)
    p.add_argument("--tokens", help="training tokens D (e.g. 300B, 1.4T)")
    p.add_argument("--batch", type=int, default=0, help="sequences per step (global); sets the micro-batch per device")
    _hardware_args(p)
    p.add_argument("--precision", default="bf16-mixed", help="bf16-mixed (default), fp16-mixed, bf16-mixed-fp32-grads, fp32, bf16")
    p.add_argument("--optimizer", default="adamw", help="adamw, sgd or muon")
    p.add_argument("--zero-stage", type=int, default=3, help="ZeRO stage 0-3 (3 = FSDP), default 3")
    p.add_argument("--recompute", default="none", help="activation recomputation (as train.recompute): none, selective "
                   "(norms, rotary, SwiGLU gate; no extra matmul) or full (each block's forward again, less its last matmul)")
    p.add_argument("--tensor-parallel", type=int, default=1, help="devices each layer is split over (default 1)")
    p.add_argument("--from-run", metavar="RUN", help="take the MFU measured by an lmforge run")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", required=True, help="e.g. 10000usd, 5e21flops, 2000gpu-hours")
    p.add_argument("--law", default="chinchilla", help="chinchilla (Hoffmann 2022), epoch2024 (Besiroglu 2024 re-fit), "
                   f"or a fitted law: SWEEP or SWEEP/{sweep.FIT_FILE} from lmforge scale fit")
    p.add_argument("--context", type=int, default=2048, help="tokens per sequence of the planned model (default 2048)")
    p.add_argument("--precision", default="bf16-mixed", help="bf16-mixed (default), fp16-mixed, "
                   "bf16-mixed-fp32-grads, fp32, bf16: sets the device's peak FLOP/s and the bytes per parameter")
    p.add_argument("--days", type=float, default=cost.DEFAULT_PLAN_DAYS,
                   help=f"wall-clock the plan must finish in when --count is not given (default {cost.DEFAULT_PLAN_DAYS:g})")
    _hardware_args(p, "devices (default: the fewest that finish within --days)", None)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _args_scale_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", required=True, help="total training FLOPs, e.g. 3e13 or 3e13flops")
    _flags(p, "--sizes", "--knob", "--design", "--levels", "--points-per-size", "--parallel", "--max-run-flops",
           "--cooldowns", "--repeats", "--prior", "--noise", "--target")
    p.add_argument("--within", type=float, metavar="PCT", help="say whether each --target can be forecast within PCT%%")
    p.add_argument("--out", metavar="SWEEP", help=f"write SWEEP/{sweep.SWEEP_FILE}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _config_args(p, default_preset="scaling")


def _args_scale_coordcheck(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", metavar="SWEEP", help="take the config (and widths, for a width knob) from "
                   f"SWEEP/{sweep.SWEEP_FILE} and write into SWEEP/{sweep.COORDCHECK}/")
    p.add_argument("--widths", help="model widths, comma-separated (default 32,64,128,256,512; each a multiple of "
                   "model.n_head)")
    p.add_argument("--steps", type=int, default=10, help="training steps, at train.lr held constant (default 10)")
    p.add_argument("--layers", type=int, default=2, help="depth of the probe models (default 2)")
    p.add_argument("--context", type=int, default=64, help="tokens per sequence (default 64)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--vocab", type=int, default=512, help="vocabulary of the Zipf-distributed tokens (default 512)")
    p.add_argument("--out", metavar="DIR", help="write coordcheck.json and coordcheck.png here (default: "
                   "SWEEP/coordcheck with a SWEEP, else nothing written)")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    _config_args(p)


def _args_scale_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="*", metavar="SOURCE|TOKENIZED|SWEEP",
                   help="raw sources, a tokenized folder, or a sweep folder (its config and tokens; writes SWEEP/tune, "
                        "which scale plan and scale run then use); default: the config's data.sources")
    p.add_argument("--width", type=int, help="proxy width: model.n_embd of the tuned model, which becomes "
                   "model.mup_base_width (default: the sweep's smallest width, else model.n_embd)")
    p.add_argument("--lrs", help="learning rates, comma-separated (e.g. 1e-3,2e-3,4e-3,8e-3)")
    p.add_argument("--lr-min", type=float, help="smallest lr of a x2 grid (default: train.lr / 8)")
    p.add_argument("--lr-max", type=float, help="largest lr of a x2 grid (default: train.lr x 4)")
    p.add_argument("--steps", type=int, default=300, help="training steps of each proxy run (default 300)")
    p.add_argument("--out", metavar="DIR", help=f"write tune.json, tune.png and tuned.yaml here (default with a "
                   f"SWEEP: SWEEP/{sweep.TUNE})")
    p.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    _config_args(p, default_preset="scaling")


def _args_scale_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP", help=SWEEP_HELP)
    p.add_argument("--parallel", type=int, help="processes at once (default: the sweep's scale.parallel)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--device", help="train on this device (cpu, cuda, cuda:N) instead of the sweep's train.device")


def _args_scale_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP", help=SWEEP_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _args_scale_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SWEEP|POINTS.csv", help="a sweep folder, or a CSV with params, tokens, loss[, flops]")
    p.add_argument("--json", action="store_true", help="one JSON object: E, A, B, alpha, beta, a, b, intervals, ...")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: scale.bootstrap; 200 for a CSV)")
    p.add_argument("--out", help=f"folder for {sweep.FIT_FILE}, {sweep.POINTS_FILE} and {sweep.PLOTS}/ (default: the sweep; none for a CSV)")
    p.add_argument("--no-plots", action="store_true", help="write no plots/")
    p.add_argument("--interval", choices=["parametric", "cases"], help="bootstrap: refit simulated noise at the same "
                   "points (parametric, default) or resample the points (cases)")
    p.add_argument("--fixed-e", type=float, help="approach fixed_e: hold E at this (default: scale.fixed_e, or L(C)'s c)")
    p.add_argument("--form", choices=["auto", "additive", "kaplan"], help="law form (default: scale.form, auto: the "
                   "form whose backtests in N and D err less)")


def _args_scale_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar=f"SWEEP|{sweep.FIT_FILE}", help=f"a fitted sweep folder, or a {sweep.FIT_FILE} of lmforge scale fit")
    _target_args(p, "predict at")
    p.add_argument("--within", type=float, metavar="PCT", help="call it within PCT%% only if its interval allows")


def _args_scale_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP", help=SWEEP_HELP)
    _target_args(p, "train")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--device", help="train the target on this device (cpu, cuda, cuda:N)")
    p.add_argument("--within", type=float, metavar="PCT", help="report whether the forecast was within PCT%%, when "
                   "its interval allows the claim")


def _args_scale(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    for name, help, arguments in (
        ("plan", "design a sweep within a FLOP budget, with its estimated wall-clock here", _args_scale_plan),
        ("coordcheck", "coordinate check: activation and logit scales over the first steps across widths, standard "
                       "vs muP parameterisation (flat under muP)", _args_scale_coordcheck),
        ("tune", "find the best learning rate on a narrow proxy under muP and write tuned.yaml, a config a wider "
                 "run or a sweep picks up", _args_scale_tune),
        ("run", "train every unfinished run of a sweep (resumes; skips finished runs)", _args_scale_run),
        ("status", "every run of a sweep: state, steps, loss", _args_scale_status),
        ("fit", "fit L(N, D), IsoFLOP profiles and L(C) to a sweep or a CSV of points", _args_scale_fit),
        ("predict", "predicted loss at (N, D) or at the compute-optimal point of C", _args_scale_predict),
        ("verify", "train the target model and compare predicted and actual loss", _args_scale_verify),
    ):
        arguments(sub.add_parser(name, help=help))


def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tasks", metavar="FILE.jsonl",
                   help='multiple-choice cloze tasks {"context": "... [MASK] ...", "choices": [...], "answer": i} '
                        "per line, or builtin (the file shipped with lmforge)")
    p.add_argument("--objective", choices=["causal", "masked"],
                   help="insist on this objective: masked = masked-token loss and accuracy (a masked run only)")
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate at most this many tokens (0 = all)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue (quote it; spaces count)")
    p.add_argument("--max-tokens", type=int, default=100, help="tokens to sample at most (>= 0)")
    p.add_argument("--temperature", type=float, default=0.8, help="finite, >= 0; 0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the K likeliest tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: the likeliest tokens holding P of the mass, "
                                                           "in (0, 1] (1 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0): the same seed, the same text")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)


def _args_fill(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
    p.add_argument("text", metavar="TEXT", help='a text with one [MASK], e.g. "the next [MASK] in a sentence"')
    p.add_argument("--choices", help="comma-separated fillers to rank (multi-token ones are scored whole)")
    p.add_argument("--top-k", type=int, default=10, help="fillers to show without --choices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)


def _args_inspect(p: argparse.ArgumentParser) -> None:
    _inspect_args(p.add_subparsers(dest="what", required=True, metavar="WHAT"))


def _inspect_args(sub) -> None:
    def command(name: str, help: str, aliases=(), vectors: bool = False):
        p = sub.add_parser(name, help=help, aliases=list(aliases))
        p.set_defaults(what=name)
        p.add_argument("run_dir", metavar="RUN", help=RUN_HELP)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--device", default="cpu", help=DEVICE_HELP)
        if vectors:
            p.add_argument("--vectors", choices=["static", "contextual"], default="static",
                           help="static: mean input embedding of the word's tokens; contextual: mean hidden state "
                                "over its occurrences in the validation text")
            p.add_argument("--layer", type=int, help="layer of contextual vectors (0 = embedding; default: middle)")
        return p

    p = command("neighbours", "nearest words by cosine similarity", ["neighbors"], vectors=True)
    p.add_argument("word", help="a word of the run's text")
    p.add_argument("-k", type=int, default=10, help="how many neighbours")
    p = command("similarity", "cosine similarity of two words", vectors=True)
    p.add_argument("words", nargs=2, metavar="WORD", help="two words of the run's text")
    p = command("analogy", "A is to B as C is to ?", vectors=True)
    p.add_argument("words", nargs=3, metavar="WORD", help="A B C: the words of 'A is to B as C is to ?'")
    p.add_argument("-k", type=int, default=5, help="how many answers")
    p = command("map", "2-D map of word vectors (PNG with labels + interactive HTML)", vectors=True)
    p.add_argument("words", nargs="*", metavar="WORD", help="words to place (default: the --top most frequent)")
    p.add_argument("--top", type=int, default=100, help="without WORDs: the most frequent words to place")
    p.add_argument("--method", choices=["auto", "pca", "umap"], default="auto",
                   help="auto: UMAP if umap-learn is installed, else PCA")
    p.add_argument("--out", help="folder for the files (default RUN/inspect)")
    p = command("layers", "logit lens: each layer's top predictions for TEXT (table + heat-map PNG)")
    p.add_argument("text", help="the text whose positions are read")
    p.add_argument("-k", type=int, default=3, help="predictions kept per position and layer (JSON)")
    p.add_argument("--out", help="folder for the PNG (default RUN/inspect)")
    p = command("attention", "attention maps for TEXT as a PNG (all heads of a layer, or one head)")
    p.add_argument("text", help="the text whose attention is drawn")
    p.add_argument("--layer", type=int, help="1..n_layer (default: the last)")
    p.add_argument("--head", type=int, help="0..n_head-1 (default: all heads in a grid)")
    p.add_argument("--out", help="folder for the PNG (default RUN/inspect)")
    p = command("sentences", "one vector per line of FILE and the most similar pairs")
    p.add_argument("file", metavar="FILE", help="a text file, one sentence a line")
    p.add_argument("--layer", type=int, help="layer whose hidden states are mean-pooled (default: middle)")
    p.add_argument("--top", type=int, default=10, help="pairs to show")
    p.add_argument("--out", help="folder for sentences.npy (default RUN/inspect)")


def _inspect(args: argparse.Namespace) -> int:
    from lmforge.inspection import Inspector
    from lmforge.inspection.results import Inspection

    insp = Inspector(args.run_dir, device=args.device)
    what = args.what
    vec = {"vectors": args.vectors, "layer": args.layer} if hasattr(args, "vectors") else {}
    words = list(getattr(args, "words", None) or [])
    if what == "neighbours":
        result = insp.neighbours(args.word, args.k, **vec)
    elif what == "similarity":
        result = insp.similarity(*args.words, **vec)
    elif what == "analogy":
        result = insp.analogy(*args.words, k=args.k, **vec)
    elif what == "map":
        result = insp.word_map(args.words or None, args.top, method=args.method, out=args.out, **vec)
    elif what == "layers":
        result = insp.logit_lens(args.text, args.k, out=args.out)
    elif what == "attention":
        result = insp.attention(args.text, args.layer, args.head, out=args.out)
    else:
        result = insp.sentences(args.file, args.layer, args.top, out=args.out)
    return _show(Inspection(what, result, words, vec.get("vectors")), args.json)


@dataclass(frozen=True)
class Command:
    """One `lmforge NAME`: its help line, the function adding its arguments, the function running it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS = [
    Command("run", "the whole pipeline: tokenize, train, evaluate, sample (built-in corpus by default)",
            _args_run, _run),
    Command("prepare", "clean sources: repair, filter, redact, deduplicate (nothing lost)",
            _args_prepare, _prepare),
    Command("tokenize", "train the BPE tokenizer and encode sources into token shards",
            _args_tokenize, _tokenize),
    Command("train", "train a model on a tokenized folder or raw sources",
            _args_train, _train),
    Command("estimate", "FLOPs, time, cost, energy, CO2 and memory of a training run (or a KV cache)",
            _args_estimate, _estimate),
    Command("plan", "the compute-optimal model size and tokens for a budget",
            _args_plan, _plan),
    Command("scale", "scaling laws: plan a sweep of small models, train it, fit, predict, verify",
            _args_scale, _scale),
    Command("eval", "validation loss, perplexity and bits per byte of a run; cloze tasks",
            _args_eval, _eval),
    Command("generate", "sample a continuation of PROMPT from a run",
            _args_generate, _generate),
    Command("fill", "fill the [MASK] in TEXT: the likeliest fillers, or rank --choices",
            _args_fill, _fill),
    Command("inspect", "look inside a run: word neighbours, maps, logit lens, attention, sentences",
            _args_inspect, _inspect),
    Command("report", "the whole run (or sweep) on one self-contained HTML page, or Markdown",
            _args_report, _report),
    Command("export", "write a run's model as a Hugging Face (transformers) Llama folder",
            _args_export, _export),
]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (as every other user error is), not the usage block."""

    def error(self, message: str):
        hint = "; a negative number needs '=' (--flag=-1)" if "expected one argument" in message else ""
        print(f"lmforge: error: {self.prog}: {message}{hint} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lmforge", description="Train language models from raw text, end to end.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        command.arguments(p)
        p.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 the user's input is wrong (one line says which and what to do), 130
    interrupted (Ctrl-C; SIGTERM to a training, which saves a checkpoint and says how to go on), 141
    stdout closed early (`| head`), 1 a bug (with its traceback, which whoever fixes it needs)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        try:
            return args.handler(args)
        finally:
            sys.stdout.flush()  # a closed pipe shows here rather than at exit, where Python would complain
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line rather than one per rank
            print(f"lmforge: interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout has gone (`lmforge prepare ... | head -2`): stop as `yes | head` does,
        # quietly and with the status a shell gives a process ended by SIGPIPE (128 + 13), so that
        # `set -o pipefail` still sees the output was cut short. stdout goes to /dev/null first, or
        # Python's final flush at exit would fail again and print a warning (Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except PermissionError as e:
        # a folder or file of another user's (a run whose files are 0600, a read-only --out or cache):
        # the user's to fix, whichever reader or writer met it first
        print(f"lmforge: error: cannot {'open' if e.filename else 'use'} {e.filename or 'a file'}: permission "
              f"denied; make it readable (and its folder writable where lmforge writes), or copy it", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
