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


def extractive_answer(question: str, hits: Sequence[Hit]) -> ExtractiveAnswer:
    """Quote the best-matching sentences of `hits` (best first), each with its citation number."""
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    query_terms = terms(question)
    # (match, -rank) orders sentences by how well they match, then by how good their hit was.
    candidates = [
        (overlap(query_terms, sentence), -rank, sentence, hit)
        for rank, hit in enumerate(hits)
        for sentence in sentences(hit.text)
    ]
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    best_match = candidates[0][0] if candidates else 0.0
    chosen = [c for c in candidates if c[0] > 0 and c[0] >= best_match / 2][:MAX_SENTENCES]
    if not chosen:  # nothing matches word for word: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    parts = []
    for _, _, sentence, hit in chosen:
        if hit not in cited:
            cited.append(hit)
        parts.append(f"{sentence} [{cited.index(hit) + 1}]")
    return ExtractiveAnswer(" ".join(parts), cited)


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
