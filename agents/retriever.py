"""retriever: `query.retrieve` -> dense search filtered by tenant -> `query.rerank`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agents.answers import send_error
from agents.runtime.connection import publish_all
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from agents.vectorstore import VectorHit, VectorStore
from contracts.messages import Hit, QueryRequest, RerankRequest
from contracts.topology import CONSUMERS, Subjects


def _search(store: VectorStore, vector: list[float], tenant: str, limit: int) -> list[VectorHit]:
    store.ensure_collection(len(vector))
    return store.search(vector, tenant=tenant, limit=limit)


def to_hit(hit: VectorHit) -> Hit:
    p = hit.payload
    bbox = tuple(p["bbox"]) if p.get("bbox") else None
    return Hit(
        chunk_id=p["chunk_id"], doc_id=p["doc_id"], filename=p["filename"], page=p["page"], bbox=bbox,
        modality=p.get("modality", "text"), text=p["text"], score=hit.score,
    )  # fmt: skip


class RetrieverAgent(ConsumerAgent[QueryRequest]):
    name = "retriever"
    consumer = CONSUMERS.retriever
    model = QueryRequest

    def fetch_batch(self) -> int:
        return 4

    async def handle(self, deliveries: Sequence[Delivery[QueryRequest]]) -> None:
        embedder = await self._ctx.shared.embedder()
        requests = [d.payload for d in deliveries]
        vectors = await asyncio.to_thread(embedder.embed, [r.query for r in requests])
        out = []
        for request, vector in zip(requests, vectors, strict=True):
            limit = max(self._ctx.settings.retrieve_candidates, request.top_k)
            hits = await self._ctx.shared.in_store(_search, vector, request.tenant, limit)
            rerank = RerankRequest(request=request, candidates=[to_hit(h) for h in hits])
            out.append((Subjects.QUERY_RERANK, rerank, f"{request.request_id}:rerank"))
        await publish_all(self._ctx.js, out)

    async def on_give_up(self, delivery: Delivery[QueryRequest], reason: str) -> None:
        await send_error(self._ctx.nc, delivery.payload, "retrieval_failed", reason)
