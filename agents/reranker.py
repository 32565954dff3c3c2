"""reranker: `query.rerank` -> ordered hits -> `query.generate` (ask) or the results event (search).

Scoring for now (no cross-encoder checkpoint ships in a package here): a fixed blend of the dense cosine
score and the share of the query's content words found in the chunk. Both lie in [0, 1], so the final
scores stay comparable across queries. A cross-encoder slots in behind `score`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.lexical import overlap, terms
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import GenerateRequest, Hit, QueryMode, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects

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
    model = RerankRequest

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["reranker"]]

    def fetch_batch(self) -> int:
        return 4

    async def handle(self, deliveries: Sequence[Delivery[RerankRequest]]) -> None:
        generate = []
        for d in deliveries:
            request = d.payload.request
            hits = rerank(request.query, d.payload.candidates, request.top_k)
            answer = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            if request.mode is QueryMode.SEARCH:
                await answer.results(hits)
            else:
                await answer.retrieval(hits)
                generate.append(
                    Outgoing(Subjects.query(Subjects.QUERY_GENERATE, request.tenant),
                             GenerateRequest(request=request, hits=hits), f"{request.request_id}:generate",
                             d.trace_headers)
                )  # fmt: skip
        await publish_all(self._ctx.js, generate)

    async def on_give_up(self, delivery: Delivery[RerankRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "rerank_failed", "ranking the results failed; try again (the details are in the reranker's log)"
        )
