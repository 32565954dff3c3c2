"""The generation records in the `mmrag-index` KV bucket (`contracts.generations`), read and changed atomically.

Every change is a compare-and-set on the key's revision, retried on a conflict, so the edge API (starting a
re-index), the coordinator (flip, retire, drop) and every agent process (which generations to run) agree
without a lock. Also: listing a generation's progress records (the coordinator counts documents with it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bus.kv import compare_and_set, current_values
from contracts.evaluation import EvaluationGate
from contracts.generations import (
    SERVING_KEY,
    GenerationRecord,
    GenerationSettings,
    GenerationState,
    ServingRecord,
    generation_key,
)
from contracts.messages import DocumentProgress, utcnow
from contracts.topology import INDEX_BUCKET, PROGRESS_BUCKET, IndexGeneration

log = logging.getLogger(__name__)

RecordUpdate = Callable[[GenerationRecord | None], GenerationRecord | None]


def _decode_record(value: bytes | None) -> GenerationRecord | None:
    return GenerationRecord.model_validate_json(value) if value else None


class ReindexConflict(RuntimeError):
    """A re-index is already building (only one at a time)."""

    def __init__(self, building: GenerationRecord) -> None:
        super().__init__(f"generation {building.generation} is already being built")
        self.building = building


class NotCancellable(RuntimeError):
    """Only a `building` generation whose flip has not begun can be cancelled."""

    def __init__(self, record: GenerationRecord) -> None:
        why = "its switch to serving has begun" if record.flipping_since else f"it is {record.state.value}"
        super().__init__(f"generation {record.generation} cannot be cancelled: {why}")
        self.record = record


class GenerationStore:
    """Generation records of one deployment. Owns nothing: the caller owns the KV handle."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> GenerationStore:
        return cls(await js.key_value(INDEX_BUCKET))

    # ------------------------------------------------------------------ reads

    async def serving(self) -> ServingRecord | None:
        try:
            entry = await self._kv.get(SERVING_KEY)
        except KeyNotFoundError:
            return None
        return ServingRecord.model_validate_json(entry.value) if entry.value else None

    async def get(self, number: int) -> GenerationRecord | None:
        try:
            entry = await self._kv.get(generation_key(IndexGeneration(number)))
        except KeyNotFoundError:
            return None
        return GenerationRecord.model_validate_json(entry.value) if entry.value else None

    async def all(self) -> list[GenerationRecord]:
        """Every generation record, oldest first (one watch of ``gen.*``: the current value of each key)."""
        records = []
        for key, value in await current_values(self._kv, "gen.*"):
            try:
                records.append(GenerationRecord.model_validate_json(value))
            except ValueError:  # written by hand or by a newer version: never take every agent down for it
                log.warning("generation record %s is not readable; ignored", key)
        return sorted(records, key=lambda r: r.generation)

    # ------------------------------------------------------------------ changes

    async def bootstrap(self, first: int, settings: GenerationSettings | None = None) -> ServingRecord:
        """The serving record; on a fresh deployment, make generation `first` the serving one (idempotent), built
        with `settings` (the agents record the embedding model there, so changing the process setting later
        cannot embed questions with a model other than the index's)."""
        current = await self.serving()
        if current is not None:
            return current
        await self.update(first, lambda r: r or GenerationRecord(
            generation=first, state=GenerationState.SERVING, settings=settings or GenerationSettings()))  # fmt: skip
        try:
            await self._kv.create(SERVING_KEY, ServingRecord(generation=first).model_dump_json().encode())
        except KeyWrongLastSequenceError:
            pass  # another process bootstrapped first
        serving = await self.serving()
        assert serving is not None
        return serving

    async def set_serving(self, number: int) -> None:
        await self._kv.put(SERVING_KEY, ServingRecord(generation=number).model_dump_json().encode())

    async def update(self, number: int, change: RecordUpdate, *, attempts: int = 50) -> GenerationRecord | None:
        """Apply `change` to generation `number`'s record atomically; None/unchanged writes nothing."""
        key = generation_key(IndexGeneration(number))
        return await compare_and_set(self._kv, key, _decode_record, change, attempts=attempts)

    async def cancel(self, number: int) -> GenerationRecord | None:
        """Cancel a building generation (None if there is no such generation; `NotCancellable` if it is not
        building or its flip has begun). The coordinator drops it at its next tick; the agents stop its
        consumers. Compare-and-set against the coordinator's flip marker: exactly one of the two wins."""

        def cancelled(r: GenerationRecord | None) -> GenerationRecord | None:
            if r is None:
                return None
            if r.state is not GenerationState.BUILDING or r.flipping_since is not None:
                raise NotCancellable(r)
            now = utcnow()
            return r.model_copy(update={"state": GenerationState.CANCELLED, "cancelled_at": now, "drop_after": now})

        return await self.update(number, cancelled)

    async def start_reindex(self, settings: GenerationSettings, gate: EvaluationGate | None = None) -> GenerationRecord:
        """Create the next generation, `building`, from the serving one (its settings carried forward), gated on
        `gate` if given (`agents.reindexer` evaluates it before the flip).

        Raises `ReindexConflict` while another generation is building. Two concurrent calls cannot both
        succeed: the new record is created with `create` (fails if the key exists) and a second building
        generation is refused.
        """
        for _ in range(50):
            records = await self.all()
            building = [r for r in records if r.state is GenerationState.BUILDING]
            if building:
                raise ReindexConflict(building[0])
            serving = await self.serving()
            if serving is None:
                raise RuntimeError("no serving generation yet: the agents have not started")
            source = next((r for r in records if r.generation == serving.generation), None)
            base = source.settings if source is not None else GenerationSettings()
            number = max([serving.generation, *(r.generation for r in records)]) + 1
            record = GenerationRecord(
                generation=number, state=GenerationState.BUILDING, source_generation=serving.generation,
                settings=base.merged(settings), gate=gate,
            )  # fmt: skip
            try:
                await self._kv.create(generation_key(IndexGeneration(number)), record.model_dump_json().encode())
            except KeyWrongLastSequenceError:
                continue  # someone took that number first: look again
            log.info("re-index: generation %d building from %d", number, serving.generation)
            return record
        raise RuntimeError("could not allocate a new generation number")


async def progress_records(kv: KeyValue, gen: IndexGeneration) -> dict[tuple[str, str], DocumentProgress]:
    """Every progress record of a generation, by (tenant, doc_id): one watch of ``g<N>.>``."""
    records: dict[tuple[str, str], DocumentProgress] = {}
    for key, value in await current_values(kv, f"{gen.token}.>"):
        try:
            record = DocumentProgress.model_validate_json(value)
        except ValueError:
            log.warning("progress record %s is not readable; not counted", key)
            continue
        records[(record.tenant, record.doc_id)] = record
    return records


async def purge_progress(js: JetStreamContext, gen: IndexGeneration) -> None:
    """Remove every progress key of a generation (the KV bucket's stream, purged by subject)."""
    await js.purge_stream(f"KV_{PROGRESS_BUCKET}", subject=f"$KV.{PROGRESS_BUCKET}.{gen.token}.>")
