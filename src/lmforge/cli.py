"""The `lmforge` command: parse, load the config, call one stage function.

Errors the user can fix (`LmforgeError`) print one line and exit with code 2; an interrupted
command exits with 130 (see `main`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

from lmforge import cost, figures
from lmforge.config import BUILTIN_SOURCE, Config, config_from_dict, load_config, merge_dicts, preset_names, sets_key
from lmforge.errors import Interrupted, LmforgeError
from lmforge.run_dir import RunDir, warn


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = "tiny") -> None:
    p.add_argument("--preset", help=f"named config: {', '.join(preset_names())} (default: the one --config "
                                     f"names, else {default_preset})")
    p.add_argument("--config", metavar="FILE", help="YAML config file, applied over the preset (a `preset:` "
                                                    "in it chooses the preset)")
    p.set_defaults(default_preset=default_preset)
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set train.lr=1e-3 --set model.n_layer=6 (repeatable)")
    p.add_argument("--max-steps", type=int, help="train.max_steps")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--threads", type=int, help="torch threads (train.threads); default: torch's count, lowered while other processes keep cores busy")
    p.add_argument("--device", help="train.device: auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (nor, when stdout is not a terminal, its dated count lines)")


def _resolve(args: argparse.Namespace, out: str | None, sources: list[str] | None = None,
             base: Callable[[list[str]], Config] | None = None) -> Config:
    """The config the flags name; `base(overrides)` in place of the preset and --config when given."""
    overrides = list(args.overrides)
    for flag, key in (("max_steps", "train.max_steps"), ("seed", "train.seed"), ("threads", "train.threads"),
                      ("device", "train.device"), ("workers", "prepare.workers"), ("objective", "train.objective")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.no_progress:
        overrides.append("train.progress=false")
    extra: dict = {}
    if out:
        extra.setdefault("run", {})["out"] = out
    if sources:
        extra.setdefault("data", {})["sources"] = list(sources)
        if list(sources) != [BUILTIN_SOURCE] and not sets_key(args.config, args.overrides, "data.max_bytes"):
            extra["data"]["max_bytes"] = 0  # named sources are read whole unless the user caps them
    cfg = base(overrides) if base else load_config(args.preset, args.config, overrides, default_preset=args.default_preset)
    if extra:
        cfg = config_from_dict(merge_dicts(cfg.to_dict(), extra))
    return cfg


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="take the model shape from an lmforge preset")
    p.add_argument("--config", metavar="FILE", help="take the model shape from an lmforge config file")
    p.add_argument("--params", help="parameter count N (e.g. 7B); with no shape flags a typical shape is assumed")
    for flag in ("layers", "width", "heads", "kv-heads", "vocab", "context", "head-dim"):
        p.add_argument(f"--{flag}", type=int)
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
    p.add_argument("--pue", type=float, default=1.1, help="data-centre power usage effectiveness")
    p.add_argument("--grid-kg-per-kwh", type=float, default=0.385, help="grid carbon intensity, kg CO2e/kWh")


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


def _estimate(args: argparse.Namespace) -> int:
    cost.check_cost_flags(vars(args))
    shape = _shape(args)
    if args.what == "kv-cache":
        nbytes = cost.kv_cache_bytes(shape, max(args.batch, 1), shape.context,
                                     4 if args.precision == "fp32" else 2)
        result = {"kv_cache_bytes": nbytes, "kv_cache_gib": nbytes / 2**30, "batch": max(args.batch, 1),
                  "context": shape.context, "layers": shape.layers, "kv_heads": shape.kv_heads, "head_dim": shape.head_dim}
        print(figures.dumps(result) if args.json else
              f"KV cache: {nbytes / 2**30:.3f} GiB for batch {result['batch']} x {shape.context} tokens")
        return 0
    if not args.tokens:
        raise LmforgeError("--tokens is required (e.g. --tokens 300B)")
    mfu = args.mfu
    if args.from_run:
        measured = cost.from_run(args.from_run)
        if not mfu and measured["device"] == "cpu" and args.hardware.lower() != "cpu":
            warn(f"--from-run {args.from_run}: its MFU ({measured['mfu']:.1%}) was measured on a CPU, and a "
                 f"{args.hardware} reaches another; train a step there (or pass --mfu) for a calibrated estimate")
        mfu = mfu or measured["mfu"]
    hw = cost.find_hardware(args.hardware, args.hardware_file)
    est = cost.estimate(shape, args.tokens, hw, args.count, mfu or cost.DEFAULT_MFU, args.batch, args.precision,
                        args.optimizer, args.zero_stage, args.recompute, args.tensor_parallel, args.price_per_hour,
                        args.power_watts, args.pue, args.grid_kg_per_kwh)
    if args.json:
        print(figures.dumps(est.to_dict()))
        return 0
    m = est.memory_gb
    rows = [
        ("model", f"{est.params:.4g} parameters, {shape.layers} layers, width {shape.width}, {shape.heads} heads "
                  f"({shape.kv_heads} KV), context {shape.context}"),
        ("tokens", f"{est.tokens:.4g}"),
        ("compute", f"6ND {est.flops_6nd:.4g} FLOPs; exact {est.flops_exact:.4g} (x{est.exact_over_6nd:.3f})"
                    + (f"; {args.recompute} recomputation runs {est.flops_hardware:.4g} (HFU {est.hfu:.0%})"
                       if est.flops_hardware != est.flops_exact else "")),
        ("time", f"{est.days:,.2f} days on {est.count} x {est.hardware} at MFU {est.mfu:.0%}; "
                 f"{est.device_hours:,.0f} device-hours"),
        ("money", f"${est.cost_usd:,.0f}"),
        ("energy", f"{est.energy_kwh:,.0f} kWh (PUE {args.pue}); {est.tco2e:,.1f} tCO2e at {args.grid_kg_per_kwh} kg/kWh"),
        ("memory/device", f"weights {m['weights']:.2f} + gradients {m['gradients']:.2f} + optimizer {m['optimizer']:.2f} "
                          f"+ activations {m['activations']:.2f} = {m['total']:.2f} GB of {hw.memory_gb:g} "
                          f"({'fits' if est.fits else 'does NOT fit'}); fewest devices: {est.min_devices or 'n/a'}"),
    ]
    for k, v in rows:
        print(f"{k:>14}  {v}")
    for note in est.notes:
        print(f"{'note':>14}  {note}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    cost.check_cost_flags(vars(args))
    law = cost.load_law(args.law)
    hw = cost.find_hardware(args.hardware, args.hardware_file)
    result = cost.plan(args.budget, hw, args.count, law, args.mfu or cost.DEFAULT_MFU, args.precision,
                       args.price_per_hour, args.context, args.pue, args.grid_kg_per_kwh, args.days)
    if args.json:
        print(figures.dumps(result))
        return 0
    e = result["estimate"]
    print(f"budget {args.budget} = {result['budget_flops']:.3g} FLOPs ({result['budget_as']})")
    print(f"compute-optimal ({args.law}, C = 6ND as in the papers): {result['params']:.3g} parameters on "
          f"{result['tokens']:.3g} tokens ({result['tokens_per_param']:.1f} tokens/parameter), "
          f"predicted loss {result['predicted_loss']:.3f}")
    print(f"plan: {result['count']:,} x {hw.name} ({result['count_from']}), recompute {result['recompute']}, "
          f"MFU {e['mfu']:.0%}: {e['days']:,.1f} days, {e['device_hours']:,.0f} device-hours, ${e['cost_usd']:,.0f}, "
          f"{e['energy_kwh']:,.0f} kWh, {e['tco2e']:,.1f} tCO2e")
    print(f"      exact FLOPs {e['flops_exact']:.3g} (x{result['exact_over_budget']:.3f} the 6ND budget: attention"
          f"{' and recomputation' if result['recompute'] != 'none' else ''}); memory "
          f"{e['memory_gb']['total']:.1f} of {hw.memory_gb:g} GB/device, fewest devices {e['min_devices'] or 'n/a'}")
    for w in result["warnings"]:
        print(f"warning: {w}")
    return 0


def _objective_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", choices=["causal", "masked"],
                   help="train.objective: causal (next token) or masked (missing tokens, bidirectional)")


def _eval(args: argparse.Namespace) -> int:
    import lmforge

    if args.tasks:
        result = lmforge.evaluate_tasks(args.run_dir, args.tasks, device=args.device)
        if args.json:
            print(figures.dumps(result))
            return 0
        lo, hi = result["accuracy_ci95"]
        nlo, nhi = result["accuracy_norm_ci95"]
        print(f"{result['tasks_file']}: {result['tasks']} tasks, {result['model']} model, scoring {result['scoring']}\n"
              f"  accuracy            {result['accuracy']:.3f}  (95% CI {lo:.3f}-{hi:.3f})\n"
              f"  accuracy per byte   {result['accuracy_norm']:.3f}  (95% CI {nlo:.3f}-{nhi:.3f})\n"
              f"  chance              {result['chance']:.3f}")
        return 0
    result = lmforge.evaluate(args.run_dir, max_tokens=args.max_tokens, device=args.device, objective=args.objective)
    if args.json:
        print(figures.dumps(result))
    elif "reason" in result:
        print(f"{args.run_dir}: no validation figures: {result['reason']}")
    elif result["objective"] == "masked":
        print(f"{args.run_dir}: masked-token loss {result['val_loss']:.4f}, accuracy {result['accuracy']:.4f}, "
              f"perplexity {result['perplexity']:.2f} ({result['tokens']:,} masked tokens, {result['checkpoint']})")
    else:
        print(f"{args.run_dir}: val loss {result['val_loss']:.4f}, perplexity {result['perplexity']:.2f}, "
              f"{result['bits_per_byte']:.4f} bits per byte ({result['tokens']:,} tokens, {result['checkpoint']})")
    return 0


def _fill(args: argparse.Namespace) -> int:
    import lmforge

    choices = [c.strip() for c in args.choices.split(",")] if args.choices is not None else None
    result = lmforge.fill(args.run_dir, args.text, choices, args.top_k, args.device)
    if args.json:
        print(figures.dumps(result))
        return 0
    how = {"masked-token": "masked model: probability of each single token at the blank",
           "masked-pll": "masked model: pseudo-log-likelihood, one mask per choice token",
           "causal-sentence": "causal model: log-likelihood of the whole completed sentence"}[result["scoring"]]
    if "shortlist" in result:
        how += f", for the {result['shortlist']} likeliest next tokens after the text before the blank"
    print(f"scoring: {result['scoring']} ({how})" + (" [text trimmed to the model's context]" if result["truncated"] else ""))
    shown = [json.dumps(c["text"], ensure_ascii=False) for c in result["candidates"]]  # quoted: spaces show
    width = max(map(len, shown))
    for text, c in zip(shown, result["candidates"]):
        print(f"  {text:<{width}}  {100 * c['probability']:6.2f}%  log-prob {c['score']:.3f}")
    return 0


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
    lmforge.tokenize(cfg.data, cfg.tokenizer, args.out, force=args.force, progress=not args.no_progress)
    return 0


def _train(args: argparse.Namespace) -> int:
    import lmforge
    from lmforge.training.trainer import saved_run_config

    if args.init_from:
        args.overrides.append(f"train.init_from={Path(args.init_from).resolve()}")
    elif args.allow_new_tokenizer:
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
    from lmforge.export import export

    result = export(args.run_dir, args.out, args.format, force=args.force)
    print(json.dumps(result) if args.json else
          f"export: {result['checkpoint']} -> {result['out']} ({result['architecture']}, {result['params']:,} parameters; "
          f"{', '.join(result['files'])}); load it with transformers.AutoModelForCausalLM.from_pretrained")
    return 0


def _report(args: argparse.Namespace) -> int:
    from lmforge.report import report

    print(f"report: {report(args.run_dir, args.format, args.open)}")
    return 0


def _args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN|SWEEP")
    p.add_argument("--format", default="html", choices=["html", "md"],
                   help="html: one self-contained page (default); md: Markdown with PNGs in report-files/")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN")
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
    q.add_argument("--json", action="store_true")


def _scale_plan(args: argparse.Namespace) -> int:
    import lmforge.scaling as scaling

    for flag, key in (("sizes", "scale.sizes"), ("knob", "scale.knob"), ("design", "scale.design"),
                      ("levels", "scale.levels"), ("points_per_size", "scale.points_per_size"),
                      ("parallel", "scale.parallel"), ("repeats", "scale.repeats"), ("prior", "scale.prior"),
                      ("noise", "scale.noise")):
        value = getattr(args, flag)
        if value is not None:
            args.overrides.append(f"{key}=[{value}]" if flag == "sizes" else f"{key}={value}")
    if args.max_run_flops is not None:
        args.overrides.append(f"scale.max_run_flops={_flops_arg(args.max_run_flops, '--max-run-flops')}")
    if args.target:
        args.overrides.append(f"scale.targets=[{','.join(args.target)}]")
    cfg = _resolve(args, None)
    result = scaling.plan(cfg, _flops_arg(args.budget, "--budget"), args.out, args.within)
    if args.json:
        print(figures.dumps(result))
        return 0
    print(f"{'run':<18} {'params':>10} {'tokens':>11} {'tok/param':>9} {'steps':>6} {'6ND':>9} {'FLOPs':>9} {'est.':>7}")
    for r in result["runs"]:
        print(f"{r['name']:<18} {r['params']:>10,} {r['tokens']:>11,} {r['tokens'] / r['params']:>9.1f} {r['steps']:>6} "
              f"{r['flops']:>9.2e} {r['flops_exact']:>9.2e} {r['estimated_s']:>6.0f}s")
    cal = result["calibration"]
    print(f"{len(result['runs'])} runs ({result['design']}, knob {result['knob']}), {result['total_flops']:.3g} of "
          f"{result['budget_flops']:.3g} FLOPs; estimated {result['estimated_wall_s'] / 60:.1f} min on "
          f"{result['parallel']} process(es) x {result['threads_per_process']} thread(s) "
          f"({result['estimated_serial_s'] / 60:.1f} min serial; calibrated here at "
          f"{1 / cal['seconds_per_flop'] / 1e9:.1f} GFLOP/s + {1e3 * cal['seconds_per_step_fixed']:.0f} ms/step; "
          f"tokenizing not included)")
    _print_identifiability(result["identifiability"])
    for w in result["warnings"]:
        print(f"warning: {w}")
    if args.out:
        print(f"sweep written to {result['sweep']}; train it with: lmforge scale run {args.out}")
    return 0


def _print_identifiability(ident: dict) -> None:
    ci = ident["ci"]
    print(f"identifiability before training (95%, delta method under the prior {ident['prior_name']}, "
          f"run-to-run noise {100 * ident['noise']:.2g}%): " +
          ", ".join(f"{k} [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" for k in ("E", "A", "B", "alpha", "beta")))
    for t in ident["targets"]:
        claim = ""
        if t["within"]:
            claim = (f"; a within-{t['within']['claim_pct']:g}% forecast is " +
                     ("possible" if t["within"]["allowed"] else "NOT possible with this design"))
        print(f"  target {t['target']} ({t['times_largest_run']:.1f}x the largest run): forecast interval "
              f"+-{100 * t['half_width']:.1f}%{claim}")


def _print_within(w: dict | None) -> None:
    if not w:
        return
    if not w["allowed"]:
        print(f"cannot call this forecast within {w['claim_pct']:g}%: its 95% interval is +-{w['half_width_pct']:.1f}%")
    elif "met" in w:
        print(f"within {w['claim_pct']:g}%: {'met' if w['met'] else 'NOT met'} (95% interval +-{w['half_width_pct']:.1f}%)")
    else:
        print(f"a within-{w['claim_pct']:g}% forecast is supported (95% interval +-{w['half_width_pct']:.1f}%)")


def _fmt_ci(ci) -> str:
    return f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _scale_fit_print(r: dict) -> None:
    ci = r["ci"]
    print(f"{r['law']}  ({r['points']} points, Huber delta {r['method']['huber_delta']:g}, "
          f"95% bootstrap intervals over {r['method']['bootstrap']} resamples)")
    choice = r.get("form_choice", {})
    if "approach3" in choice and "kaplan" in choice:
        print(f"form: {r['form']} ({choice['rule']}; mean |error| approach 3 {_pct(choice['approach3'])}, "
              f"Kaplan's {_pct(choice['kaplan'])})")
    for k in ("E", "A", "B", "alpha", "beta"):
        # the fit's lower bound for E is e^-20: at it, E is not estimated, only bounded above
        bound = "  (at its lower bound: the sweep does not identify E)" if k == "E" and r[k] < 1e-8 else ""
        print(f"  {k:<6} {r[k]:.4g}{_fmt_ci(ci[k])}{bound}")
    print(f"compute-optimal allocation: N_opt ~ C^{r['a']:.3f}{_fmt_ci(ci['a'])}, D_opt ~ C^{r['b']:.3f}{_fmt_ci(ci['b'])}")
    print("tokens per parameter at the optimum: " +
          ", ".join(f"{v:.1f} at {c} FLOPs" for c, v in r["tokens_per_param_at_optimum"].items()))
    res = r["residuals"]
    print(f"residuals: rms {100 * res['rmse_log']:.2f}% of loss, largest {100 * res['max_abs_relative']:.2f}%")
    noise = r.get("noise")
    if noise:
        rtr = (f"{100 * noise['run_to_run']:.2f}% from {noise['repeated_points']} repeated point(s)"
               if noise["run_to_run"] else "not measured (no repeated runs)")
        print(f"noise: run-to-run {rtr}; intervals use {100 * noise['used']:.2f}% ({noise['used_dof']} degrees of "
              f"freedom, {r['method'].get('interval', 'cases')} bootstrap)")
    for name, ap in r.get("approaches", {}).items():
        if "skipped" in ap:
            print(f"  approach {name}: skipped ({ap['skipped']})")
        elif "alpha" in ap:
            tests = ap.get("backtests") or {"compute": ap.get("backtest")}
            back = "".join(f"; backtest {kind} ({bt['held_out']} held out): mean |error| {100 * bt['mean_abs_error']:.2f}%, "
                           f"max {100 * bt['max_abs_error']:.2f}%" for kind, bt in tests.items() if bt)
            print(f"  approach {name}: E {ap['E']:.4g}, A {ap['A']:.4g}, B {ap['B']:.4g}, alpha {ap['alpha']:.3f}, "
                  f"beta {ap['beta']:.3f}, rms {100 * ap['rmse_log']:.2f}%{back}")
    iso = r["isoflop"]
    if "a" in iso:
        print(f"IsoFLOP ({len(iso['levels'])} levels): N_opt ~ C^{iso['a']:.3f}, D_opt ~ C^{iso['b']:.3f}; "
              f"tokens/parameter " + ", ".join(f"{t:.1f}" for t in iso["tokens_per_param"]))
    else:
        print(f"IsoFLOP: skipped ({iso['skipped']})")
    for note in iso.get("skipped_levels", []):
        print(f"  level left out: {note}")
    lc = r["loss_vs_compute"]
    if "a" in lc:
        print(f"L(C) = {lc['a']:.4g} C^{lc['b']:.4f} + {lc['c']:.4f}")
    else:
        print(f"L(C): skipped ({lc['skipped']})")
    for e in r["excluded"]:
        print(f"excluded {e['name']}: {e['reason']}")
    for p in r.get("plots", []):
        print(f"plot: {p}")
    if r.get("fit_file"):
        print(f"fit: {r['fit_file']}")


def _scale_coordcheck(args: argparse.Namespace) -> int:
    from lmforge.scaling.coordcheck import SWEEP_FOLDER, coordinate_check, format_check
    from lmforge.scaling.runner import load_sweep
    from lmforge.training.device import set_threads

    out = args.out
    if args.sweep:
        if args.preset or args.config or args.overrides:
            raise LmforgeError("scale coordcheck: the config comes from SWEEP/sweep.yaml; drop --preset, --config "
                               "and --set, or the SWEEP")
        cfg = load_sweep(args.sweep)[0]
        out = out or str(Path(args.sweep) / SWEEP_FOLDER)
    else:
        cfg = _resolve(args, None)
    widths = [32, 64, 128, 256, 512]
    if args.widths:
        widths = [_positive_int(w, "--widths") for w in args.widths.split(",")]
    elif args.sweep and cfg.scale.knob == "width":
        widths = list(cfg.scale.sizes)
    set_threads(cfg.train.threads)
    result = coordinate_check(cfg, widths, args.steps, args.layers, args.context, args.batch, args.vocab, out)
    print(figures.dumps(result) if args.json else format_check(result))
    return 0


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
    from lmforge.scaling.runner import format_status, sweep_status

    if args.action == "plan":
        return _scale_plan(args)
    if args.action == "coordcheck":
        return _scale_coordcheck(args)
    if args.action == "run":
        rows = scaling.run(args.sweep, args.parallel, args.threads, interval=args.interval, device=args.device)
        print(format_status(rows))
    elif args.action == "status":
        rows = sweep_status(args.sweep)
        print(figures.dumps(rows) if args.json else format_status(rows))
    elif args.action == "fit":
        result = scaling.fit(args.source, args.bootstrap, args.out, plots=not args.no_plots, interval=args.interval,
                             fixed_e=args.fixed_e, form=args.form)
        if args.json:
            print(figures.dumps({k: v for k, v in result.items() if k != "bootstrap_samples"}))
        else:
            _scale_fit_print(result)
    elif args.action == "predict":
        params = cost.parse_size(args.params, "--params") if args.params else None
        tokens = cost.parse_size(args.tokens, "--tokens") if args.tokens else None
        r = scaling.predict(args.source, params, tokens, _flops_arg(args.flops, "--flops"), args.within)
        if args.json:
            print(figures.dumps(r))
            return 0
        print(f"predicted loss {r['loss']:.4f}{_fmt_ci(r['interval'])} for {r['params']:.4g} parameters on "
              f"{r['tokens']:.4g} tokens ({r['tokens_per_param']:.1f} tokens/parameter, {r['flops']:.3g} FLOPs, "
              f"{r['times_largest_run']:.1f}x the largest fitted run)")
        if "loss_vs_compute" in r:
            print(f"L(C) predicts {r['loss_vs_compute']:.4f}{_fmt_ci(r['loss_vs_compute_interval'])} at the compute-optimal point")
        _print_within(r["within"])
    elif args.action == "verify":
        params = cost.parse_size(args.params, "--params") if args.params else None
        tokens = cost.parse_size(args.tokens, "--tokens") if args.tokens else None
        r = scaling.verify(args.sweep, params, tokens, _flops_arg(args.flops, "--flops"), args.threads,
                           device=args.device, within_pct=args.within)
        if args.json:
            print(figures.dumps(r))
            return 0
        print(f"target {r['params']:,} parameters on {r['tokens']:,} tokens = {r['flops']:.3g} FLOPs "
              f"({r['times_largest_run']:.1f}x the largest sweep run)")
        print(f"predicted {r['predicted']:.4f}{_fmt_ci(r['interval'])}, actual {r['actual']:.4f}: relative error "
              f"{100 * r['relative_error']:+.2f}% ({'inside' if r['within_interval'] else 'outside'} the interval)")
        _print_within(r["within"])
    return 0


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    p.add_argument("--out", help="run folder (default: run.out of the preset, runs/tiny)")
    _objective_arg(p)
    _config_args(p)


def _force_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"write into a non-empty --out that holds no {what}: lmforge's files go beside yours, never over them")


def _args_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders, globs: text, JSONL, Parquet, WARC (default: built-in)")
    p.add_argument("--out", required=True, help="prepared folder to write (clean/, rejected/, report.json)")
    p.add_argument("--workers", type=int, help="processes (prepare.workers; default one per core)")
    _force_arg(p, "prepared folder")
    _config_args(p)


def _args_tokenize(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    p.add_argument("--out", required=True, help="tokenized folder to write")
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
    p.add_argument("--init-from", metavar="HF_FOLDER",
                   help="start from the weights of a Hugging Face Llama folder (lmforge export, or a Llama of this "
                        "shape) whose tokenizer.json is the data's")
    p.add_argument("--allow-new-tokenizer", action="store_true",
                   help="with --init-from: a model of another tokenizer; its embedding is remapped to the data's "
                        "(tokens both hold keep their rows, the rest start fresh)")
    _objective_arg(p)
    _config_args(p)


def _args_estimate(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["train", "kv-cache"], default="train")
    _shape_args(p)
    p.add_argument("--tokens", help="training tokens D (e.g. 300B, 1.4T)")
    p.add_argument("--batch", type=int, default=0, help="sequences per step (global); sets the micro-batch per device")
    _hardware_args(p)
    p.add_argument("--precision", default="bf16-mixed", help="bf16-mixed (default), fp16-mixed, bf16-mixed-fp32-grads, fp32, bf16")
    p.add_argument("--optimizer", default="adamw", help="adamw, sgd or muon")
    p.add_argument("--zero-stage", type=int, default=3, help="ZeRO stage 0-3 (3 = FSDP), default 3")
    p.add_argument("--recompute", default="none", help="activation recomputation (as train.recompute): none, selective "
                   "(norms, rotary, SwiGLU gate; no extra matmul) or full (each block's forward again, less its last matmul)")
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--from-run", metavar="RUN", help="take the MFU measured by an lmforge run")
    p.add_argument("--json", action="store_true")


def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", required=True, help="e.g. 10000usd, 5e21flops, 2000gpu-hours")
    p.add_argument("--law", default="chinchilla", help="chinchilla (Hoffmann 2022), epoch2024 (Besiroglu 2024 re-fit), "
                   "or a fitted law: SWEEP or SWEEP/fit.json from lmforge scale fit")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--days", type=float, default=cost.DEFAULT_PLAN_DAYS,
                   help=f"wall-clock the plan must finish in when --count is not given (default {cost.DEFAULT_PLAN_DAYS:g})")
    _hardware_args(p, "devices (default: the fewest that finish within --days)", None)
    p.add_argument("--json", action="store_true")


def _args_scale(p: argparse.ArgumentParser) -> None:
    ssub = p.add_subparsers(dest="action", required=True)
    q = ssub.add_parser("plan", help="design a sweep within a FLOP budget, with its estimated wall-clock here")
    q.add_argument("--budget", required=True, help="total training FLOPs, e.g. 3e13 or 3e13flops")
    q.add_argument("--sizes", help="knob values, comma-separated (scale.sizes), e.g. 32,48,64,96,128")
    q.add_argument("--knob", choices=["width", "depth"], help="the size knob (scale.knob)")
    q.add_argument("--design", choices=["isoflop", "grid", "optimal"],
                   help="IsoFLOP profiles, a sizes x tokens grid, or the runs that pin alpha and beta most per FLOP")
    q.add_argument("--levels", type=int, help="isoflop: compute levels (scale.levels)")
    q.add_argument("--points-per-size", type=int, help="grid: token counts per size (scale.points_per_size)")
    q.add_argument("--parallel", type=int, help="training processes at once (scale.parallel)")
    q.add_argument("--max-run-flops", help="optimal: no run above this 6ND (scale.max_run_flops)")
    q.add_argument("--repeats", type=int, help="cheapest runs trained again with another seed (scale.repeats)")
    q.add_argument("--prior", help="law the design is judged under: chinchilla, epoch2024, SWEEP or fit.json (scale.prior)")
    q.add_argument("--noise", type=float, help="assumed run-to-run noise of a final loss, relative (scale.noise)")
    q.add_argument("--target", action="append", metavar="N:D", help="report the forecast interval at N params on D "
                   "tokens, e.g. 350k:4M (repeatable; scale.targets)")
    q.add_argument("--within", type=float, metavar="PCT", help="say whether each --target can be forecast within PCT%%")
    q.add_argument("--out", metavar="SWEEP", help="write SWEEP/sweep.yaml")
    q.add_argument("--json", action="store_true")
    _config_args(q, default_preset="scaling")
    q = ssub.add_parser("coordcheck", help="coordinate check: activation and logit scales over the first steps "
                        "across widths, standard vs muP parameterisation (flat under muP)")
    q.add_argument("sweep", nargs="?", metavar="SWEEP", help="take the config (and widths, for a width knob) from "
                   "SWEEP/sweep.yaml and write into SWEEP/coordcheck/")
    q.add_argument("--widths", help="model widths, comma-separated (default 32,64,128,256,512; each a multiple of "
                   "model.n_head)")
    q.add_argument("--steps", type=int, default=10, help="training steps, at train.lr held constant (default 10)")
    q.add_argument("--layers", type=int, default=2, help="depth of the probe models (default 2)")
    q.add_argument("--context", type=int, default=64, help="tokens per sequence (default 64)")
    q.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    q.add_argument("--vocab", type=int, default=512, help="vocabulary of the Zipf-distributed tokens (default 512)")
    q.add_argument("--out", metavar="DIR", help="write coordcheck.json and coordcheck.png here (default: "
                   "SWEEP/coordcheck with a SWEEP, else nothing written)")
    q.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    _config_args(q)
    q = ssub.add_parser("run", help="train every unfinished run of a sweep (resumes; skips finished runs)")
    q.add_argument("sweep", metavar="SWEEP")
    q.add_argument("--parallel", type=int, help="processes at once (default: the sweep's scale.parallel)")
    q.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    q.add_argument("--interval", type=float, default=30.0, help="seconds between progress lines")
    q.add_argument("--device", help="train on this device (cpu, cuda, cuda:N) instead of the sweep's train.device")
    q = ssub.add_parser("status", help="every run of a sweep: state, steps, loss")
    q.add_argument("sweep", metavar="SWEEP")
    q.add_argument("--json", action="store_true")
    q = ssub.add_parser("fit", help="fit L(N, D), IsoFLOP profiles and L(C) to a sweep or a CSV of points")
    q.add_argument("source", metavar="SWEEP|POINTS.csv", help="a sweep folder, or a CSV with params, tokens, loss[, flops]")
    q.add_argument("--json", action="store_true", help="one JSON object: E, A, B, alpha, beta, a, b, intervals, ...")
    q.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: scale.bootstrap; 200 for a CSV)")
    q.add_argument("--out", help="folder for fit.json, points.csv and plots/ (default: the sweep; none for a CSV)")
    q.add_argument("--no-plots", action="store_true")
    q.add_argument("--interval", choices=["parametric", "cases"], help="bootstrap: refit simulated noise at the same "
                   "points (parametric, default) or resample the points (cases)")
    q.add_argument("--fixed-e", type=float, help="approach fixed_e: hold E at this (default: scale.fixed_e, or L(C)'s c)")
    q.add_argument("--form", choices=["auto", "additive", "kaplan"], help="law form (default: scale.form, auto: the "
                   "form whose backtests in N and D err less)")
    q = ssub.add_parser("predict", help="predicted loss at (N, D) or at the compute-optimal point of C")
    q.add_argument("source", metavar="SWEEP|fit.json")
    _target_args(q, "predict at")
    q.add_argument("--within", type=float, metavar="PCT", help="call it within PCT%% only if its interval allows")
    q = ssub.add_parser("verify", help="train the target model and compare predicted and actual loss")
    q.add_argument("sweep", metavar="SWEEP")
    _target_args(q, "train")
    q.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    q.add_argument("--device", help="train the target on this device (cpu, cuda, cuda:N)")
    q.add_argument("--within", type=float, metavar="PCT", help="report whether the forecast was within PCT%%, when "
                   "its interval allows the claim")


def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tasks", metavar="FILE.jsonl",
                   help='multiple-choice cloze tasks {"context": "... [MASK] ...", "choices": [...], "answer": i} '
                        "per line, or builtin (the file shipped with lmforge)")
    p.add_argument("--objective", choices=["causal", "masked"],
                   help="insist on this objective: masked = masked-token loss and accuracy (a masked run only)")
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate at most this many tokens (0 = all)")
    p.add_argument("--device", default="cpu")


def _args_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--max-tokens", type=int, default=100, help="tokens to sample at most (>= 0)")
    p.add_argument("--temperature", type=float, default=0.8, help="finite, >= 0; 0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the K likeliest tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus: the likeliest tokens holding P of the mass, "
                                                           "in (0, 1] (1 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def _args_fill(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("text", metavar="TEXT", help='a text with one [MASK], e.g. "the next [MASK] in a sentence"')
    p.add_argument("--choices", help="comma-separated fillers to rank (multi-token ones are scored whole)")
    p.add_argument("--top-k", type=int, default=10, help="fillers to show without --choices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")


def _args_inspect(p: argparse.ArgumentParser) -> None:
    _inspect_args(p.add_subparsers(dest="what", required=True, metavar="WHAT"))


def _inspect_args(sub) -> None:
    def command(name: str, help: str, aliases=(), vectors: bool = False):
        p = sub.add_parser(name, help=help, aliases=list(aliases))
        p.set_defaults(what=name)
        p.add_argument("run_dir", metavar="RUN")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--device", default="cpu")
        if vectors:
            p.add_argument("--vectors", choices=["static", "contextual"], default="static",
                           help="static: mean input embedding of the word's tokens; contextual: mean hidden state "
                                "over its occurrences in the validation text")
            p.add_argument("--layer", type=int, help="layer of contextual vectors (0 = embedding; default: middle)")
        return p

    p = command("neighbours", "nearest words by cosine similarity", ["neighbors"], vectors=True)
    p.add_argument("word")
    p.add_argument("-k", type=int, default=10, help="how many neighbours")
    p = command("similarity", "cosine similarity of two words", vectors=True)
    p.add_argument("words", nargs=2, metavar="WORD")
    p = command("analogy", "A is to B as C is to ?", vectors=True)
    p.add_argument("words", nargs=3, metavar=("A", "B", "C"))
    p.add_argument("-k", type=int, default=5)
    p = command("map", "2-D map of word vectors (PNG with labels + interactive HTML)", vectors=True)
    p.add_argument("words", nargs="*", metavar="WORD", help="words to place (default: the --top most frequent)")
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--method", choices=["auto", "pca", "umap"], default="auto",
                   help="auto: UMAP if umap-learn is installed, else PCA")
    p.add_argument("--out", help="folder for the files (default RUN/inspect)")
    p = command("layers", "logit lens: each layer's top predictions for TEXT (table + heat-map PNG)")
    p.add_argument("text")
    p.add_argument("-k", type=int, default=3, help="predictions kept per position and layer (JSON)")
    p.add_argument("--out", help="folder for the PNG (default RUN/inspect)")
    p = command("attention", "attention maps for TEXT as a PNG (all heads of a layer, or one head)")
    p.add_argument("text")
    p.add_argument("--layer", type=int, help="1..n_layer (default: the last)")
    p.add_argument("--head", type=int, help="0..n_head-1 (default: all heads in a grid)")
    p.add_argument("--out", help="folder for the PNG (default RUN/inspect)")
    p = command("sentences", "one vector per line of FILE and the most similar pairs")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--layer", type=int, help="layer whose hidden states are mean-pooled (default: middle)")
    p.add_argument("--top", type=int, default=10, help="pairs to show")
    p.add_argument("--out", help="folder for sentences.npy (default RUN/inspect)")


def _inspect(args: argparse.Namespace) -> int:
    from lmforge.inspection import Inspector, format_lens, format_neighbours, to_json

    insp = Inspector(args.run_dir, device=args.device)
    what = args.what
    vec = {"vectors": args.vectors, "layer": args.layer} if hasattr(args, "vectors") else {}
    if what == "neighbours":
        result = insp.neighbours(args.word, args.k, **vec)
        text = format_neighbours(result)
    elif what == "similarity":
        result = insp.similarity(*args.words, **vec)
        text = f"similarity({args.words[0]!r}, {args.words[1]!r}) = {result['similarity']:.4f} ({args.vectors} vectors)"
    elif what == "analogy":
        result = insp.analogy(*args.words, k=args.k, **vec)
        a, b, c = args.words
        text = f"{a} : {b} :: {c} : ?\n" + "\n".join(f"  {x['similarity']:7.4f}  {x['word']}" for x in result["answers"])
    elif what == "map":
        result = insp.word_map(args.words or None, args.top, method=args.method, out=args.out, **vec)
        text = f"map of {len(result['points'])} words ({result['method'].upper()}): {result['png']}, {result['html']}"
    elif what == "layers":
        result = insp.logit_lens(args.text, args.k, out=args.out)
        text = format_lens(result) + f"\nheat-map: {result['png']}"
    elif what == "attention":
        result = insp.attention(args.text, args.layer, args.head, out=args.out)
        text = f"attention of layer {result['layer']}, heads {', '.join(map(str, result['heads']))}: {result['png']}"
    else:
        result = insp.sentences(args.file, args.layer, args.top, out=args.out)
        text = f"{result['sentences']} sentences (layer {result['layer']}), most similar pairs:\n" + "\n".join(
            f"  {p['similarity']:7.4f}  {p['a']!r}  ~  {p['b']!r}" for p in result["pairs"])
    print(to_json(result) if args.json else text)
    return 0


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
