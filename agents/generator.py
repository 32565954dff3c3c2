"""generator: `query.generate` -> answer events (tokens, citations, done) on the request's reply subject.

The answerer here is offline and extractive: it quotes the sentences of the reranked hits that best match
the question, each followed by its citation number. It needs no model and no API key, so the system
always answers; LLM providers will sit in front of it in a fallback chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agents.lexical import overlap, sentences, terms
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter, stream_pieces
from contracts.messages import GenerateRequest, Hit
from contracts.topology import QUERY_CONSUMERS, ConsumerDef

NOTHING_FOUND = "I could not find anything about that in the ingested documents."
MAX_SENTENCES = 3


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    cited: list[Hit]  # cited[n - 1] is the hit behind "[n]"


def _units(hit: Hit) -> list[tuple[str, str]]:
    """(text to match, text to quote) of what a hit offers: its sentences; for a table, its data rows, matched
    on the row alone and quoted under the header row, so the quote reads as a one-row table."""
    if hit.modality != "table":
        return [(sentence, sentence) for sentence in sentences(hit.text)]
    rows = [line for line in hit.text.splitlines() if line.startswith("|")]
    if len(rows) >= 3 and set(rows[1]) <= set("|-: "):
        return [(row, f"{rows[0]}\n{row}") for row in rows[2:]]
    return [(row, row) for row in rows]


def extractive_answer(question: str, hits: Sequence[Hit]) -> ExtractiveAnswer:
    """Quote the best-matching sentences (or table rows) of `hits` (best first), each with its citation number.

    A sentence quoted once is not quoted again (the same text on two pages is cited once).
    """
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    query_terms = terms(question)
    # (match, -rank) orders sentences by how well they match, then by how good their hit was.
    candidates = [
        (overlap(query_terms, match), -rank, quote, hit)
        for rank, hit in enumerate(hits)
        for match, quote in _units(hit)
    ]
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    best_match = candidates[0][0] if candidates else 0.0
    chosen = []
    seen: set[str] = set()
    for c in candidates:
        key = " ".join(c[2].lower().split())
        if c[0] > 0 and c[0] >= best_match / 2 and key not in seen:
            seen.add(key)
            chosen.append(c)
        if len(chosen) == MAX_SENTENCES:
            break
    if not chosen:  # nothing matches word for word: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    parts = []
    for _, _, unit, hit in chosen:
        if hit not in cited:
            cited.append(hit)
        separator = "\n" if "\n" in unit else " "  # a table row quote keeps its lines
        parts.append(f"{unit}{separator}[{cited.index(hit) + 1}]")
    return ExtractiveAnswer("\n".join(parts) if any("\n" in p for p in parts) else " ".join(parts), cited)


class GeneratorAgent(ConsumerAgent[GenerateRequest]):
    name = "generator"
    model = GenerateRequest

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["generator"]]

    async def handle(self, deliveries: Sequence[Delivery[GenerateRequest]]) -> None:
        for d in deliveries:
            request = d.payload.request
            answer = extractive_answer(request.query, d.payload.hits)
            stream = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            for piece in stream_pieces(answer.text):
                await stream.token(piece)
            for n, hit in enumerate(answer.cited, start=1):
                await stream.citation(
                    n=n, doc_id=hit.doc_id, filename=hit.filename, page=hit.page, bbox=hit.bbox, text=hit.text
                )
            await stream.done(answerer="extractive")

    async def on_give_up(self, delivery: Delivery[GenerateRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "generation_failed", "answering failed; try again (the details are in the generator's log)"
        )
