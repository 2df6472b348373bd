"""`lmforge export RUN --format hf OUT/`: a run's newest model as a Hugging Face Llama folder, which
`transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads offline with no custom code. The
folder's layout and how lmforge's weights map onto Llama's are in hf_llama.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmforge import figures, files
from lmforge.errors import LmforgeError
from lmforge.folders.run import MODEL_FILE, RunDir, enclosing_run
from lmforge.folders.tokenized import TOKENIZER_FILE
from lmforge.hf_llama import (HF_CONFIG, HF_GENERATION, HF_SPECIAL_TOKENS, HF_TOKENIZER_CONFIG, llama_config,
                              to_llama_state)
from lmforge.open_run import open_run
from lmforge.tokenizer import EOT, MASK, PAD

FORMATS = ("hf",)
EXPORTED_BY = "lmforge export"  # in model.safetensors' metadata: how an earlier export is recognised


def _is_export(folder: Path) -> bool:
    weights = folder / MODEL_FILE
    if weights.is_symlink() or not weights.is_file():
        return False
    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get("exported_by") == EXPORTED_BY
    except (SafetensorError, OSError):
        return False


EXPORT = files.OutputKind("export", (MODEL_FILE, TOKENIZER_FILE, HF_TOKENIZER_CONFIG, HF_SPECIAL_TOKENS, HF_GENERATION,
                                     HF_CONFIG), HF_CONFIG, _is_export)


def export(run_dir: str | Path, out: str | Path, fmt: str = "hf", force: bool = False) -> dict:
    """Write RUN's newest checkpoint to OUT as a Hugging Face Llama folder; returns what was written.
    OUT must be new, empty or an earlier export (`force`: any folder, the export's files beside the others),
    and never inside a run folder."""
    if fmt not in FORMATS:
        raise LmforgeError(f"export: unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = RunDir(run_dir).require()
    out = Path(out)
    holder = enclosing_run(out)
    if holder is not None:
        raise LmforgeError(f"export: OUT {out} lies in the run folder {holder}, whose files lmforge's readers and "
                           f"writers own: give an OUT outside any run folder")
    files.claim_output(out, EXPORT, force, option="export OUT")
    if run.objective == "masked":
        raise LmforgeError(
            f"export: {run} is a masked (bidirectional) model and no standard Hugging Face encoder class fits "
            "lmforge's architecture exactly (RoPE, parameter-free RMSNorm, SwiGLU); export a causal run instead")
    opened = open_run(run, "cpu")
    tokenizer = files.read_own_bytes(run.tokenizer_path)
    if tokenizer is None:
        raise LmforgeError(f"export: {run.tokenizer_path} is missing or a symbolic link: lmforge copies only its own "
                           f"run files; copy the {TOKENIZER_FILE} it points to into the run")
    build = files.building_folder(out, "export")
    files.refuse_link(build)
    files.remove(build)  # a killed export's leftover: lmforge's own, by its name
    with files.output_errors("export", out):
        with files.discarded_on_error(build):
            try:
                build.mkdir(parents=True)
                _write_hf(build, opened, tokenizer)
            except SafetensorError as e:  # the Rust writer's disk full or permission error
                raise LmforgeError(f"export: cannot write {build / MODEL_FILE} ({e}): free disk space or choose "
                                   f"another OUT") from None
        files.install(build, out, EXPORT)
    return {"out": str(out), "checkpoint": str(opened.checkpoint), "format": fmt, "architecture": "LlamaForCausalLM",
            "files": sorted(EXPORT.entries), "params": int(opened.model.cfg.shape().params)}


def _write_hf(folder: Path, opened, tokenizer: bytes) -> None:
    """The export's files in `folder` (new, made by lmforge), config.json last."""
    tok, run = opened.tokenizer, opened.run
    eot, pad = tok.token_to_id(EOT), tok.token_to_id(PAD)
    cfg = opened.model.cfg
    save_file(to_llama_state(opened.model), str(folder / MODEL_FILE), metadata={"format": "pt", "exported_by": EXPORTED_BY})
    files.as_readable_as_any(folder / MODEL_FILE)
    files.atomic_write_bytes(folder / TOKENIZER_FILE, tokenizer)
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": PAD, "mask_token": MASK}
    _write_json(folder / HF_TOKENIZER_CONFIG, {
        "tokenizer_class": "PreTrainedTokenizerFast", **special, "model_max_length": cfg.seq_len,
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
    })
    _write_json(folder / HF_SPECIAL_TOKENS, special)
    sampling = run.config.run if run.config is not None else None
    _write_json(folder / HF_GENERATION, {
        "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": pad, "do_sample": True,
        "temperature": sampling.temperature if sampling else 0.8, "top_k": sampling.top_k if sampling else 50,
    })
    _write_json(folder / HF_CONFIG, llama_config(cfg, eot, pad))


def _write_json(path: Path, obj: dict) -> None:
    files.atomic_write_text(path, json.dumps(obj, indent=2))


# ---------------------------------------------------------------- reading a Llama folder back

@dataclass
class Exported(figures.Result):
    """What `lmforge export` shows of `export`'s record of what it wrote."""

    export: dict

    def lines(self) -> list[str]:
        r = self.export
        return [f"export: {r['checkpoint']} -> {r['out']} ({r['architecture']}, {r['params']:,} parameters; "
                f"{', '.join(r['files'])}); load it with transformers.AutoModelForCausalLM.from_pretrained"]
