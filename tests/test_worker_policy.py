"""The failure policy of `PullWorker`, against a real nats-server: poison, permanent, transient, give-up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import pytest
from nats.js import api

from agents.runtime.progress import ProgressStore
from agents.runtime.topology import consumer_config, ensure_topology
from agents.runtime.worker import Delivery, PermanentError, PullWorker
from contracts.messages import DeadLetter, DocumentProgress, DocumentStatus, Message
from contracts.topology import PROGRESS_BUCKET, ConsumerDef, Subjects

CONSUMER = ConsumerDef(
    stream="TEST", durable="test-worker", filter_subject="test.in", ack_wait_s=5, max_deliver=3,
    backoff_base_s=0.05, backoff_max_s=0.1,
)  # fmt: skip


class Job(Message):
    n: int
    mode: str = "ok"  # ok | permanent | transient-once | always-failing


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
        self.done.extend(d.payload.n for d in deliveries)

    async def give_up(self, delivery: Delivery[Job], reason: str) -> None:
        self.gave_up.append((delivery.payload.n, reason))


@pytest.fixture
async def js(nc: nats.NATS):
    js = nc.jetstream()
    await ensure_topology(js)
    await js.add_stream(name="TEST", subjects=["test.>"])
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
    sub = await js.pull_subscribe(Subjects.deadletter(CONSUMER.durable), durable=None, stream="DEADLETTER")
    return [DeadLetter.model_validate_json(msg.data) for msg in await sub.fetch(n, timeout=5)]


async def test_poison_and_permanent_are_dead_lettered_and_the_rest_is_processed(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=10, on_give_up=rec.give_up)
    await js.publish("test.in", Job(n=1).model_dump_json().encode())
    await js.publish("test.in", b'{"n": "not a number"}')
    await js.publish("test.in", Job(n=2, mode="permanent").model_dump_json().encode())
    await js.publish("test.in", Job(n=3).model_dump_json().encode())
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
    await js.publish("test.in", Job(n=7, mode="transient-once").model_dump_json().encode())
    await run_until(worker, lambda: 7 in rec.done)
    assert rec.attempts[7] == 2 and rec.gave_up == []


async def test_transient_failure_is_dead_lettered_at_max_deliver(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=1, on_give_up=rec.give_up)
    await js.publish("test.in", Job(n=9, mode="always-failing").model_dump_json().encode())
    await run_until(worker, lambda: rec.gave_up)
    assert rec.attempts[9] == CONSUMER.max_deliver
    [letter] = await dead_letters(js, 1)
    assert letter.num_delivered == CONSUMER.max_deliver and "dependency down" in letter.reason


async def test_one_bad_message_does_not_fail_its_batch(js) -> None:
    rec = Recorder()
    worker = PullWorker(js, CONSUMER, Job, rec.handle, agent="test", batch=10, on_give_up=rec.give_up)
    for n in range(5):
        await js.publish("test.in", Job(n=n, mode="permanent" if n == 2 else "ok").model_dump_json().encode())
    await run_until(worker, lambda: len(rec.done) == 4 and rec.gave_up)
    assert sorted(rec.done) == [0, 1, 3, 4]
    assert rec.batches[0] == 5  # they were fetched together, then isolated


async def test_long_work_is_kept_alive_with_in_progress_acks(js) -> None:
    """A handler slower than ack_wait is not redelivered meanwhile (ack_wait is 5 s here)."""
    calls = 0

    async def slow(deliveries: Sequence[Delivery[Job]]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(7)

    worker = PullWorker(js, CONSUMER, Job, slow, agent="test", batch=1)
    await js.publish("test.in", Job(n=1).model_dump_json().encode())
    stop = asyncio.Event()
    other = PullWorker(js, CONSUMER, Job, slow, agent="test-replica", batch=1)
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(other.run(stop))]
    await asyncio.sleep(9)
    stop.set()
    await asyncio.gather(*tasks)
    assert calls == 1
    info = await js.consumer_info("TEST", CONSUMER.durable)
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_concurrent_progress_updates_lose_nothing(js) -> None:
    store = ProgressStore(await js.key_value(PROGRESS_BUCKET))
    await store.update("doc", lambda _: DocumentProgress(doc_id="doc", status=DocumentStatus.PARSING))
    await store.update("doc", lambda p: p.with_plan(pages=1, chunks_total=40, batches_total=20))

    async def index(batch: int) -> None:
        await store.update("doc", lambda p: p.with_indexed_batch(batch, 2))

    await asyncio.gather(*(index(b) for b in range(20)), *(index(b) for b in range(0, 20, 3)))
    final = await store.get("doc")
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
    from agents.runtime.connection import connect

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
    finally:
        await conn.close()
