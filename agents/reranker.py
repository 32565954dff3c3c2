"""reranker: `query.rerank` -> ordered hits -> `query.generate` (ask) or the results event (search).

Scoring for now (no cross-encoder checkpoint ships in a package here): a fixed blend of the dense cosine
score and the share of the query's content words found in the chunk. Both lie in [0, 1], so the final
scores stay comparable across queries. A cross-encoder slots in behind `score`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.answers import AnswerStream, send_error
from agents.lexical import overlap, terms
from agents.runtime.connection import publish_all
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from contracts.messages import GenerateRequest, Hit, QueryMode, RerankRequest, ResultsEvent, RetrievalEvent
from contracts.topology import CONSUMERS, Subjects

DENSE_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4


def rerank(query: str, candidates: Sequence[Hit], top_k: int) -> list[Hit]:
    """The best `top_k` candidates, best first, with blended scores in [0, 1]."""
    query_terms = terms(query)
    scored = [
        c.model_copy(update={"score": DENSE_WEIGHT * max(c.score, 0.0) + LEXICAL_WEIGHT * overlap(query_terms, c.text)})
        for c in candidates
    ]
    scored.sort(key=lambda h: h.score, reverse=True)
    return scored[:top_k]


class RerankerAgent(ConsumerAgent[RerankRequest]):
    name = "reranker"
    consumer = CONSUMERS.reranker
    model = RerankRequest

    def fetch_batch(self) -> int:
        return 4

    async def handle(self, deliveries: Sequence[Delivery[RerankRequest]]) -> None:
        generate = []
        for d in deliveries:
            request = d.payload.request
            hits = rerank(request.query, d.payload.candidates, request.top_k)
            answer = AnswerStream(self._ctx.nc, request)
            if request.mode is QueryMode.SEARCH:
                await answer.send(ResultsEvent, hits=hits)
            else:
                await answer.send(RetrievalEvent, hits=hits)
                generate.append(
                    (Subjects.QUERY_GENERATE, GenerateRequest(request=request, hits=hits), f"{request.request_id}:generate")
                )
        await self._ctx.nc.flush()
        await publish_all(self._ctx.js, generate)

    async def on_give_up(self, delivery: Delivery[RerankRequest], reason: str) -> None:
        await send_error(self._ctx.nc, delivery.payload.request, "rerank_failed", reason)
