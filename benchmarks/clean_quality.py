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
  offensive  one insulting paragraph planted in book chunks of 2 and of 10 paragraphs: removal rate;
  precision  the offensive filter on text with known labels: TinyStories' children's stories (every one
             clean), War and Peace and Shakespeare chunks, and the labelled lines below (30 abusive,
             30 clean ones holding "dirty", "stinky", "mom"...): documents each filter removes and the
             offensive filter's precision and recall, under the rule before issue 28 (the score alone,
             prepare.offensive_min_word_weight=0) and the current one, side by side in one run.

    python benchmarks/clean_quality.py [--workers 2] [--only precision]
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
from lmforge.data.classifiers import BatchOffensiveScorer
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


OFFENSIVE_LINES = [  # insults, threats, slurs, as abusive comments write them: each one document

    "You are a fucking idiot and nobody wants you here.",
    "Shut the fuck up, you worthless piece of shit.",
    "What a stupid bitch, go back to your kitchen.",
    "Fuck off and die, you pathetic loser.",
    "This guy is a complete moron, what an asshole.",
    "You dumb cunt, learn to read before you post.",
    "Eat shit, you ugly fat pig.",
    "He is a lying sack of shit and everyone knows it.",
    "Go kill yourself, nobody would miss you.",
    "I will find where you live and beat the crap out of you.",
    "Your mother is a whore and your father is a bastard.",
    "Suck my dick, you little faggot.",
    "All of you retards should be banned from the internet.",
    "Stop whining like a little pussy and grow a pair.",
    "What a pile of bullshit from a clueless dickhead.",
    "You're a disgusting pig and a total waste of oxygen.",
    "Nobody asked for your opinion, you stupid twat.",
    "Get lost, you brainless idiot, you make me sick.",
    "This admin is a power-tripping asshole and a hypocrite.",
    "Fuck you and fuck your stupid article.",
    "You are the dumbest person I have ever met, a real imbecile.",
    "Shove it up your ass, motherfucker.",
    "People like you are scum and deserve to be beaten.",
    "Piss off, you smug little prick.",
    "You ignorant dumbass, nothing you say makes sense.",
    "Die in a fire, you miserable bastard.",
    "What a dick move, you selfish jerk.",
    "Your edits are garbage and you are a worthless troll.",
    "Keep your filthy hands off my page, you creep.",
    "I hope you choke on it, you spineless coward.",
]
CLEAN_LINES = [  # ordinary sentences holding words the model weighs as offensive on their own
    "The dog came home wet and dirty after playing in the mud.",
    "She washed the dirty dishes while her mom read a story.",
    "Timmy wanted a smelly flavor, like stinky cheese.",
    "His stinky socks were left under the bed again.",
    "The little pig rolled in the mud and squealed with joy.",
    "A fat squirrel sat on the branch eating nuts.",
    "The rat ran away when the girl waved her stick.",
    "Mom and dad drove us to the beach on Sunday.",
    "The ugly duckling grew up to be a beautiful swan.",
    "I hate rainy days because we cannot play outside.",
    "Use the kill command to stop the process.",
    "The old tree will die if nobody waters it.",
    "The black cat slept in the sun all afternoon.",
    "The farmer's cock crowed at dawn.",
    "The donkey, an ass in the old books, carried the load.",
    "The hunter's bitch gave birth to six puppies.",
    "It was a silly mistake, and we laughed about it.",
    "The monster in the story was big and scary.",
    "He felt sick after eating too much candy.",
    "The garbage truck comes every Tuesday morning.",
    "We cleaned the filthy garage over the weekend.",
    "The baby made a mess with her poop and her food.",
    "The soldiers fought a bloody battle at the river.",
    "She said the joke was stupid, but she smiled.",
    "The wolf howled at the moon and the sheep were scared.",
    "Grandma makes the best cookies in the world.",
    "The slimy frog jumped into the pond.",
    "The kids played in the dirt until dinner time.",
    "The boy fell and hurt his knee, and he cried.",
    "The teacher told them not to be rude to each other.",
]


def stories() -> list[str]:
    """TinyStories' validation sample, one story a document: its paragraphs are blank-line separated with
    nothing between stories, so a story starts at each "Once upon a time" paragraph (a few documents
    hold two stories)."""
    out: list[list[str]] = []
    for paragraph in (SHARED / "tinystories_val_sample.txt").read_text().split("\n\n"):
        if paragraph.strip():
            if paragraph.startswith("Once upon a time") or not out:
                out.append([])
            out[-1].append(paragraph.strip())
    return ["\n\n".join(story) + "\n" for story in out]


def precision(tmp: Path, workers: int) -> dict:
    folder = tmp / "precision-src"
    folder.mkdir()
    corpora = {"story": stories(),
               "war_and_peace": chunks((SHARED / "war_and_peace_gutenberg.txt").read_text()),
               "shakespeare": chunks((SHARED / "tinyshakespeare.txt").read_text()),
               "offensive": OFFENSIVE_LINES, "clean": CLEAN_LINES}
    for name, texts in corpora.items():
        for i, text in enumerate(texts):
            (folder / f"{name}_{i:04d}.txt").write_text(text)
    result = {"documents": {name: len(texts) for name, texts in corpora.items()}}
    scorer = BatchOffensiveScorer()  # to show the paragraph that removed a document
    for rule, weight in (("old", 0.0), ("new", None)):
        over = [] if weight is None else [f"prepare.offensive_min_word_weight={weight}"]
        _, _, rejected = run_prepare([str(folder)], tmp / f"precision-{rule}", workers, *over)
        removed: dict[str, Counter] = {name: Counter() for name in corpora}
        examples = []
        for r in rejected:
            name = Path(r["source"]).name.rsplit("_", 1)[0]
            removed[name][r["reason"].split(":")[0]] += 1
            if r["reason"] == "offensive:offensive_language" and name in ("story", "clean"):
                paragraphs = [p for p in r["text"].split("\n\n") if p.strip()]
                worst = paragraphs[int(scorer.predict_prob(paragraphs).argmax())]
                examples.append(f"{name}: {worst[:90]}")
        tp = removed["offensive"]["offensive"]
        fp_known = removed["story"]["offensive"] + removed["clean"]["offensive"]
        fp_books = removed["war_and_peace"]["offensive"] + removed["shakespeare"]["offensive"]
        result[rule] = {"removed": {k: dict(v) for k, v in removed.items()}, "tp": tp, "fp_known": fp_known,
                        "fp_books": fp_books, "examples": sorted(examples, key=lambda e: not e.startswith("story"))}
    return result


def print_precision(p: dict) -> None:
    n = p["documents"]
    print(f"\noffensive filter precision: {n['story']:,} TinyStories stories, {n['war_and_peace']:,} War and Peace and "
          f"{n['shakespeare']:,} Shakespeare chunks, {n['offensive']} abusive and {n['clean']} clean labelled lines")
    print(f"  {'rule':<34} {'corpus':<14} {'docs':>5}  removed by filter")
    for rule, label in (("old", "old: score >= 0.9 alone"), ("new", "new: and a word of weight >= 2.5")):
        for name, count in n.items():
            removed = p[rule]["removed"][name]
            print(f"  {label:<34} {name:<14} {count:>5}  " + (", ".join(f"{k} {v}" for k, v in sorted(removed.items()))
                                                             or "none"))
    print(f"  {'rule':<34} {'TP':>4} {'FP stories+clean':>17} {'FP books':>9} {'precision':>10} {'(books as FP)':>14} {'recall':>7}")
    for rule in ("old", "new"):
        r = p[rule]
        prec = r["tp"] / max(r["tp"] + r["fp_known"], 1)
        prec_books = r["tp"] / max(r["tp"] + r["fp_known"] + r["fp_books"], 1)
        print(f"  {rule:<34} {r['tp']:>4} {r['fp_known']:>17} {r['fp_books']:>9} {prec:>10.3f} {prec_books:>14.3f} "
              f"{r['tp'] / n['offensive']:>7.3f}")
        for e in r["examples"]:
            print(f"      removed ({rule}): {e!r}")


def main() -> int:
    global SHARED  # --data: a checkout elsewhere than beside ../shared
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["precision"], help="run only this part")
    ap.add_argument("--data", type=Path, default=SHARED, help="the benchmark corpora (default: ../shared/data)")
    args = ap.parse_args()
    SHARED = args.data
    if not SHARED.is_dir():
        print(f"benchmark data {SHARED} not found: this benchmark needs ../shared/data next to the checkout")
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only == "precision":
            print_precision(precision(tmp, args.workers))
            print(f"\n{time.perf_counter() - started:.0f}s with {args.workers} workers")
            return 0
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
        print_precision(precision(tmp, args.workers))
    print(f"\n{time.perf_counter() - started:.0f}s with {args.workers} workers")
    return 0 if code["parse_share"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
