"""A Hugging Face Llama folder and lmforge's model, mapped both ways: `lmforge export` (export.py) writes
one from a run; `lmforge train --init-from FOLDER` starts from one (ours, or a Llama of matching shape).

    OUT/
      config.json              LlamaConfig (model_type "llama", architectures ["LlamaForCausalLM"])
      model.safetensors        weights under Llama's names, float32
      generation_config.json   the run's sampling settings; <|endoftext|> ends a text
      tokenizer.json           the run's byte-level BPE tokenizer, unchanged
      tokenizer_config.json    PreTrainedTokenizerFast with the special tokens named
      special_tokens_map.json  the same special tokens, for older readers

`transformers.AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` load it
offline with no custom code. lmforge's decoder is a Llama in all but two details, mapped as follows:

- **Norms.** lmforge's RMSNorms are parameter-free (as nanochat's); Llama's have a weight. Exported as
  unit weights (`input_layernorm`, `post_attention_layernorm`, `model.norm` all ones), which makes the
  two functions equal. Both compute x / sqrt(mean(x^2) + eps) in float32; `rms_norm_eps` = `model.norm_eps`.
  Reading a Llama back, a norm weight g in front of a linear layer W is folded into it (W diag(g)),
  exactly; the final norm's weight is folded into an untied output head, and refused for a tied one
  (the head is the embedding, which cannot absorb it).
- **Fused projections.** lmforge's `attn.qkv` rows are [queries (n_head heads), keys (n_kv_head),
  values (n_kv_head)], each head's `head_dim` rows together: split into `q_proj`, `k_proj`, `v_proj`.
  `mlp.gate_up` rows are [gate, up] (`chunk(2)`, then silu(gate) * up): `gate_proj`, `up_proj`.
  `attn.proj` -> `o_proj`, `mlp.down` -> `down_proj`, `wte` -> `embed_tokens`.
- **RoPE.** lmforge rotates the two *halves* of each head (x1 = dims [0, hd/2), x2 = [hd/2, hd)):
  (x1 cos - x2 sin, x1 sin + x2 cos), with frequencies theta^(-2i/hd). That is Llama's `rotate_half`
  layout in transformers (not Meta's interleaved-pairs layout), so q and k weights are copied with no
  permutation. `rope_theta` = `model.rope_theta`, no RoPE scaling; `max_position_embeddings` = the
  training context (`model.seq_len`).
- **Attention.** Scaled by 1/sqrt(head_dim) in both; grouped-query attention shares key/value head
  h // (n_head / n_kv_head) with query head h in both (SDPA's enable_gqa, Llama's repeat_kv).
  `head_dim` is written explicitly. No biases anywhere (`attention_bias`, `mlp_bias` false).
- **Embeddings.** A tied head is stored once (`model.embed_tokens.weight`, `tie_word_embeddings`
  true); an untied one as `lm_head.weight`.
- **muP** (`model.parametrization=mup`). Its two scales are folded into the weights, exactly: the
  attention's 1/head_dim as the queries times 1/sqrt(head_dim) (RoPE is linear, so it commutes), and
  the output multiplier as the head times it, which unties a tied head (`lm_head.weight` apart).
  Reading a Llama back into a muP model is refused: its weights are of the standard scales.
- **Tokens.** <|endoftext|> is bos, eos and the document separator (lmforge's samples start after
  one, as training documents do; so feed it first to reproduce them); <|pad|> is pad. The tokenizer
  adds no special tokens on encode, as lmforge's does not.

A masked (bidirectional) model has no standard Hugging Face encoder class that fits exactly (BERT and
RoBERTa use learned positions, LayerNorm with biases and GELU; ModernBERT uses GeGLU, LayerNorm and
alternating local attention), so exporting one is refused rather than approximated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmforge.errors import LmforgeError
from lmforge.folders.run import MODEL_FILE
from lmforge.folders.tokenized import TOKENIZER_FILE
from lmforge.model import GPT, GPTConfig

HF_CONFIG = "config.json"
HF_GENERATION = "generation_config.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
HF_SPECIAL_TOKENS = "special_tokens_map.json"


def llama_config(cfg: GPTConfig, eot_id: int | None, pad_id: int | None) -> dict:
    """The LlamaConfig (as config.json holds it) of an lmforge model shape."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_scaling": None, "hidden_act": "silu",
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "tie_word_embeddings": exports_tied(cfg), "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": pad_id, "torch_dtype": "float32",
    }


def exports_tied(cfg: GPTConfig) -> bool:
    """Whether the Llama folder stores one matrix for embedding and head: not under muP, whose head
    reads the embedding times the output multiplier."""
    return cfg.tie_embeddings and cfg.parametrization == "standard"


def to_llama_state(model: GPT) -> dict[str, torch.Tensor]:
    """lmforge weights -> Llama's names and layout (float32, contiguous, a tied head stored once),
    muP's attention scale and output multiplier folded into the queries and the head."""
    cfg = model.cfg
    H, KV, hd, d = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.n_embd
    ones = torch.ones(d, dtype=torch.float32)
    out = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": ones}
    if not exports_tied(cfg):
        out["lm_head.weight"] = model.lm_head.weight / cfg.width_multiplier
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.split([H * hd, KV * hd, KV * hd], dim=0)
        if block.attn.scale is not None:  # Llama divides q.k by sqrt(hd): the rest of the scale goes into q
            q = q * (block.attn.scale * math.sqrt(hd))
        gate, up = block.mlp.gate_up.weight.chunk(2, dim=0)
        out.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": block.attn.proj.weight,
            p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up, p + "mlp.down_proj.weight": block.mlp.down.weight,
            p + "input_layernorm.weight": ones, p + "post_attention_layernorm.weight": ones,
        })
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def _refuse(folder: Path, what: str) -> LmforgeError:
    return LmforgeError(f"--init-from {folder}: {what}")


def check_llama_shape(folder: Path, hf: dict, cfg: GPTConfig, vocab: bool = True) -> None:
    """Refuse (naming the key and the --set that would match it) a Llama config of another shape;
    of another vocabulary size too, unless `vocab` is False (the embedding is remapped)."""
    if hf.get("model_type") != "llama":
        raise _refuse(folder, f"{HF_CONFIG} has model_type {hf.get('model_type')!r}; only Llama-architecture folders can be read")
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    pairs = [("hidden_size", cfg.n_embd, "model.n_embd"), ("num_hidden_layers", cfg.n_layer, "model.n_layer"),
             ("num_attention_heads", cfg.n_head, "model.n_head"),
             ("num_key_value_heads", cfg.n_kv_head, "model.n_kv_head"),
             ("intermediate_size", cfg.mlp_hidden, "model.mlp_hidden"), ("vocab_size", cfg.vocab_size, "model.vocab_size"),
             ("rms_norm_eps", cfg.norm_eps, "model.norm_eps"), ("rope_theta", cfg.rope_theta, "model.rope_theta"),
             ("tie_word_embeddings", cfg.tie_embeddings, "model.tie_embeddings")]
    hf = {**hf, "num_key_value_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
          "rope_theta": hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
          "tie_word_embeddings": hf.get("tie_word_embeddings", True)}
    for key, ours, setting in pairs:
        if hf.get(key) != ours and (vocab or key != "vocab_size"):
            raise _refuse(folder, f"{HF_CONFIG} has {key}={hf.get(key)!r} but this run's model has {ours!r}; "
                                  f"train with --set {setting}={hf.get(key)}")
    if head_dim != cfg.head_dim:
        raise _refuse(folder, f"head_dim {head_dim} differs from n_embd / n_head = {cfg.head_dim}")
    scaling = hf.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise _refuse(folder, f"RoPE scaling {scaling} has no lmforge equivalent")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise _refuse(folder, "the checkpoint has biases; lmforge's layers have none")


def from_llama_state(state: dict[str, torch.Tensor], cfg: GPTConfig, folder: Path) -> dict[str, torch.Tensor]:
    """Llama weights -> lmforge's state dict (the inverse of to_llama_state), norm weights folded in."""
    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise _refuse(folder, f"{MODEL_FILE} has no tensor {name!r}")
        return state[name].float()

    out = {"wte.weight": take("model.embed_tokens.weight")}
    final_norm = take("model.norm.weight")
    if cfg.tie_embeddings:
        if not torch.equal(final_norm, torch.ones_like(final_norm)):
            raise _refuse(folder, "its final norm has weights other than 1 and its output head is tied to the "
                                  "embedding, which cannot absorb them; train with --set model.tie_embeddings=false")
    else:
        head = state.get("lm_head.weight", state["model.embed_tokens.weight"]).float()
        out["lm_head.weight"] = head * final_norm
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        g_attn, g_mlp = take(p + "input_layernorm.weight"), take(p + "post_attention_layernorm.weight")
        qkv = torch.cat([take(p + f"self_attn.{n}_proj.weight") for n in "qkv"], dim=0)
        gate_up = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")], dim=0)
        out.update({
            f"blocks.{i}.attn.qkv.weight": qkv * g_attn, f"blocks.{i}.attn.proj.weight": take(p + "self_attn.o_proj.weight"),
            f"blocks.{i}.mlp.gate_up.weight": gate_up * g_mlp, f"blocks.{i}.mlp.down.weight": take(p + "mlp.down_proj.weight"),
        })
    return out


def check_same_tokenizer(folder: Path, data_tokenizer: Path) -> None:
    """Refuse weights learned over another tokenizer: the same vocabulary size passes every shape check,
    yet each id would stand for another token (and the run would start worse than from scratch)."""
    from lmforge.tokenizer import load_tokenizer

    theirs = folder / TOKENIZER_FILE
    if not theirs.is_file():
        raise _refuse(folder, f"has no {TOKENIZER_FILE}, so its token ids cannot be checked against the training "
                              f"data's ({data_tokenizer}); add the tokenizer its weights were trained with")
    # compared as the library reads them, so two spellings of one tokenizer.json are equal
    if json.loads(load_tokenizer(theirs).to_str()) != json.loads(load_tokenizer(data_tokenizer).to_str()):
        raise _refuse(folder, f"its {TOKENIZER_FILE} is not the training data's ({data_tokenizer}), so its weights "
                              "would read other tokens: train on the tokenized folder of the run it was exported "
                              "from, drop --init-from, or add --allow-new-tokenizer to keep its blocks and remap "
                              "its embedding to this tokenizer")


def init_from(model: GPT, folder: str | Path, data_tokenizer: str | Path | None = None,
              allow_new_tokenizer: bool = False) -> str | None:
    """Load a Hugging Face Llama folder's weights into `model` (same shape), in place; with the
    training data's tokenizer.json, only when the folder's tokenizer is that one, unless
    `allow_new_tokenizer`: then the embedding (and an untied head) is remapped to the data's
    tokenizer (see remap_vocabulary) and what was done is returned, one line, else None."""
    folder = Path(folder)
    if model.cfg.parametrization != "standard":
        raise _refuse(folder, "a Llama's weights are of the standard parameterisation and this run's model is "
                              "muP, whose scales would read them wrongly: train with --set model.parametrization=standard")
    config_path, weights = folder / HF_CONFIG, folder / MODEL_FILE
    if not config_path.is_file() or not weights.is_file():
        raise _refuse(folder, f"needs {HF_CONFIG} and {MODEL_FILE} (a folder written by lmforge export or a "
                              "Hugging Face Llama checkpoint in safetensors)")
    remap = None
    if data_tokenizer is not None:
        try:
            check_same_tokenizer(folder, Path(data_tokenizer))
        except LmforgeError:
            if not allow_new_tokenizer or not (folder / TOKENIZER_FILE).is_file():
                raise
            remap = Path(data_tokenizer)
    check_llama_shape(folder, json.loads(config_path.read_text()), model.cfg, vocab=remap is None)
    state = from_llama_state(load_file(str(weights)), model.cfg, folder)
    current = model.state_dict()
    said = None
    if remap is not None:
        said = remap_vocabulary(state, current, folder / TOKENIZER_FILE, remap)
    for name, tensor in state.items():
        if tensor.shape != current[name].shape:
            raise _refuse(folder, f"{name} has shape {tuple(tensor.shape)}, this model expects {tuple(current[name].shape)}")
    with torch.no_grad():
        for name, tensor in state.items():
            current[name].copy_(tensor.to(current[name].dtype))
    return said


def remap_vocabulary(state: dict[str, torch.Tensor], current: dict[str, torch.Tensor], theirs: Path,
                     ours: Path) -> str:
    """Rewrite `state`'s vocabulary rows (embedding, an untied head) for the tokenizer `ours`, in
    place: a token both vocabularies hold (the same string) keeps its learned row, every other row
    is the model's fresh initialisation from `current`. Returns what was done, for the log."""
    from lmforge.tokenizer import load_tokenizer

    their_ids, our_ids = load_tokenizer(theirs).get_vocab(), load_tokenizer(ours).get_vocab()
    shared = sorted(set(their_ids) & set(our_ids))
    src = torch.tensor([their_ids[t] for t in shared], dtype=torch.long)
    dst = torch.tensor([our_ids[t] for t in shared], dtype=torch.long)
    rows = {}
    for name in ("wte.weight", "lm_head.weight"):
        if name in state:
            fresh = current[name].detach().clone().float()
            keep = (src < len(state[name])) & (dst < len(fresh))
            fresh[dst[keep]] = state[name][src[keep]]
            rows[name] = (len(state[name]), len(fresh))
            state[name] = fresh
    before, after = rows["wte.weight"]
    what = "embedding and output head" if "lm_head.weight" in rows else "embedding"
    return (f"its tokenizer is not the data's (--allow-new-tokenizer): the {what} resized from {before:,} to {after:,} "
            f"rows; {len(shared):,} tokens found in both vocabularies keep their learned rows, the other "
            f"{after - len(shared):,} start from a fresh initialisation")
