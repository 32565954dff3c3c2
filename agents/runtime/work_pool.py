"""CPU-heavy work (parsing, OCR) in worker processes, handed out fairly.

The agents' event loop also serves the query path under `mmrag up` (retriever, reranker, generator): a stage that
holds the interpreter there for seconds (chunking a 50 MB text, PyMuPDF on a page of drawings, OCR) starves
searches and in-progress acks alike. So that work runs in a `ProcessPoolExecutor` (spawn context: no fork of a
process holding NATS sockets and ONNX threads), and never more of it at once than the pool has processes: the
executor's own queue stays empty, the waiting is done here, in priority order.

`WorkPool.slot(priority)` is one turn in a worker process. Waiters are served by `Priority`: the interactive
lane first, then the unit with the lowest turn number (the first page range of a new document before the
eleventh range of a big one), then the tenant that had the fewest turns lately, then arrival. A document parsed
in page ranges asks for one slot per range, so documents interleave range by range and a small upload never
waits behind a big one. Bulk work may hold at most `processes` slots; the pool has one more process, which
only interactive work can take, so an interactive unit starts at once even when every core is busy with bulk
work (the OS shares the cores; the small unit is done in moments).

A worker process that dies (a crash inside a native library) breaks a `ProcessPoolExecutor` for good: the pool
is replaced and the unit's caller gets a transient error (the message is redelivered, then dead-lettered at
`max_deliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from agents.runtime.worker import PermanentError
from models.turns import INGEST_NICENESS

log = logging.getLogger(__name__)

R = TypeVar("R")


# Worker processes run at a lower CPU priority than the agents' process: when the cores are busy, a search (the
# query path lives in the agents' process) goes before another page of parsing. The same niceness as the
# embedder's passage calls (`models.turns`): every kind of ingest work shares the cores evenly.
WORKER_NICENESS = INGEST_NICENESS


def _lower_priority() -> None:
    os.nice(WORKER_NICENESS)


class WorkerCrashed(RuntimeError):
    """A worker process died while it ran a unit (transient: the message is redelivered)."""


class UnitTimedOut(PermanentError):
    """A unit ran past its time budget (`WorkPool.run`'s ``timeout_s``); the pool was restarted to stop it. Permanent:
    the same bytes would take as long again."""


@dataclass(frozen=True)
class Priority:
    """What decides who goes next: ``interactive`` first, then the lowest ``turn`` (the unit's number within
    its document: 0 for a document's first unit), then the ``tenant`` with the fewest recent turns."""

    interactive: bool
    tenant: str
    turn: int = 0


class FairScheduler:
    """Slots of a pool, granted by `Priority` (see the module docstring). Pure asyncio: no processes."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"a work pool needs at least 1 process, got {processes}")
        self.processes = processes
        self.slots = processes + 1  # the extra slot is for interactive work only
        self._running = 0
        self._running_bulk = 0
        self._order = itertools.count()
        self._waiters: list[tuple[tuple[int, int, int, int], Priority, asyncio.Future[None]]] = []
        # Turns granted per tenant while the tenant has work running or waiting (forgotten when it has none).
        self._tenant_turns: Counter[str] = Counter()
        self._tenant_active: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        self._tenant_active[priority.tenant] += 1
        try:
            await self._acquire(priority)
            try:
                yield
            finally:
                self._release(priority)
        finally:
            self._tenant_active[priority.tenant] -= 1
            if self._tenant_active[priority.tenant] <= 0:
                del self._tenant_active[priority.tenant]
                self._tenant_turns.pop(priority.tenant, None)

    def _fits(self, priority: Priority) -> bool:
        if self._running >= self.slots:
            return False
        return priority.interactive or self._running_bulk < self.processes

    def _grant(self, priority: Priority) -> None:
        self._running += 1
        self._running_bulk += 0 if priority.interactive else 1
        self._tenant_turns[priority.tenant] += 1

    async def _acquire(self, priority: Priority) -> None:
        if not self._waiters and self._fits(priority):
            self._grant(priority)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (0 if priority.interactive else 1, priority.turn, self._tenant_turns[priority.tenant], next(self._order))
        heapq.heappush(self._waiters, (key, priority, future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(priority)  # granted as we were cancelled: give it back
            else:
                self._waiters = [w for w in self._waiters if w[2] is not future]
                heapq.heapify(self._waiters)
            raise

    def _release(self, priority: Priority) -> None:
        self._running -= 1
        self._running_bulk -= 0 if priority.interactive else 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant free slots to the most urgent waiters that may take them (bulk work skips the extra slot)."""
        skipped: list[tuple[tuple[int, int, int, int], Priority, asyncio.Future[None]]] = []
        while self._waiters and self._running < self.slots:
            entry = heapq.heappop(self._waiters)
            _key, priority, future = entry
            if future.done():
                continue
            if not self._fits(priority):
                skipped.append(entry)
                continue
            self._grant(priority)
            future.set_result(None)
        for entry in skipped:
            heapq.heappush(self._waiters, entry)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w[2].done())

    @property
    def running(self) -> int:
        return self._running


class WorkPool:
    """A spawn-context process pool behind a `FairScheduler`: ``async with pool.slot(p): await pool.run(fn, ...)``.

    ``fn`` and its arguments cross a process boundary: a module-level function and picklable values."""

    def __init__(self, processes: int) -> None:
        self.scheduler = FairScheduler(processes)
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.scheduler.slots, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_lower_priority)  # fmt: skip

    def start(self, warm: Callable[[], object]) -> None:
        """Start every worker process now and run ``warm`` in each, in the background: the first units do not pay
        for a process start (seconds: the document library's imports), and the agents' start-up does not wait."""

        def failed(future: Future[object]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.warning("warming a worker process failed: %r", future.exception())

        for _ in range(self.scheduler.slots):  # each submit finds no idle process yet, so each starts one
            self._executor.submit(warm).add_done_callback(failed)

    def slot(self, priority: Priority) -> contextlib.AbstractAsyncContextManager[None]:
        return self.scheduler.slot(priority)

    async def run(self, fn: Callable[..., R], *args: Any, timeout_s: float | None = None) -> R:
        """Run ``fn(*args)`` in a worker process; call it inside a `slot` (the pool never queues more).

        ``timeout_s``: the unit's time budget. A process cannot be stopped in the middle of a call, so past it the
        whole pool is restarted (the units of other documents running then end with `WorkerCrashed` and are
        retried) and `UnitTimedOut` is raised: a hostile page that hangs the PDF library costs one budget, not a
        work process for good."""
        executor = self._executor
        name = getattr(fn, "__name__", fn)
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(executor, fn, *args), timeout_s)
        except TimeoutError as err:
            if self._executor is executor:
                log.error("%s ran past its %.0f s budget; restarting the process pool to stop it", name, timeout_s)
                self._executor = self._new_executor()
                await asyncio.to_thread(_stop, executor)  # joins the processes: not on the loop
            raise UnitTimedOut(f"{name} ran past its time budget of {timeout_s:.0f} s") from err
        except BrokenProcessPool as err:
            if self._executor is executor:
                log.error("a worker process died; starting a new process pool")
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise WorkerCrashed(f"a worker process died while running {name}") from err

    def close(self) -> None:
        """Stop the worker processes now: a unit still running is abandoned (its message was not acked, so it is
        redelivered), rather than holding a shutdown for the minute a 50 MB text takes."""
        _stop(self._executor)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Shut `executor` down and terminate its processes, whatever they are running."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
