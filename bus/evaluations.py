"""Evaluation records in the `mmrag-evaluations` KV bucket (`contracts.evaluation`): created by the edge API,
claimed, run and finished by a re-index coordinator (`agents.reindexer`), read by both.

Every change is a compare-and-set (`bus.kv.compare_and_set`), so two coordinators never run the same
evaluation: the one whose claim (``queued`` -> ``running`` with its name) is written first holds it. A runner
that stops mid-run leaves its record ``running`` with an old ``updated_at``: after `STALE_S` another takes it
over from the start.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from bus.kv import compare_and_set, current_values
from contracts.evaluation import (
    EVALUATION_ID,
    MAX_REPORTS_PER_TENANT,
    EvaluationRecord,
    EvaluationState,
    job_key,
    report_key,
)
from contracts.messages import utcnow
from contracts.topology import EVALUATIONS_BUCKET

STALE_S = 120.0  # a running record not written for this long has lost its runner


class EvaluationRunning(RuntimeError):
    """The tenant already has an evaluation queued or running (one at a time per tenant)."""

    def __init__(self, record: EvaluationRecord) -> None:
        super().__init__(f"evaluation {record.id} is {record.state.value}")
        self.record = record


def new_evaluation_id() -> str:
    return "e" + secrets.token_hex(6)


def _decode(value: bytes | None) -> EvaluationRecord | None:
    return EvaluationRecord.model_validate_json(value) if value else None


def stale(record: EvaluationRecord) -> bool:
    return record.state is EvaluationState.RUNNING and utcnow() - record.updated_at > timedelta(seconds=STALE_S)


class EvaluationStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> EvaluationStore:
        return cls(await js.key_value(EVALUATIONS_BUCKET))

    async def get(self, tenant: str, evaluation_id: str) -> EvaluationRecord | None:
        if not EVALUATION_ID.fullmatch(evaluation_id):
            return None
        try:
            return _decode((await self._kv.get(report_key(tenant, evaluation_id))).value)
        except KeyNotFoundError:
            return None

    async def list(self, tenant: str) -> list[EvaluationRecord]:
        """The tenant's evaluations, newest first."""
        records = [r for _, v in await current_values(self._kv, report_key(tenant, "*")) if (r := _decode(v))]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    async def create(self, record: EvaluationRecord, *, exclusive: bool = True, job: bool = True) -> EvaluationRecord:
        """Store a new (queued) evaluation and its job marker; drop the tenant's oldest finished reports beyond
        `MAX_REPORTS_PER_TENANT`. Without `job` no runner picks it up (the caller runs it). With `exclusive`, raises `EvaluationRunning` while another one of the tenant
        is queued or running (a stale one does not count)."""
        existing = await self.list(record.tenant)
        if exclusive:
            busy = [r for r in existing if not r.finished and not stale(r)]
            if busy:
                raise EvaluationRunning(busy[0])
        finished = [r for r in existing if r.finished]
        for old in finished[MAX_REPORTS_PER_TENANT - 1 :]:
            await self._kv.purge(report_key(old.tenant, old.id))
        await self._kv.create(report_key(record.tenant, record.id), record.model_dump_json().encode())
        if job:
            await self._kv.put(job_key(record.tenant, record.id), b"1")
        return record

    async def update(self, tenant: str, evaluation_id: str, change) -> EvaluationRecord | None:  # type: ignore[no-untyped-def]
        return await compare_and_set(self._kv, report_key(tenant, evaluation_id), _decode, change)

    async def jobs(self) -> list[tuple[str, str]]:
        """(tenant, id) of every evaluation waiting for or held by a runner."""
        out = []
        for key, _ in await current_values(self._kv, "job.*.*"):
            _, tenant, evaluation_id = key.split(".")
            out.append((tenant, evaluation_id))
        return out

    async def end_job(self, tenant: str, evaluation_id: str) -> None:
        await self._kv.purge(job_key(tenant, evaluation_id))
