"""Parameter counts, FLOPs per token and bytes per parameter of lmforge's Transformer: the one
owner of every count.

`lmforge estimate` and `plan`, the trainer's MFU, the report and the scaling lab all read them from
here; no other module counts. No torch: cost.py and the readers of a folder use it without it.

The model's shape has one definition, `Shape`, whether it comes from shape flags, a preset, a
config file or a trained model (`GPTConfig.shape()`): the same fields give the same counts.

FLOPs follow PaLM (Chowdhery et al. 2022, appendix B), as nanochat's `estimate_flops` does: every
weight that takes part in a matmul costs 2 FLOPs per token forward and 4 backward; the token
embedding is a lookup and costs none (unless tied, when the same matrix is the output head); the
attention core, QK^T and AV, costs 2 · 2 · T · H · Q per layer and token forward (H heads of size
Q, context T) and twice that backward. The causal mask is not discounted, as in PaLM and in
`torch.utils.flop_counter`. Norms, activations, RoPE and the softmax are not counted, by PaLM or by
FlopCounterMode (elementwise work: ~2% of the matmuls' FLOPs at the tiny preset, less above).
tests/test_model.py checks each figure against torch's FlopCounterMode on a real training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge.config import RECOMPUTE
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.config import Config

# Logits held at once by the chunked loss (`lmforge.model.linear_cross_entropy`): 2^25 floats (128 MB
# in float32). GPT-2's 50,304-token vocabulary gives 640-token chunks; a CPU-sized batch with a small
# vocabulary is one chunk. Here, not in model.py, because the activation memory counts by it too.
LOSS_CHUNK_LOGITS = 2**25


def swiglu_hidden(width: int) -> int:
    """The SwiGLU MLP's hidden width: 8/3 of the model width rounded up to a multiple of 64, so its
    three matrices cost what a 4x GELU MLP's two do."""
    return 64 * math.ceil(8 * width / 3 / 64)


def loss_chunk_rows(vocab: int) -> int:
    """Tokens per chunk of the loss: LOSS_CHUNK_LOGITS logits, in whole multiples of 64 tokens."""
    return max(64, LOSS_CHUNK_LOGITS // vocab // 64 * 64)


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0  # 0 = n_head
    n_embd: int = 128
    seq_len: int = 256
    mlp_hidden: int = 0  # 0 = 8/3 * n_embd rounded up to a multiple of 64
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    parametrization: str = "standard"  # standard | mup (model.parametrization)
    mup_base_width: int = 0  # mup: the width its hyperparameters were tuned at

    def __post_init__(self) -> None:
        self.n_kv_head = self.n_kv_head or self.n_head
        self.mlp_hidden = self.mlp_hidden or swiglu_hidden(self.n_embd)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def width_multiplier(self) -> float:
        """muP's m_d = width / base width, by which the hidden init, hidden lr and output scale
        follow the width; 1 under the standard parameterisation."""
        return self.n_embd / self.mup_base_width if self.parametrization == "mup" else 1.0

    def shape(self) -> Shape:
        """The shape this model is counted by."""
        return Shape(layers=self.n_layer, width=self.n_embd, heads=self.n_head, kv_heads=self.n_kv_head,
                     vocab=self.vocab_size, context=self.seq_len, mlp_hidden=self.mlp_hidden,
                     tie_embeddings=self.tie_embeddings)


def model_config(cfg: Config, tokenizer_vocab: int | None = None) -> GPTConfig:
    """The model shape of a config tree: the one place `model.*` becomes a GPTConfig.

    The vocabulary is `model.vocab_size` when set (a padded size, e.g. 50,304), else the trained
    tokenizer's size, else (planning before a tokenizer exists) `tokenizer.vocab_size`, which byte-level
    BPE fills on any real corpus."""
    m = cfg.model
    return GPTConfig(
        vocab_size=m.vocab_size or tokenizer_vocab or cfg.tokenizer.vocab_size, n_layer=m.n_layer, n_head=m.n_head,
        n_kv_head=m.n_kv_head, n_embd=m.n_embd, seq_len=m.seq_len, mlp_hidden=m.mlp_hidden,
        tie_embeddings=m.tie_embeddings, rope_theta=m.rope_theta, norm_eps=m.norm_eps,
        parametrization=m.parametrization, mup_base_width=m.mup_base_width,
    )


@dataclass
class Shape:
    """A model's shape in the terms of `lmforge estimate`'s flags. Defaults are lmforge's model:
    SwiGLU MLP, tied input embedding and output head, head size width / heads.

    `params` is the total parameter count: counted from the shape, unless given (a paper's N, or
    `--params` alone); a given count stands for the same architecture, so the matmul weights are it
    less an untied input embedding."""

    layers: int
    width: int
    heads: int
    kv_heads: int = 0  # 0 = heads
    vocab: int = 50257
    context: int = 2048
    head_dim: int = 0  # 0 = width / heads
    mlp_hidden: int = 0  # 0 = swiglu_hidden(width)
    tie_embeddings: bool = True
    params: float = 0.0  # 0 = counted from the shape

    def __post_init__(self):
        for name in ("layers", "width", "heads", "vocab", "context"):
            if getattr(self, name) <= 0:
                raise LmforgeError(f"--{name}: {getattr(self, name)} must be > 0")
        if self.kv_heads < 0 or self.head_dim < 0 or self.mlp_hidden < 0:
            raise LmforgeError("--kv-heads, --head-dim and --mlp-hidden must be >= 0")
        self.kv_heads = self.kv_heads or self.heads
        if self.heads % self.kv_heads:
            raise LmforgeError(f"--kv-heads {self.kv_heads} must divide --heads {self.heads} "
                               f"(each KV head serves a whole group of query heads)")
        if not self.head_dim and self.width % self.heads:
            raise LmforgeError(f"--width {self.width} must be divisible by --heads {self.heads}, or give --head-dim")
        self.head_dim = self.head_dim or self.width // self.heads
        self.mlp_hidden = self.mlp_hidden or swiglu_hidden(self.width)
        vocabulary = self.head_params + self.input_embedding_params
        if self.params <= 0:
            self.params = self.block_params + vocabulary
        elif self.params <= vocabulary:
            # a count that leaves the blocks nothing has no FLOPs per token to give (nor a model)
            raise LmforgeError(f"{self.params:.4g} parameters cannot hold the vocabulary's own {vocabulary:.4g} "
                               f"(vocab {self.vocab} x width {self.width}): count more parameters (--params, "
                               f"--budget), or give a smaller --vocab with the whole shape (--layers, --width, --heads)")

    @property
    def layer_params(self) -> int:
        """The weights of one block: attention's QKV and output projection, the MLP's three matrices."""
        d, q, kv = self.width, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return d * (q + 2 * kv) + q * d + 3 * d * self.mlp_hidden

    @property
    def block_params(self) -> int:
        """The weights of all blocks."""
        return self.layers * self.layer_params

    @property
    def head_params(self) -> int:
        """The output head, vocab x width."""
        return self.vocab * self.width

    @property
    def input_embedding_params(self) -> int:
        """The token embedding's own parameters: none beyond the head's when the two are tied."""
        return 0 if self.tie_embeddings else self.vocab * self.width

    @property
    def matmul_params(self) -> float:
        """The weights that multiply every token (blocks and head): the N of 6·N·D."""
        return self.params - self.input_embedding_params

    @property
    def non_embedding_params(self) -> float:
        """Kaplan et al.'s N: all parameters less the vocabulary's (embedding and head)."""
        return self.params - self.input_embedding_params - self.head_params


@dataclass(frozen=True)
class TokenFlops:
    """FLOPs per token of one training step. `model` counts what the model needs (PaLM's MFU);
    `hardware` adds what activation recomputation runs again (PaLM's HFU)."""

    forward: float
    backward: float
    recompute: float
    attention: float  # the attention core's share of forward + backward

    @property
    def model(self) -> float:
        return self.forward + self.backward

    @property
    def hardware(self) -> float:
        return self.model + self.recompute


def training_flops(shape: Shape, recompute: str = "none", head_rows: float = 1.0) -> TokenFlops:
    """FLOPs per token of a training step of `shape` at its context.

    head_rows: the share of tokens that go through the output head. 1 but for the masked objective
    on a CPU, whose loss drops the rows without a target first (`model.head_skips_untargeted_rows`).
    recompute: what `train.recompute` runs again in backward (`model.run_block`). "full": every
    block's forward but its last matmul, the MLP's down projection, whose output backward does not
    need (torch.utils.checkpoint stops recomputing once the tensors backward saved are back); the
    head and loss are not checkpointed. "selective": no matmul, since every matmul's and the
    attention's outputs are kept and only elementwise ops run again (uncounted, as above)."""
    if recompute not in RECOMPUTE:
        raise LmforgeError(f"--recompute {recompute!r}: choose {', '.join(RECOMPUTE)}")
    if not 0 <= head_rows <= 1:
        raise ValueError(f"head_rows {head_rows} must be a share in [0, 1]")
    attention = 4 * shape.layers * shape.heads * shape.head_dim * shape.context
    blocks = 2 * (shape.matmul_params - shape.head_params) + attention
    forward = blocks + 2 * shape.head_params * head_rows
    again = blocks - 2 * shape.layers * shape.mlp_hidden * shape.width if recompute == "full" else 0.0
    return TokenFlops(forward=forward, backward=2 * forward, recompute=again, attention=3 * attention)


# bytes per parameter: (weights, gradients, optimizer state incl. fp32 master copy)
PRECISIONS = {
    "bf16-mixed": (2, 2), "fp16-mixed": (2, 2), "bf16-mixed-fp32-grads": (2, 4), "fp32": (4, 4), "bf16": (2, 2),
}
OPTIMIZER_STATES = {"adamw": 2, "sgd": 1, "muon": 1}  # fp32 tensors per parameter (Adam: m and v; momentum)


def state_bytes(precision: str, optimizer: str) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter. Mixed precision keeps an fp32 master copy in
    the optimizer: AdamW = 2 + 2 + (4 + 4 + 4) = 16 bytes (ZeRO's K = 12), 18 with fp32 gradients."""
    if precision not in PRECISIONS:
        raise LmforgeError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if optimizer not in OPTIMIZER_STATES:
        raise LmforgeError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZER_STATES)}")
    w, g = PRECISIONS[precision]
    states = OPTIMIZER_STATES[optimizer]
    if precision == "bf16":  # pure bf16 training: no master copy, states in bf16
        return w, g, 2.0 * states
    master = 4 if w == 2 else 0
    return w, g, master + 4.0 * states
