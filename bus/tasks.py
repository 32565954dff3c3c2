"""`cancel_and_wait`: stop a background task for sure, on the Python (3.11) this project runs on.

``task.cancel(); await task`` can wait forever here. On Python 3.11, ``asyncio.wait_for`` drops a cancellation
that arrives while its inner future has just completed (python/cpython#86296, gone with 3.12's rewrite of
``wait_for``), and nats-py calls ``wait_for`` in every request. A loop that talks to NATS therefore ignores
some cancellations and goes on looping: measured here, 32 of 300 cancels of a loop doing ``kv.get`` and a
10 ms sleep were lost, and that is how `mmrag up` hung at Ctrl-C in about one CI run in six.
"""

from __future__ import annotations

import asyncio
import contextlib

RECANCEL_S = 0.1
MAX_CHAIN = 40


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel `task` and return once it has ended, cancelling it again while it runs on.

    An exception the task ended with (other than its cancellation) is raised. A task that catches every
    cancellation on purpose would keep this waiting: none of ours does.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def await_chain(task: asyncio.Task[object]) -> list[str]:
    """Where `task` waits, outermost first, one ``file:line in function`` per coroutine down its chain of awaits,
    ending with what the innermost one awaits (a future, an executor's). `Task.print_stack` shows only the
    outermost frame ("await self.process(msgs)"), which does not say what a hung task waits on."""
    out: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(out) < MAX_CHAIN:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            out.append(f"waiting on {awaited!r}")
            break
        out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return out
