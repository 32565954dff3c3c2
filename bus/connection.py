"""Connecting to NATS: retry until the server is up, reconnect forever, and log like a service should."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)


class _ThrottledErrors:
    """nats-py calls `error_cb` on every failed reconnect attempt (twice a second while the server is down);
    logging each with a traceback filled logs at ~430 KB a minute. One line per `interval_s` instead."""

    def __init__(self, name: str, interval_s: float = 30.0) -> None:
        self._name = name
        self._interval_s = interval_s
        self._last = 0.0
        self._suppressed = 0

    async def log(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last line)" if self._suppressed else ""
        log.warning("%s: NATS error: %s%s", self._name, err or type(err).__name__, more)
        self._last, self._suppressed = now, 0


async def connect(
    url: str,
    *,
    name: str,
    connect_within_s: float = 30.0,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect, retrying with backoff while the server is not up yet (e.g. pods starting together).

    The caller owns the connection and closes it (``drain()`` on shutdown). Once connected, nats-py
    reconnects by itself forever, and awaits `on_reconnect` after each reconnection.
    """

    throttled = _ThrottledErrors(name)
    client: list[NATS] = []  # set once connected, so the callbacks can tell a shutdown from an outage

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own drain/close: not news
        log.warning("%s: disconnected from NATS; reconnecting", name)

    async def reconnected() -> None:
        log.info("%s: reconnected to NATS", name)
        if on_reconnect is not None:
            try:
                await on_reconnect()
            except Exception:  # noqa: BLE001 - a failed hook must not kill the client's reconnect loop
                log.exception("%s: on_reconnect hook failed", name)

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(connect_within_s),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type((OSError, nats.errors.NoServersError, asyncio.TimeoutError)),
        reraise=True,
    ):
        with attempt:
            nc = await nats.connect(
                servers=url.split(","),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=throttled.log,
            )
            client.append(nc)
            return nc
    raise AssertionError("unreachable")
