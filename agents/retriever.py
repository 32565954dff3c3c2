"""retriever: `query.retrieve.<tenant>` -> dense search in the serving collection, filtered by tenant -> `query.rerank.<tenant>`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from agents.vectorstore import TEXT_DENSE, SearchFilter, VectorHit, VectorStore
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import Hit, QueryRequest, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects


def _search(store: VectorStore, alias: str, vector: list[float], tenant: str, limit: int) -> list[VectorHit]:
    if store.resolve(alias) is None:
        return []  # nothing was ever indexed
    return store.search(alias, vector, using=TEXT_DENSE, filter=SearchFilter(tenant=tenant), limit=limit)


def to_hit(hit: VectorHit) -> Hit:
    p = hit.payload
    return Hit(
        chunk_id=p.chunk_id, doc_id=p.doc_id, filename=p.filename, page=p.page, bbox=p.bbox,
        modality=p.modality, text=p.text, score=hit.score, headings=list(p.headings), image=p.image,
    )  # fmt: skip


class RetrieverAgent(ConsumerAgent[QueryRequest]):
    name = "retriever"
    model = QueryRequest
    needs = frozenset({Resource.TEXT_EMBEDDER, Resource.VECTOR_STORE})

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["retriever"]]

    def fetch_batch(self) -> int:
        return 4

    async def handle(self, deliveries: Sequence[Delivery[QueryRequest]]) -> None:
        embedder = self._ctx.shared.embedder
        requests = [d.payload for d in deliveries]
        vectors = await asyncio.to_thread(embedder.embed, [r.query for r in requests])
        alias = self._ctx.settings.collection
        out = []
        for d, request, vector in zip(deliveries, requests, vectors, strict=True):
            limit = max(self._ctx.settings.retrieve_candidates, request.top_k)
            hits = await self._ctx.shared.in_store(_search, alias, vector, request.tenant, limit)
            rerank = RerankRequest(request=request, candidates=[to_hit(h) for h in hits])
            out.append(
                Outgoing(Subjects.query(Subjects.QUERY_RERANK, request.tenant), rerank, f"{request.request_id}:rerank",
                         d.trace_headers)
            )  # fmt: skip
        await publish_all(self._ctx.js, out)

    async def on_give_up(self, delivery: Delivery[QueryRequest], reason: str) -> None:
        request = delivery.payload
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "retrieval_failed", "retrieval failed; try again (the details are in the retriever's log)"
        )
