"""embedder: `chunks.parsed.text` -> `chunks.embedded`.

Micro-batches: one fetch takes up to `fetch_batch` messages and embeds all their chunks in one model call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agents.runtime.connection import publish_all
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from contracts.messages import ChunksEmbedded, ChunksParsed, EmbeddedChunk
from contracts.topology import CONSUMERS, Subjects


class EmbedderAgent(ConsumerAgent[ChunksParsed]):
    name = "embedder"
    consumer = CONSUMERS.embedder
    model = ChunksParsed

    def fetch_batch(self) -> int:
        return self._ctx.settings.fetch_batch

    async def handle(self, deliveries: Sequence[Delivery[ChunksParsed]]) -> None:
        embedder = await self._ctx.shared.embedder()
        texts = [chunk.text for d in deliveries for chunk in d.payload.chunks]
        vectors = iter(await asyncio.to_thread(embedder.embed, texts))
        out = []
        for d in deliveries:
            batch = d.payload
            embedded = ChunksEmbedded(
                doc_id=batch.doc_id,
                tenant=batch.tenant,
                batch_index=batch.batch_index,
                batch_count=batch.batch_count,
                model=embedder.name,
                embedded_by=self._ctx.settings.replica_id,
                chunks=[EmbeddedChunk(**chunk.model_dump(), vector=next(vectors)) for chunk in batch.chunks],
            )
            out.append((Subjects.CHUNKS_EMBEDDED, embedded, f"{batch.doc_id}:embedded:{batch.batch_index}"))
        await publish_all(self._ctx.js, out)

    async def on_give_up(self, delivery: Delivery[ChunksParsed], reason: str) -> None:
        batch = delivery.payload
        await self._ctx.progress.mark_failed(batch.doc_id, batch.tenant, f"embedding failed: {reason}")
