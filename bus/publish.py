"""Publishing contract messages to JetStream: every publish carries a message id and the trace context."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel

from contracts.topology import HEADER_MSG_ID
from telemetry.tracing import has_trace_context, inject


@dataclass(frozen=True)
class Outgoing:
    """One message to publish. `msg_id` goes into ``Nats-Msg-Id``: a redelivered input processed again
    publishes nothing new within the stream's duplicate window. `headers` carries what the input carried
    (e.g. ``traceparent``, `Delivery.trace_headers`), so one trace spans every hop; without a
    ``traceparent`` there, the publish injects the current span's context (`headers_for`)."""

    subject: str
    message: BaseModel
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def headers_for(out: Outgoing) -> dict[str, str]:
    """The NATS headers of `out`: its own, the current trace context unless it carries one, the message id."""
    headers = dict(out.headers)
    if not has_trace_context(headers):
        inject(headers)
    headers[HEADER_MSG_ID] = out.msg_id
    return headers


async def publish_all(js: JetStreamContext, messages: Iterable[Outgoing], *, timeout_s: float = 10.0) -> list[PubAck]:
    """Publish and return once JetStream has stored every message, in order of `messages`.

    Publishes are pipelined (`publish_async`), not one awaited ack at a time. Raises if any publish is not
    acknowledged within `timeout_s` (the caller's message is then retried, and the ids make that safe).
    """
    futures = [await js.publish_async(out.subject, encode(out.message), headers=headers_for(out)) for out in messages]
    if not futures:
        return []
    return list(await asyncio.wait_for(asyncio.gather(*futures), timeout_s))


async def publish(js: JetStreamContext, out: Outgoing, *, timeout_s: float = 10.0) -> PubAck:
    [ack] = await publish_all(js, [out], timeout_s=timeout_s)
    return ack
