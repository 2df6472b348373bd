"""Reading a run or sweep folder into the report's page model (`report.model.Page`).

Sections follow the order the model was made: corpus (RUN/prepared/report.json and its rejected
examples), tokens, training curves (metrics.jsonl), results (summary.json), inside the model
(neighbours, the word map, a logit-lens example), cost (lmforge.cost). A SWEEP folder gets its fit,
plots and verified run. A section whose data does not exist is left out. The run is read only
through RunDir. Text is kept as it was: escaping is the renderer's.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmforge.data.pii import redacted
from lmforge.errors import LmforgeError
from lmforge.files import read_own_bytes
from lmforge.folders.prepared import PrepareReport, read_jsonl_gz
from lmforge.folders.run import RunDir, Summary, TrainRecord, ValRecord, looks_like
from lmforge.folders.sweep import SweepDir
from lmforge.report.model import Chart, Page, Section

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLES_SHOWN = 2
EXAMPLE_CHARS = 240
LENS_TEXT = "The next word in a sentence"


# ---------------------------------------------------------------- reading the run

def _corpus(run: RunDir) -> Section | None:
    rep = run.prepared.report()
    if rep is None:
        return None
    rows = [("documents in", f"{rep.documents_in:,}", f"{rep.bytes_in:,} bytes")]
    rows += [(f"removed by {stage}", f"{n:,}", "") for stage, n in rep.rejected_by_stage.items()]
    rows += [("kept", f"{rep.documents_kept:,}", f"{rep.bytes_kept:,} bytes")]
    funnel = [("documents in", rep.documents_in)] + [(f"removed by {k}", n) for k, n in rep.rejected_by_stage.items()]
    blocks: list = [("funnel", funnel + [("kept", rep.documents_kept)]), ("table", ("", "documents", "bytes"), rows)]
    examples = _rejected_examples(run, rep)
    reasons = [(reason, f"{n:,}", " | ".join(examples.get(reason) or [""]))
               for reason, n in rep.rejected_by_reason.items()]
    if reasons:
        blocks += [("p", "Why documents were removed, with a few of them (cut short):"),
                   ("table", ("reason", "documents", "example"), reasons)]
    extra = [("duplicate clusters", f"{rep.duplicate_clusters:,}"),
             ("largest duplicate cluster", f"{rep.largest_duplicate_cluster:,}"),
             ("boilerplate lines removed", f"{rep.boilerplate_lines_removed:,}")]
    extra += [(k.replace("_", " "), f"{v:,}") for k, v in rep.repairs_and_redactions.items()]
    blocks.append(("table", ("duplicates, repairs and redactions", "count"), extra))
    return Section("The corpus", (
        "Before a model can learn, the raw text is cleaned. Every document is read, repaired (broken "
        "encodings, stray control characters), checked by quality filters (too short, mostly symbols, the "
        "wrong language, offensive), has personal data such as e-mail addresses redacted, and is compared "
        "with the others so that copies and near-copies are kept once. Nothing is thrown away silently: "
        "each removed document is kept aside with the reason, and these are the counts."), blocks)


def _rejected_examples(run: RunDir, rep: PrepareReport) -> dict[str, list[str]]:
    """A few rejected documents per reason, cut short. rejected/ keeps them as read, personal data
    included; the page shows them redacted (report.json's ids are redacted too, hence the match)."""
    wanted = {reason: set(ids[:EXAMPLES_SHOWN]) for reason, ids in rep.examples.items()}
    found: dict[str, list[str]] = {}
    for path in run.prepared.rejected_files():
        for r in read_jsonl_gz(path):
            if redacted(r["id"]) in wanted.get(r["reason"], ()):
                found.setdefault(r["reason"], []).append(_example(r["text"]))
    return found


def _example(text: str) -> str:
    """The start of a document on one line, redacted before it is cut (a cut could leave half an
    address that the patterns no longer match)."""
    shown = redacted(" ".join(text.split()))
    return shown[:EXAMPLE_CHARS] + ("…" if len(shown) > EXAMPLE_CHARS else "")


def _tokens(run: RunDir) -> Section | None:
    tok_dir = run.tokens_dir
    if not run.tokenizer_path.is_file():
        return None
    from lmforge.folders.tokenized import load_shards, read_meta
    from lmforge.tokenizing import sample_summary

    tok = run.tokenizer()
    rows = [("vocabulary", f"{tok.get_vocab_size():,} tokens")]
    pieces: list[str] = []
    if tok_dir is not None and tok_dir.is_dir():
        meta = read_meta(tok_dir)
        for split, v in meta["splits"].items():
            rows.append((f"{split} split", f"{v['tokens']:,} tokens from {v['bytes']:,} bytes "
                                           f"({meta['bytes_per_token'][split]:.2f} bytes per token)"))
        if "tokenizer_sample" in meta:  # a folder tokenized before the sample was recorded has none
            rows.append(("tokenizer learned from", sample_summary(meta["tokenizer_sample"])))
        val = load_shards(tok_dir, "val")
        if val:
            ids = [int(i) for i in val[0][:400] if int(i) != meta["eot_id"]][:40]
            pieces = [tok.decode([i]) for i in ids]
    blocks: list = [("table", None, rows)]
    if pieces:
        blocks += [("p", "A piece of the validation text, cut into the tokens the model sees (each box is one token):"),
                   ("tokens", pieces)]
    return Section("Tokens", (
        "A model reads numbers, not letters. The tokenizer (byte-level BPE) starts from the 256 possible "
        "bytes and repeatedly merges the most frequent neighbouring pair into a new token, until the "
        "vocabulary is full. Frequent words become one token; rare words are spelled from pieces. More bytes "
        "per token means the model sees more text for the same work."), blocks)


def _series(records: list[TrainRecord | ValRecord], key: str, name: str, dashed: bool = False) -> dict | None:
    """One figure of the metrics records over steps: `key` is a field of TrainRecord or ValRecord."""
    rows = [(r, getattr(r, key, None)) for r in records]
    rows = [(r, v) for r, v in rows if isinstance(v, (int, float)) and math.isfinite(v)]
    if not rows:
        return None
    return {"name": name, "steps": [r.step for r, _ in rows], "seconds": [r.train_time_s for r, _ in rows],
            "values": [v for _, v in rows], "dashed": dashed}


def _objective(run: RunDir, summary: Summary | None) -> str:
    if summary and summary.objective:
        return summary.objective
    return run.config.train.objective if run.config is not None else "causal"


def _training(run: RunDir, summary: Summary | None) -> Section | None:
    records = run.metrics()
    if not records:
        return None
    masked = _objective(run, summary) == "masked"
    loss = [s for s in (_series(records, "loss", "train loss"), _series(records, "val_loss", "validation loss")) if s]
    if loss and summary and summary.unigram_val_loss:
        xs = [min(s["steps"][0] for s in loss), max(s["steps"][-1] for s in loss)]
        secs = [min(s["seconds"][0] or 0 for s in loss), max(s["seconds"][-1] or 0 for s in loss)]
        loss.append({"name": "unigram baseline", "steps": xs, "seconds": secs,
                     "values": [summary.unigram_val_loss] * 2, "dashed": True})
    charts = [Chart("loss", "Loss", f"nats per {'masked ' if masked else ''}token", loss)] if loss else []
    for key, title, unit, bounds in (
            ("val_accuracy", "Masked-token accuracy", "share predicted first", (0.0, 1.0)),
            ("lr", "Learning rate", "lr", (0.0, None)), ("grad_norm", "Gradient norm", "norm", (0.0, None)),
            ("tokens_per_s", "Throughput", "tokens per second", (0.0, None)),
            ("mfu", "MFU", "fraction of peak", (0.0, 1.0))):
        s = _series(records, key, title.lower())
        if s:
            charts.append(Chart(key, title, unit, [s], bounds))
    if not charts:
        return None
    if masked:
        task = ("Training shows the model windows of text with some tokens hidden and nudges its weights so "
                "that it gives the hidden tokens a higher probability, reading the text on both sides. The loss "
                "is the average surprise at a hidden token, in nats: it starts near log(vocabulary) (guessing "
                "uniformly) and falls as the model learns; the accuracy is the share of hidden tokens it ranks first. ")
    else:
        task = ("Training shows the model windows of text and nudges its weights so the next token gets a higher "
                "probability. The loss is the average surprise, in nats per token: it starts near log(vocabulary) "
                "(guessing uniformly) and falls as the model learns. ")
    return Section("Training", task + (
        "The dashed unigram baseline is what a model that "
        "knows only each token's frequency would score; a useful model ends well below it. Validation loss "
        "is measured on text held out from training. The learning rate warms up, then decays; throughput "
        "and MFU (the share of the machine's peak arithmetic used) say how fast it went. Hover a chart for "
        "values, drag across it to zoom, double-click to zoom out."), [("chart", c) for c in charts])


def _results(summary: Summary | None) -> Section | None:
    if not summary or not summary.complete:
        return None
    if summary.objective == "masked":
        # bits per byte of a masked run divides the hidden tokens' loss by their bytes: a figure that
        # reads like a causal run's and does not compare with it, so it is not shown
        rows = [("masked-token loss", f"{summary.val_loss:.4f} nats per hidden token"),
                ("unigram baseline", f"{summary.unigram_val_loss:.4f} nats per token"),
                ("masked-token accuracy", f"{summary.val_accuracy:.3f} of {summary.val_tokens:,} hidden tokens "
                                          "predicted first")]
        why = ("The masked-token loss and accuracy are measured on hidden tokens of held-out text, the model seeing "
               "both sides of each gap: they do not compare with a left-to-right model's loss or bits per byte, "
               "which see one side only. ")
    else:
        rows = [("validation loss", f"{summary.val_loss:.4f} nats per token"),
                ("unigram baseline", f"{summary.unigram_val_loss:.4f} nats per token"),
                ("perplexity", f"{summary.perplexity:.2f}"), ("bits per byte", f"{summary.bits_per_byte:.4f}")]
        why = ("Perplexity is e to the loss: the number of equally likely tokens the model is, on average, choosing "
               "between. Bits per byte divides the loss by the bytes each token covers, so models with different "
               "tokenizers can be compared. ")
    cloze = summary.cloze
    if cloze:
        # `label` (what the tasks are) since issue 28; older summaries lack it
        lo, hi = cloze["accuracy_ci95"]
        rows.append((cloze.get("label", "fill-in-the-blank accuracy"),
                     f"{cloze['accuracy']:.3f} (95% interval {lo:.3f}–{hi:.3f}; chance {cloze['chance']:.3f}; "
                     f"{cloze['tasks']} tasks)"))
    blocks: list = [("table", None, rows)]
    for text in summary.samples or []:
        blocks.append(("pre", text))
    if summary.samples:
        blocks.insert(1, ("p", "Texts the model wrote, starting from a short prompt:"))
    return Section("Results", why + (
        "Fill-in-the-blank accuracy asks the model to pick the right word for a gap "
        "among a few choices; the interval says how much that figure could move with other questions."), blocks)


def _inside(run: RunDir, summary: Summary | None) -> Section | None:
    blocks: list = []
    neighbours = (summary.neighbours if summary else None) or {}
    if neighbours:
        rows = [(w, ", ".join(f"{n['word']} {n['similarity']:.2f}" for n in found)) for w, found in neighbours.items()]
        blocks.append(("table", ("word", "nearest words (cosine similarity)"), rows))
    word_map = run.inspect_dir / "map-static.png"
    if summary and (summary.map or {}).get("png"):
        word_map = run.inspect_dir / Path(summary.map["png"]).name
    picture = own_png(word_map)
    if picture is not None:
        blocks += [("p", "The word map: each word's vector squeezed to two dimensions; related words sit together."),
                   ("png", picture, "map of word vectors")]
    if run.latest_checkpoint() is not None:
        from lmforge.inspection import Inspector

        lens = Inspector(run.path).logit_lens(LENS_TEXT, k=1)
        header = ("layer",) + tuple(lens["tokens"])
        rows = [(str(layer["layer"]),) + tuple(p[0]["token"] for p in layer["top"]) for layer in lens["layers"]]
        blocks += [("p", f"The logit lens on {LENS_TEXT!r}: after each layer, the token the model would predict "
                         f"{'next' if lens['predicts'] == 'next' else 'at each position'} if it stopped there."),
                   ("token_table", header, rows)]
        picture = own_png(Path(lens["png"]))
        if picture is not None:
            blocks.append(("png", picture, "logit lens heat-map"))
    if not blocks:
        return None
    return Section("Inside the model", (
        "Every token gets a vector; words used alike end up with similar vectors, so a word's nearest "
        "neighbours show what the model has learned about it. The logit lens reads the model's running "
        "guess after every layer, showing where in the stack a prediction forms."), blocks)


def _cost(run: RunDir, summary: Summary | None) -> Section | None:
    if not summary or not summary.complete or run.config is None:
        return None
    from lmforge import cost, hardware
    from lmforge.config import load_config

    # the run's own time, measured, at its devices' power: no MFU in between (a masked run's MFU
    # counts only the head rows that ran, the shape's FLOPs all of them)
    device = summary.device
    power_w = hardware.power_watts(summary.device_name, summary.world_size,
                                   summary.threads or 1)
    energy_wh = power_w * summary.train_time_s / 3600
    big_shape = cost.shape_from_model(load_config("gpt2-small"))
    big_tokens = 20 * big_shape.params  # Chinchilla's compute-optimal ratio
    big = cost.estimate(big_shape, big_tokens, hardware.find_hardware("h100"), 8)
    header = ("", "this run", f"forecast: {big_shape.params / 1e6:.0f}M parameters on {big_tokens / 1e9:.1f}B tokens")
    rows = [("training FLOPs", f"{summary.flops_per_token * summary.tokens_trained:.3g}", f"{big.flops_exact:.3g}"),
            ("time", f"{summary.train_time_s:.0f} s on {device}", f"{big.days * 24:.1f} hours on 8 x {big.hardware} at MFU {big.mfu:.0%}"),
            ("energy", f"{energy_wh:.3g} Wh (at {power_w:.0f} W)", f"{big.energy_kwh:,.0f} kWh"),
            ("money", "—", f"${big.cost_usd:,.0f}")]
    return Section("Cost", (
        "Training cost is arithmetic: about 6 floating-point operations per parameter per token, plus "
        "attention. Divide by what the hardware actually sustains (its peak times MFU) for the time, multiply "
        "by its power for the energy. The same arithmetic forecasts a bigger run — here the gpt2-small preset "
        "trained on 20 tokens per parameter, as Chinchilla recommends (lmforge estimate does this for any shape)."),
        [("table", header, rows)])


def _sweep(path: Path) -> list[Section]:
    from lmforge.scaling.law import read_fit

    sweep = SweepDir(path)
    sections = []
    if sweep.fit_path.is_file():
        fit = read_fit(sweep.fit_path)  # the one reader of fit.json
        rows = []
        for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
            ci = (fit.get("ci") or {}).get(k)
            rows.append((k, f"{fit[k]:.4g}", f"{ci[0]:.4g} – {ci[1]:.4g}" if ci else ""))
        blocks: list = [("table", ("constant", "value", "95% interval"), rows)]
        for png in sorted(sweep.plots_dir.glob("*.png")):
            picture = own_png(png)
            if picture is not None:
                blocks.append(("png", picture, png.stem))
        # the form the fit used (fit.json's "law" spells it out), and whether it was given or chosen
        law = fit.get("law") or "L(N, D) = E + A / N^alpha + B / D^beta"
        given = "(given)" in (fit.get("form_choice") or {}).get("rule", "")
        form = {"kaplan": " (Kaplan et al.'s form", "additive": " (Chinchilla's additive form"}.get(fit.get("form"), "")
        form += (", as asked" if given else ", chosen because it extrapolated better in the backtests") + ")" if form else ""
        sections.append(Section("The scaling-law fit", (
            f"A sweep trains many small models of different sizes N on different numbers of tokens D and fits "
            f"{law} to their final losses{form}: "
            "E is the loss no model can beat, the "
            "other terms shrink as the model and the data grow. From the law follows the best split of a "
            "compute budget between parameters and tokens (N_opt ~ C^a, D_opt ~ C^b)." + _points_made(fit)), blocks))
    if sweep.verify_path.is_file():
        v = sweep.verified()
        items = v if isinstance(v, list) else [v]
        rows = []
        for r in items:
            rows.append((f"{r['params']:,} parameters, {r['tokens']:,} tokens", f"{r['predicted']:.4f}",
                         f"{r['actual']:.4f}", f"{100 * r['relative_error']:+.2f}%"))
        sections.append(Section("Prediction against the verified run", (
            "The point of a law is to predict a run before paying for it. A bigger model was trained and its "
            "loss compared with the prediction made from the small ones."),
            [("table", ("target", "predicted", "actual", "relative error"), rows)]))
    widths = _across_widths(sweep)
    return sections + ([widths] if widths else [])


def _across_widths(sweep: SweepDir) -> Section | None:
    """The coordinate check's and the lr tune's pictures, when they were written into the sweep."""
    from lmforge.scaling.coordcheck import PLOT_FILE as COORDCHECK_PNG
    from lmforge.scaling.tune import PLOT_FILE as TUNE_PNG

    found = [("png", own_png(folder / name), alt) for folder, name, alt in (
        (sweep.coordcheck_dir, COORDCHECK_PNG, "coordinate check across widths"),
        (sweep.tune_dir, TUNE_PNG, "learning rate tune of the proxy"))]
    blocks = [b for b in found if b[1] is not None]
    if not blocks:
        return None
    return Section("Hyperparameters across widths", (
        "Under muP (model.parametrization=mup) a learning rate tuned on a narrow model holds for a wide one. The "
        "coordinate check shows whether activations keep their size as the width grows (flat under muP); the tune "
        "shows the losses of the narrow proxy at each learning rate, the best of which SWEEP/tune/tuned.yaml "
        "gives every run of the sweep."), blocks)


def _points_made(fit: dict) -> str:
    """How the sweep made its points, where they were cooldowns branched off one run per size."""
    cd = fit.get("cooldowns") or {}
    if cd.get("mode") != "branched":
        return ""
    return (f" Its points are cooldowns branched off one warmup-stable-decay run per size (Hägele et al. 2024): "
            f"each size trains once at a constant learning rate and every token count decays from there, "
            f"{cd['flops']:.3g} FLOPs instead of {cd['flops_separate']:.3g} for separate runs "
            f"({100 * cd['saving']:.0f}% saved).")


def read_page(path: Path) -> Page:
    """The page of a run or sweep folder; LmforgeError for anything else."""
    if SweepDir(path).is_sweep() or SweepDir(path).fit_path.is_file():
        return Page(f"Sweep {path.name}", "What a sweep of small models says about bigger ones: the scaling law "
                    "fitted to their losses, and how well it predicted a run it had not seen", _sweep(path))
    run = RunDir(path)
    if not run.is_run():
        raise LmforgeError(f"report: {path} is not a run or sweep folder ({looks_like(path)}): give the --out of "
                           "lmforge train, lmforge run or lmforge scale plan")
    summary = run.summary()
    found = [_corpus(run), _tokens(run), _training(run, summary), _results(summary), _inside(run, summary),
             _cost(run, summary)]
    return Page(f"Run {path.name}", "How this language model was made, stage by stage",
                [s for s in found if s is not None])


def own_png(path: Path) -> bytes | None:
    """The PNG lmforge wrote at `path`, or None: a missing file, a symbolic link (the page would carry
    whatever file it points to) or anything that is not a PNG is left out."""
    data = read_own_bytes(path)
    return data if data is not None and data.startswith(PNG_SIGNATURE) else None
