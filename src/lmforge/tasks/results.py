"""What `lmforge eval --tasks` and `lmforge fill` show: cloze scores and ranked fillers, for a person or as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lmforge import figures

SCORING = {"masked-pll": "masked model: pseudo-log-likelihood, one mask per filler token",
           "causal-sentence": "causal model: log-likelihood of the whole completed sentence"}


@dataclass
class TaskScores(figures.Result):
    """`evaluate_tasks`'s accuracies with their 95% intervals, beside chance."""

    scores: dict

    def lines(self) -> list[str]:
        r = self.scores
        lo, hi = r["accuracy_ci95"]
        nlo, nhi = r["accuracy_norm_ci95"]
        return [f"{r['tasks_file']}: {r['tasks']} tasks, {r['model']} model, scoring {r['scoring']}",
                f"  accuracy            {r['accuracy']:.3f}  (95% CI {lo:.3f}-{hi:.3f})",
                f"  accuracy per byte   {r['accuracy_norm']:.3f}  (95% CI {nlo:.3f}-{nhi:.3f})",
                f"  chance              {r['chance']:.3f}"]


@dataclass
class Filled(figures.Result):
    """`fill`'s candidates for the blank, likeliest first, and how they were scored."""

    fill: dict

    def lines(self) -> list[str]:
        r = self.fill
        how = SCORING[r["scoring"]] + ", ranked by summed log-probability"
        if "shortlist" in r:
            how += f"; whole words grown from the {r['shortlist']} likeliest first tokens at the blank"
        trimmed = " [text trimmed to the model's context]" if r["truncated"] else ""
        shown = [json.dumps(c["text"], ensure_ascii=False) for c in r["candidates"]]  # quoted: spaces show
        width = max(map(len, shown))
        return [f"scoring: {r['scoring']} ({how}){trimmed}",
                *(f"  {text:<{width}}  {100 * c['probability']:6.2f}%  log-prob {c['score']:.3f} "
                  f"({c['per_byte']:.3f} per byte)" for text, c in zip(shown, r["candidates"]))]
