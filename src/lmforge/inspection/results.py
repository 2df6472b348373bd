"""What `lmforge inspect WHAT` shows of each `Inspector` result, for a person or as JSON."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge import figures
from lmforge.inspection.pictures import format_lens, format_neighbours, to_json


def _neighbours(r: dict, words: list[str], vectors: str | None) -> str:
    return format_neighbours(r)


def _similarity(r: dict, words: list[str], vectors: str | None) -> str:
    return f"similarity({words[0]!r}, {words[1]!r}) = {r['similarity']:.4f} ({vectors} vectors)"


def _analogy(r: dict, words: list[str], vectors: str | None) -> str:
    a, b, c = words
    return f"{a} : {b} :: {c} : ?\n" + "\n".join(f"  {x['similarity']:7.4f}  {x['word']}" for x in r["answers"])


def _map(r: dict, words: list[str], vectors: str | None) -> str:
    return f"map of {len(r['points'])} words ({r['method'].upper()}): {r['png']}, {r['html']}"


def _layers(r: dict, words: list[str], vectors: str | None) -> str:
    return format_lens(r) + f"\nheat-map: {r['png']}"


def _attention(r: dict, words: list[str], vectors: str | None) -> str:
    return f"attention of layer {r['layer']}, heads {', '.join(map(str, r['heads']))}: {r['png']}"


def _sentences(r: dict, words: list[str], vectors: str | None) -> str:
    return f"{r['sentences']} sentences (layer {r['layer']}), most similar pairs:\n" + "\n".join(
        f"  {p['similarity']:7.4f}  {p['a']!r}  ~  {p['b']!r}" for p in r["pairs"])


RENDER = {"neighbours": _neighbours, "similarity": _similarity, "analogy": _analogy, "map": _map,
          "layers": _layers, "attention": _attention, "sentences": _sentences}


@dataclass
class Inspection(figures.Result):
    """One `Inspector` result; `what` is the command that made it, `words` the words it was asked about."""

    what: str
    result: dict
    words: list[str]
    vectors: str | None = None  # static or contextual, for the commands that read word vectors

    def lines(self) -> list[str]:
        return RENDER[self.what](self.result, self.words, self.vectors).split("\n")

    def to_json(self) -> str:
        return to_json(self.result)
