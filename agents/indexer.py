"""indexer: `chunks.embedded.g<gen>.<tenant>` -> vector store -> progress (KV) -> `docs.indexed.g<gen>.<tenant>.<doc>`;
and `docs.delete.<tenant>.<doc_id>` -> every byte of the document removed (see `handle_deletes`).

A batch is acknowledged only after its points are durable (the store's `upsert` contract) and the batch is
recorded in the progress KV. Point ids are uuid5(collection, tenant, doc, revision, chunk index), so a
redelivered batch overwrites its own points and never duplicates them.

Revisions (see the parser): a batch of an older revision than progress records is dropped; when a revision
becomes fully indexed, the points of every other revision of the document are deleted, so a re-submitted
document replaces the old one cleanly, and the old one stays searchable until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence

from nats.js.errors import NotFoundError

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery, PermanentError, PullWorker
from bus.cache_epochs import EpochInvalidator
from bus.objects import remove_object
from bus.publish import Outgoing, publish_all
from bus.tasks import cancel_and_wait
from contracts.messages import ChunksEmbedded, DocumentDeleted, DocumentProgress, DocumentStatus, EmbeddedChunk
from contracts.topology import (
    DEADLETTER_STREAM,
    DOCS_STREAM,
    GRAPH_STREAM,
    PROGRESS_BUCKET,
    ConsumerDef,
    Subjects,
    ingest_consumers,
    object_name,
    stored_objects_object,
    uploads_bucket,
)
from models.image_vectors import image_vector_dim
from search.graph import IndexedChunk, build_facts, tombstone
from search.vectorstore import (
    CollectionNotFound,
    CollectionSchema,
    PointPayload,
    SparseVector,
    VectorDimError,
    VectorPoint,
    VectorStore,
)

log = logging.getLogger(__name__)

# Namespace of point ids; with the collection name (the index generation) it makes ids deterministic.
POINT_NAMESPACE = uuid.UUID("6f1c5a52-1d8e-4b8e-9a57-3f0f6a2b9c11")
MAINTAIN_EVERY_S = 30.0


def point_id(collection: str, revision: int, chunk: EmbeddedChunk) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{collection}/{chunk.tenant}/{chunk.doc_id}/{revision}/{chunk.index}"))


def to_point(collection: str, revision: int, chunk: EmbeddedChunk, collections: Sequence[str] = ()) -> VectorPoint:
    """`collections`: the document's as its progress records them for this revision (they change only with a new
    submission, i.e. a new revision, so every point of a revision carries the same)."""
    payload = PointPayload(
        tenant=chunk.tenant, doc_id=chunk.doc_id, revision=revision, chunk_id=chunk.chunk_id, index=chunk.index,
        page=chunk.page, bbox=chunk.bbox, locator=chunk.locator, modality=chunk.modality, text=chunk.text, filename=chunk.filename,
        headings=tuple(chunk.headings), source=chunk.source, image=chunk.image, table=chunk.table,
        collections=tuple(collections),
    )  # fmt: skip
    sparse = SparseVector(tuple(chunk.sparse.indices), tuple(chunk.sparse.values)) if chunk.sparse else None
    image = list(chunk.image_vector) if chunk.image_vector else None
    return VectorPoint(id=point_id(collection, revision, chunk), payload=payload, text=list(chunk.vector), sparse=sparse,
                       image=image)  # fmt: skip


def _open_collection(
    store: VectorStore, collection: str, alias: str, dim: int, quantization: bool = False, image_dim: int | None = None
) -> None:
    store.create_collection(collection, CollectionSchema(text_dim=dim, image_dim=image_dim, quantization=quantization))
    if store.resolve(alias) is None:  # the first generation serves as soon as it exists
        store.set_alias(alias, collection)


class IndexerAgent(ConsumerAgent[ChunksEmbedded]):
    name = "indexer"
    model = ChunksEmbedded
    needs = frozenset({Resource.VECTOR_STORE})
    per_generation = True

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.collection = ctx.generation.collection(ctx.settings.collection)
        self._opened = False
        self._maintenance: asyncio.Task[None] | None = None
        # The edge API's answer cache (bus.cache_epochs): every change to what a tenant can find retires its
        # cached answers. A no-op without MMRAG_REDIS_URL; never fails a batch.
        self._invalidator = EpochInvalidator(ctx.settings.redis_url, ctx.settings.redis_timeout_s)

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        consumers = ingest_consumers(self._ctx.generation)
        return [consumers["indexer"], consumers["deleter"]]

    def fetch_batch(self) -> int:
        return self._ctx.settings.fetch_batch

    def workers(self) -> Sequence[PullWorker]:
        index, delete = self.consumer_defs()
        js = self._ctx.js
        return [
            PullWorker(js, index, ChunksEmbedded, self.handle, agent=self.name, batch=self.fetch_batch(),
                       on_give_up=self.on_give_up),
            PullWorker(js, delete, DocumentDeleted, self.handle_deletes, agent=self.name, batch=1),
        ]  # fmt: skip

    async def start(self) -> None:
        self._maintenance = asyncio.create_task(self._maintain_forever())

    async def _maintain_forever(self) -> None:
        """Run the store's index-build policy now and then (it decides whether there is anything to do)."""
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            try:
                await self._ctx.shared.in_store(lambda store: store.maintain())
            except Exception:  # noqa: BLE001 - maintenance must never take the indexer down
                log.exception("indexer: vector store maintenance failed")

    async def close(self) -> None:
        await self._invalidator.close()
        await cancel_and_wait(self._maintenance)

    async def _ensure_collection(self, dim: int) -> None:
        if not self._opened:
            s = self._ctx.settings  # the generation's settings: quantization is per generation
            # The image vector's size follows the configured image encoder (CLIP's, or the 64-bit perceptual hash).
            image_dim = image_vector_dim(s.clip_model)
            await self._ctx.shared.in_store(
                _open_collection, self.collection, s.collection, dim, s.vector_quantization, image_dim
            )
            self._opened = True

    async def handle(self, deliveries: Sequence[Delivery[ChunksEmbedded]]) -> None:
        progress = self._ctx.progress
        current: list[Delivery[ChunksEmbedded]] = []
        collections: dict[str, list[str]] = {}  # <tenant>/<doc_id> -> the document's collections
        for d in deliveries:
            batch = d.payload
            if batch.generation != self._ctx.generation.number:
                raise PermanentError(f"batch of generation {batch.generation} on generation {self._ctx.generation.number}'s subject")
            state = await progress.get(batch.tenant, batch.doc_id)
            if state is None or state.revision != batch.revision or state.status is DocumentStatus.DELETED:
                log.info("indexer: dropping stale batch %d of %s revision %d", batch.batch_index, batch.doc_id, batch.revision)
                continue
            current.append(d)
            collections[f"{batch.tenant}/{batch.doc_id}"] = state.collections
        if not current:
            return
        points = [
            to_point(self.collection, d.payload.revision, c, collections[f"{d.payload.tenant}/{d.payload.doc_id}"])
            for d in current for c in d.payload.chunks
        ]  # fmt: skip
        if points:  # (an OCR batch that read nothing has none, and is recorded below all the same)
            await self._ensure_collection(len(points[0].text or []))
            try:
                await self._ctx.shared.in_store(lambda store: store.upsert(self.collection, points))
            except VectorDimError as err:  # retrying cannot change a vector's length
                raise PermanentError(f"cannot index: {err}") from err
        tenants = {d.payload.tenant for d in current}
        await self._invalidator.bump(tenants)  # searchable now, before any status says so
        changed: set[str] = set()  # tenants whose points the loop deletes: their answers are retired again
        finished, facts = [], []
        for d in current:
            batch = d.payload

            def record(state: DocumentProgress | None, batch: ChunksEmbedded = batch) -> DocumentProgress | None:
                if state is None or state.revision != batch.revision:
                    return None
                return state.with_indexed_batch(batch.batch_index, len(batch.chunks))

            state = await progress.update(batch.tenant, batch.doc_id, record)
            if state is not None and state.revision == batch.revision:
                # Extraction is pure Python (about 1-3 ms a chunk): off the event loop, so acks keep flowing.
                facts.append(await asyncio.to_thread(self._graph_facts, batch, d.trace_headers))
            if state is None or state.revision != batch.revision:
                # Replaced or deleted while we upserted: take back what this stale batch wrote.
                await self._delete_points(batch.tenant, batch.doc_id, keep_revision=state.revision if state else None)
                changed.add(batch.tenant)
            elif state.status is DocumentStatus.INDEXED:
                if await self._holds_other_points(batch.tenant, batch.doc_id, state.chunks_indexed):
                    await self._delete_points(batch.tenant, batch.doc_id, keep_revision=batch.revision)
                    changed.add(batch.tenant)
                await self._purge_graph_facts(batch.tenant, batch.doc_id, before=batch.revision)
                finished.append(
                    Outgoing(Subjects.indexed(self._ctx.generation, batch.tenant, batch.doc_id), state,
                             f"{self._ctx.generation.token}:{batch.doc_id}:{batch.revision}:indexed", d.trace_headers)
                )  # fmt: skip
        if changed:
            # Again, only where points went: a bump after the status said "indexed" would retire the answers
            # cached since, for nothing, when the document had no other revision to delete.
            await self._invalidator.bump(changed)
        await publish_all(self._ctx.js, [*facts, *finished])
        for event in finished:  # a document's completion events: only its latest is kept (it names the file)
            await self._ctx.js.purge_stream(DOCS_STREAM.name, subject=event.subject, keep=1)

    def _graph_facts(self, batch: ChunksEmbedded, headers: Mapping[str, str]) -> Outgoing:
        """The knowledge-graph facts of a durably indexed batch (`search.graph`), for every retriever's graph."""
        gen = self._ctx.generation
        chunks = [IndexedChunk(c.chunk_id, point_id(self.collection, batch.revision, c), c.text) for c in batch.chunks]
        facts = build_facts(tenant=batch.tenant, doc_id=batch.doc_id, generation=gen.number, revision=batch.revision,
                            batch_index=batch.batch_index, chunks=chunks)  # fmt: skip
        return Outgoing(Subjects.graph_facts(gen, batch.tenant, batch.doc_id, batch.revision), facts,
                        f"{gen.token}:{batch.doc_id}:{batch.revision}:{batch.batch_index}:facts", headers)  # fmt: skip

    async def _retract_graph_facts(self, tenant: str, doc_id: str, revision: int, headers: Mapping[str, str]) -> None:
        """Remove a deleted document from every graph: purge its older revisions' facts from stream GRAPH (a replay
        never sees them again), then publish its tombstone (replicas already holding them drop them; it also
        outranks any facts of an older revision still in flight)."""
        gen = self._ctx.generation
        await self._purge_graph_facts(tenant, doc_id, before=revision)
        subject = Subjects.graph_facts(gen, tenant, doc_id, revision)
        dead = tombstone(tenant=tenant, doc_id=doc_id, generation=gen.number, revision=revision)
        await publish_all(self._ctx.js, [Outgoing(subject, dead, f"{gen.token}:{doc_id}:{revision}:graph-deleted", headers)])

    async def _purge_graph_facts(self, tenant: str, doc_id: str, *, before: int) -> None:
        """Purge a document's facts and tombstones of revisions older than `before` from stream GRAPH."""
        pattern = Subjects.graph_facts(self._ctx.generation, tenant, doc_id, "*")
        info = await self._ctx.js.stream_info(GRAPH_STREAM.name, subjects_filter=pattern)
        for subject in info.state.subjects or {}:
            if int(subject.rsplit(".", 1)[1]) < before:
                await self._ctx.js.purge_stream(GRAPH_STREAM.name, subject=subject)

    async def _holds_other_points(self, tenant: str, doc_id: str, own: int) -> bool:
        """Whether the store holds points of the document besides the `own` ones of its indexed revision (one
        per chunk): an earlier revision's, or a stale batch's. Only then is there something to delete."""

        def count(store: VectorStore) -> int:
            try:
                return store.count(self.collection, tenant=tenant, doc_id=doc_id)
            except CollectionNotFound:  # nothing indexed yet (a document without chunks)
                return 0

        return await self._ctx.shared.in_store(count) != own

    async def _delete_points(self, tenant: str, doc_id: str, *, keep_revision: int | None = None) -> None:
        def delete(store: VectorStore) -> None:
            with contextlib.suppress(CollectionNotFound):  # no collection yet: nothing to delete
                store.delete(self.collection, tenant=tenant, doc_id=doc_id, keep_revision=keep_revision)

        await self._ctx.shared.in_store(delete)

    async def handle_deletes(self, deliveries: Sequence[Delivery[DocumentDeleted]]) -> None:
        """Remove every byte of each deleted document that this generation's pipeline wrote: vector points, the
        upload, its page rasters and extracted images, its completion events, dead letters about it, its graph
        facts, and the content of its progress record (a tombstone that keeps only ids, revision and status, with
        the key's history purged). Its queued work is skipped by each stage (the revision check) and deleted from
        CHUNKS once skipped (`StreamDef.consumed_once`); cached answers are made unreachable (`EpochInvalidator`)
        and expire with their TTL."""
        for d in deliveries:
            doc, revision = d.payload, d.stream_seq

            def tombstone(state: DocumentProgress | None) -> DocumentProgress | None:
                if state is not None and state.revision > revision:
                    return None  # re-submitted after this delete: the new revision stands
                return self._ctx.progress.new(doc.tenant, doc.doc_id, revision, DocumentStatus.DELETED)

            state = await self._ctx.progress.update(doc.tenant, doc.doc_id, tombstone)
            if state is not None and state.revision > revision:
                continue
            await self._delete_points(doc.tenant, doc.doc_id)
            await self._invalidator.bump([doc.tenant])
            await self._delete_objects(doc.tenant, doc.doc_id)
            js, gen = self._ctx.js, self._ctx.generation
            # The tombstone on the stream: the submissions before this delete leave the ingest subject, so no
            # later re-index (a replay of docs.ingest) brings the document back. A re-submission after the
            # delete (a higher sequence) stays.
            await js.purge_stream(DOCS_STREAM.name, seq=revision, subject=Subjects.ingest(doc.tenant, doc.doc_id))
            await js.purge_stream(DOCS_STREAM.name, subject=Subjects.indexed(gen, doc.tenant, doc.doc_id))
            await js.purge_stream(DEADLETTER_STREAM.name, subject=Subjects.deadletter("*", doc.tenant, doc.doc_id))
            # The progress key's history (older values name the file and may quote an error) goes; the
            # tombstone, its last value, stays.
            await js.purge_stream(f"KV_{PROGRESS_BUCKET}", subject=f"$KV.{PROGRESS_BUCKET}.{self._ctx.progress.key(doc.tenant, doc.doc_id)}", keep=1)
            await self._retract_graph_facts(doc.tenant, doc.doc_id, revision, d.trace_headers)
            log.info("indexer: deleted %s/%s", doc.tenant, doc.doc_id)

    async def _delete_objects(self, tenant: str, doc_id: str) -> None:
        """The upload and everything the parser stored beside it (page rasters for OCR, extracted images: the names
        in the document's list of stored objects), each removed entirely (`remove_object`)."""
        listed = stored_objects_object(tenant, doc_id)
        try:
            names = json.loads((await (await self._ctx.uploads.store(tenant)).get(listed)).data or b"[]")
        except NotFoundError:  # no such list, or no bucket: the tenant never uploaded anything
            names = []
        upload = object_name(tenant, doc_id)
        beside = [n for n in names if isinstance(n, str) and n.startswith(f"{upload}/")]  # never another's object
        for name in [*beside, upload, listed]:
            await remove_object(self._ctx.js, uploads_bucket(tenant), name)

    async def on_give_up(self, delivery: Delivery[ChunksEmbedded], reason: str) -> None:
        batch = delivery.payload
        await self._ctx.progress.mark_failed(batch.tenant, batch.doc_id, batch.revision, f"indexing failed: {reason}")
