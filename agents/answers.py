"""Sending answer events to the core NATS subject a client's request named (`reply_subject`)."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS

from contracts.messages import ErrorEvent, Message, QueryRequest


class AnswerStream:
    """Numbers and publishes the events of one request, starting at `first_seq`.

    Events are published on core NATS (fire and forget): the edge API subscribed before it published the
    request, and an answer nobody waits for any more needs no durability.
    """

    def __init__(self, nc: NATS, request: QueryRequest, *, first_seq: int = 0) -> None:
        self._nc = nc
        self.request = request
        self._seq = first_seq

    async def send(self, event_type: type[Message], **fields: Any) -> None:
        event = event_type(request_id=self.request.request_id, seq=self._seq, **fields)
        self._seq += 1
        await self._nc.publish(self.request.reply_subject, event.model_dump_json().encode())

    async def flush(self) -> None:
        await self._nc.flush()


async def send_error(nc: NATS, request: QueryRequest, code: str, message: str) -> None:
    """Tell the waiting client that its request failed (used when an agent gives up on it)."""
    stream = AnswerStream(nc, request, first_seq=10_000)
    await stream.send(ErrorEvent, code=code, message=message)
    await stream.flush()
