"""The offline answerer: quotes the sentences, table rows or image text of the reranked hits that hold what the
question asks, each with its citation number. Used when no LLM is configured, or when every provider failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.messages import Hit
from models.lexical import contains_identifier, identifiers, terms, units

NOTHING_FOUND = "I could not find anything about that in the ingested documents."
MAX_QUOTES = 3
RELATED_SHARE = 0.6  # a further quote must score at least this share of the best one
RANK_WEIGHT = 0.25  # how much the reranker's score of a unit's hit adds to the unit's own match
MISSING_IDENTIFIER_FACTOR = 0.3  # a unit of a hit without any of the question's identifiers
IDENTIFIER_WEIGHT = 3.0  # an identifier of the question weighs this many times its rarest word


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    cited: list[Hit]  # cited[n - 1] is the hit behind "[n]"


def _quotable(hit: Hit) -> list[tuple[str, str]]:
    """(text to match, text to quote) units of a hit: sentences; a table's rows under its header; for an image,
    its whole text (caption and OCR lines) as one quote, the lines joined by " / "."""
    if hit.modality == "image":
        lines = [line.strip() for line in hit.text.splitlines() if line.strip()]
        return [(hit.text, " / ".join(lines))] if lines else []
    return units(hit.text, hit.modality)


def extractive_answer(question: str, hits: Sequence[Hit]) -> ExtractiveAnswer:
    """Quote the units (sentences, table rows, image text) of `hits` (reranked, best first) that hold what the
    question asks, each followed by its citation number.

    A unit's score: the IDF-weighted share of the question's words it contains (IDF over the units; an
    identifier weighs `IDENTIFIER_WEIGHT` times the rarest word; a unit of a hit that has none of the question's
    identifiers keeps 30%), plus
    `RANK_WEIGHT` times its hit's score. The best unit is quoted, then up to two more that match, score at
    least `RELATED_SHARE` of it and come from a hit scored at least `RELATED_SHARE` of the best hit. A unit quoted once
    is not quoted again (the same text on two pages is cited once). With no unit matching a word of the
    question, the best hit's first unit is offered as the closest passage.
    """
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    wanted = identifiers(question)
    asked = terms(question) - {t for i in wanted for t in terms(i)}
    candidates = [(rank, hit, match, quote) for rank, hit in enumerate(hits) for match, quote in _quotable(hit)]
    unit_terms = [terms(c[2]) for c in candidates]
    n = len(candidates)
    weights = {t: math.log(1 + (n - (df := sum(t in u for u in unit_terms)) + 0.5) / (df + 0.5)) for t in asked}
    # An identifier weighs three times the rarest word: the unit that names the error code answers "what does E-103
    # mean" better than the heading that holds "error" and "code".
    id_weight = IDENTIFIER_WEIGHT * max(weights.values(), default=1.0)
    total = sum(weights.values()) + id_weight * len(wanted)
    about = [not wanted or any(contains_identifier(h.text, i) for i in wanted) for h in hits]
    scored = []
    for (rank, hit, match, quote), have in zip(candidates, unit_terms, strict=True):
        named = sum(contains_identifier(match, i) for i in wanted)
        coverage = (sum(w for t, w in weights.items() if t in have) + id_weight * named) / total if total else 0.0
        if not about[rank]:  # the hit is not about the identifiers asked for
            coverage *= MISSING_IDENTIFIER_FACTOR
        scored.append((coverage + RANK_WEIGHT * max(hit.score, 0.0), -rank, coverage > 0, quote, hit))
    scored.sort(key=lambda c: (c[0], c[1]), reverse=True)
    best = scored[0][0] if scored else 0.0
    top_hit = max(hits[0].score, 0.0)
    chosen = []
    seen: set[str] = set()
    for c in scored:
        key = " ".join(c[3].lower().split())
        related = not chosen or (c[0] >= RELATED_SHARE * best and c[4].score >= RELATED_SHARE * top_hit)
        if c[2] and related and key not in seen:
            seen.add(key)
            chosen.append(c)
        if len(chosen) == MAX_QUOTES:
            break
    if not chosen:  # nothing matches word for word: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    parts = []
    for *_, quote, hit in chosen:
        if hit not in cited:
            cited.append(hit)
        separator = "\n" if "\n" in quote else " "  # a table row quote keeps its lines
        parts.append(f"{quote}{separator}[{cited.index(hit) + 1}]")
    return ExtractiveAnswer("\n".join(parts) if any("\n" in p for p in parts) else " ".join(parts), cited)
