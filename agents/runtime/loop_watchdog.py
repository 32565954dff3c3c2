"""`LoopWatchdog`: says so, with every thread's stack, when an agent process's event loop stops turning.

Everything an agent does runs on one asyncio loop; heavy work goes to threads. A call that blocks the loop
thread instead (a lock held by a worker thread, a synchronous network call) freezes every worker of the
process, its acks and its Ctrl-C handling alike, and nothing else would ever log it. A daemon thread watches a
heartbeat the loop writes every `beat_s`: when it is older than `stall_s`, it logs one error and writes the
stack of every thread to stderr (`faulthandler`, which needs neither the loop nor the GIL-holding thread to
cooperate), then stays quiet until the loop turns again.

`mmrag up` and `mmrag agent` also dump every thread's stack on SIGUSR1 (``kill -USR1 <pid>``).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys
import threading
import time

from bus.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class LoopWatchdog:
    """Started and stopped by its owner (`start` from the loop's thread, `stop` when done)."""

    def __init__(self, *, stall_s: float = 30.0, beat_s: float = 1.0) -> None:
        self.stall_s = stall_s
        self.beat_s = beat_s
        self.stalls = 0  # how many stalls were reported
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._beat: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._last_beat = time.monotonic()
        self._beat = asyncio.get_running_loop().create_task(self._beat_forever(), name="loop-watchdog heartbeat")
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopped.set()
        await cancel_and_wait(self._beat)

    async def _beat_forever(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(self.beat_s)

    def _watch(self) -> None:
        reported = False
        while not self._stopped.wait(min(self.beat_s, self.stall_s / 4)):
            stalled_s = time.monotonic() - self._last_beat
            if stalled_s < self.stall_s:
                reported = False
            elif not reported:
                reported = True
                self.stalls += 1
                log.error("the event loop has not turned for %.0f s: every worker of this process is stuck; "
                          "the stacks of all threads follow on stderr", stalled_s)  # fmt: skip
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
