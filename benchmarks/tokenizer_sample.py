"""What the tokenizer's training text does to compression: bytes per token on held-out documents of a
tokenizer trained on the first train_bytes in reading order (the rule before issue 27) against one
trained on the same number of bytes drawn by `TokenizerSample` (lowest keyed hash of the document id).

Both train on the documents the train/val split keeps for training (val_fraction 0.02), so the
held-out documents are unseen by either. Prints what each learned from, by kind, and held-out bytes
per token overall and per kind. Give the sources in two orders to see the prefix change and the
sample not.

    python benchmarks/tokenizer_sample.py /usr/share/doc /usr/lib/python3.11 --train-bytes 2000000
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

from lmforge.data.sources import iter_documents
from lmforge.tokenizer import train_tokenizer
from lmforge.tokenizing import TokenizerSample, document_kind, is_validation, sample_summary, source_prefixes, split_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--train-bytes", type=int, default=2_000_000)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--val-fraction", type=float, default=0.02)
    args = ap.parse_args()
    prefixes = source_prefixes(args.sources)
    started = time.time()
    docs = list(iter_documents(args.sources))
    held = [d for d in docs if is_validation(split_key(d.id, prefixes), args.val_fraction)]
    train = [d for d in docs if not is_validation(split_key(d.id, prefixes), args.val_fraction)]
    print(f"read {len(docs):,} documents, {size(docs) / 1e6:.1f} MB in {time.time() - started:.0f}s; "
          f"held out {len(held):,} documents, {size(held) / 1e6:.1f} MB")

    prefix = first_bytes(train, args.train_bytes)  # what iter_documents(max_bytes=train_bytes) gave the trainer
    kinds = Counter()
    for d in prefix:
        kinds[document_kind(d)] += len(d.text.encode())
    print(f"prefix: {size(prefix) / 1e6:.1f} MB, {len(prefix):,} documents; by kind, MB: "
          + ", ".join(f"{k} {n / 1e6:.2f}" for k, n in sorted(kinds.items())))
    sample = TokenizerSample(args.train_bytes, prefixes)
    sampled = train_tokenizer(sample.texts(train), args.vocab_size)
    print(f"sample: {sample_summary(sample.report())}")
    for name, tok in (("prefix", train_tokenizer([d.text for d in prefix], args.vocab_size)), ("sample", sampled)):
        per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> bytes, tokens
        for d, enc in zip(held, tok.encode_batch([d.text for d in held], add_special_tokens=False)):
            per_kind[document_kind(d)][0] += len(d.text.encode())
            per_kind[document_kind(d)][1] += len(enc.ids)
        total = [sum(v[i] for v in per_kind.values()) for i in (0, 1)]
        print(f"{name}: held-out bytes/token {total[0] / total[1]:.3f} ("
              + ", ".join(f"{k} {b / n:.3f}" for k, (b, n) in sorted(per_kind.items())) + ")")


def size(docs) -> int:
    return sum(len(d.text.encode()) for d in docs)


def first_bytes(docs, n: int) -> list:
    out, total = [], 0
    for d in docs:
        if total >= n:
            break
        out.append(d)
        total += len(d.text.encode())
    return out


if __name__ == "__main__":
    main()
