"""Connecting to NATS and publishing contract messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from contracts.topology import HEADER_MSG_ID

log = logging.getLogger(__name__)


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

    async def reconnected() -> None:
        if on_reconnect is not None:
            try:
                await on_reconnect()
            except Exception:  # noqa: BLE001 - a failed hook must not kill the client's reconnect loop
                log.exception("on_reconnect hook failed")

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(connect_within_s),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type((OSError, nats.errors.NoServersError, asyncio.TimeoutError)),
        reraise=True,
    ):
        with attempt:
            return await nats.connect(
                servers=url.split(","),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                reconnected_cb=reconnected,
            )
    raise AssertionError("unreachable")


async def publish_all(
    js: JetStreamContext,
    messages: Iterable[tuple[str, BaseModel, str]],
    *,
    timeout_s: float = 10.0,
) -> None:
    """Publish (subject, model, msg_id) triples and return once JetStream has stored every one.

    Publishes are pipelined (`publish_async`), not one awaited ack at a time. `msg_id` goes into
    `Nats-Msg-Id`, so a redelivered input that is processed again produces no duplicate within the
    stream's duplicate window. Raises if any publish is not acknowledged within `timeout_s`.
    """
    futures = [
        await js.publish_async(subject, model.model_dump_json().encode(), headers={HEADER_MSG_ID: msg_id})
        for subject, model, msg_id in messages
    ]
    if futures:
        await asyncio.wait_for(asyncio.gather(*futures), timeout_s)
