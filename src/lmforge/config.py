"""One configuration tree for the whole pipeline.

    Config
      data       where the text comes from and how it is split
      tokenizer  BPE training and shard encoding
      model      Transformer shape
      train      optimisation, schedule, precision, checkpoints
      run        output folder, sampling at the end
      prepare    cleaning thresholds (lmforge prepare)
      scale      scaling-law sweeps: the size knob and how the other hyperparameters follow it

Presets are YAML files in `lmforge/configs/` (`tiny`, `scaling`, `gpt2-small`, `1b`); any field can
then be overridden with `section.field=value` (values parsed as YAML). Unknown keys, wrong types and
out-of-range values raise `LmforgeError` naming the key, quoting at most a short excerpt of the
value. YAML is read safely and strictly (`StrictLoader`: no key twice, no explicit null, bounded
nesting and alias expansion), a refusal naming FILE:LINE. The fully resolved tree is saved as
`config.yaml` in every run folder and loads back to an equal object (its `preset:` included).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lmforge.data import FILTERS  # the filter registry's names (data/__init__.py imports nothing)
from lmforge.errors import LmforgeError, shown
from lmforge.files import atomic_write_text

BUILTIN_SOURCE = "builtin"
# what cleaning treats a document as (README "Cleaning policy"): a book, a play, docs are all prose
KINDS = ("prose", "web", "code")
# the names data.kinds and --kind accept: a book or a play is cleaned by prose's rules
KIND_NAMES = {"prose": "prose", "book": "prose", "play": "prose", "web": "web", "code": "code"}
# tiktoken's largest vocabulary (o200k) holds ~200k tokens; beyond 2**20 an embedding table is a
# mistake in the number, and the tokenizer trainer would try to allocate it before saying so
MAX_VOCAB_SIZE = 2**20


@dataclass
class DataConfig:
    sources: list[str] = field(default_factory=lambda: [BUILTIN_SOURCE])
    text_field: str = "text"  # JSONL/Parquet field holding the document text
    max_bytes: int = 0  # stop reading after this many bytes of text (0 = read everything)
    val_fraction: float = 0.02  # share held out for validation (split by document id)
    # a longer document holds out its own last val_fraction instead: whole, by its id, a few large documents
    # (a book, two long changelogs) would give validation far more or less than its share
    long_document_tokens: int = 16_384
    max_document_bytes: int = 8_000_000  # longer files are read as several documents, never whole
    tokenized: str = ""  # a tokenized folder to train on ("" = RUN/tokens, built from sources)
    # documents' kinds, as "SOURCE=KIND" (one source, written as in `sources`) or "KIND" (every other
    # source); a source with none is guessed per document (clean.kind_of)
    kinds: list[str] = field(default_factory=list)


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    train_bytes: int = 30_000_000  # text used to learn the merges, drawn across the whole corpus by a hash of each document's id, in 64K-character pieces (0 = all)
    min_frequency: int = 2
    shard_tokens: int = 100_000_000  # tokens per shard file
    # documents encoded at once: at most this many, and at most encode_batch_bytes of text (a longer document
    # goes in pieces); encodings hold ~40x their text while a batch is encoded; batching never changes the tokens
    encode_batch_documents: int = 512
    encode_batch_bytes: int = 16_000_000


@dataclass
class ModelConfig:
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0  # 0 = n_head (plain multi-head); fewer = grouped-query attention
    n_embd: int = 128
    seq_len: int = 256  # training context; RoPE tables are built for this length
    mlp_hidden: int = 0  # 0 = 8/3 * n_embd rounded up to a multiple of 64 (SwiGLU at ~4x MLP FLOPs)
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    vocab_size: int = 0  # 0 = taken from the tokenizer
    # standard (GPT-2: one init scale and lr for every width) | mup (maximal update parameterisation:
    # init, per-group lr, attention and output scales follow the width, so train.lr and the init
    # tuned at mup_base_width stay right at any width; see lmforge/model.py and training/optim.py)
    parametrization: str = "standard"
    mup_base_width: int = 0  # mup: the model.n_embd the hyperparameters were tuned at (required under mup)


@dataclass
class TrainConfig:
    objective: str = "causal"  # causal (next token) | masked (missing tokens, bidirectional attention)
    mask_prob: float = 0.15  # masked: share of each sequence's tokens selected as targets
    mask_replace: float = 0.8  # masked: of those, share replaced by <|mask|>...
    mask_random: float = 0.1  # ...and by a random token (the rest stay as they are)
    whole_word_mask: bool = False  # masked: select whole words, not single tokens
    batch_size: int = 16  # sequences per micro-batch (per rank)
    grad_accum: int = 1  # micro-batches per optimizer step, over all ranks (each of W runs grad_accum / W)
    max_steps: int = 1000
    optimizer: str = "adamw"  # adamw | muon (Muon for hidden matrices, AdamW for the rest)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # lr of the last step (max_steps - 1) as a fraction of lr: where cosine and wsd end
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying
    # decoupled, on matrices only: adamw decays embeddings, head and block matrices; muon decays the
    # block matrices it updates, not the embeddings and head (AdamW's under muon, as in nanochat)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    dtype: str = "auto"  # auto | float32 | bfloat16 (auto: bf16 on CUDA/AMX CPUs, else fp32)
    compile: bool = False
    # activation recomputation per block: none | selective (keep matmul and attention outputs,
    # recompute norms, rotary and SwiGLU's elementwise ops) | full (keep only each block's input)
    recompute: str = "none"
    data_parallel: str = "ddp"  # ddp (a full replica per rank) | fsdp (FSDP2: parameters, gradients, optimizer state sharded)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's count, fewer while other processes keep cores busy
    seed: int = 1337
    log_interval: int = 10
    eval_interval: int = 250  # 0 = only at the end
    eval_tokens: int = 100_000  # validation tokens per periodic evaluation (0 = all)
    # validation tokens for the final figures and the unigram baseline (0 = all); raised to eval_tokens
    # where that is larger: the final evaluation is the curve's last point and holds its windows
    final_eval_tokens: int = 2_000_000
    checkpoint_interval: int = 500  # 0 = only at the end
    keep_checkpoints: int = 2
    progress: bool = True
    init_from: str = ""  # a Hugging Face Llama folder (lmforge export) whose weights start the run


@dataclass
class OutputConfig:
    """The `run` section: the run folder, and what lmforge run shows of the model at the end."""

    out: str = "runs/tiny"
    samples: int = 3
    sample_tokens: int = 80
    sample_prompts: list[str] = field(default_factory=list)  # [] = the first words of validation documents
    temperature: float = 0.8
    top_k: int = 50
    inspect_words: int = 4  # lmforge run prints the nearest neighbours of this many frequent words (0 = none)
    map_words: int = 150  # ...and maps this many frequent words to RUN/inspect/map-static.{png,html} (0 = no map)
    # the fill-in-the-blank tasks lmforge run scores: "" = the built-in ones on the built-in corpus, else
    # ones made from the run's validation text; or "builtin", "validation", "none", or a task file
    tasks: str = ""


# ---------------------------------------------------------------- prepare (cleaning) thresholds
# Published defaults: Gopher (Rae et al. 2021), C4 (Raffel et al. 2020), FineWeb (Penedo et al. 2024)
# as implemented in datatrove, and StarCoder's code filters (Li et al. 2023).


@dataclass
class GopherQualityConfig:
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8  # at least 80% of words hold a letter
    min_stop_words: int = 2


@dataclass
class GopherRepetitionConfig:
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: list[list[float]] = field(default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    dup_n_grams: list[list[float]] = field(
        default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]]
    )
    # the n-gram rules judge a longer document window by window (the character-weighted mean of the
    # windows' shares): Gopher set its limits on web pages, and honest text repeats more 5-grams the
    # longer it is (TinyStories: 0.04 of its characters per 2,000 words, 0.16 over 155,000)
    window_words: int = 10_000


@dataclass
class C4Config:
    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    remove_lines_without_punctuation: bool = False  # C4 did; FineWeb turned it off (too lossy), as here
    curly_bracket: bool = True  # C4: a '{' rejects the page (it meant code); only on web text, see prepare.line_rules
    policy_phrases: list[str] = field(default_factory=lambda: [
        "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"])


@dataclass
class FineWebConfig:
    min_line_punct_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    max_duplicate_line_char_ratio: float = 0.01
    max_newline_word_ratio: float = 0.3


@dataclass
class CodeConfig:
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alphanumeric_fraction: float = 0.25
    generated_markers: list[str] = field(default_factory=lambda: [
        "auto-generated", "autogenerated", "automatically generated", "generated by", "do not edit"])


@dataclass
class PrepareConfig:
    enabled: bool = True  # lmforge run cleans its sources first
    # the processes of the data stages, prepare's and tokenize's (neither in a fingerprint: the output is the same)
    workers: int = 0  # processes (0 = one per core)
    executor: str = "local"  # local (a process pool) | ray (a Ray cluster, for corpora beyond one machine)
    shard_documents: int = 1000  # documents per shard: the unit of parallelism and of resume
    # ...and at most this many bytes of text per shard (a larger document goes alone): the main process holds
    # 2 x workers shards in flight, and a worker one, so memory follows these settings, not the corpus
    shard_bytes: int = 16_000_000
    # input bytes (as listed) per key partition of deduplication (at least 8 partitions), fixed when a prepare starts: a
    # partition task holds its share's ids, exact keys and boilerplate-candidate lines (~0.15 bytes a byte of
    # text measured on code and docs), not the corpus's. Not in the fingerprint: the output is the same
    key_partition_bytes: int = 1_000_000_000
    repair: bool = True
    pii: bool = True
    boilerplate: bool = True  # drop lines repeated verbatim across many documents
    boilerplate_min_documents: int = 20  # a line in at least this many documents is boilerplate...
    boilerplate_min_fraction: float = 0.01  # ...and in at least this share of them
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    filters: list[str] = field(default_factory=lambda: list(FILTERS))  # run in registry order, whatever the order here
    # where C4's and FineWeb's line rules apply: "web" (web pages and JSONL/Parquet records, the text
    # they were designed on), "prose" (also books, docs and other plain-text files), "off"
    line_rules: str = "web"
    languages: list[str] = field(default_factory=lambda: ["en"])
    language_min_probability: float = 0.65
    offensive_threshold: float = 0.9
    offensive_max_fraction: float = 0.2  # share of offensive paragraphs that removes a document
    # ...a paragraph counting only when one of its words weighs this much in the model: a profanity or an
    # insult ("fool" 2.5, "idiot" 6.2), not a sum of mild words ("dirty" 1.9, "mom" 1.6); 0: the score alone
    offensive_min_word_weight: float = 2.5
    blocklist: str = ""  # file of words / URL fragments, one per line ("" = none)
    exact_dedup: bool = True
    near_dedup: bool = True
    ngram_words: int = 5
    minhash_bands: int = 14
    minhash_rows: int = 8  # 14 x 8: P(candidate) = 0.92 at Jaccard 0.8, 0.9996 at 0.9
    near_dedup_threshold: float = 0.75  # verified Jaccard needed to call two documents duplicates
    seed: int = 1


@dataclass
class ScaleConfig:
    """A scaling-law sweep (lmforge scale): every model from one size knob, everything else fixed
    or scaled by a stated rule, so that only N and D vary between runs (docs in lmforge/scaling)."""

    knob: str = "width"  # width (depth fixed at `depth`) | depth (width = aspect * depth)
    sizes: list[int] = field(default_factory=lambda: [32, 48, 64, 96, 128])  # knob values
    depth: int = 4  # layers of every model when the knob is width
    aspect: int = 32  # width per layer when the knob is depth
    head_dim: int = 16  # heads = width / head_dim
    lr_exponent: float = 0.5  # lr = train.lr * (model.n_embd / width) ** lr_exponent (standard; muP keeps train.lr)
    warmup_fraction: float = 0.05  # warmup steps as a share of each run's own steps
    # ... and never fewer than this many: the early instability a short warmup lets in comes at a fixed
    # step count, not a share of the run (docs/LOG.md 2026-12-02, issue 17 fifth attempt)
    min_warmup_steps: int = 200
    design: str = "isoflop"  # isoflop (sizes x compute levels) | grid (sizes x token counts) | optimal
    levels: int = 4  # isoflop: compute levels
    level_ratio: float = 2.0  # isoflop: ratio between neighbouring compute levels (grid: token counts)
    points_per_size: int = 4  # grid: token counts per size
    min_tokens_per_param: float = 0.5  # runs outside [min, max] tokens per parameter are left out
    max_tokens_per_param: float = 200.0
    min_steps: int = 20  # shorter runs are left out (warmup and decay need room)
    parallel: int = 1  # training processes at once (threads split between them)
    bootstrap: int = 200  # resamples for confidence intervals
    huber_delta: float = 1e-3  # Chinchilla's Huber delta on log-loss residuals
    # optimal design: the runs of sizes x token counts that pin alpha and beta down most per FLOP
    max_run_flops: float = 0.0  # optimal: no run above this 6ND (0: a quarter of the budget)
    prior: str = ""  # optimal: the law the design is chosen under (a published name, a fit.json or a sweep)
    noise: float = 0.01  # run-to-run noise of a final loss (relative) assumed by the design; fits measure it
    repeats: int = 0  # runs trained once more with another seed, to measure run-to-run noise
    targets: list[str] = field(default_factory=list)  # "N:D" forecasts whose interval the plan reports
    fixed_e: float = 0.0  # fit approach fixed_e: E fixed to this (0: the L(C) asymptote, when there is one)
    interval: str = "parametric"  # parametric (refit on simulated noise) | cases (resample the points)
    form: str = "auto"  # law form: additive (approach 3) | kaplan | auto (the one that backtests better)
    # separate: one full run per token count | branched: per size one WSD trunk at constant lr, each token
    # count a cooldown branched off it (Hagele et al. 2024; needs train.schedule=wsd)
    cooldowns: str = "separate"


@dataclass
class Config:
    preset: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: OutputConfig = field(default_factory=OutputConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step: train.grad_accum micro-batches (over all processes) of
        train.batch_size windows of model.seq_len targets."""
        return self.train.batch_size * self.train.grad_accum * self.model.seq_len

    def validate(self) -> "Config":
        _validate(self)
        return self


RECOMPUTE = ("none", "selective", "full")  # train.recompute and `lmforge estimate --recompute`

CHOICES = {
    "model.parametrization": ("standard", "mup"),
    "train.recompute": RECOMPUTE,
    "train.objective": ("causal", "masked"),
    "train.optimizer": ("adamw", "muon"),
    "train.data_parallel": ("ddp", "fsdp"),
    "train.schedule": ("cosine", "wsd", "constant"),
    "train.dtype": ("auto", "float32", "bfloat16"),
    "prepare.executor": ("local", "ray"),
    "prepare.line_rules": ("web", "prose", "off"),
    "scale.knob": ("width", "depth"),
    "scale.design": ("isoflop", "grid", "optimal"),
    "scale.interval": ("parametric", "cases"),
    "scale.form": ("auto", "additive", "kaplan"),
    "scale.cooldowns": ("separate", "branched"),
}


def _check(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise LmforgeError(f"config: {key}={shown(value)} is invalid: {requirement}")


def _validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value in allowed, key, value, f"choose one of {', '.join(allowed)}")
    _validate_ranges(cfg)
    _validate_model(cfg.model)
    _validate_train(cfg.train)
    _validate_prepare(cfg.prepare)
    _validate_scale(cfg.scale)
    _check(259 <= cfg.tokenizer.vocab_size <= MAX_VOCAB_SIZE, "tokenizer.vocab_size", cfg.tokenizer.vocab_size,
           f"must be in [259, {MAX_VOCAB_SIZE}] (256 bytes + 3 special tokens; the largest vocabularies in use hold ~200k)")
    _check(0 < cfg.data.val_fraction < 1, "data.val_fraction", cfg.data.val_fraction, "must be in (0, 1)")
    _check(len(cfg.data.sources) > 0, "data.sources", cfg.data.sources, "name at least one source")
    for entry in cfg.data.kinds:
        _check(entry.rpartition("=")[2] in KIND_NAMES, "data.kinds", entry,
               f"give SOURCE=KIND or KIND (every source), the kind one of {', '.join(KIND_NAMES)}")
    for key, seed in (("train.seed", cfg.train.seed), ("prepare.seed", cfg.prepare.seed)):
        _check(0 <= seed < 2**32, key, seed, "must be in [0, 2**32)")
    _check(0 <= cfg.run.temperature < math.inf, "run.temperature", cfg.run.temperature,
           "must be a finite number >= 0 (0 = greedy)")


def _validate_ranges(cfg: Config) -> None:
    """Counts that must be positive, and counts where 0 means "off" or "all"."""
    m, t, d, tk = cfg.model, cfg.train, cfg.data, cfg.tokenizer
    positive = {
        "model.n_layer": m.n_layer, "model.n_head": m.n_head, "model.n_embd": m.n_embd,
        "model.seq_len": m.seq_len, "train.batch_size": t.batch_size,
        "train.grad_accum": t.grad_accum, "train.max_steps": t.max_steps,
        "tokenizer.shard_tokens": tk.shard_tokens, "train.log_interval": t.log_interval,
        "tokenizer.encode_batch_documents": tk.encode_batch_documents,
        "tokenizer.encode_batch_bytes": tk.encode_batch_bytes,
        "data.max_document_bytes": d.max_document_bytes, "train.keep_checkpoints": t.keep_checkpoints,
        "data.long_document_tokens": d.long_document_tokens,
        "prepare.gopher_repetition.window_words": cfg.prepare.gopher_repetition.window_words,
    }
    for key, value in positive.items():
        _check(value > 0, key, value, "must be > 0")
    non_negative = {
        "model.n_kv_head": m.n_kv_head, "model.mlp_hidden": m.mlp_hidden, "model.vocab_size": m.vocab_size,
        "model.mup_base_width": m.mup_base_width,
        "train.warmup_steps": t.warmup_steps, "train.weight_decay": t.weight_decay,
        "train.grad_clip": t.grad_clip, "train.threads": t.threads, "train.eval_interval": t.eval_interval,
        "train.eval_tokens": t.eval_tokens, "train.final_eval_tokens": t.final_eval_tokens,
        "train.checkpoint_interval": t.checkpoint_interval,
        "data.max_bytes": d.max_bytes, "tokenizer.train_bytes": tk.train_bytes,
        "run.samples": cfg.run.samples, "run.sample_tokens": cfg.run.sample_tokens, "run.top_k": cfg.run.top_k,
        "run.inspect_words": cfg.run.inspect_words, "run.map_words": cfg.run.map_words,
    }
    for key, value in non_negative.items():
        _check(value >= 0, key, value, "must be >= 0")


def _validate_model(m: ModelConfig) -> None:
    _check(m.n_embd % m.n_head == 0, "model.n_embd", m.n_embd, f"must be divisible by model.n_head={m.n_head}")
    _check((m.n_embd // m.n_head) % 2 == 0, "model.n_embd", m.n_embd, "head size n_embd/n_head must be even (rotary embedding)")
    kv = m.n_kv_head or m.n_head
    _check(m.n_head % kv == 0, "model.n_kv_head", m.n_kv_head, f"must divide model.n_head={m.n_head}")
    _check(m.rope_theta > 0, "model.rope_theta", m.rope_theta, "must be > 0")
    _check(m.vocab_size <= MAX_VOCAB_SIZE, "model.vocab_size", m.vocab_size,
           f"must be <= {MAX_VOCAB_SIZE} (0 = the tokenizer's)")
    # no default base: one taken from the model's own width would make every width its own base,
    # and nothing would transfer
    _check(m.parametrization != "mup" or m.mup_base_width > 0, "model.mup_base_width", m.mup_base_width,
           "model.parametrization=mup needs the width train.lr was tuned at: set model.mup_base_width")


def _validate_train(t: TrainConfig) -> None:
    _check(not (t.data_parallel == "fsdp" and t.optimizer == "muon"), "train.data_parallel", t.data_parallel,
           "FSDP shards every matrix and Muon orthogonalises whole ones: use train.optimizer=adamw with fsdp")
    _check(t.lr > 0, "train.lr", t.lr, "must be > 0")
    _check(t.muon_lr > 0, "train.muon_lr", t.muon_lr, "must be > 0")
    _check(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]")
    _check(0 < t.decay_fraction <= 1, "train.decay_fraction", t.decay_fraction, "must be in (0, 1]")
    _check(0 < t.mask_prob <= 1, "train.mask_prob", t.mask_prob, "must be in (0, 1]")
    for key, value in (("train.mask_replace", t.mask_replace), ("train.mask_random", t.mask_random)):
        _check(0 <= value <= 1, key, value, "must be in [0, 1]")
    _check(t.mask_replace + t.mask_random <= 1, "train.mask_random", t.mask_random,
           f"train.mask_replace + train.mask_random must be <= 1 (mask_replace is {t.mask_replace})")
    _check(0 <= t.beta1 < 1, "train.beta1", t.beta1, "must be in [0, 1)")
    _check(0 <= t.beta2 < 1, "train.beta2", t.beta2, "must be in [0, 1)")
    dev = t.device
    _check(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"), "train.device", dev, "use auto, cpu, cuda or cuda:N")


def _validate_prepare(p: PrepareConfig) -> None:
    _check(p.workers >= 0, "prepare.workers", p.workers, "must be >= 0 (0 = one per core)")
    _check(p.shard_documents > 0, "prepare.shard_documents", p.shard_documents, "must be > 0")
    _check(p.shard_bytes > 0, "prepare.shard_bytes", p.shard_bytes, "must be > 0")
    _check(p.key_partition_bytes > 0, "prepare.key_partition_bytes", p.key_partition_bytes, "must be > 0")
    _check(p.minhash_bands > 0 and p.minhash_rows > 0, "prepare.minhash_bands", p.minhash_bands,
           "bands and rows must be > 0")
    _check(p.ngram_words > 0, "prepare.ngram_words", p.ngram_words, "must be > 0")
    _check(0 <= p.offensive_min_word_weight < math.inf, "prepare.offensive_min_word_weight",
           p.offensive_min_word_weight, "must be a finite number >= 0 (0 = the score alone decides)")
    _check(0 < p.near_dedup_threshold <= 1, "prepare.near_dedup_threshold", p.near_dedup_threshold, "must be in (0, 1]")
    for name in p.filters:
        _check(name in FILTERS, "prepare.filters", name, f"choose from {', '.join(FILTERS)}")


def _validate_scale(sc: ScaleConfig) -> None:
    for key in ("depth", "aspect", "head_dim", "levels", "points_per_size", "min_steps", "parallel"):
        _check(getattr(sc, key) > 0, f"scale.{key}", getattr(sc, key), "must be > 0")
    _check(len(sc.sizes) > 0 and all(v > 0 for v in sc.sizes), "scale.sizes", sc.sizes, "name at least one size > 0")
    _check(sc.level_ratio > 1, "scale.level_ratio", sc.level_ratio, "must be > 1")
    _check(0 <= sc.warmup_fraction < 1, "scale.warmup_fraction", sc.warmup_fraction, "must be in [0, 1)")
    _check(sc.min_warmup_steps >= 0, "scale.min_warmup_steps", sc.min_warmup_steps, "must be >= 0")
    _check(0 < sc.min_tokens_per_param < sc.max_tokens_per_param, "scale.min_tokens_per_param",
           sc.min_tokens_per_param, "must be > 0 and below scale.max_tokens_per_param")
    _check(sc.bootstrap >= 0, "scale.bootstrap", sc.bootstrap, "must be >= 0")
    _check(sc.huber_delta > 0, "scale.huber_delta", sc.huber_delta, "must be > 0")
    for key in ("max_run_flops", "repeats", "fixed_e"):
        _check(getattr(sc, key) >= 0, f"scale.{key}", getattr(sc, key), "must be >= 0")
    _check(0 < sc.noise < 1, "scale.noise", sc.noise, "must be in (0, 1): a relative noise, e.g. 0.01")


# ---------------------------------------------------------------- loading and overriding

def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the field's annotation; ints are accepted where floats are due."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single source given on the command line
        if not isinstance(value, list):
            raise LmforgeError(f"config: {key} must be a list, got {shown(value)}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise LmforgeError(f"config: {key} must be true or false, got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML
        raise LmforgeError(f"config: {key} must be an integer, got {shown(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '3e-4' as a string
            try:
                number = float(value)
            except ValueError:
                pass
        # NaN passes every range check (each comparison with it is false): refused here, once
        if number is None or math.isnan(number):
            raise LmforgeError(f"config: {key} must be a number, got {shown(value)}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise LmforgeError(f"config: {key} must be a string, got {shown(value)}")
    raise TypeError(f"unsupported config type {tp} for {key}")


def _unknown_key(key: str, known: list[str]) -> LmforgeError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return LmforgeError(f"config: unknown key {shown(key)}{hint}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise LmforgeError(f"config: {prefix.rstrip('.') or 'top level'} must be a mapping, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        if name not in hints:
            raise _unknown_key(f"{prefix}{name}", known)
        tp = hints[name]
        if _is_dataclass_type(tp):  # an empty section (`train:` in YAML) is no section, never a reset
            kwargs[name] = _build(tp, {} if value is None else value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, tp)
    return cls(**kwargs)


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if v is None and isinstance(out.get(k), dict):  # `train:` with nothing under it changes nothing
            continue
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("lmforge.configs").iterdir() if p.name.endswith(".yaml"))


# Limits no config comes near (it nests 6 deep, prepare.gopher_repetition.top_n_grams[i][j], and
# holds a few hundred values) but a hostile or broken file does: the composer recurses once per
# level (10,000 levels end in RecursionError), and nine nested levels of nine aliases are 1 KB of
# text naming 387 million values, each one walked by the checks and printed by an error about it.
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 100_000


class _Refused(yaml.MarkedYAMLError):
    """A YAML file lmforge will not read as a config; `problem` says why, `problem_mark` where."""

    def __init__(self, problem: str, mark):
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what a config never needs: a key given twice (YAML keeps the
    last one without a word), an explicit null (`train: null` would read as no section at all),
    nesting deeper than MAX_YAML_DEPTH, and aliases expanding past MAX_YAML_VALUES values."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        _count_values(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` entries may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise _Refused(f"key {shown(key)} is given twice (first on line {first_line[key] + 1}): "
                                   f"keep one", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class says so
                pass
        return super().construct_mapping(node, deep)

    def construct_yaml_null(self, node):
        if node.value:  # `train:` with nothing after it is empty and changes nothing; `null` or `~` is meant
            raise _Refused(f"{node.value} is not a config value: leave the key out for its default", node.start_mark)
        return None


StrictLoader.add_constructor("tag:yaml.org,2002:null", StrictLoader.construct_yaml_null)


def _count_values(node: yaml.Node, counted: dict[int, int], holding: set[int]) -> int:
    """Values under `node` with every alias expanded, counted once per distinct node; refuses a
    document past MAX_YAML_VALUES and an alias inside the value it names (a loop)."""
    if id(node) in counted:
        return counted[id(node)]
    if id(node) in holding:
        raise _Refused("an alias names a value that holds it (a loop)", node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return 1
    holding.add(id(node))
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
    total = 1 + sum(_count_values(child, counted, holding) for child in children)
    holding.discard(id(node))
    if total > MAX_YAML_VALUES:
        raise _Refused(f"holds more than {MAX_YAML_VALUES:,} values once its aliases (*name) are expanded",
                       node.start_mark)
    counted[id(node)] = total
    return total


def load_yaml(text: str) -> Any:
    """yaml.safe_load with StrictLoader's refusals."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path | Any, label: str) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmforgeError(f"config file {label} not found") from None
    except IsADirectoryError:
        raise LmforgeError(f"config file {label} is a folder: give a YAML file") from None
    except UnicodeDecodeError:
        raise LmforgeError(f"config file {label} is not text (not UTF-8): give a YAML file") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise LmforgeError(f"config file {label}: {shown(str(e))}") from None
    except OSError as e:
        raise LmforgeError(f"cannot read config file {label}: {e.strerror}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{label}:{mark.line + 1}" if mark else label
        why = e.problem if isinstance(e, _Refused) else f"not valid YAML: {e.problem or e.context}"
        raise LmforgeError(f"config file {where}: {why}") from None
    except yaml.YAMLError as e:
        raise LmforgeError(f"config file {label} is not valid YAML: {shown(str(e).splitlines()[0])}") from None
    if data is not None and not isinstance(data, dict):
        raise LmforgeError(f"config file {label} must hold a mapping of sections")
    return data or {}


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=3e-4' -> {'train': {'lr': 3e-4}} (the value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise LmforgeError(f"override {shown(text)} must look like section.field=value")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except _Refused as e:
        raise LmforgeError(f"override {key}: {e.problem}") from None
    except yaml.YAMLError:
        value = raw
    nested: Any = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    default_preset: str | None = "tiny",
) -> Config:
    """The preset's YAML, then a user YAML file over it, then overrides; validated.

    The preset is `preset`, else the one the file names (`preset: gpt2-small`, as every saved
    RUN/config.yaml does), else `default_preset` (None: the dataclass defaults alone). A file
    naming another preset than `preset` is refused: one of the two would be silently ignored."""
    values: dict[str, Any] = {}
    if file is not None:
        values = _read_yaml(Path(file), str(file))
        preset = _file_preset(values.pop("preset", None), preset, file)
    preset = preset or default_preset
    if preset:
        res = resources.files("lmforge.configs") / f"{preset}.yaml"
        if not res.is_file():
            raise LmforgeError(f"unknown preset {shown(preset)}: choose one of {', '.join(preset_names())}")
        values = merge_dicts(_read_yaml(res, f"preset {preset}"), values)
        values["preset"] = preset
    if isinstance(overrides, dict):
        overrides = [overrides]
    for item in overrides or []:
        update = item if isinstance(item, dict) else parse_override(item)
        if "preset" in update:  # applied after the preset's values, it would only rename them
            raise LmforgeError("the preset cannot be overridden (--set preset=...): choose it with --preset NAME")
        values = merge_dicts(values, update)
    return _build(Config, values).validate()


def _file_preset(named: Any, preset: str | None, file: str | Path) -> str | None:
    """The preset a config file names, when it agrees with the one asked for."""
    if named is None:
        return preset
    if not isinstance(named, str) or not named:
        raise LmforgeError(f"config file {file}: preset must be a preset name ({', '.join(preset_names())}), "
                           f"got {shown(named)}")
    if preset and preset != named:
        raise LmforgeError(f"config file {file} names preset {shown(named)} but --preset is {shown(preset)}: "
                           f"drop one of the two")
    return named


def sets_key(file: str | Path | None, overrides: list[str] | None, key: str) -> bool:
    """Whether the user's config file or a --set override names `key` (section.field), as opposed
    to the preset: a preset's data.max_bytes is meant for its built-in corpus, not for sources
    someone names on the command line, which are read whole unless they ask otherwise."""
    if any(o.partition("=")[0].strip() == key for o in overrides or []):
        return True
    section, name = key.split(".")
    values = _read_yaml(Path(file), str(file)) if file is not None else {}
    return isinstance(values.get(section), dict) and name in values[section]


def config_from_dict(values: dict[str, Any]) -> Config:
    return _build(Config, values).validate()


def with_data(cfg: Config, **changes: Any) -> Config:
    """`cfg` with fields of its data section replaced: the one place a stage redirects what a run
    reads (lmforge run's cleaned sources, train's --data, a sweep's shared tokens)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # replaces a link, never writes through it


def read_config(path: str | Path) -> Config:
    return config_from_dict(_read_yaml(Path(path), str(path)))
