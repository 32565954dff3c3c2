"""The edge API: HTTP + Server-Sent Events for clients, NATS for everything behind it.

It never imports an agent: it publishes contract messages and reads their answers. Its state (the NATS
connection and bucket handles) lives in one `Backbone` object set before the app is frozen and
connected/closed by the app's cleanup context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
from aiohttp import BodyPartReader, web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
import nats.js.errors
from nats.js.errors import InvalidKeyError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from contracts.messages import (
    DocumentProgress,
    DocumentStatus,
    DocumentSubmitted,
    ErrorEvent,
    QueryMode,
    QueryRequest,
    ResultsEvent,
    answer_event_adapter,
)
from contracts.topology import HEADER_MSG_ID, PROGRESS_BUCKET, REQUIRED_STREAMS, UPLOADS_BUCKET, Subjects
from edge_api.filetypes import UnsupportedFile, detect_content_type
from edge_api.settings import EdgeSettings
from edge_api.uploads import UploadTooLarge, put_stream

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

SNIFF_BYTES = 8192
READ_CHUNK = 64 * 1024


@dataclass
class Backbone:
    """NATS handles of the edge API; set by `connect_backbone` for the lifetime of the app."""

    settings: EdgeSettings
    nc: NATS | None = None
    js: JetStreamContext | None = None
    progress: KeyValue | None = None

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected


BACKBONE = web.AppKey("backbone", Backbone)


# --------------------------------------------------------------------------- errors and bodies


def error(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=5, ge=1, le=50)


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=10, ge=1, le=50)


class BadRequest(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def read_body(request: web.Request, model: type[M]) -> M:
    try:
        raw = await request.read()
        return model.model_validate_json(raw)
    except ValidationError as err:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
            for e in err.errors(include_url=False)
        ]
        kind = "invalid JSON" if any(e["type"] == "json_invalid" for e in err.errors()) else "invalid request body"
        raise BadRequest(error(400, "invalid_body", f"{kind}: see details", details=details)) from None


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Bad bodies become their 400/415; an unreachable backbone becomes a 503 the client can retry on."""
    try:
        return await handler(request)
    except BadRequest as bad:
        return bad.response
    except (nats.errors.Error, nats.js.errors.Error) as err:  # NATS down, stream missing, no ack in time
        if isinstance(err, nats.js.errors.BadRequestError):
            raise
        log.warning("backbone unavailable for %s %s: %r", request.method, request.path, err)
        reason = "is not connected" if isinstance(err, NotConnected) else f"did not answer ({type(err).__name__})"
        return error(503, "backbone_unavailable", f"the message backbone (NATS) {reason}; nothing was accepted, retry later")


class NotConnected(nats.errors.Error):
    """Raised before any work when the edge API is between NATS connections (fail fast, not after timeouts)."""


def connected(request: web.Request) -> Backbone:
    """The backbone of the app, or `NotConnected` (-> 503) while NATS is unreachable."""
    bb = request.app[BACKBONE]
    if not bb.is_connected:
        raise NotConnected
    return bb


# --------------------------------------------------------------------------- health


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    bb = request.app[BACKBONE]
    if not bb.is_connected or bb.js is None:
        return web.json_response({"status": "not ready", "nats": "disconnected"}, status=503)
    missing = []
    for name in REQUIRED_STREAMS:
        try:
            await bb.js.stream_info(name)
        except Exception:  # noqa: BLE001 - any failure means that stream is not usable
            missing.append(name)
    if missing:
        return web.json_response({"status": "not ready", "nats": "connected", "missing_streams": missing}, status=503)
    return web.json_response({"status": "ready", "nats": "connected"})


# --------------------------------------------------------------------------- documents


async def _file_part(request: web.Request) -> BodyPartReader:
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest(
            error(415, "unsupported_media_type", "send the document as multipart/form-data with a 'file' field")
        )
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == "file":
            return part
        await part.release()
    raise BadRequest(error(400, "missing_field", "the multipart body has no 'file' field"))


async def _chunks(head: bytes, part: BodyPartReader) -> AsyncIterator[bytes]:
    if head:
        yield head
    while piece := await part.read_chunk(READ_CHUNK):
        yield piece


async def upload_document(request: web.Request) -> web.Response:
    bb = connected(request)
    settings = bb.settings
    assert bb.js is not None and bb.progress is not None
    part = await _file_part(request)
    filename = (part.filename or "upload").rsplit("/", 1)[-1][:255] or "upload"
    head = bytearray()
    while len(head) < SNIFF_BYTES and (piece := await part.read_chunk(SNIFF_BYTES)):
        head.extend(piece)
    if not head:
        return error(400, "empty_file", f"{filename!r} is empty")
    if len(head) > settings.max_upload_bytes:
        return error(413, "too_large", f"upload exceeds the limit of {settings.max_upload_bytes} bytes")
    try:
        content_type = detect_content_type(filename, part.headers.get("Content-Type"), bytes(head))
    except UnsupportedFile as err:
        return error(415, "unsupported_file", str(err))

    doc_id = uuid.uuid4().hex
    object_name = f"{settings.default_tenant}/{doc_id}"
    try:
        info = await put_stream(
            bb.js, UPLOADS_BUCKET, object_name, _chunks(bytes(head), part), max_bytes=settings.max_upload_bytes
        )
    except UploadTooLarge as err:
        return error(413, "too_large", str(err))

    submitted = DocumentSubmitted(
        doc_id=doc_id,
        tenant=settings.default_tenant,
        filename=filename,
        content_type=content_type,  # type: ignore[arg-type] - detect_content_type returns a supported type
        object_name=object_name,
        size=info.size or 0,
    )
    queued = DocumentProgress(
        doc_id=doc_id, tenant=settings.default_tenant, filename=filename, status=DocumentStatus.QUEUED
    )
    await bb.progress.create(doc_id, queued.model_dump_json().encode())
    # Acknowledged to the client only once JetStream has stored the submission: from here nothing is lost.
    await bb.js.publish(Subjects.DOCS_INGEST, submitted.model_dump_json().encode(), headers={HEADER_MSG_ID: doc_id})
    return web.json_response(
        {
            "doc_id": doc_id,
            "status": DocumentStatus.QUEUED.value,
            "filename": filename,
            "content_type": content_type,
            "size": submitted.size,
        },
        status=202,
    )


async def document_status(request: web.Request) -> web.Response:
    bb = connected(request)
    assert bb.progress is not None
    doc_id = request.match_info["doc_id"]
    try:
        entry = await bb.progress.get(doc_id)
    except (KeyNotFoundError, InvalidKeyError):
        return error(404, "not_found", f"no document {doc_id!r}")
    progress = DocumentProgress.model_validate_json(entry.value or b"{}")
    if progress.tenant != bb.settings.default_tenant:
        return error(404, "not_found", f"no document {doc_id!r}")
    return web.json_response(progress.model_dump(mode="json", exclude={"schema_version", "batches_indexed"}))


# --------------------------------------------------------------------------- ask and search


@contextlib.asynccontextmanager
async def _query(bb: Backbone, text: str, top_k: int, mode: QueryMode):
    """Subscribe to the answer subject, publish the request, yield the subscription; unsubscribe at exit."""
    assert bb.nc is not None and bb.js is not None
    request_id = uuid.uuid4().hex
    reply = Subjects.answer(request_id)
    sub = await bb.nc.subscribe(reply)  # before publishing: no event can be missed
    try:
        query = QueryRequest(
            request_id=request_id, tenant=bb.settings.default_tenant, query=text, top_k=top_k, mode=mode,
            reply_subject=reply,
        )  # fmt: skip
        await bb.js.publish(Subjects.QUERY_RETRIEVE, query.model_dump_json().encode(), headers={HEADER_MSG_ID: request_id})
        yield sub
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def ask(request: web.Request) -> web.StreamResponse:
    bb = connected(request)
    body = await read_body(request, AskBody)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    async with _query(bb, body.question, body.top_k, QueryMode.ASK) as sub:
        await response.prepare(request)
        while True:
            try:
                msg = await sub.next_msg(timeout=bb.settings.query_timeout_s)
            except nats.errors.TimeoutError:
                await response.write(
                    _sse("error", {"code": "timeout", "message": f"no answer within {bb.settings.query_timeout_s}s"})
                )
                break
            event = answer_event_adapter.validate_json(msg.data)
            data = event.model_dump(mode="json", exclude={"schema_version", "request_id", "seq", "event"})
            await response.write(_sse(event.event, data, event.seq))
            if event.event in ("done", "error"):
                break
    await response.write_eof()
    return response


async def search(request: web.Request) -> web.Response:
    bb = connected(request)
    body = await read_body(request, SearchBody)
    async with _query(bb, body.query, body.top_k, QueryMode.SEARCH) as sub:
        try:
            msg = await sub.next_msg(timeout=bb.settings.query_timeout_s)
        except nats.errors.TimeoutError:
            return error(504, "timeout", f"no search results within {bb.settings.query_timeout_s}s")
    event = answer_event_adapter.validate_json(msg.data)
    if isinstance(event, ErrorEvent):
        return error(502, event.code, event.message)
    assert isinstance(event, ResultsEvent)
    return web.json_response({"hits": [h.model_dump(mode="json") for h in event.hits]})


# --------------------------------------------------------------------------- app


async def connect_backbone(app: web.Application) -> AsyncIterator[None]:
    bb = app[BACKBONE]
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(30),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type((OSError, nats.errors.NoServersError, asyncio.TimeoutError)),
        reraise=True,
    ):
        with attempt:
            bb.nc = await nats.connect(
                servers=bb.settings.nats_url.split(","), name="mmrag-edge-api", max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, connect_timeout=2,
            )  # fmt: skip
    bb.js = bb.nc.jetstream()
    bb.progress = await bb.js.key_value(PROGRESS_BUCKET)
    yield
    await bb.nc.drain()


def create_app(settings: EdgeSettings | None = None) -> web.Application:
    """The aiohttp application. The caller runs it (and so owns its lifecycle)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=1024 * 1024)
    app[BACKBONE] = Backbone(settings or EdgeSettings())
    app.cleanup_ctx.append(connect_backbone)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_post("/v1/documents", upload_document)
    app.router.add_get("/v1/documents/{doc_id}", document_status)
    app.router.add_post("/v1/ask", ask)
    app.router.add_post("/v1/search", search)
    return app
