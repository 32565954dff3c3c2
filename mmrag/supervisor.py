"""Supervision of the children of `mmrag up` (nats-server, the edge API): reap, report, restart, give up.

A child that exits while it is supervised is reaped at once (no zombie), reported in ONE error line (what
died, its pid, its exit code or signal), and started again with the same command line after a backoff
(0.5 s, doubling up to 8 s). nats-server comes back on the same port and store dir; its clients (the agents,
the edge API) reconnect by themselves. More than `max_restarts` deaths of one child within `window_s`
means something is wrong that restarting will not fix: the supervisor gives up, and `mmrag up` stops
everything and exits non-zero with that message.

Deliberately small: a task per child that polls `Popen.poll()` (which reaps) every 100 ms. Children are
spawned from the event loop's thread (see `processes.spawn`), in their own process group, so a Ctrl-C
on the terminal reaches `mmrag up` only, which then stops them in order instead of seeing them "die".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import subprocess
from dataclasses import dataclass, field

from bus.tasks import cancel_and_wait
from mmrag.processes import StartError, describe_exit, spawn, stop, wait_listening

log = logging.getLogger("mmrag.supervisor")


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one child: its command line, and the port it is ready on (if any)."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    listen: tuple[str, int] | None = None
    start_timeout_s: float = 30.0


class GaveUp(RuntimeError):
    """A child kept dying; the message says which and how often."""


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    watcher: asyncio.Task[None] | None = None
    deaths: collections.deque[float] = field(default_factory=collections.deque)


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        poll_s: float = 0.1,
    ) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self._children: dict[str, _Child] = {}
        self._failed = asyncio.Event()
        self._error: GaveUp | None = None

    async def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        """Start a child and supervise it from now on. A failed first start raises `StartError` (no retry)."""
        if spec.name in self._children:
            raise ValueError(f"{spec.name} is already supervised")
        child = _Child(spec)
        child.proc = await self._launch(spec)
        child.watcher = asyncio.create_task(self._watch(child), name=f"supervise {spec.name}")
        self._children[spec.name] = child
        return child.proc

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        return child.proc.pid if child and child.proc else None

    async def failed(self) -> GaveUp:
        """Wait until the supervisor gives up on a child; returns the reason."""
        await self._failed.wait()
        assert self._error is not None
        return self._error

    async def stop(self, name: str) -> None:
        """Stop supervising `name`, then stop it (SIGTERM, SIGKILL after 15 s)."""
        child = self._children.pop(name, None)
        if child is None:
            return
        with contextlib.suppress(Exception):  # a watcher's own error was reported when it happened
            await cancel_and_wait(child.watcher)
        if child.proc is not None:
            await asyncio.to_thread(stop, child.proc)

    async def stop_all(self) -> None:
        """Stop every child, the last started first."""
        for name in reversed(list(self._children)):
            await self.stop(name)

    async def _launch(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        proc = spawn(spec.argv, env=spec.env)
        if spec.listen is not None:
            try:
                await wait_listening(*spec.listen, proc=proc, what=spec.name, timeout_s=spec.start_timeout_s)
            except BaseException:
                await asyncio.to_thread(stop, proc, timeout_s=5)
                raise
        return proc

    async def _wait_exit(self, proc: subprocess.Popen[bytes]) -> int:
        while (code := proc.poll()) is None:  # poll() reaps: no zombie
            await asyncio.sleep(self.poll_s)
        return code

    async def _watch(self, child: _Child) -> None:
        spec, loop = child.spec, asyncio.get_running_loop()
        while True:
            if child.proc is not None:
                pid, code = child.proc.pid, await self._wait_exit(child.proc)
                what = f"{spec.name} (pid {pid}) {describe_exit(code)}"
                child.proc = None
            else:
                what = None  # the last restart failed; it was reported already
            now = loop.time()
            child.deaths.append(now)
            while child.deaths and child.deaths[0] < now - self.window_s:
                child.deaths.popleft()
            if len(child.deaths) > self.max_restarts:
                reason = (
                    f"{spec.name} died {len(child.deaths)} times within {self.window_s:.0f}s; "
                    "giving up and stopping mmrag"
                )
                log.error("%s%s", f"{what}: " if what else "", reason)
                self._error = GaveUp(reason)
                self._failed.set()
                return
            delay = min(self.backoff_s * 2 ** (len(child.deaths) - 1), self.max_backoff_s)
            if what:
                log.error(
                    "%s unexpectedly; restarting it in %.1fs (restart %d of at most %d within %.0fs)",
                    what, delay, len(child.deaths), self.max_restarts, self.window_s,
                )  # fmt: skip
            await asyncio.sleep(delay)
            try:
                child.proc = await self._launch(spec)
            except StartError as e:
                log.error("restarting %s failed: %s", spec.name, e)
                continue
            log.info("%s restarted (pid %d)", spec.name, child.proc.pid)
