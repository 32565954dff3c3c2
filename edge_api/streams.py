"""Open requests per caller: a cap on concurrent streams, and the end of a revoked key's streams.

- Every request of a caller (its API key, or its client IP with auth off: `ratelimit.identity_key`) to a
  ``/v1/*`` operation is registered while its handler runs.
- A streaming operation (one that declares a `Stream` response: ask, progress, re-index events; each progress
  stream is a JetStream consumer) counts against ``MMRAG_MAX_STREAMS_PER_CALLER``: one more is 429
  ``too_many_streams`` with ``Retry-After``, before anything is subscribed. The count is this process's
  (per edge replica).
- With auth on, a watcher looks at the keys file every `REVOKE_CHECK_S` (the key ring re-reads it when it
  changes): every open request of a key that is no longer valid (revoked, removed) ends: an open SSE stream
  first gets an ``error`` event ``{"code": "unauthorized"}``, then the handler is cancelled and the
  connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from edge_api.auth import KEYRING
from edge_api.errors import ApiError, Handler
from edge_api.identity import IDENTITY
from edge_api.keys import KeyRing
from edge_api.operations import Stream, operation_of
from edge_api.ratelimit import identity_key, limited_route
from edge_api.routes.queries import ErrorData
from edge_api.state import SETTINGS

log = logging.getLogger(__name__)

REVOKE_CHECK_S = 1.0  # how often open requests' keys are checked: a revoked key's streams end within ~this
STREAM_RETRY_AFTER_S = 5
ERROR_SEND_TIMEOUT_S = 1.0


@dataclass(eq=False)
class OpenRequest:
    caller: str
    key_id: str | None  # None with auth off
    streaming: bool
    task: asyncio.Task
    response: EventSourceResponse | None = None  # set when its SSE response is prepared
    ended: bool = False  # its key was found revoked and it was told to end (once)


@dataclass
class OpenRequests:
    """Every open request of this app, by caller."""

    max_streams: int
    by_caller: dict[str, set[OpenRequest]] = field(default_factory=dict)

    def streams_of(self, caller: str) -> int:
        return sum(1 for r in self.by_caller.get(caller, ()) if r.streaming)

    @contextlib.contextmanager
    def open(self, entry: OpenRequest):  # noqa: ANN201 - a context manager
        if entry.streaming and self.streams_of(entry.caller) >= self.max_streams:
            who = "API key" if entry.key_id is not None else "client address"
            raise ApiError(
                429, "too_many_streams",
                f"this {who} already has {self.max_streams} streams open (MMRAG_MAX_STREAMS_PER_CALLER="
                f"{self.max_streams}): close one or wait for one to end, then retry",
                headers={"Retry-After": str(STREAM_RETRY_AFTER_S)}, retry_after_s=STREAM_RETRY_AFTER_S,
            )  # fmt: skip
        self.by_caller.setdefault(entry.caller, set()).add(entry)
        try:
            yield entry
        finally:
            mine = self.by_caller.get(entry.caller)
            if mine is not None:
                mine.discard(entry)
                if not mine:
                    del self.by_caller[entry.caller]

    def all(self) -> list[OpenRequest]:
        return [r for requests in self.by_caller.values() for r in requests]


OPEN_REQUESTS = web.AppKey("open_requests", OpenRequests)
_OPEN = web.RequestKey("open_request", OpenRequest)


def _streaming(request: web.Request) -> bool:
    op = operation_of(request.match_info.route)
    return op is not None and any(isinstance(spec, Stream) for spec in op.responses.values())


@web.middleware
async def streams_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if limited_route(request) is None:  # probes, the API description, unknown paths: nothing to count
        return await handler(request)
    identity = request.get(IDENTITY)
    task = asyncio.current_task()
    assert task is not None
    entry = OpenRequest(identity_key(request), identity.key_id if identity else None, _streaming(request), task)
    with request.app[OPEN_REQUESTS].open(entry):
        request[_OPEN] = entry
        return await handler(request)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    entry = request.get(_OPEN)
    if entry is not None and isinstance(response, EventSourceResponse):
        entry.response = response


async def end_request(entry: OpenRequest) -> None:
    """End an open request of a key that is no longer valid: an `error` event on its stream, then cancel it."""
    entry.ended = True
    if entry.response is not None and entry.response.prepared and not entry.task.done():
        data = ErrorData(code="unauthorized", message="the API key was revoked; this stream ends").model_dump_json()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(entry.response.send(data, event="error"), ERROR_SEND_TIMEOUT_S)
    entry.task.cancel()


async def revoke_watch(app: web.Application) -> None:
    """Forever: every `REVOKE_CHECK_S`, end the open requests of keys the key ring no longer accepts."""
    ring: KeyRing = app[KEYRING]
    requests = app[OPEN_REQUESTS]
    while True:
        await asyncio.sleep(REVOKE_CHECK_S)
        try:
            open_now = [r for r in requests.all() if r.key_id is not None and not r.ended]
            if not open_now:
                continue
            valid = ring.valid_ids()
            revoked = [entry for entry in open_now if entry.key_id not in valid]
            if revoked:
                log.info("ending %d open requests of revoked API keys", len(revoked))
                await asyncio.gather(*(end_request(entry) for entry in revoked))
        except Exception:  # a bug must not end the watch: log it and look again
            log.exception("the revoked-key watch failed; retrying")


async def revoke_lifecycle(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(revoke_watch(app), name="revoked-key-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(app: web.Application) -> None:
    app[OPEN_REQUESTS] = OpenRequests(app[SETTINGS].max_streams_per_caller)
    app.on_response_prepare.append(_on_prepare)
    if KEYRING in app:
        app.cleanup_ctx.append(revoke_lifecycle)
