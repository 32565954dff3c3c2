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

Gate (`ReindexRequest.gate`, `contracts.evaluation.EvaluationGate`): a caught-up generation with a gate is
evaluated first, on the gate's questions of its tenant, against itself and the serving generation (one stored
evaluation report, origin ``reindex-gate``); it flips only if the gate's metric is not worse than the serving
one's by more than the tolerance. Otherwise its `gate_outcome` says ``refused`` and why, a warning is logged, the
events stream of `GET /v1/reindex/{id}/events` ends, and it stays ``building``, unflipped, until cancelled.

Evaluations (`POST /v1/evaluations`): the coordinator also runs the queued evaluations of the
``mmrag-evaluations`` bucket (`bus.evaluations`), one at a time, each question asked through the query path
(`search.evaluation.BusAsker`), writing progress as it goes.

It needs the vector store: the alias it switches is the one the retriever searches (in the embedded engine,
the same store handle, used from one thread, so a search never straddles the switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
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
from bus.evaluations import EvaluationStore, new_evaluation_id, stale
from bus.generations import GenerationStore, progress_records, purge_progress
from bus.tasks import cancel_and_wait
from contracts.evaluation import (
    EvaluationProgress,
    EvaluationRecord,
    EvaluationRun,
    EvaluationState,
    GateOutcome,
    QuestionResult,
)
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
from search.evaluation import BusAsker, changes, fit, run_questions
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
        self._evaluations: asyncio.Task[None] | None = None
        self._me = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # who holds an evaluation

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return []

    async def handle(self, deliveries: Sequence[Delivery[BaseModel]]) -> None:  # pragma: no cover - no consumer
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reindexer")
        self._evaluations = asyncio.create_task(self._run_evaluations(), name="reindexer-evaluations")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._evaluations)
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
        if record.held:
            return  # its gate refused the flip: it waits to be cancelled
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
            if record.gate is not None and not await self._gate_passed(generations, record):
                return
            await self._flip(generations, record)

    # ------------------------------------------------------------------ the evaluation gate

    async def _gate_passed(self, generations: GenerationStore, record: GenerationRecord) -> bool:
        """Whether the gate lets `record` flip; runs the comparison when nobody has (or its runner went away)."""
        gate, outcome = record.gate, record.gate_outcome
        assert gate is not None and record.source_generation is not None
        if outcome is not None and outcome.state == "passed":
            return True
        eid = new_evaluation_id()

        def claim(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.state is not GenerationState.BUILDING or r.flipping_since is not None:
                return None
            held = r.gate_outcome
            if held is not None and (held.state != "running" or (utcnow() - held.at).total_seconds() < 600):
                return None  # decided, or another coordinator is running it
            return r.model_copy(update={"gate_outcome": GateOutcome(state="running", evaluation_id=eid,
                                                                    metric=gate.metric, tolerance=gate.tolerance)})  # fmt: skip

        current = await generations.update(record.generation, claim)
        if current is None or current.gate_outcome is None or current.gate_outcome.evaluation_id != eid:
            return False
        evaluations = await EvaluationStore.open(self._ctx.js)
        report = EvaluationRecord(
            id=eid, tenant=gate.tenant, name=f"re-index gate of g{record.generation}", origin="reindex-gate",
            k=gate.k, generation=record.generation, compare_generation=record.source_generation,
            questions=gate.questions, state=EvaluationState.RUNNING, runner=self._me, started_at=utcnow(),
        )  # fmt: skip
        await evaluations.create(report, exclusive=False, job=False)
        log.info("reindexer: generation %d caught up; gate evaluation %s (%d questions of %s) on g%d and g%d",
                 record.generation, eid, len(gate.questions), gate.tenant, record.generation,
                 record.source_generation)  # fmt: skip
        report = await self._evaluate(evaluations, generations, report)
        decided = self._decide(record, report)

        def outcome_of(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None or r.gate_outcome is None or r.gate_outcome.evaluation_id != eid:
                return None
            return r.model_copy(update={"gate_outcome": decided})

        await generations.update(record.generation, outcome_of)
        if decided.state != "passed":
            log.warning("reindexer: generation %d NOT flipped: %s", record.generation, decided.reason)
            return False
        log.info("reindexer: generation %d passed its gate: %s", record.generation, decided.reason)
        return True

    @staticmethod
    def _decide(record: GenerationRecord, report: EvaluationRecord) -> GateOutcome:
        gate = record.gate
        assert gate is not None
        base = {"evaluation_id": report.id, "metric": gate.metric, "tolerance": gate.tolerance}
        if report.state is not EvaluationState.DONE or len(report.runs) != 2:
            return GateOutcome(state="failed", reason=f"the gate's evaluation {report.id} failed ({report.error}); "
                               f"not flipped: cancel g{record.generation} and start the re-index again", **base)  # fmt: skip
        new, old = (run.metrics.value(gate.metric) for run in report.runs)
        assert new is not None and old is not None  # EvaluationGate checks its questions measure the metric
        verdict = "passed" if new >= old - gate.tolerance - 1e-9 else "refused"
        reason = (f"{gate.metric} {new:.3f} on g{record.generation} vs {old:.3f} on the serving "
                  f"g{record.source_generation} (tolerance {gate.tolerance}; report {report.id})")  # fmt: skip
        if verdict == "refused":
            reason += f": worse, so it stays unflipped; cancel it with DELETE /v1/reindex/g{record.generation}"
        return GateOutcome(state=verdict, serving_value=old, new_value=new, reason=reason, **base)

    # ------------------------------------------------------------------ evaluations

    async def _run_evaluations(self) -> None:
        evaluations = await EvaluationStore.open(self._ctx.js)
        generations = await GenerationStore.open(self._ctx.js)
        while True:
            try:
                for tenant, eid in await evaluations.jobs():
                    await self._evaluation_job(evaluations, generations, tenant, eid)
            except (nats.errors.Error, TimeoutError) as err:
                log.warning("reindexer: NATS did not answer while running evaluations (%r); trying again", err)
            except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the agents keep running
                log.exception("reindexer: evaluation job failed")
            await asyncio.sleep(TICK_S)

    async def _evaluation_job(self, evaluations: EvaluationStore, generations: GenerationStore, tenant: str,
                              eid: str) -> None:  # fmt: skip
        record = await evaluations.get(tenant, eid)
        if record is None or record.finished:
            await evaluations.end_job(tenant, eid)
            return
        claimed_at = utcnow()

        def claim(r: EvaluationRecord | None) -> EvaluationRecord | None:
            if r is None or r.finished or (r.state is EvaluationState.RUNNING and not stale(r)):
                return None
            return r.model_copy(update={"state": EvaluationState.RUNNING, "runner": self._me, "started_at": claimed_at,
                                        "updated_at": claimed_at, "progress": EvaluationProgress()})  # fmt: skip

        held = await evaluations.update(tenant, eid, claim)
        if held is None or held.runner != self._me or held.started_at != claimed_at:
            return  # another coordinator holds it
        await self._evaluate(evaluations, generations, held)
        await evaluations.end_job(tenant, eid)

    async def _evaluate(self, evaluations: EvaluationStore, generations: GenerationStore,
                        record: EvaluationRecord) -> EvaluationRecord:  # fmt: skip
        """Run a held evaluation to its end (`done` or `failed`) and store it; returns what was stored."""
        js, nc = self._ctx.js, self._ctx.nc
        tenant, eid = record.tenant, record.id
        try:
            serving = await generations.serving()
            if serving is None:
                raise LookupError("no serving generation yet")
            targets = [record.generation or serving.generation]
            if record.compare_generation is not None:
                targets.append(record.compare_generation)
            for number in targets:
                found = await generations.get(number)
                if number != serving.generation and (found is None or not found.active):
                    raise LookupError(f"generation g{number} is not serving or building")
            before: list[QuestionResult | None] = []
            if record.compare_with is not None:
                earlier = await evaluations.get(tenant, record.compare_with)
                if earlier is None or not earlier.runs:
                    raise LookupError(f"evaluation {record.compare_with} has no report to compare with")
                by_text = {q.question: r for q, r in zip(earlier.questions, earlier.runs[0].results, strict=False)}
                before = [by_text.get(q.question) for q in record.questions]
            total = len(record.questions) * len(targets)
            runs: list[EvaluationRun] = []
            for number in targets:
                base = len(runs) * len(record.questions)

                async def progressed(done: int, base: int = base) -> None:
                    def step(r: EvaluationRecord | None) -> EvaluationRecord | None:
                        if r is None or r.runner != self._me or r.finished:
                            return None
                        return r.model_copy(update={"progress": EvaluationProgress(done=base + done, total=total),
                                                    "updated_at": utcnow()})  # fmt: skip

                    await evaluations.update(tenant, eid, step)

                # The serving generation through the alias (what users get); another one by its collection.
                asker = BusAsker(nc, js, tenant, top_k=max(record.k, 10),
                                 generation=None if number == serving.generation else number)  # fmt: skip
                runs.append(await run_questions(record.questions, asker, record.k, number, progressed))
            found_changes = []
            if len(runs) == 2:
                found_changes = changes(record.questions, runs[1].results, runs[0].results)
            elif before:
                found_changes = changes(record.questions, before, runs[0].results)
            update = {"state": EvaluationState.DONE, "runs": runs, "changes": found_changes,
                      "progress": EvaluationProgress(done=total, total=total)}  # fmt: skip
        except (nats.errors.Error, TimeoutError):
            raise  # NATS away: the record stays running; after STALE_S it is taken over
        except Exception as err:  # noqa: BLE001 - the report says why; the coordinator goes on
            log.warning("reindexer: evaluation %s of %s failed: %s", eid, tenant, err)
            update = {"state": EvaluationState.FAILED, "error": str(err)[:500]}
        now = utcnow()

        def finish(r: EvaluationRecord | None) -> EvaluationRecord | None:
            if r is None or r.runner != self._me or r.finished:
                return None
            return fit(r.model_copy(update={**update, "finished_at": now, "updated_at": now}))

        stored = await evaluations.update(tenant, eid, finish)
        log.info("reindexer: evaluation %s of %s %s", eid, tenant, update["state"])
        return stored or record.model_copy(update=update)

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
