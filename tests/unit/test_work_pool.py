"""The work pool: who gets a worker process next (`FairScheduler`), and that work really runs in another process."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from agents.runtime.work_pool import FairScheduler, Priority, UnitTimedOut, WorkerCrashed, WorkPool


async def _order(scheduler: FairScheduler, holders: list[Priority], waiters: list[tuple[str, Priority]]) -> list[str]:
    """Fill the pool with `holders`, queue `waiters`, then release the holders one at a time: the waiters'
    names in the order they got a slot."""
    release = [asyncio.Event() for _ in holders]
    got: list[str] = []

    async def hold(p: Priority, done: asyncio.Event) -> None:
        async with scheduler.slot(p):
            await done.wait()

    async def wait(name: str, p: Priority) -> None:
        async with scheduler.slot(p):
            got.append(name)
            await asyncio.sleep(0.01)  # holds its slot a moment, so the others queue behind it

    held = [asyncio.create_task(hold(p, e)) for p, e in zip(holders, release, strict=True)]
    await asyncio.sleep(0)
    assert scheduler.running == len(holders)
    queued = []
    for name, p in waiters:
        queued.append(asyncio.create_task(wait(name, p)))
        await asyncio.sleep(0)
    for event in release:
        event.set()
        await asyncio.sleep(0.05)
    await asyncio.gather(*held, *queued)
    return got


async def test_interactive_work_overtakes_queued_bulk_work() -> None:
    scheduler = FairScheduler(1)  # one bulk slot + the interactive one
    bulk = Priority(False, "a")
    order = await _order(scheduler, [bulk, Priority(True, "a")],
                         [("big-2", Priority(False, "a", 1)), ("small", Priority(True, "b"))])  # fmt: skip
    assert order == ["small", "big-2"]


async def test_bulk_work_never_takes_the_interactive_slot() -> None:
    scheduler = FairScheduler(1)
    async with scheduler.slot(Priority(False, "a")):
        second = asyncio.create_task(scheduler.slot(Priority(False, "a", 1)).__aenter__())
        await asyncio.sleep(0.05)
        assert not second.done(), "a second bulk unit took the slot kept for interactive work"
        async with scheduler.slot(Priority(True, "b")):  # the interactive one starts at once
            assert scheduler.running == 2
    await asyncio.wait_for(second, 1)


async def test_a_new_document_goes_before_the_later_units_of_a_big_one() -> None:
    scheduler = FairScheduler(1)
    order = await _order(scheduler, [Priority(False, "a", 3), Priority(True, "x")],
                         [("big-4", Priority(False, "a", 4)), ("other-0", Priority(False, "a", 0))])  # fmt: skip
    assert order == ["other-0", "big-4"]


async def test_tenants_take_turns() -> None:
    scheduler = FairScheduler(1)
    busy = Priority(False, "busy", 2)  # tenant "busy" holds a process (a turn) while both queue their next unit
    order = await _order(scheduler, [busy, Priority(True, "x")],
                         [("busy", Priority(False, "busy", 2)), ("quiet", Priority(False, "quiet", 2))])  # fmt: skip
    assert order == ["quiet", "busy"]


async def test_a_cancelled_waiter_gives_nothing_away() -> None:
    scheduler = FairScheduler(1)
    async with scheduler.slot(Priority(False, "a")):
        waiter = asyncio.create_task(scheduler.slot(Priority(False, "a", 1)).__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert scheduler.running == 0 and scheduler.waiting == 0


def _die() -> None:
    os._exit(3)


async def test_work_runs_in_another_process_and_a_crash_is_survived() -> None:
    pool = WorkPool(1)
    try:
        async with pool.slot(Priority(True, "a")):
            assert await pool.run(os.getpid) != os.getpid()
        async with pool.slot(Priority(True, "a")):
            with pytest.raises(WorkerCrashed):
                await pool.run(_die)
        async with pool.slot(Priority(True, "a")):  # a fresh pool took over
            assert await pool.run(os.getpid) != os.getpid()
    finally:
        pool.close()


def _hang() -> None:
    time.sleep(3600)  # a page that never ends (a PDF library stuck on a hostile page)


async def test_a_unit_past_its_time_budget_is_stopped_and_the_pool_goes_on() -> None:
    pool = WorkPool(2)
    try:
        async with pool.slot(Priority(True, "a")):
            hung = await pool.run(os.getpid)
        async with pool.slot(Priority(True, "a")), pool.slot(Priority(True, "b")):
            other = asyncio.create_task(pool.run(_hang))  # another document's unit, in the same pool
            await asyncio.sleep(0.5)
            with pytest.raises(UnitTimedOut, match="_hang ran past its time budget of 1 s"):
                await pool.run(_hang, timeout_s=1)
            with pytest.raises(WorkerCrashed):  # stopped with the pool: retried, not failed
                await asyncio.wait_for(other, 30)
        async with pool.slot(Priority(True, "a")):  # a fresh pool took over
            assert await pool.run(os.getpid) not in (os.getpid(), hung)
    finally:
        pool.close()
