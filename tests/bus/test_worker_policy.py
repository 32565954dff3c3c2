"""The failure policy of `PullWorker`, against a real nats-server: poison, permanent, transient, give-up."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import nats
import nats.js.errors
import pytest
from nats.js import api

from agents.runtime.worker import Delivery, PermanentError, PullWorker
from bus.progress import ProgressStore
from bus.topology import consumer_config, ensure_topology
from contracts.messages import DeadLetter, DocumentStatus, Message
from contracts.topology import PROGRESS_BUCKET, ConsumerDef, IndexGeneration, Subjects

CONSUMER = ConsumerDef(
    stream="TEST", durable="test-worker", filter_subject="test.in.*", max_deliver=3, backoff_s=(0.3, 0.5, 0.5)
)


class Job(Message):
    n: int
    mode: str = "ok"  # ok | permanent | transient-once | always-failing | hangs
    tenant: str = "t1"

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)


async def publish_job(js, job: Job, subject: str = "test.in.t1") -> None:
    await js.publish(subject, job.model_dump_json().encode())


async def waits_for_a_reply_that_never_comes() -> None:
    await asyncio.Event().wait()


class Recorder:
    def __init__(self) -> None:
        self.done: list[int] = []
        self.attempts: dict[int, int] = {}
        self.gave_up: list[tuple[int, str]] = []
        self.batches: list[int] = []

    async def handle(self, deliveries: Sequence[Delivery[Job]]) -> None:
        self.batches.append(len(deliveries))
        for d in deliveries:
            job = d.payload
            self.attempts[job.n] = self.attempts.get(job.n, 0) + 1
            if job.mode == "permanent":
                raise PermanentError(f"job {job.n} can never work")
            if job.mode == "always-failing" or (job.mode == "transient-once" and self.attempts[job.n] == 1):
                raise ConnectionError("dependency down")
            if job.mode == "hangs":
                await waits_for_a_reply_that_never_comes()
        self.done.extend(d.payload.n for d in deliveries)

    async def give_up(self, delivery: Delivery[Job], reason: str) -> None:
        self.gave_up.append((delivery.payload.n, reason))


@pytest.fixture
async def js(nc: nats.NATS):
    js = nc.jetstream()
    await ensure_topology(js)
    await js.add_stream(name="TEST", subjects=["test.>", "other.>"])
    await js.add_consumer("TEST", consumer_config(CONSUMER))
    return js


async def run_until(worker: PullWorker, condition, timeout_s: float = 20) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def dead_letters(js, n: int) -> list[DeadLetter]:
    sub = await js.pull_subscribe(Subjects.deadletters(CONSUMER.durable), durable=None, stream="DEADLETTER")
    return [DeadLetter.model_validate_json(msg.data) for msg in await sub.fetch(n, timeout=5)]


async def test_poison_and_permanent_are_dead_lettered_and_the_rest_is_processed(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=10, on_give_up=rec.give_up)
    await publish_job(js, Job(n=1))
    await js.publish("test.in.t1", b'{"n": "not a number"}')
    await publish_job(js, Job(n=2, mode="permanent"))
    await publish_job(js, Job(n=3))
    await run_until(worker, lambda: {1, 3} <= set(rec.done) and rec.gave_up)

    letters = await dead_letters(js, 2)
    assert sorted(letter.error_type for letter in letters) == ["PermanentError", "ValidationError"]
    poison = next(letter for letter in letters if letter.error_type == "ValidationError")
    assert poison.stream == "TEST" and poison.stream_seq == 2 and "not a number" in poison.payload_excerpt
    assert rec.gave_up == [(2, "job 2 can never work")]
    assert rec.attempts[2] == 2  # once in its batch, once alone to isolate it; never redelivered
    info = await js.consumer_info("TEST", CONSUMER.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # nothing left behind


async def test_transient_failure_is_retried_then_succeeds(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=1, on_give_up=rec.give_up)
    await publish_job(js, Job(n=7, mode="transient-once"))
    await run_until(worker, lambda: 7 in rec.done)
    assert rec.attempts[7] == 2 and rec.gave_up == []


async def test_transient_failure_is_dead_lettered_at_max_deliver(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=1, on_give_up=rec.give_up)
    await publish_job(js, Job(n=9, mode="always-failing"))
    await run_until(worker, lambda: rec.gave_up)
    assert rec.attempts[9] == CONSUMER.max_deliver
    [letter] = await dead_letters(js, 1)
    assert letter.num_delivered == CONSUMER.max_deliver and "dependency down" in letter.reason
    # The exception text (which may name internals) is for the log and the dead letter, not for users.
    [(_, public)] = rec.gave_up
    assert "dependency down" not in public and "deadletter.test-worker" in public


async def test_one_bad_message_does_not_fail_its_batch(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=10, on_give_up=rec.give_up)
    for n in range(5):
        await publish_job(js, Job(n=n, mode="permanent" if n == 2 else "ok"))
    await run_until(worker, lambda: len(rec.done) == 4 and rec.gave_up)
    assert sorted(rec.done) == [0, 1, 3, 4]
    assert rec.batches[0] == 5  # they were fetched together, then isolated


async def test_long_work_is_kept_alive_with_in_progress_acks(js) -> None:
    """A handler working ten times longer than the first ack wait (0.3 s here) is not redelivered meanwhile."""
    calls = 0
    finished = asyncio.Event()

    async def slow(deliveries: Sequence[Delivery[Job]]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3)
        finished.set()

    worker = PullWorker(js, CONSUMER, Job, slow, agent="test", batch=1)
    await publish_job(js, Job(n=1))
    stop = asyncio.Event()
    other = PullWorker(js, CONSUMER, Job, slow, agent="test-replica", batch=1)
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(other.run(stop))]
    async with asyncio.timeout(20):
        await finished.wait()
        while (await js.consumer_info("TEST", CONSUMER.durable)).num_ack_pending:
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    assert calls == 1
    info = await js.consumer_info("TEST", CONSUMER.durable)
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_transient_retry_waits_for_the_servers_backoff(js) -> None:
    """No NAK: the redelivery comes from the consumer's backoff schedule, not at once."""
    rec = Recorder()
    seen: list[float] = []
    loop = asyncio.get_running_loop()

    async def timed(deliveries: Sequence[Delivery[Job]]) -> None:
        seen.append(loop.time())
        await rec.handle(deliveries)

    worker = PullWorker(js, CONSUMER, Job, timed, agent="test", batch=1)
    await publish_job(js, Job(n=5, mode="transient-once"))
    await run_until(worker, lambda: 5 in rec.done)
    assert len(seen) == 2 and seen[1] - seen[0] >= CONSUMER.backoff_s[0] * 0.8


async def test_payload_on_another_tenants_subject_is_dead_lettered(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=5, on_give_up=rec.give_up)
    await publish_job(js, Job(n=1, tenant="t2"), subject="test.in.t1")  # claims t2, travels as t1
    await publish_job(js, Job(n=2, tenant="t1"))
    await run_until(worker, lambda: 2 in rec.done)
    [letter] = await dead_letters(js, 1)
    assert letter.error_type == "RoutingMismatch" and "t2" in letter.reason
    assert rec.done == [2]


async def test_worker_survives_a_server_restart_mid_run(nats_server) -> None:
    """Acks and fetches failing while NATS is away never end the worker: it carries on afterwards."""
    from bus.connection import connect

    conn = await connect(nats_server.url, name="test")
    js = conn.jetstream()
    await js.add_stream(name="TEST", subjects=["test.>"])
    await js.add_consumer("TEST", consumer_config(CONSUMER))
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await publish_job(js, Job(n=1))
        async with asyncio.timeout(20):
            while 1 not in rec.done:
                await asyncio.sleep(0.05)
        nats_server.stop()
        await asyncio.sleep(1.5)  # the worker fetches against a dead server for a while
        assert not task.done()
        nats_server.start()
        async with asyncio.timeout(30):
            while True:
                try:
                    await publish_job(js, Job(n=2))
                    break
                except Exception:  # noqa: BLE001 - not reconnected yet
                    await asyncio.sleep(0.2)
            while 2 not in rec.done:
                await asyncio.sleep(0.05)
        assert not task.done()
    finally:
        stop.set()
        await task
        await conn.close()


async def test_concurrent_progress_updates_lose_nothing(js) -> None:
    store = ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1))
    await store.update("t", "doc", lambda _: store.new("t", "doc", 1, DocumentStatus.PARSING))
    await store.update("t", "doc", lambda p: p.with_batches({b: 2 for b in range(20)}, batches_total=20))

    async def index(batch: int) -> None:
        await store.update("t", "doc", lambda p: p.with_indexed_batch(batch, 2))

    await asyncio.gather(*(index(b) for b in range(20)), *(index(b) for b in range(0, 20, 3)))
    assert await store.get("other", "doc") is None  # keys are per tenant
    final = await store.get("t", "doc")
    assert final is not None
    assert final.batches_indexed == list(range(20)) and final.chunks_indexed == 40
    assert final.status is DocumentStatus.INDEXED


async def test_topology_bootstrap_is_idempotent(js) -> None:
    await ensure_topology(js)  # second time (the fixture ran it once): no error, no change
    info = await js.stream_info("DOCS")
    assert info.config.storage == api.StorageType.FILE and info.config.subjects == ["docs.>"]
    queries = await js.stream_info("QUERIES")
    assert queries.config.storage == api.StorageType.MEMORY


async def test_agents_rebuild_the_topology_after_a_server_restart(nats_server) -> None:
    """QUERIES is a memory stream: a restarted nats-server has lost it, and the agents' connection re-creates it."""
    from bus.connection import connect

    conn = await connect(nats_server.url, name="test", on_reconnect=lambda: ensure_topology(conn.jetstream()))
    try:
        await ensure_topology(conn.jetstream())
        nats_server.stop()
        nats_server.start()
        async with asyncio.timeout(20):
            while True:
                try:
                    info = await conn.jetstream().stream_info("QUERIES")
                    break
                except Exception:  # noqa: BLE001 - not yet reconnected / not yet re-created
                    await asyncio.sleep(0.1)
        assert info.config.storage == api.StorageType.MEMORY
        assert (await conn.jetstream().consumer_info("QUERIES", "retriever")).config.durable_name == "retriever"
        # The consumers carry the server-side backoff of their definition.
        assert (await conn.jetstream().consumer_info("QUERIES", "retriever")).config.backoff == [1.0, 2.0]
    finally:
        await conn.close()


async def test_submissions_of_mmrag_0_1_are_carried_to_the_new_subjects(nc) -> None:
    """An upgraded data dir keeps every acknowledged document: legacy `docs.ingest` messages move forward."""
    from bus.migrate import migrate_legacy
    from contracts.messages import DocumentSubmitted

    js = nc.jetstream()
    await ensure_topology(js)
    legacy = [
        DocumentSubmitted(doc_id=f"d{i}", filename="a.pdf", content_type="application/pdf",
                          object_name=f"default/d{i}", size=1).model_dump_json().encode()
        for i in range(3)
    ]  # fmt: skip
    for data in legacy:
        await js.publish("docs.ingest", data)
    await js.publish("docs.ingest", b"{garbage")
    await js.add_consumer("DOCS", durable_name="parser", filter_subject="docs.ingest")

    assert await migrate_legacy(js) == 3
    assert await migrate_legacy(js) == 0  # idempotent: nothing left to move
    for i in range(3):
        moved = await js.get_last_msg("DOCS", Subjects.ingest("default", f"d{i}"))
        assert moved.data == legacy[i]
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg("DOCS", "docs.ingest")
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.consumer_info("DOCS", "parser")


async def test_a_handling_past_its_budget_is_cancelled_and_given_up_and_the_worker_goes_on(js, caplog) -> None:
    """A handler that never returns keeps its message alive with in-progress acks: without a budget it would hold
    the worker for good (every later query waiting behind it). With one, it is cancelled, dead-lettered (the
    give-up hook tells the requester), the log says where it waited, and the next message is handled."""
    budgeted = dataclasses.replace(CONSUMER, handler_budget_s=0.5)
    rec = Recorder()
    worker = PullWorker(js, budgeted, Job, rec.handle, agent="test", batch=1, on_give_up=rec.give_up)
    await publish_job(js, Job(n=1, mode="hangs"))
    await publish_job(js, Job(n=2))
    with caplog.at_level(logging.ERROR, logger="agents.runtime.worker"):
        await run_until(worker, lambda: 2 in rec.done and rec.gave_up)
    [(n, public)] = rec.gave_up
    assert n == 1 and "took longer than 0.5 s" in public
    [letter] = await dead_letters(js, 1)
    assert letter.error_type == "HandlerBudgetExceeded" and letter.num_delivered == 1
    assert "waits_for_a_reply_that_never_comes" in caplog.text  # where it waited, not only "await self._handler"
    info = await js.consumer_info("TEST", CONSUMER.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


def test_every_query_consumer_has_a_budget_and_no_ingest_consumer_does() -> None:
    from contracts.topology import QUERY_CONSUMERS, ingest_consumers

    assert all(c.handler_budget_s for c in QUERY_CONSUMERS.values())
    assert all(c.handler_budget_s is None for c in ingest_consumers(IndexGeneration(1)).values())
