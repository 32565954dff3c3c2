"""`bus.evaluations` on a real nats-server: the bounds of the stored reports (one queued or running evaluation a
tenant, the latest reports kept), tenants kept apart, job markers, and a claim that only one runner wins."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bus.evaluations import STALE_S, EvaluationRunning, EvaluationStore, new_evaluation_id
from bus.topology import ensure_topology
from contracts.evaluation import MAX_REPORTS_PER_TENANT, EvaluationQuestion, EvaluationRecord, EvaluationState
from contracts.messages import utcnow

QUESTION = EvaluationQuestion(question="why?", facts=["because"])


def record(tenant: str = "t1", **update: object) -> EvaluationRecord:
    return EvaluationRecord(id=new_evaluation_id(), tenant=tenant, questions=[QUESTION]).model_copy(update=update)


@pytest.fixture
async def store(nc) -> EvaluationStore:  # noqa: ANN001
    js = nc.jetstream()
    await ensure_topology(js)
    return await EvaluationStore.open(js)


async def test_one_evaluation_at_a_time_per_tenant_and_the_latest_reports_kept(store: EvaluationStore) -> None:
    first = await store.create(record())
    with pytest.raises(EvaluationRunning, match=first.id):
        await store.create(record())
    await store.create(record("t2"))  # another tenant is not held up
    assert {t for t, _ in await store.jobs()} == {"t1", "t2"}

    # Finished ones pile up to the bound; the oldest go first.
    await store.update("t1", first.id, lambda r: r.model_copy(update={"state": EvaluationState.DONE}))
    await store.end_job("t1", first.id)
    made = [first.id]
    for _ in range(MAX_REPORTS_PER_TENANT + 2):
        r = await store.create(record(state=EvaluationState.DONE), job=False)
        made.append(r.id)
    kept = [r.id for r in await store.list("t1")]
    assert len(kept) == MAX_REPORTS_PER_TENANT and kept == made[::-1][:MAX_REPORTS_PER_TENANT]
    assert await store.get("t1", first.id) is None
    assert [r.tenant for r in await store.list("t2")] == ["t2"]
    assert await store.get("t2", kept[0]) is None  # a report is read under its own tenant only
    assert await store.get("t1", "../t2") is None


async def test_a_stale_running_evaluation_no_longer_blocks_and_a_claim_has_one_winner(store: EvaluationStore) -> None:
    old = utcnow() - timedelta(seconds=STALE_S + 1)
    stuck = await store.create(record(state=EvaluationState.RUNNING, updated_at=old, runner="gone"))
    fresh = await store.create(record())  # the stuck one's runner went away: it does not count

    def claim(name: str):  # noqa: ANN202
        def change(r: EvaluationRecord | None) -> EvaluationRecord | None:
            if r is None or r.state is not EvaluationState.QUEUED:
                return None
            return r.model_copy(update={"state": EvaluationState.RUNNING, "runner": name})

        return change

    won = await store.update("t1", fresh.id, claim("a"))
    lost = await store.update("t1", fresh.id, claim("b"))
    assert won is not None and lost is not None and won.runner == lost.runner == "a"
    assert stuck.id != fresh.id
