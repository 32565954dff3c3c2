"""`cancel_and_wait` ends a task even when a cancellation is lost, as nats-py's requests lose some on 3.11."""

from __future__ import annotations

import asyncio
import random

import pytest
from nats.js.api import KeyValueConfig

from bus.tasks import cancel_and_wait


async def ends_on_its_own(task: asyncio.Task[None], within_s: float = 2.0) -> bool:
    """Whether `cancel_and_wait(task)` returns within `within_s` (run apart: no timeout may cancel it for us)."""
    stopper = asyncio.create_task(cancel_and_wait(task))
    done, _ = await asyncio.wait([stopper], timeout=within_s)
    return stopper in done


async def test_a_task_that_loses_a_cancellation_is_still_ended() -> None:
    lost = []

    async def loses_the_first_cancel() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append(True)  # what asyncio.wait_for does on 3.11 when its inner future just completed

    task = asyncio.create_task(loses_the_first_cancel())
    await asyncio.sleep(0.02)
    assert await ends_on_its_own(task)
    assert task.cancelled() and lost == [True]


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(task)
    await cancel_and_wait(None)  # nothing started: nothing to do


async def test_a_loop_of_nats_requests_is_ended_whenever_it_is_cancelled(nc) -> None:
    """The loop every background task of ours is (reindexer tick, gauge refresh): NATS requests and a short sleep.
    Cancelled at 100 random moments, each must end; with a single `cancel()` about one in ten did not, here."""
    kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket="tasks"))
    await kv.put("k", b"v")

    async def loop() -> None:
        while True:
            await kv.get("k")
            await asyncio.sleep(0.01)

    rng = random.Random(7)
    for _ in range(100):
        task = asyncio.create_task(loop())
        await asyncio.sleep(rng.random() * 0.02)
        assert await ends_on_its_own(task), "a lost cancellation left the loop running"
        assert task.done()
