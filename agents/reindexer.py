"""reindexer: the coordinator of a re-index. It consumes no subject; every `TICK_S` it reads the generation
records (`contracts.generations`) and moves them along:

- a ``building`` generation: measure it (its consumers' unacked messages, and how many documents of the
  generation it replaces it has finished) into the record's `progress`; once it has *caught up* it becomes
  the serving one: the collection alias is pointed at its collection (one atomic alias switch in the store),
  then the ``serving`` record, then the states (old ``retired`` with ``drop_after`` = now +
  `MMRAG_REINDEX_GRACE_S`, then new ``serving``);
- a ``retired`` generation past its ``drop_after``: its durable consumers, collection, progress keys and
  subjects (parsed, OCR, embedded chunks, indexed events, graph facts) are removed, and it is ``dropped``.

Caught up = every consumer of the new generation exists and has nothing pending or unacked (read upstream
first: each stage publishes before it acks, so work cannot slip past the reading), and every document of
the old generation that is not deleted is finished (indexed or failed) in the new one at the same or a
later revision. Every step is idempotent and the state lives in NATS (KV records, durable consumers), so a
coordinator killed anywhere picks up where it was at its next start; several coordinators may run.

It needs the vector store: the alias it switches is the one the retriever searches (in the embedded engine,
the same store handle, used from one thread, so a search never straddles the switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta

import nats.errors
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from agents.runtime.agent import ConsumerAgent
from agents.runtime.host import generation_settings
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from bus.cache_epochs import EpochInvalidator
from bus.generations import GenerationStore, progress_records, purge_progress
from bus.tasks import cancel_and_wait
from contracts.generations import GenerationRecord, GenerationState, ReindexProgress
from contracts.messages import DocumentStatus, utcnow
from contracts.topology import (
    CHUNKS_STREAM,
    DOCS_STREAM,
    GRAPH_STREAM,
    PROGRESS_BUCKET,
    ConsumerDef,
    IndexGeneration,
    Subjects,
    ingest_consumers,
)
from search.vectorstore import CollectionInUse, CollectionSchema, VectorStore

log = logging.getLogger(__name__)

TICK_S = 1.0
COUNT_EVERY_S = 5.0
_DROPPABLE = (GenerationState.RETIRED, GenerationState.CANCELLED)
# Read order of a generation's consumers: upstream first (see the module docstring).
_STAGES = ("parser", "deleter", "ocr-interactive", "ocr-bulk", "embedder-text-interactive", "embedder-text-bulk",
           "indexer")  # fmt: skip


def _flip_alias(store: VectorStore, alias: str, new: str, old: str, quantization: bool) -> None:
    """Point `alias` at `new`; if `new` has no collection yet (nothing indexed in it), create it like `old`."""
    if store.resolve(new) is None:
        if store.resolve(old) is None:
            return  # nothing was ever indexed: the first indexer to write sets the alias
        shape = store.schema(old)
        store.create_collection(new, CollectionSchema(text_dim=shape.text_dim, image_dim=shape.image_dim,
                                                      sparse=shape.sparse, quantization=quantization))  # fmt: skip
    store.set_alias(alias, new)


class ReindexCoordinator(ConsumerAgent[GenerationRecord]):
    name = "reindexer"
    model = GenerationRecord
    needs = frozenset({Resource.VECTOR_STORE})

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._task: asyncio.Task[None] | None = None
        self._counted_at: dict[int, float] = {}  # generation -> when its documents were last counted
        self._invalidator = EpochInvalidator(ctx.settings.redis_url, ctx.settings.redis_timeout_s)  # the edge API's answer cache

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return []

    async def handle(self, deliveries: Sequence[Delivery[BaseModel]]) -> None:  # pragma: no cover - no consumer
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reindexer")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self._invalidator.close()

    async def _run(self) -> None:
        generations = await GenerationStore.open(self._ctx.js)
        while True:
            try:
                await self.tick(generations)
            except (nats.errors.Error, TimeoutError) as err:  # NATS away for a while: one line, try again
                log.warning("reindexer: NATS did not answer (%r); trying again", err)
            except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the agents keep running
                log.exception("reindexer: tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, generations: GenerationStore) -> None:
        for record in await generations.all():
            if record.state is GenerationState.BUILDING:
                await self._building(generations, record)
            elif record.state in _DROPPABLE and record.drop_after and utcnow() >= record.drop_after:
                await self._drop(generations, record)

    # ------------------------------------------------------------------ building -> serving

    async def measure(self, record: GenerationRecord) -> ReindexProgress:
        js = self._ctx.js
        consumers = ingest_consumers(record.index_generation)
        pending, ready = 0, True
        for stage in _STAGES:
            consumer = consumers[stage]
            try:
                info = await js.consumer_info(consumer.stream, consumer.durable)
            except NotFoundError:
                ready = False  # no agent process has started this generation's consumers yet
                continue
            pending += (info.num_pending or 0) + (info.num_ack_pending or 0)
        # Counting documents reads every progress key of both generations: while messages are still pending
        # (the flip cannot happen yet) it is done every COUNT_EVERY_S only; once nothing is pending, every tick.
        now = time.monotonic()
        if ready and pending and now - self._counted_at.get(record.generation, -COUNT_EVERY_S) < COUNT_EVERY_S:
            return record.progress.model_copy(update={"pending_messages": pending, "consumers_ready": ready})
        self._counted_at[record.generation] = now
        kv = await js.key_value(PROGRESS_BUCKET)
        assert record.source_generation is not None
        old = await progress_records(kv, IndexGeneration(record.source_generation))
        new = await progress_records(kv, record.index_generation)
        wanted = {key: p for key, p in old.items() if p.status is not DocumentStatus.DELETED}
        done = sum(
            1 for key, p in wanted.items()
            if (n := new.get(key)) is not None and n.finished and n.revision >= p.revision
        )  # fmt: skip
        return ReindexProgress(
            documents_total=len(wanted), documents_done=done, pending_messages=pending, consumers_ready=ready
        )

    async def _building(self, generations: GenerationStore, record: GenerationRecord) -> None:
        serving = await generations.serving()
        if serving is not None and serving.generation == record.generation:
            await self._flip(generations, record)  # a flip interrupted after the serving record: finish it
            return
        if serving is None or record.source_generation != serving.generation:
            log.warning("reindexer: generation %d replaces %s, but %s serves; left alone", record.generation,
                        record.source_generation, serving and serving.generation)  # fmt: skip
            return
        progress = await self.measure(record)
        if progress != record.progress:

            def measured(r: GenerationRecord | None) -> GenerationRecord | None:
                return (
                    r.model_copy(update={"progress": progress}) if r and r.state is GenerationState.BUILDING else None
                )

            await generations.update(record.generation, measured)
        caught_up = progress.consumers_ready and progress.pending_messages == 0
        if caught_up and progress.documents_done == progress.documents_total:
            await self._flip(generations, record)

    async def _flip(self, generations: GenerationStore, record: GenerationRecord) -> None:
        s = self._ctx.settings
        new, old = record.index_generation, IndexGeneration(record.source_generation or record.generation)

        # First the marker, compare-and-set against a cancel (`GenerationStore.cancel`): once it is written the
        # generation cannot be cancelled, and a cancel that came first stops the flip here.
        def flipping(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.state is not GenerationState.BUILDING or r.flipping_since is not None:
                return None
            return r.model_copy(update={"flipping_since": utcnow()})

        current = await generations.update(new.number, flipping)
        if current is None or current.state is not GenerationState.BUILDING:
            log.info("reindexer: generation %d was cancelled before its flip", new.number)
            return
        quantization = generation_settings(s, record).vector_quantization
        await self._ctx.shared.in_store(_flip_alias, s.collection, new.collection(s.collection),
                                        old.collection(s.collection), quantization)  # fmt: skip
        await generations.set_serving(new.number)
        # Every cached answer was read from the old generation: retire them all (bus.cache_epochs), after the
        # alias switch, so an answer cached from here on was read from the new one. Never fails the flip.
        await self._invalidator.bump_all()
        now = utcnow()

        def serving(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.state is not GenerationState.BUILDING:
                return None
            return r.model_copy(update={"state": GenerationState.SERVING, "serving_since": now})

        def retired(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.state is not GenerationState.SERVING:
                return None
            return r.model_copy(update={"state": GenerationState.RETIRED, "retired_at": now,
                                        "drop_after": now + timedelta(seconds=s.reindex_grace_s)})  # fmt: skip

        # The old one first: a crash between the two leaves the new one `building` and caught up, so the next
        # tick repeats the (idempotent) flip and finishes it.
        if await generations.get(old.number) is None:
            await generations.update(old.number, lambda r: r or GenerationRecord(
                generation=old.number, state=GenerationState.SERVING))  # fmt: skip
        await generations.update(old.number, retired)
        await generations.update(new.number, serving)
        log.info("reindexer: generation %d serves (alias %s -> %s); generation %d retired, dropped after %.0f s",
                 new.number, s.collection, new.collection(s.collection), old.number, s.reindex_grace_s)  # fmt: skip

    # ------------------------------------------------------------------ retired -> dropped

    async def _drop(self, generations: GenerationStore, record: GenerationRecord) -> None:
        js, s = self._ctx.js, self._ctx.settings
        gen = record.index_generation
        for consumer in ingest_consumers(gen).values():
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(consumer.stream, consumer.durable)

        def drop(store: VectorStore) -> None:
            store.drop_collection(gen.collection(s.collection))

        try:
            await self._ctx.shared.in_store(drop)
        except CollectionInUse as err:  # the alias still points at it: never drop what serves
            log.error("reindexer: generation %d not dropped: %s", gen.number, err)
            return
        await purge_progress(js, gen)
        for stream, subject in (
            (CHUNKS_STREAM.name, f"{Subjects.CHUNKS_PARSED}.{gen.token}.>"),
            (CHUNKS_STREAM.name, f"{Subjects.CHUNKS_OCR}.{gen.token}.>"),
            (CHUNKS_STREAM.name, f"{Subjects.CHUNKS_EMBEDDED}.{gen.token}.>"),
            (DOCS_STREAM.name, f"{Subjects.DOCS_INDEXED}.{gen.token}.>"),
            (GRAPH_STREAM.name, f"{Subjects.GRAPH_FACTS}.{gen.token}.>"),
        ):
            await js.purge_stream(stream, subject=subject)

        def dropped(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.state not in _DROPPABLE:
                return None
            return r.model_copy(update={"state": GenerationState.DROPPED, "dropped_at": utcnow()})

        await generations.update(gen.number, dropped)
        log.info("reindexer: generation %d dropped (collection, consumers, progress keys, chunks)", gen.number)
