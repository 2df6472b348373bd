"""The `lmforge` command: parse, load the config, call one stage function.

Errors the user can fix (`LmforgeError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmforge.config import Config, config_from_dict, load_config, merge_dicts, preset_names
from lmforge.errors import LmforgeError


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = "tiny") -> None:
    p.add_argument("--preset", default=default_preset, help=f"named config: {', '.join(preset_names())}")
    p.add_argument("--config", metavar="FILE", help="YAML config file, applied over the preset")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field, e.g. --set train.lr=1e-3 --set model.n_layer=6 (repeatable)")
    p.add_argument("--max-steps", type=int, help="train.max_steps")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--threads", type=int, help="torch threads (train.threads); default: torch's choice")
    p.add_argument("--device", help="train.device: auto, cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resolve(args: argparse.Namespace, out: str | None, sources: list[str] | None = None) -> Config:
    overrides = list(args.overrides)
    for flag, key in (("max_steps", "train.max_steps"), ("seed", "train.seed"), ("threads", "train.threads"),
                      ("device", "train.device"), ("workers", "prepare.workers")):
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
    cfg = load_config(args.preset, args.config, overrides)
    if extra:
        cfg = config_from_dict(merge_dicts(cfg.to_dict(), extra))
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="Train language models from raw text, end to end.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the whole pipeline: tokenize, train, evaluate, sample (built-in corpus by default)")
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    p.add_argument("--out", help="run folder (default: run.out of the preset, runs/tiny)")
    _config_args(p)

    p = sub.add_parser("prepare", help="clean sources: repair, filter, redact, deduplicate (nothing lost)")
    p.add_argument("sources", nargs="*", help="files, folders, globs: text, JSONL, Parquet, WARC (default: built-in)")
    p.add_argument("--out", required=True, help="prepared folder to write (clean/, rejected/, report.json)")
    p.add_argument("--workers", type=int, help="processes (prepare.workers; default one per core)")
    _config_args(p)

    p = sub.add_parser("tokenize", help="train the BPE tokenizer and encode sources into token shards")
    p.add_argument("sources", nargs="*", help="files, folders or globs (default: the built-in corpus)")
    p.add_argument("--out", required=True, help="tokenized folder to write")
    _config_args(p)

    p = sub.add_parser("train", help="train a model on a tokenized folder or raw sources")
    p.add_argument("--data", nargs="+", metavar="PATH", help="a tokenized folder, or raw sources (default: config)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="stop after STEP with a checkpoint (resume later)")
    _config_args(p)

    p = sub.add_parser("eval", help="validation loss, perplexity and bits per byte of a run")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-tokens", type=int, default=0, help="evaluate at most this many tokens (0 = all)")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("generate", help="sample a continuation of PROMPT from a run")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--max-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    import lmforge

    if args.command == "run":
        lmforge.run(_resolve(args, args.out, args.sources or None))
    elif args.command == "prepare":
        cfg = _resolve(args, None, args.sources or None)
        lmforge.prepare(cfg.data.sources, args.out, cfg.prepare, cfg.data, progress=not args.no_progress)
    elif args.command == "tokenize":
        cfg = _resolve(args, None, args.sources or None)
        lmforge.tokenize(cfg.data, cfg.tokenizer, args.out)
    elif args.command == "train":
        cfg = _resolve(args, args.out)
        lmforge.train(cfg, data=args.data, resume=args.resume, stop_at=args.stop_at)
    elif args.command == "eval":
        result = lmforge.evaluate(args.run_dir, max_tokens=args.max_tokens, device=args.device)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.run_dir}: val loss {result['val_loss']:.4f}, perplexity {result['perplexity']:.2f}, "
                  f"{result['bits_per_byte']:.4f} bits per byte ({result['tokens']:,} tokens, {result['checkpoint']})")
    elif args.command == "generate":
        if args.max_tokens < 0 or args.temperature < 0 or not 0 < args.top_p <= 1:
            raise LmforgeError("generate: --max-tokens and --temperature must be >= 0 and --top-p in (0, 1]")
        print(lmforge.generate(args.run_dir, args.prompt, args.max_tokens, args.temperature, args.top_k,
                               args.top_p, args.seed, args.device))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
