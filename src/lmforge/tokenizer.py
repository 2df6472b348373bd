"""The byte-level BPE tokenizer: training, loading, and what each token id stands for.

The tokenize stage (corpus -> token shards, meta.json) is lmforge/tokenizing.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from lmforge.errors import LmforgeError
from lmforge.folders.tokenized import TOKENIZER_FILE

EOT = "<|endoftext|>"  # document boundary
PAD = "<|pad|>"
MASK = "<|mask|>"  # for the masked (missing-word) objective
SPECIAL_TOKENS = [EOT, PAD, MASK]


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Learn byte-level BPE merges (GPT-2 style pre-tokenisation, every byte in the base alphabet)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return special_text_as_text(tok)


def special_text_as_text(tok: Tokenizer) -> Tokenizer:
    """Encode the text "<|endoftext|>" (or "<|pad|>", "<|mask|>") in a document or prompt as the
    characters it is, never as the special id: otherwise a document could forge document boundaries
    and masks. lmforge places the special ids itself, by id. The setting is not saved in
    tokenizer.json, so an exported tokenizer keeps Hugging Face's usual behaviour."""
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise LmforgeError(f"tokenizer {path} not found: tokenize the corpus first (lmforge tokenize)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for a malformed file
        raise LmforgeError(f"tokenizer {path} is damaged ({str(e).splitlines()[0][:120]}): "
                           f"copy it again from the tokenized folder, or tokenize again") from None
    return special_text_as_text(tok)


def token_byte_lengths(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token stands for (0 for special tokens), for bits-per-byte.

    In byte-level BPE each character of a vocabulary string maps to exactly one byte.
    """
    lengths = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    special = set(SPECIAL_TOKENS)
    for token, idx in tok.get_vocab().items():
        if token not in special:
            lengths[idx] = len(token)
    return lengths


def _byte_level_chars() -> dict[str, int]:
    """GPT-2's byte-to-character table, inverted: vocabulary character -> the byte it stands for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tok: Tokenizer) -> list[bytes]:
    """The bytes each token id stands for (b"" for special tokens)."""
    table = _byte_level_chars()
    out = [b""] * tok.get_vocab_size()
    special = set(SPECIAL_TOKENS)
    for token, idx in tok.get_vocab().items():
        if token not in special:
            out[idx] = bytes(table[c] for c in token)
    return out


def vocab_tables(tok: Tokenizer) -> dict:
    """What the masked objective needs to know of the vocabulary: the mask and special ids, and for
    whole-word masking whether each token starts with a word character (an ASCII letter or digit,
    or any byte of a non-ASCII character) and whether a word character after it continues its
    word (it ends with a word character, or it is a lone space: " json" may be "Ġ" + "json")."""
    def word_byte(b: int) -> bool:
        return b >= 0x80 or chr(b).isalnum()

    pieces = token_bytes(tok)
    return {
        "mask_id": tok.token_to_id(MASK),
        "special_ids": [tok.token_to_id(t) for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None],
        "vocab_size": len(pieces),
        "starts_word": np.array([bool(p) and word_byte(p[0]) for p in pieces]),
        "joins_next": np.array([bool(p) and (word_byte(p[-1]) or p == b" ") for p in pieces]),
    }


