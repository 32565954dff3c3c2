"""embedder: `chunks.parsed.g<gen>.text.<lane>.<tenant>` -> `chunks.embedded.g<gen>.<tenant>`.

Image chunks (modality `image`, with an `ImageRef`) also get their image's vector (`models.image_vectors`: CLIP
when configured, else the perceptual hash), read from the uploads Object Store, once per distinct image of the
fetch; an image that cannot be read keeps its text vector only (logged), never failing the batch.

Passages are embedded with the model of this agent's index generation (`GenerationSettings.embedding_model`,
else the process default `MMRAG_EMBEDDING_MODEL`; `models.embedding_models`).

Micro-batches: one fetch takes up to `fetch_batch` messages and embeds their chunks in model calls of at most
`MMRAG_EMBEDDING_BATCH_SIZE` chunks (sorted by token length inside a call, so padding is small). Two lanes share the one model: each call waits on a `PriorityLock`, and the
interactive lane goes first, so a small document overtakes a big one at the next call boundary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.js.errors import NotFoundError
from PIL import Image

from agents.runtime.agent import ConsumerAgent
from agents.runtime.priority import PriorityLock
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery, PermanentError, PullWorker
from bus.limits import check_embedded_fits
from bus.publish import Outgoing, publish_all
from contracts.messages import ChunksEmbedded, ChunksParsed, EmbeddedChunk
from contracts.topology import LANES, ConsumerDef, Subjects, ingest_consumers
from documents.images import ImageRejected
from models.image_vectors import decode as decode_image
from models.embedding_models import TextEncoder
from models.sparse import SparseEncoder

log = logging.getLogger(__name__)

LANE_PRIORITY = {"interactive": 0, "bulk": 1}


class EmbedderAgent(ConsumerAgent[ChunksParsed]):
    name = "embedder"
    model = ChunksParsed
    needs = frozenset({Resource.TEXT_EMBEDDER, Resource.IMAGE_ENCODER})
    per_generation = True

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._model_lock = PriorityLock()
        self._sparse = SparseEncoder()
        self._text_model: TextEncoder | None = None  # this generation's model, loaded in `start`

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        consumers = ingest_consumers(self._ctx.generation)
        return [consumers[f"embedder-text-{lane}"] for lane in LANES]

    def fetch_batch(self) -> int:
        return self._ctx.settings.fetch_batch

    def workers(self) -> Sequence[PullWorker[ChunksParsed]]:
        workers = []
        for lane, consumer in zip(LANES, self.consumer_defs(), strict=True):

            async def handle(deliveries: Sequence[Delivery[ChunksParsed]], priority: int = LANE_PRIORITY[lane]) -> None:
                await self.embed_and_publish(deliveries, priority)

            workers.append(
                PullWorker(self._ctx.js, consumer, self.model, handle, agent=self.name, batch=self.fetch_batch(),
                           on_give_up=self.on_give_up)
            )  # fmt: skip
        return workers

    async def start(self) -> None:
        s = self._ctx.settings
        # This generation's model (its settings override the process default), loaded once per process.
        self._text_model = await self._ctx.shared.text_model(s.embedding_model, "ingest")
        check_embedded_fits(
            max_payload=self._ctx.nc.max_payload, chunks_per_message=s.chunks_per_message,
            chunk_max_chars=s.chunk_max_chars, dim=self.text_model.dim + self._ctx.shared.image_encoder.dim,
        )  # fmt: skip

    @property
    def text_model(self) -> TextEncoder:
        if self._text_model is None:
            raise RuntimeError("the embedder agent was not started: its text model loads in `start`")
        return self._text_model

    async def embed(self, texts: list[str], priority: int) -> list[list[float]]:
        embedder = self.text_model
        # A slow model (e5: ~1 passage/s here) embeds in smaller calls, so the interactive lane's turn comes soon.
        size = min(self._ctx.settings.embedding_batch_size, getattr(embedder, "max_call", 256))
        vectors: list[list[float]] = []
        for start in range(0, len(texts), size):
            async with self._model_lock.hold(priority):
                vectors += await asyncio.to_thread(embedder.embed, texts[start : start + size])
        return vectors

    async def embed_images(self, names: list[tuple[str, str]], priority: int) -> dict[str, list[float]]:
        """The image vector of each distinct stored image (tenant, object name), by object name; images that cannot
        be read are left out."""
        images: dict[str, Image.Image] = {}
        for tenant, name in dict.fromkeys(names):
            try:
                data = (await (await self._ctx.uploads.store(tenant)).get(name)).data or b""
                images[name] = await asyncio.to_thread(decode_image, data)
            except (NotFoundError, ImageRejected) as err:
                log.warning("embedder: no image vector for %s: %s", name, err)
        if not images:
            return {}
        async with self._model_lock.hold(priority):
            vectors = await asyncio.to_thread(self._ctx.shared.image_encoder.embed_images, list(images.values()))
        return dict(zip(images, vectors, strict=True))

    async def embed_and_publish(self, deliveries: Sequence[Delivery[ChunksParsed]], priority: int) -> None:
        gen = self._ctx.generation
        for d in deliveries:
            if d.payload.generation != gen.number:
                raise PermanentError(f"batch of generation {d.payload.generation} on generation {gen.number}'s subject")
        deliveries = await self.current(deliveries)
        texts = [chunk.embed_text for d in deliveries for chunk in d.payload.chunks]
        vectors = iter(await self.embed(texts, priority))
        sparse = iter(await asyncio.to_thread(self._sparse.encode_documents, texts))
        image_vectors = await self.embed_images(
            [(d.payload.tenant, c.image.object_name)
             for d in deliveries for c in d.payload.chunks if c.modality == "image" and c.image],
            priority,
        )
        model_name = self.text_model.name
        out = []
        for d in deliveries:
            batch = d.payload
            embedded = ChunksEmbedded(
                doc_id=batch.doc_id,
                tenant=batch.tenant,
                generation=batch.generation,
                revision=batch.revision,
                batch_index=batch.batch_index,
                model=model_name,
                embedded_by=self._ctx.settings.replica_id,
                chunks=[
                    EmbeddedChunk(**chunk.model_dump(), vector=next(vectors), sparse=next(sparse),
                                  image_vector=image_vectors.get(chunk.image.object_name) if chunk.image else None)
                    for chunk in batch.chunks
                ],
            )
            msg_id = f"{gen.token}:{batch.doc_id}:{batch.revision}:embedded:{batch.batch_index}"
            out.append(Outgoing(Subjects.embedded(gen, batch.tenant), embedded, msg_id, d.trace_headers))
        await publish_all(self._ctx.js, out)

    async def current(self, deliveries: Sequence[Delivery[ChunksParsed]]) -> list[Delivery[ChunksParsed]]:
        """The batches whose revision is still the document's: a deleted or re-submitted document's queued batches
        are skipped (acked, so deleted from CHUNKS) before they cost a model call."""
        progress = self._ctx.progress
        states = await asyncio.gather(*(progress.get(d.payload.tenant, d.payload.doc_id) for d in deliveries))
        kept = [d for d, state in zip(deliveries, states, strict=True)
                if state is not None and state.revision == d.payload.revision]  # fmt: skip
        if len(kept) < len(deliveries):
            log.info("embedder: skipped %d stale batch(es) (document deleted or re-submitted)", len(deliveries) - len(kept))
        return kept

    async def on_give_up(self, delivery: Delivery[ChunksParsed], reason: str) -> None:
        batch = delivery.payload
        await self._ctx.progress.mark_failed(batch.tenant, batch.doc_id, batch.revision, f"embedding failed: {reason}")
