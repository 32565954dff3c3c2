"""``GET /v1/progress``: the progress of the tenant's documents while they are ingested, as Server-Sent Events.

What the web UI follows instead of polling the list. A watch on the tenant's progress records (the same
``g<gen>.<tenant>.*`` keys the list reads) drives the stream:

- first a ``document`` event (the public document view, as ``GET /v1/documents/{doc_id}``) for every document
  still in progress (not ``indexed``, ``failed`` or deleted);
- then a ``document`` event each time a record changes (its last one says ``indexed`` or ``failed``), and a
  ``deleted`` event ``{"doc_id"}`` when one is deleted;
- ``idle`` ``{}`` as soon as no document of the tenant is in progress: the stream ends there. A stream also ends
  (without ``idle``) after `MAX_STREAM_S`; a client that still sees work in progress connects again;
- ``error`` ``{"code": "backbone_unavailable"}`` within `WATCH_POLL_S` of the edge API losing NATS (the watch
  is gone with the connection): the stream ends, follow again.

So a stream is always finite, and costs nothing once ingestion is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from pydantic import BaseModel, ConfigDict

from bus.kv import watch
from contracts.messages import DocumentProgress, DocumentStatus, Identifier
from contracts.topology import progress_key
from edge_api.errors import BackboneLost, request_id
from edge_api.identity import tenant_of
from edge_api.operations import ERR_503, Event, Events, Operation, Stream
from edge_api.routes.documents import DocumentView, public_view
from edge_api.routes.queries import ErrorData
from edge_api.state import backbone

log = logging.getLogger(__name__)

PROGRESS_PATH = "/v1/progress"
MAX_STREAM_S = 30.0
WATCH_POLL_S = 1.0  # how often the loop looks at the clock while no record changes
FINISHED = frozenset({DocumentStatus.INDEXED, DocumentStatus.FAILED, DocumentStatus.DELETED})


class DeletedData(BaseModel):
    """A document in progress was deleted."""

    model_config = ConfigDict(extra="forbid")

    doc_id: Identifier


class IdleData(BaseModel):
    """No document is in progress: the stream ends."""

    model_config = ConfigDict(extra="forbid")


EVENTS = Events(
    Event("document", DocumentView, "a document in progress, or its change (the last one says `indexed` or `failed`)"),
    Event("deleted", DeletedData, "a document in progress was deleted"),
    Event("idle", IdleData, "no document is in progress; the stream ends"),
    Event("error", ErrorData, "the stream ends"),
)


def _doc_id_of(key: str) -> str:
    return key.rsplit(".", 1)[-1]


async def progress_events(request: web.Request) -> web.StreamResponse:
    bb = backbone(request)
    bb.jetstream()
    tenant = tenant_of(request)
    kv = await bb.progress_kv()
    pattern = progress_key(await bb.serving_generation(), tenant, "x")[: -len("x")] + "*"  # g<gen>.<tenant>.*
    outage = bb.outage()
    watcher = await watch(kv, pattern)  # current values, a None marker, then every change (deletes included)
    response = EventSourceResponse(ping_interval=bb.settings.sse_ping_s, headers={"X-Request-Id": request_id(request)})
    try:
        await response.prepare(request)
        async with response:
            with contextlib.suppress(ConnectionResetError):  # the client went away: nothing left to tell it
                await _stream(response, watcher, outage)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return response


async def _stream(response: EventSourceResponse, watcher, outage: asyncio.Future[None]) -> None:  # noqa: ANN001 - a nats-py KeyWatcher
    moving: set[str] = set()  # doc ids in progress
    initial = True  # until the watch's None marker: the current values
    deadline = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < deadline:
        try:
            if outage.done():
                raise BackboneLost
            entry = await watcher.updates(timeout=WATCH_POLL_S)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        except nats.errors.Error:
            message = ErrorData(code="backbone_unavailable", message="the message backbone went away; follow again")
            await response.send(EVENTS.data("error", message), event="error")
            return
        if entry is None:  # the end of the current values
            initial = False
        elif entry.operation in ("DEL", "PURGE") or not entry.value:
            if _doc_id_of(entry.key) in moving:
                moving.discard(_doc_id_of(entry.key))
                await response.send(EVENTS.data("deleted", DeletedData(doc_id=_doc_id_of(entry.key))), event="deleted")
        else:
            try:
                record = DocumentProgress.model_validate_json(entry.value)
            except ValueError:
                log.warning("progress record %s is not readable; skipped in the progress stream", entry.key)
                continue
            if record.status in FINISHED:
                was_moving = record.doc_id in moving
                moving.discard(record.doc_id)
                if not initial and record.status == DocumentStatus.DELETED:
                    await response.send(EVENTS.data("deleted", DeletedData(doc_id=record.doc_id)), event="deleted")
                elif not initial or was_moving:
                    await response.send(EVENTS.data("document", public_view(record)), event="document")
            else:
                moving.add(record.doc_id)
                await response.send(EVENTS.data("document", public_view(record)), event="document")
        if not initial and not moving:
            await response.send(EVENTS.data("idle", IdleData()), event="idle")
            return


DESCRIPTION = f"""\
Follows the tenant's documents while they are ingested. Events (`data:` is one JSON object):

- `document`: a `DocumentView`; first one for every document still in progress, then one per change (the last
  one of a document says `indexed` or `failed`)
- `deleted`: `{{"doc_id"}}`, a document in progress was deleted
- `idle`: `{{}}`, no document is in progress; the stream ends
- `error`: `{{"code", "message"}}`; the stream ends

A stream also ends after {MAX_STREAM_S:g} s; connect again while documents are still in progress.
"""

OPERATIONS = (
    Operation(
        "GET", PROGRESS_PATH, progress_events, "followProgress", "documents",
        "The progress of the tenant's documents while they are ingested (SSE)", role="reader",
        description=DESCRIPTION,
        responses={200: Stream("the progress events", EVENTS), 503: ERR_503},
    ),
)  # fmt: skip
