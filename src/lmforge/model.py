"""A decoder-only Transformer, small enough to read in one sitting.

Features:
- token embedding, no learned positions: rotary position embedding (RoPE) on queries and keys
- pre-norm residual blocks with RMSNorm (parameter-free, as in nanochat) and a final RMSNorm
- attention through `F.scaled_dot_product_attention`, causal by default and bidirectional on
  request (the masked objective), with optional grouped-query attention (`n_kv_head < n_head`)
- SwiGLU MLP, hidden width ~8/3 d so its FLOPs match a 4d GELU MLP
- no biases; optional tying of the input embedding and the output head
- a KV cache for incremental decoding
- activation recomputation per block (`recompute`: none, selective or full): its memory counted
  tensor by tensor by `lmforge.cost.activation_memory`, its FLOPs by `model_counts.training_flops`
- for inspection: the residual stream after every block (`return_hidden`) and explicit attention
  probabilities (`attention_probs`), which the fused SDPA kernel does not expose
- with `targets`, the summed cross-entropy instead of logits, the output head and the loss taken
  over slices of tokens (`linear_cross_entropy`), so a float32 (tokens x vocab) logits tensor
  never exists and `torch.compile` sees model and loss as one graph
- two parameterisations (`cfg.parametrization`): standard (GPT-2's initialisation, SDPA's
  1/sqrt(d_head)) and muP (Yang et al. 2022, "Tensor Programs V"): hidden init, attention scale
  and output multiplier that follow the width, so hyperparameters tuned at one width transfer
  (the per-group learning rates are the optimizer's: training/optim.py)
- one explicit `init_weights()`; its parameter counts and FLOPs are `model_counts`'s, from
  `cfg.shape()`, where `lmforge estimate` reads them too

The model knows nothing of data, training or files: it maps token ids to logits, or to a loss.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts, noop_context_fn

# the shape and the loss's chunking live with their counts (torch-free, for the cost model)
from lmforge.model_counts import GPTConfig, loss_chunk_rows, model_config  # noqa: F401

IGNORE_INDEX = -100  # a target that is not scored (F.cross_entropy's default ignore_index)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),), eps=eps)


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim/2), computed in float32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, H, hd); cos, sin: (T, hd/2). Rotate the two halves of each head as complex pairs.
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


# ---------------------------------------------------------------- activation recomputation

# Selective recomputation keeps the outputs of the ops that cost FLOPs (matmuls, attention) and
# recomputes the elementwise rest (norms, rotary, SiLU, the gate product) in backward: torchtitan's
# op-level policy, less its "every second matmul". About half a block's activations for no matmul FLOPs.
_aten = torch.ops.aten
_KEPT_BY_SELECTIVE = {
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default,
    _aten._scaled_dot_product_flash_attention.default, _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default, _aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEPT_BY_SELECTIVE else CheckpointPolicy.PREFER_RECOMPUTE


def run_block(block: nn.Module, recompute: str, x: torch.Tensor, *args) -> torch.Tensor:
    """block(x, *args), keeping for backward what `recompute` says: everything autograd saves
    (none), the matmul and attention outputs (selective), or only the block's input (full). Under
    full, backward runs the block's forward again only up to the last tensor it saved (torch's early
    stop), so not the MLP's down projection: `model_counts.training_flops` counts the same."""
    if recompute == "none" or not torch.is_grad_enabled():
        return block(x, *args)
    context = partial(create_selective_checkpoint_contexts, _selective_policy) if recompute == "selective" \
        else noop_context_fn
    return checkpoint(block, x, *args, use_reentrant=False, context_fn=context)


# ---------------------------------------------------------------- the loss, chunk by chunk

def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits as float32 for the softmax; float32 and float64 as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on `x` runs in here: autocast's when it is on, else x's own."""
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)  # none on meta
    return torch.get_autocast_dtype(device) if autocast else x.dtype


def _chunk_nll(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """x (n, d) and weight (V, d) in the compute dtype, targets (n,) -> float32 log-probabilities
    (n, V) and each target's negative log-likelihood (n,), 0 where the target is ignored."""
    logp = torch.log_softmax(at_least_float32(x @ weight.t()), dim=-1)
    picked = logp.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)
    return logp, torch.where(targets != IGNORE_INDEX, -picked, 0.0)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(x @ weight.T, targets)) over chunks of rows, as liger-kernel's fused linear
    cross-entropy does in Triton: each chunk's gradients (softmax - one_hot) @ weight and their
    transpose @ x are taken in the forward pass, while its logits exist, so backward only scales
    them. No logits are kept and none are recomputed: the FLOPs are those of the plain head."""

    @staticmethod
    def forward(ctx, x, weight, targets, rows: int, dtype: torch.dtype):
        # x (N, d), weight (V, d), targets (N,) -> loss, a float32 scalar
        x_all, w = x.to(dtype), weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)
        loss, grad_w, grad_x = 0.0, None, []
        for start in range(0, x.size(0), rows):
            xc, tc = x_all[start:start + rows], targets[start:start + rows]
            logp, nll = _chunk_nll(xc, w, tc)
            loss = loss + nll.sum()
            # d nll / d logits = softmax - one_hot(target), computed in place of the log-probabilities.
            # An ignored target contributes nothing: its rows of x and of grad_x are zeroed, (n, d)
            # each, rather than its row of g, (n, V).
            g = logp.exp_()
            g[torch.arange(len(tc), device=g.device), tc.clamp(min=0)] -= 1.0
            g = g.to(dtype)  # (n, V)
            valid = (tc != IGNORE_INDEX).unsqueeze(1).to(dtype)  # (n, 1)
            grad_x.append((g @ w).mul_(valid))
            part = ((xc * valid).t() @ g).t()  # (V, d) as the transpose of (d, V): the faster layout on CPU BLAS
            grad_w = part.to(acc) if grad_w is None else grad_w.add_(part)
            del logp, g, part  # or they would sit beside the next chunk's logits
        grad_x = grad_x[0] if len(grad_x) == 1 else torch.cat(grad_x)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.dtypes = x.dtype, weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        return (grad_x * grad_loss).to(x_dtype), (grad_w * grad_loss).to(w_dtype), None, None, None


def head_skips_untargeted_rows(device_type: str, compiled: bool, tokens: int, chunk_rows: int) -> bool:
    """Whether the loss of `tokens` rows drops those without a target before the output head (a
    masked batch's 85%), so that only the rest cost head FLOPs: in one chunk on a CPU, uncompiled.
    A data-dependent shape costs a GPU a wait and a compiled graph a break, but the CPU nothing."""
    return device_type == "cpu" and not compiled and tokens <= chunk_rows


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         rows: int = 0) -> torch.Tensor:
    """Summed cross-entropy of the logits x @ weight.T against targets (IGNORE_INDEX is skipped),
    holding one chunk of `rows` tokens' logits at a time. x (N, d), weight (V, d), targets (N,)."""
    rows = rows or loss_chunk_rows(weight.size(0))
    if x.size(0) <= rows:  # one chunk: the plain head and loss, as autograd and inductor handle them
        if head_skips_untargeted_rows(x.device.type, torch.compiler.is_compiling(), x.size(0), rows):
            keep = targets != IGNORE_INDEX
            if not keep.all():
                x, targets = x[keep], targets[keep]
        logits = at_least_float32(x @ weight.t())  # (N, V)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, rows, compute_dtype(x))
    return token_scores(x, weight, targets, rows)[0].sum()


@torch.no_grad()
def token_scores(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                 rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """For evaluation, chunk by chunk: each target's negative log-likelihood (N,) in float32 (0
    where ignored) and whether it is the model's first choice (N,) bool."""
    rows = rows or loss_chunk_rows(weight.size(0))
    dtype = compute_dtype(x)
    w = weight.to(dtype)
    nlls, firsts = [], []
    for start in range(0, x.size(0), rows):
        tc = targets[start:start + rows]
        logp, nll = _chunk_nll(x[start:start + rows].to(dtype), w, tc)
        nlls.append(nll)
        firsts.append(logp.argmax(dim=-1) == tc)
    return torch.cat(nlls), torch.cat(firsts)


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to `max_len`."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        shape = (cfg.n_layer, batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already cached; advanced by the model after the last layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, n_kv, T, hd) -> all keys/values so far (B, n_kv, pos+T, hd)
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} > {self.max_len} positions")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hd = cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * hd, bias=False)
        self.proj = nn.Linear(cfg.n_head * hd, cfg.n_embd, bias=False)
        # muP divides q.k by d_head, not sqrt(d_head): after training q and k are correlated, and their
        # product grows as d_head, not as its root (Tensor Programs V). None: SDPA's 1/sqrt(d_head).
        self.scale = 1.0 / hd if cfg.parametrization == "mup" else None

    def _qkv(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x (B, T, d) -> q (B, H, T, hd), k and v (B, KV, T, hd), rotary applied to q and k
        B, T, _ = x.shape
        H, KV, hd = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        qk, v = self.qkv(x).split([(H + KV) * hd, KV * hd], dim=-1)
        # one rotary call for queries and keys together: half the small elementwise kernels
        q, k = apply_rope(qk.view(B, T, H + KV, hd), cos, sin).split([H, KV], dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, KV, hd).transpose(1, 2)

    def forward(self, x, cos, sin, causal: bool, cache: KVCache | None = None):
        B, T, _ = x.shape
        H, KV, hd = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        q, k, v = self._qkv(x, cos, sin)
        mask = None
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer, k, v)
            if past > 0:
                # new queries see every cached position and, causally, each other
                causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale,
                                           enable_gqa=KV != H)
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd))

    def explicit(self, x, cos, sin, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The same attention written out, for inspection: (output (B, T, d), probabilities (B, H, T, T)).

        SDPA never materialises softmax(QK^T / sqrt(hd) + mask) (QK^T / hd under muP); this does, at O(T^2) memory.
        Training and generation keep the fused kernel; no cache here."""
        B, T, _ = x.shape
        H, KV, hd = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        q, k, v = self._qkv(x, cos, sin)
        if KV != H:  # grouped-query: query head h reads key/value head h // (H / KV), as SDPA's enable_gqa
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        scores = (q @ k.transpose(-2, -1)).float()  # (B, H, T, T)
        scores = scores / math.sqrt(hd) if self.scale is None else scores * self.scale
        if causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        probs = scores.softmax(dim=-1)
        y = probs.to(v.dtype) @ v  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd)), probs


class SwiGLU(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.n_embd, 2 * cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.eps = cfg.norm_eps
        self.attn = Attention(cfg, layer)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, causal: bool, cache: KVCache | None = None):
        x = x + self.attn(rms_norm(x, self.eps), cos, sin, causal, cache)
        return x + self.mlp(rms_norm(x, self.eps))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.recompute = "none"  # lmforge.config.RECOMPUTE: train.recompute sets it; a KV-cached forward never recomputes
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) everywhere, residual output projections scaled by
        1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth. Drawn from
        torch's global generator, so `torch.manual_seed` (train.seed) fixes the initial weights.

        Under muP the hidden matrices' std is divided by sqrt(width / base width), a variance
        proportional to 1/fan_in, as at the base width; the embedding and output head, whose other
        dimension is the vocabulary, keep 0.02 (the muP table of Cerebras-GPT, Dey et al. 2023)."""
        std = 0.02
        hidden_std = std / math.sqrt(self.cfg.width_multiplier)

        def normal_(t: torch.Tensor, s: float) -> None:
            t.copy_(torch.randn(t.shape, dtype=torch.float32).mul_(s).to(t))

        normal_(self.wte.weight, std)
        if not self.cfg.tie_embeddings:
            normal_(self.lm_head.weight, std)
        for block in self.blocks:
            normal_(block.attn.qkv.weight, hidden_std)
            normal_(block.mlp.gate_up.weight, hidden_std)
            normal_(block.attn.proj.weight, hidden_std / math.sqrt(2 * self.cfg.n_layer))
            normal_(block.mlp.down.weight, hidden_std / math.sqrt(2 * self.cfg.n_layer))

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the output head reads: the final norm of the residual stream, times muP's output
        multiplier 1 / m_d. Under muP the head's update and the features it reads are both
        correlated and of size 1, so their product grows as the width: the multiplier holds the
        logits at the base width's scale. A tied head takes it too (the microsoft/mup package's
        MuSharedReadout): the matrix keeps the embedding's init and learning rate, and only the
        logits are scaled."""
        x = rms_norm(x, self.cfg.norm_eps)
        return x if self.cfg.parametrization == "standard" else x * (1.0 / self.cfg.width_multiplier)

    def forward(self, idx: torch.Tensor, causal: bool = True, cache: KVCache | None = None,
                return_hidden: bool = False, targets: torch.Tensor | None = None, reduction: str = "sum"):
        """idx (B, T) token ids -> logits (B, T, vocab) in float32 (float64 for a float64 model).

        With `targets` (B, T), IGNORE_INDEX where nothing is predicted, the loss instead of logits,
        the head and the cross-entropy taken chunk by chunk (`linear_cross_entropy`):
        reduction "sum" gives the summed cross-entropy (a float32 scalar); "none", for evaluation,
        each target's loss (B, T) and whether the model ranked it first (B, T).
        With `return_hidden`, also the residual stream after the embedding and each block."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.cfg.seq_len:
            self._extend_rope(start + T)
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.wte(idx)  # (B, T, d)
        hidden = [x]
        recompute = self.recompute if cache is None else "none"
        for block in self.blocks:
            x = run_block(block, recompute, x, cos, sin, causal, cache)
            hidden.append(x)
        if cache is not None:
            cache.pos += T
        x = self.head_input(x)
        if targets is None:
            out = at_least_float32(self.lm_head(x))  # (B, T, vocab)
        elif reduction == "sum":
            out = linear_cross_entropy(x.flatten(0, 1), self.lm_head.weight, targets.flatten())
        elif reduction == "none":
            nll, first = token_scores(x.flatten(0, 1), self.lm_head.weight, targets.flatten())
            out = nll.view(B, T), first.view(B, T)
        else:
            raise ValueError(f"reduction must be 'sum' or 'none', not {reduction!r}")
        return (out, hidden) if return_hidden else out

    @torch.no_grad()
    def attention_probs(self, idx: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """idx (B, T) -> attention probabilities of every layer and head, (n_layer, B, H, T, T).

        Runs the ordinary blocks and, beside each, the explicit attention on the same input."""
        T = idx.size(1)
        if T > self.cfg.seq_len:
            self._extend_rope(T)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.wte(idx)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.explicit(rms_norm(x, self.cfg.norm_eps), cos, sin, causal)[1])
            x = block(x, cos, sin, causal)
        return torch.stack(maps)

    def _extend_rope(self, length: int) -> None:
        """Generation past the training context: longer tables (quality beyond seq_len is not promised)."""
        cos, sin = rope_tables(length, self.cfg.head_dim, self.cfg.rope_theta, self.rope_cos.device)
        self.rope_cos, self.rope_sin = cos, sin

    def stacked_matrices(self) -> dict[str, list[int]]:
        """Weights that stack several matrices along their rows, one matmul for all, and the rows of
        each: every block's QKV as [queries, keys, values] and SwiGLU input as [gate, up]. An
        optimizer that treats matrices as wholes (Muon) must see them apart."""
        c = self.cfg
        qkv = [c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim]
        out = {}
        for i in range(c.n_layer):
            out[f"blocks.{i}.attn.qkv.weight"] = qkv
            out[f"blocks.{i}.mlp.gate_up.weight"] = [c.mlp_hidden, c.mlp_hidden]
        return out
