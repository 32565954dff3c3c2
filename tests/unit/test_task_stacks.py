"""`mmrag.runner._task_stacks`, what a hung shutdown logs: each task down its chain of awaits, and every thread."""

from __future__ import annotations

import asyncio
import threading

from mmrag.runner import _task_stacks


def blocked_in_a_thread(release: threading.Event) -> None:
    release.wait(10)


async def waits_on_the_executor(release: threading.Event) -> None:
    await asyncio.to_thread(blocked_in_a_thread, release)


async def outer(release: threading.Event) -> None:
    await waits_on_the_executor(release)


async def test_a_task_is_shown_down_to_what_it_awaits_and_the_thread_it_waits_on() -> None:
    release = threading.Event()
    task = asyncio.create_task(outer(release), name="stuck-worker")
    await asyncio.sleep(0.1)
    try:
        report = _task_stacks()
    finally:
        release.set()
        await task
    section = report.split("Task stuck-worker:\n", 1)[1].split("Task ", 1)[0]
    assert "in outer" in section and "in waits_on_the_executor" in section  # the chain, not only the outer frame
    assert "blocked_in_a_thread" in report.split("Thread ", 1)[1]  # the thread the executor future waits on
