"""indexer: `chunks.embedded` -> vector store upsert -> progress (KV) -> `docs.indexed` when complete.

A message is acknowledged only after its points are durable (the store's `upsert` contract) and its
batch is recorded in the progress KV. Point ids are deterministic, so a redelivered batch overwrites
its own points and never duplicates them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from agents.runtime.connection import publish_all
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from agents.vectorstore import VectorPoint, VectorStore
from contracts.messages import ChunksEmbedded, DocumentProgress, DocumentStatus, EmbeddedChunk
from contracts.topology import CONSUMERS, Subjects

# Namespace of point ids; with the collection name (the index generation) it makes ids deterministic.
POINT_NAMESPACE = uuid.UUID("6f1c5a52-1d8e-4b8e-9a57-3f0f6a2b9c11")


def point_id(collection: str, chunk: EmbeddedChunk) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{collection}/{chunk.tenant}/{chunk.doc_id}/{chunk.index}"))


def to_point(collection: str, chunk: EmbeddedChunk) -> VectorPoint:
    payload = chunk.model_dump(mode="json", exclude={"vector", "prev_chunk_id", "next_chunk_id"})
    return VectorPoint(id=point_id(collection, chunk), vector=chunk.vector, payload=payload)


def _upsert(store: VectorStore, points: list[VectorPoint]) -> None:
    store.ensure_collection(len(points[0].vector))
    store.upsert(points)


class IndexerAgent(ConsumerAgent[ChunksEmbedded]):
    name = "indexer"
    consumer = CONSUMERS.indexer
    model = ChunksEmbedded

    def fetch_batch(self) -> int:
        return self._ctx.settings.fetch_batch

    async def handle(self, deliveries: Sequence[Delivery[ChunksEmbedded]]) -> None:
        collection = self._ctx.settings.collection
        points = [to_point(collection, chunk) for d in deliveries for chunk in d.payload.chunks]
        await self._ctx.shared.in_store(_upsert, points)
        finished = []
        for d in deliveries:
            batch = d.payload

            def record(current: DocumentProgress | None, batch: ChunksEmbedded = batch) -> DocumentProgress:
                base = current or DocumentProgress(
                    doc_id=batch.doc_id, tenant=batch.tenant, status=DocumentStatus.EMBEDDING,
                    batches_total=batch.batch_count,
                )  # fmt: skip
                return base.with_indexed_batch(batch.batch_index, len(batch.chunks))

            progress = await self._ctx.progress.update(batch.doc_id, record)
            if progress.status is DocumentStatus.INDEXED:
                finished.append((Subjects.DOCS_INDEXED, progress, f"{batch.doc_id}:indexed"))
        await publish_all(self._ctx.js, finished)

    async def on_give_up(self, delivery: Delivery[ChunksEmbedded], reason: str) -> None:
        batch = delivery.payload
        await self._ctx.progress.mark_failed(batch.doc_id, batch.tenant, f"indexing failed: {reason}")
