"""The offline answerer: quotes the sentences, table rows or image text of the reranked hits that hold what the
question asks, each with its citation number. Used when no LLM is configured, or when every provider failed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.messages import Hit
from models.embedding_models import CosineProfile, profile
from models.lexical import contains_identifier, identifiers, table_rows, terms, units
from models.similarity import Embed, cosine_matrix

NOTHING_FOUND = "I could not find anything about that in the ingested documents."
MAX_QUOTES = 3
RELATED_SHARE = 0.6  # a further quote must score at least this share of the best one
RANK_WEIGHT = 0.25  # how much the reranker's score of a unit's hit adds to the unit's own match
MISSING_IDENTIFIER_FACTOR = 0.3  # a unit of a hit without any of the question's identifiers
IDENTIFIER_WEIGHT = 3.0  # an identifier of the question weighs this many times its rarest word
# With the text embedder (`embed`): a unit's match is (1 - MEANING_WEIGHT) x its word coverage + MEANING_WEIGHT x
# its cosine with the question (mapped to [0, 1] by the model's `CosineProfile`). Chosen on the tuning part of
# bench/quality/paraphrase.jsonl and the fixed set of bench/quality (decision 85).
MEANING_WEIGHT = 0.7
MAX_UNITS_PER_HIT = 40  # the units of one hit that are embedded (a long table page is cut here): bounds the call
# A question's parts: clauses joined by ", and", ";" or a second question ("What is X, and how do I Y?").
_PART_BREAK = re.compile(r"\?\s+(?=\S)|;\s*|,\s+and\s+|,\s+but\s+", re.IGNORECASE)
MIN_PART_TERMS = 2  # a part with fewer content words is not a question of its own ("..., and why?")
MAX_PARTS = 3  # a question of more parts is a list: asked as one (each part costs a search and a scoring)
NEAR_DUPLICATE = 0.8  # a unit sharing this share of its content words (Jaccard) with a quoted one is not quoted
# A question that asks for the largest or smallest of something ("which region had the highest revenue") is
# answered from a table by computing it (`_compared_row`), not by the rows that share its words.
# Not "max"/"min" ("5 min" is a duration) nor "oldest"/"newest" (the largest age is the smallest year).
LARGEST = frozenset("highest largest biggest greatest most maximum longest heaviest "
                    "höchste höchsten größte größten meiste meisten".split())  # fmt: skip
SMALLEST = frozenset("lowest smallest least fewest minimum cheapest shortest lightest "
                     "niedrigste niedrigsten kleinste kleinsten wenigsten".split())  # fmt: skip
_QUESTION_WORD = re.compile(r"\w+")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")  # a markdown row's cell borders ("\|" is a pipe inside a cell)
_NUMBER = re.compile(r"[-−]?\d+(?:[,.'\u202f]\d{3})*(?:[.,]\d+)?")


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    cited: list[Hit]  # cited[n - 1] is the hit behind "[n]"


def _quotable(hit: Hit) -> list[tuple[str, str]]:
    """(text to match, text to quote) units of a hit: sentences; a table's rows under its header; for an image,
    its whole text (caption and OCR lines) as one quote that keeps its lines, as the screenshot shows them."""
    if hit.modality == "image":
        lines = [line.strip() for line in hit.text.splitlines() if line.strip()]
        return [(hit.text, "\n".join(lines))] if lines else []
    return units(hit.text, hit.modality)[:MAX_UNITS_PER_HIT]


def question_parts(question: str) -> list[str]:
    """The parts of a question that asks two or three things ("How do I X, and why does Y?"), each with at least
    `MIN_PART_TERMS` content words; one part (the question) otherwise, and for more than `MAX_PARTS`: every part
    is searched, scored and answered on its own (decision 88), so a list of sixty is one question, not sixty."""
    parts = [p.strip(" ,;?") for p in _PART_BREAK.split(question)]
    parts = [p for p in parts if len(terms(p)) >= MIN_PART_TERMS]
    return parts if 1 < len(parts) <= MAX_PARTS else [question]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in _CELL_SPLIT.split(row.strip().strip("|"))]


def _number(cell: str) -> float | None:
    """The first number of a cell ("$1,200.50", "1.234,5 €", "12 %", "−3"), or None. Repeated separators of one
    kind, or one comma before exactly three digits, group thousands; otherwise the last separator is the decimal
    point ("1,5" and "1.5" are both 1.5)."""
    found = _NUMBER.search(cell)
    if found is None:
        return None
    text = found.group().replace("−", "-").replace("\u202f", "").replace("'", "")
    seps = [c for c in text if c in ".,"]
    if len(set(seps)) == 1 and (len(seps) > 1 or (seps[0] == "," and len(text) - text.rindex(",") == 4)):
        text = text.replace(seps[0], "")  # "1,234,567", "1.234.567", "1,200"
    elif seps:
        last = max(text.rindex(c) for c in set(seps))
        text = text[:last].replace(".", "").replace(",", "") + "." + text[last + 1 :]
    return float(text)


def _compared_row(question: str, hits: Sequence[Hit]) -> tuple[int, str] | None:
    """(rank of the hit, the row quoted under its header) that a superlative question asks for: in the best table
    hit with a column named by a word of the question (the rows' numbers in it, two at least), the row with the
    largest value (`LARGEST`: highest, most...) or the smallest (`SMALLEST`). None for any other question."""
    words = set(_QUESTION_WORD.findall(question.lower()))
    largest, smallest = bool(words & LARGEST), bool(words & SMALLEST)
    if largest == smallest:  # neither, or both ("from the highest to the lowest"): nothing to compute
        return None
    asked = terms(question)
    for rank, hit in enumerate(hits):
        table = table_rows(hit.text) if hit.modality == "table" else None
        if table is None:
            continue
        header, rows = table
        names = _cells(header)
        for column, name in enumerate(names):
            if not terms(name) & asked:
                continue
            values = [(v, i) for i, row in enumerate(rows) if (cells := _cells(row))[column:]
                      and (v := _number(cells[column])) is not None]  # fmt: skip
            if len(values) >= 2:
                _value, i = (max if largest else min)(values, key=lambda vi: (vi[0], -vi[1]))
                return rank, f"{header}\n{rows[i]}"
    return None


@dataclass
class _Unit:
    rank: int  # its hit's place in the hits
    hit: Hit
    match: str
    quote: str
    coverage: list[float]  # per asked text (the question, then its parts): word coverage
    meaning: list[float]  # the same, cosine mapped to [0, 1]; zeros without an embedder
    words: frozenset[str] = field(init=False)  # the content words of `match`

    def __post_init__(self) -> None:
        self.words = terms(self.match)

    def score(self, asked: int, weight: float) -> float:
        return (
            (1 - weight) * self.coverage[asked] + weight * self.meaning[asked] + RANK_WEIGHT * max(self.hit.score, 0.0)
        )

    def matches(self, asked: int) -> bool:
        return self.coverage[asked] > 0 or self.meaning[asked] > 0


def _coverages(asked: str, units_: list[_Unit], unit_terms: list[frozenset[str]]) -> list[float]:
    """Each unit's IDF-weighted share of `asked`'s words (IDF over the units; an identifier weighs
    `IDENTIFIER_WEIGHT` times the rarest word)."""
    wanted = identifiers(asked)
    words = terms(asked) - {t for i in wanted for t in terms(i)}
    n = len(units_)
    weights = {t: math.log(1 + (n - (df := sum(t in u for u in unit_terms)) + 0.5) / (df + 0.5)) for t in words}
    # An identifier weighs three times the rarest word: the unit that names the error code answers "what does E-103
    # mean" better than the heading that holds "error" and "code".
    id_weight = IDENTIFIER_WEIGHT * max(weights.values(), default=1.0)
    total = sum(weights.values()) + id_weight * len(wanted)
    out = []
    for u, have in zip(units_, unit_terms, strict=True):
        named = sum(contains_identifier(u.match, i) for i in wanted)
        out.append((sum(w for t, w in weights.items() if t in have) + id_weight * named) / total if total else 0.0)
    return out


def extractive_answer(question: str, hits: Sequence[Hit], *, embed: Embed | None = None,
                      cosines: CosineProfile | None = None) -> ExtractiveAnswer:  # fmt: skip
    """Quote the units (sentences, table rows, image text) of `hits` (reranked, best first) that hold what the
    question asks, each followed by its citation number (the hit, so its page and region, it comes from).

    A unit's match: its word coverage of the question (`_coverages`) and, with `embed` (the text embedder;
    `cosines`: its model's profile, default MiniLM's), its cosine with the question, weighed
    `MEANING_WEIGHT`; a unit of a hit without the question's identifiers keeps 30% of both; plus `RANK_WEIGHT`
    times its hit's score. A question for the largest or smallest of something in a table gets the row that holds
    it first, computed from the column the question names (`_compared_row`). A question of several parts
    (`question_parts`) first gets the best unit of each part,
    from whichever hit (a two-page question is answered from both pages); then the best units of the whole
    question, up to `MAX_QUOTES` in all, each scoring at least `RELATED_SHARE` of the best and from a hit scored
    at least `RELATED_SHARE` of the best hit. A unit quoted once is not quoted again, nor one that shares
    `NEAR_DUPLICATE` of its words with it (the same text on two pages is cited once). With no unit matching the
    question at all, the best hit's text is offered as the closest passage. One embedding call a question (at
    most `MAX_UNITS_PER_HIT` units a hit).
    """
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    parts = question_parts(question)
    asked = [question, *parts] if len(parts) > 1 else [question]
    found = [_Unit(rank, hit, match, quote, [], []) for rank, hit in enumerate(hits) for match, quote in _quotable(hit)]
    unit_terms = [u.words for u in found]
    weight = MEANING_WEIGHT if embed is not None else 0.0
    scale = (cosines or profile(None)).scale
    matrix = None
    if embed is not None:
        matrix = cosine_matrix(embed, asked, [u.match for u in found])
    for a, text in enumerate(asked):
        # A hit without the identifiers asked about is not about them (an embedding barely tells E-150 from E-105).
        about = [not (wanted := identifiers(text)) or any(contains_identifier(h.text, i) for i in wanted) for h in hits]
        for j, (u, c) in enumerate(zip(found, _coverages(text, found, unit_terms), strict=True)):
            factor = 1.0 if about[u.rank] else MISSING_IDENTIFIER_FACTOR
            u.coverage.append(c * factor)
            u.meaning.append(0.0 if matrix is None else scale(float(matrix[a, j])) * factor)
    chosen: list[_Unit] = []
    take = chosen.append

    compared = _compared_row(question, hits)
    computed_from = None if compared is None else hits[compared[0]]

    def new(u: _Unit) -> bool:
        """Not (nearly) a unit already quoted: the same sentence on two pages, or one that only changes a number or
        a name ("the cartridge of model 8 ...", "... of model 9 ...") says nothing more; nor another row of a
        table whose answer was computed (the rows that share the question's words are not the answer)."""
        if u.hit is computed_from:
            return False
        return not any(len(u.words & c.words) >= NEAR_DUPLICATE * len(u.words | c.words) for c in chosen)

    if compared is not None:  # the row a superlative question asks for, computed, is quoted first
        rank, row = compared
        take(_Unit(rank, hits[rank], row, row, [], []))
    for a in range(1, len(asked)):  # one unit per part, the best for it
        best = max((u for u in found if u.matches(a) and new(u)), default=None,
                   key=lambda u: (u.score(a, weight), -u.rank))  # fmt: skip
        if best is not None:
            take(best)
    ranked = sorted(found, key=lambda u: (u.score(0, weight), -u.rank), reverse=True)
    top = ranked[0].score(0, weight) if ranked else 0.0
    top_hit = max(hits[0].score, 0.0)
    for u in ranked:
        if len(chosen) >= max(MAX_QUOTES, len(parts)):
            break
        related = not chosen or (u.score(0, weight) >= RELATED_SHARE * top and u.hit.score >= RELATED_SHARE * top_hit)
        if u.matches(0) and related and new(u):
            take(u)
    if not chosen:  # nothing matches: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    quotes = []
    for u in chosen:
        if u.hit not in cited:
            cited.append(u.hit)
        separator = "\n" if "\n" in u.quote else " "  # a table row quote keeps its lines
        quotes.append(f"{u.quote}{separator}[{cited.index(u.hit) + 1}]")
    return ExtractiveAnswer("\n".join(quotes) if any("\n" in q for q in quotes) else " ".join(quotes), cited)
