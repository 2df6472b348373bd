"""Cleaning precision on text nobody here wrote: does `prepare` harm what it keeps?

Corpora (read in place, none of it written for lmforge):
  stdlib     every .py file of this Python's standard library: the share of kept files that parse
             (must be 100%), and kept files whose bytes changed other than by a redaction;
  share-doc  /usr/share/doc (changelogs, READMEs, licences): what was rejected and redacted;
  books      War and Peace, Shakespeare and WikiText-2 from ../shared/data cut into ~2,500-character
             chunks at paragraph breaks: chunks kept, and kept chunks whose every line survived
             (apart from boilerplate), under the default line-rule policy and under line_rules=prose;
  planted    a PII set built here: real-shaped positives of every kind and the look-alikes that are
             not personal data (versions, years, decimals, private IPs, file names, UUIDs): true and
             false positives per kind;
  offensive  one insulting paragraph planted in book chunks of 2 and of 10 paragraphs: removal rate.

    python benchmarks/clean_quality.py [--workers 2]
"""

from __future__ import annotations

import argparse
import ast
import random
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

import lmforge
from lmforge.data.clean import Doc
from lmforge.data.pii import PLACEHOLDERS, RedactPII, luhn_ok
from lmforge.folders.prepared import read_jsonl_gz

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_prepare(sources: list[str], out: Path, workers: int, *over: str) -> tuple[dict, list[dict], list[dict]]:
    cfg = lmforge.load_config("tiny", overrides=[f"prepare.workers={workers}", "data.max_bytes=0", *over])
    report = lmforge.prepare(sources, out, cfg.prepare, cfg.data, log=lambda *_: None, progress=False)
    clean = [r for p in sorted((out / "clean").glob("*.jsonl.gz")) for r in read_jsonl_gz(p)]
    rejected = [r for p in sorted((out / "rejected").glob("*.jsonl.gz")) for r in read_jsonl_gz(p)]
    return report, clean, rejected


def parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def stdlib(tmp: Path, workers: int) -> dict:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in root.rglob("*.py") if "site-packages" not in p.parts)
    report, clean, rejected = run_prepare(files, tmp / "stdlib", workers)
    kept = [r for r in clean if r["source"].endswith(".py")]
    originals = {r["source"]: open(r["source"], encoding="utf-8", errors="replace", newline="").read() for r in kept}
    parsed_before = [r for r in kept if parses(originals[r["source"]])]
    still = sum(parses(r["text"]) for r in parsed_before)
    changed = [r for r in kept if r["text"] != originals[r["source"]]
               and not any(e["rule"].startswith("pii:") for e in r.get("edits", []))]
    return {"files": len(files), "kept": len(kept), "parse_share": still / max(len(parsed_before), 1),
            "parsed_before": len(parsed_before), "changed_not_redaction": len(changed),
            "redactions": {k: v for k, v in report["repairs_and_redactions"].items() if k.startswith("pii:")},
            "rejected": Counter(r["reason"] for r in rejected).most_common(4), "seconds": report["seconds"]}


def share_doc(tmp: Path, workers: int) -> dict:
    report, clean, rejected = run_prepare(["/usr/share/doc"], tmp / "doc", workers)
    return {"in": report["documents_in"], "kept": report["documents_kept"],
            "redactions": {k: v for k, v in report["repairs_and_redactions"].items() if k.startswith("pii:")},
            "rejected": Counter(r["reason"] for r in rejected).most_common(6), "seconds": report["seconds"]}


def chunks(text: str, size: int = 2500) -> list[str]:
    out, buf = [], []
    for paragraph in text.split("\n\n"):
        buf.append(paragraph)
        if sum(len(p) for p in buf) > size:
            out.append("\n\n".join(buf) + "\n")
            buf = []
    return out


def books(tmp: Path, workers: int, line_rules: str) -> dict:
    folder = tmp / "books-src"
    if not folder.is_dir():
        folder.mkdir()
        corpora = {"war_and_peace": "war_and_peace_gutenberg.txt", "shakespeare": "tinyshakespeare.txt"}
        for name, file in corpora.items():
            for i, chunk in enumerate(chunks((SHARED / file).read_text())):
                (folder / f"{name}_{i:04d}.txt").write_text(chunk)
        wiki = (SHARED / "wikitext2_tokenized_valid.txt").read_text()
        for i, article in enumerate(a for a in wiki.split("\n = ") if len(a) > 500):
            (folder / f"wikitext_{i:04d}.txt").write_text(" = " + article)
    report, clean, rejected = run_prepare([str(folder)], tmp / f"books-{line_rules}", workers,
                                          f"prepare.line_rules={line_rules}")
    result = {}
    kept_by_name = {Path(r["source"]).name: r for r in clean}
    for corpus in ("war_and_peace", "shakespeare", "wikitext"):
        names = sorted(p.name for p in folder.glob(f"{corpus}_*.txt"))
        kept = [kept_by_name[n] for n in names if n in kept_by_name]
        intact = 0
        for r in kept:
            original = (folder / Path(r["source"]).name).read_text().split("\n")
            boiler = {n - 1 for e in r.get("edits", []) if e["rule"] == "boilerplate" for n in e["lines"]}
            pii = any(e["rule"].startswith("pii:") for e in r.get("edits", []))
            kept_lines = [l.rstrip() for l in r["text"].split("\n")]  # trailing spaces are tidied, not lost text
            intact += pii or kept_lines == [l.rstrip() for i, l in enumerate(original) if i not in boiler]
        reasons = Counter(r["reason"] for r in rejected if Path(r["source"]).name.startswith(corpus))
        result[corpus] = {"chunks": len(names), "kept": len(kept), "lines_intact": intact,
                          "rejected": reasons.most_common(3)}
    return result


# ---------------------------------------------------------------- planted PII

def _card(rng: random.Random, sep: str) -> str:
    while True:
        digits = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        if luhn_ok(digits):
            return sep.join(digits[i:i + 4] for i in range(0, 16, 4))


def planted_pii(n: int = 40) -> tuple[list[tuple[str, str]], list[str]]:
    """(sentence, kind) positives and sentences holding only look-alikes."""
    rng = random.Random(7)
    d = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    positives = []
    for i in range(n):
        name = rng.choice(["anna", "li.wei", "j.smith", "olga_k", "m+news"])
        positives += [
            (f"Write to {name}{i}@{rng.choice(['example.com', 'mail.co.uk', 'uni-bonn.de', 'gmail.com'])} soon.", "email"),
            (f"The request came from {rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}.", "ip_address"),
            (f"Its address is 2a00:{d(4)}:{d(3)}::{rng.randint(1, 99)} today.", "ip_address"),
            (f"Pay with {_card(rng, rng.choice([' ', '-', '']))} please.", "credit_card"),
            (f"Call +1 {rng.randint(201, 989)}-555-{d(4)} now.", "phone"),
            (f"Call +33 {rng.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)} now.", "phone"),
            (f"Call +49 30 {d(6)} now.", "phone"),
            (f"Ring 07700 {d(6)} or ({rng.randint(201, 989)}) 555-{d(4)}.", "phone"),
            (f"Her SSN is {rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}.", "ssn"),
        ]
    negatives = []
    for i in range(n):
        negatives += [
            f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(1, 9)} now.",
            f"Git {rng.randint(1, 2)}.{rng.randint(10, 45)}.{rng.randint(0, 9)} Release Notes",
            f"The years {2000 + i % 20} {2001 + i % 20} {2002 + i % 20} were busy.",
            f"About {rng.randint(1, 9)} {d(3)} {d(3)} {d(3)} people live there.",
            "About 7 900 000 000 people, and 9 060 487 536 before.",
            f"Use icon@{rng.randint(2, 3)}x.png for retina screens.",
            f"h = 0.{d(16)}",
            f"Loopback 127.0.0.{rng.randint(1, 9)} and LAN 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}.",
            f"OID 1.3.6.1.4.1.{d(4)}.{rng.randint(1, 9)}",
            f"id {d(8)}-e29b-41d4-a716-{d(12)}",
            f"order number {d(13)} is not a card",
            f"ISBN 978-{rng.randint(0, 9)}-{d(2)}-{d(6)}-{rng.randint(0, 9)}",
            f"Total: {rng.randint(1, 999):,}.{d(2)} euros, {rng.randint(10, 99)}:{d(2)}:{d(2)} elapsed.",
        ]
    return positives, negatives


def pii_table() -> dict:
    positives, negatives = planted_pii()
    table = {kind: Counter() for kind in PLACEHOLDERS}
    pii = RedactPII()
    for text, kind in positives:
        doc = Doc("p", text, "p.txt")
        pii(doc)
        table[kind]["planted"] += 1
        table[kind]["tp" if PLACEHOLDERS[kind] in doc.text else "fn"] += 1
        for other, placeholder in PLACEHOLDERS.items():
            if other != kind and placeholder in doc.text:
                table[other]["fp"] += 1
    for text in negatives:
        doc = Doc("n", text, "n.txt")
        pii(doc)
        for kind, placeholder in PLACEHOLDERS.items():
            table[kind]["fp"] += doc.text.count(placeholder)
    return {"negatives": len(negatives), **{k: dict(v) for k, v in table.items()}}


def offensive(workers: int, tmp: Path) -> dict:
    insult = "You are a fucking idiot and a worthless piece of shit, so shut up and get lost, you moron."
    paragraphs = [p for p in (SHARED / "war_and_peace_gutenberg.txt").read_text().split("\n\n") if len(p) > 300]
    folder = tmp / "offensive-src"
    folder.mkdir()
    for size in (2, 10):
        for i in range(20):
            body = paragraphs[i * size:(i + 1) * size - 1] + [insult]
            (folder / f"p{size:02d}_{i:02d}.txt").write_text("\n\n".join(body))
    report, clean, rejected = run_prepare([str(folder)], tmp / "offensive", workers)
    gone = Counter(Path(r["source"]).name[:3] for r in rejected if r["reason"] == "offensive:offensive_language")
    top = [r.get("offensive_max", 0) for r in clean]
    return {"1_of_2": gone["p02"] / 20, "1_of_10": gone["p10"] / 20, "kept_max_score": max(top, default=0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"benchmark data {SHARED} not found: this benchmark needs ../shared/data next to the checkout")
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code = stdlib(tmp, args.workers)
        print(f"stdlib: {code['files']:,} .py files, {code['kept']:,} kept; of the kept files that parsed before, "
              f"{100 * code['parse_share']:.1f}% parse after ({code['parsed_before']:,}); kept files changed other "
              f"than by redaction: {code['changed_not_redaction']}; redactions {code['redactions']}; "
              f"rejected (top) {code['rejected']}; {code['seconds']:.0f}s")
        doc = share_doc(tmp, args.workers)
        print(f"/usr/share/doc: {doc['in']:,} documents, {doc['kept']:,} kept; redactions {doc['redactions']}; "
              f"rejected (top) {doc['rejected']}; {doc['seconds']:.0f}s")
        for policy in ("web", "prose"):
            result = books(tmp, args.workers, policy)
            for corpus, r in result.items():
                print(f"books, line_rules={policy:<5} {corpus:<13} {r['chunks']:4d} chunks, {r['kept']:4d} kept, "
                      f"{r['lines_intact']:4d} with every line intact; rejected (top) {r['rejected']}")
        table = pii_table()
        print(f"\nplanted PII ({table.pop('negatives')} look-alike sentences that hold no personal data):")
        print(f"  {'kind':<12} {'planted':>7} {'TP':>5} {'FN':>5} {'FP':>5}  precision  recall")
        for kind, t in table.items():
            tp, fn, fp = t.get("tp", 0), t.get("fn", 0), t.get("fp", 0)
            print(f"  {kind:<12} {t.get('planted', 0):>7} {tp:>5} {fn:>5} {fp:>5}  {tp / max(tp + fp, 1):9.3f}  "
                  f"{tp / max(tp + fn, 1):6.3f}")
        off = offensive(args.workers, tmp)
        print(f"\noffensive: one insulting paragraph in 2 -> {100 * off['1_of_2']:.0f}% of documents removed; "
              f"in 10 -> {100 * off['1_of_10']:.0f}% removed (share {1 / 10:.2f} < prepare.offensive_max_fraction); "
              f"highest score among kept documents {off['kept_max_score']:.3f}")
    print(f"\n{time.perf_counter() - started:.0f}s with {args.workers} workers")
    return 0 if code["parse_share"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
