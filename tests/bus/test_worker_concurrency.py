"""`PullWorker(concurrency=n)` against a real nats-server: messages handled at once, each on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import pytest

from agents.runtime.worker import Delivery, PullWorker
from bus.topology import consumer_config, ensure_topology
from tests.bus.test_worker_policy import CONSUMER, Job, publish_job, run_until


@pytest.fixture
async def js(nc: nats.NATS):
    js = nc.jetstream()
    await ensure_topology(js)
    await js.add_stream(name="TEST", subjects=["test.>"])
    await js.add_consumer("TEST", consumer_config(CONSUMER))
    return js


class Waiter:
    """Job 1 finishes only once job 2 did: one message at a time, it never would."""

    def __init__(self) -> None:
        self.done: list[int] = []
        self.second = asyncio.Event()

    async def handle(self, deliveries: Sequence[Delivery[Job]]) -> None:
        (d,) = deliveries
        if d.payload.n == 1:
            await asyncio.wait_for(self.second.wait(), 5)
        else:
            self.second.set()
        self.done.append(d.payload.n)


@pytest.mark.parametrize("concurrency", [4, 1])
async def test_a_slow_message_does_not_hold_the_next_one(js, concurrency: int) -> None:
    waiter = Waiter()
    worker = PullWorker(js, CONSUMER, Job, waiter.handle, agent="test", concurrency=concurrency)
    await publish_job(js, Job(n=1))
    await publish_job(js, Job(n=2))
    await run_until(worker, lambda: len(waiter.done) == 2)
    assert waiter.done == [2, 1]
    info = await js.consumer_info("TEST", CONSUMER.durable)
    # One at a time, job 1 gave up waiting (a transient failure) before job 2 was fetched, and came back.
    assert info.delivered.consumer_seq == (2 if concurrency > 1 else 3), info


async def test_stop_abandons_what_is_still_in_hand(js, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.runtime.worker.DRAIN_S", 0.2)
    started = asyncio.Event()

    async def forever(deliveries: Sequence[Delivery[Job]]) -> None:
        started.set()
        await asyncio.sleep(3600)

    worker = PullWorker(js, CONSUMER, Job, forever, agent="test", concurrency=2)
    await publish_job(js, Job(n=1))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 5)  # not the hour the handler wanted: left unacked, for a redelivery
    info = await js.consumer_info("TEST", CONSUMER.durable)
    assert info.num_ack_pending == 1, info
