"""Route declarations: each route module states, next to its handlers, what every operation takes and answers.

An `Operation` names its method, path, handler, request models, one response spec per status (`Json` with its
pydantic model, `Stream` with its SSE events, `Media` for pictures and pages, `Err` for the error body,
`Empty`), the least role that may call it, and its OpenAPI text. `register` adds the operations to the app and
`edge_api.openapi` assembles the OpenAPI document from the same declarations, so a route cannot exist without
its description (`tests/e2e/test_openapi.py` checks it).

A JSON handler returns its response model (status 200) or a `Reply` (another status, headers); `register`'s
wrapper serialises it with the model, after checking that the operation declares that model for that status.
A streaming handler sends each event's data through `Events.data`, which checks the event's name and model the
same way. A body a declaration would reject is a bug: it raises `UndeclaredReply`, and the client gets the
usual 500 ``internal_error`` (the log names the route, the status and the model).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, create_model


class UndeclaredReply(Exception):
    """A handler answered with a status, model or event its operation does not declare: fix the handler or
    its declaration (the route module's `OPERATIONS`)."""


# --------------------------------------------------------------------------- what a handler returns


@dataclass(frozen=True)
class Reply:
    """A JSON answer other than a plain 200: its body (the declared model), status and extra headers."""

    body: BaseModel
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


HandlerResult = BaseModel | Reply | web.StreamResponse
RouteHandler = Callable[[web.Request], Awaitable[HandlerResult]]


# --------------------------------------------------------------------------- response specs


@dataclass(frozen=True)
class Json:
    """A JSON body of `model` (serialised with the model)."""

    description: str
    model: type[BaseModel]
    headers: Mapping[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Err:
    """An error: the JSON `ErrorBody` every error of the API has (`edge_api.errors`)."""

    description: str
    retry_after: bool = False


@dataclass(frozen=True)
class Media:
    """A body that is not JSON (a picture, a page, the metrics): media type -> JSON Schema of the body."""

    description: str
    content: Mapping[str, dict]
    headers: Mapping[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Empty:
    """No body (e.g. 304)."""

    description: str


@dataclass(frozen=True)
class Event:
    """One kind of Server-Sent Event: its `event:` name, the model of its `data:`, and whether it has an `id:`.

    `source` is a model the data may also be made from, dumped without the fields in `exclude` (the ask stream's
    contract events, whose framing fields travel as the SSE event name and id); `model` is then derived from it."""

    name: str
    model: type[BaseModel]
    description: str
    numbered: bool = False
    source: type[BaseModel] | None = None
    exclude: frozenset[str] = frozenset()


def derived_event(name: str, source: type[BaseModel], description: str, exclude: frozenset[str]) -> Event:
    """An event whose data is `source` without the fields in `exclude`; its model is named `<Source>Data`."""
    fields: dict[str, Any] = {n: (info.annotation, info) for n, info in source.model_fields.items() if n not in exclude}
    model = create_model(
        source.__name__.removesuffix("Event") + "Data", __config__=ConfigDict(extra="forbid"), __doc__=description,
        **fields,
    )  # fmt: skip
    return Event(name, model, description, numbered=True, source=source, exclude=exclude)


class Events:
    """The events of one stream, in the order the document lists them."""

    def __init__(self, *events: Event) -> None:
        self.events = events
        self.by_name = {e.name: e for e in events}

    def data(self, name: str, body: BaseModel) -> str:
        """The `data:` of event `name`: `body` serialised with the event's model (or its source's, less the
        excluded fields). `UndeclaredReply` when the stream has no such event or `body` is another model."""
        event = self.by_name.get(name)
        if event is not None and isinstance(body, event.model):
            return body.model_dump_json()
        if event is not None and event.source is not None and isinstance(body, event.source):
            return body.model_dump_json(exclude=set(event.exclude))
        declared = None if event is None else event.model.__name__
        raise UndeclaredReply(f"event {name!r} sent a {type(body).__name__}; declared: {declared}")


@dataclass(frozen=True)
class Stream:
    """A `text/event-stream` of `events`."""

    description: str
    events: Events


Response = Json | Err | Media | Empty | Stream


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as aiohttp registers it; a path parameter is {name}, as in OpenAPI
    handler: RouteHandler
    operation_id: str
    tag: str
    summary: str
    responses: Mapping[int, Response]
    role: str | None  # the least role that may call it (`edge_api.auth`); None: open to anyone
    description: str = ""
    request: Mapping[str, type[BaseModel]] = field(default_factory=dict)  # media type -> model of the body
    parameters: tuple[dict, ...] = ()  # OpenAPI Parameter Objects

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _json(op: Operation, result: BaseModel | Reply) -> web.Response:
    reply = result if isinstance(result, Reply) else Reply(result)
    spec = op.responses.get(reply.status)
    if not isinstance(spec, Json) or not isinstance(reply.body, spec.model):
        declared = spec.model.__name__ if isinstance(spec, Json) else spec
        raise UndeclaredReply(f"{op} answered {reply.status} with {type(reply.body).__name__}; declared: {declared}")
    return web.json_response(text=reply.body.model_dump_json(), status=reply.status, headers=dict(reply.headers))


def _wrap(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    streams = any(isinstance(spec, Stream) for spec in op.responses.values())

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            result = await op.handler(request)
        except UndeclaredReply:
            if streams and request.transport is not None:
                # Refused mid-stream (`Events.data`): the answer has begun and cannot become a 500. Cut the
                # connection, so the client sees the stream fail instead of waiting for its end.
                request.transport.close()
            raise
        if isinstance(result, web.StreamResponse):
            spec = op.responses.get(result.status)
            if spec is None or isinstance(spec, Json):  # a JSON answer must be its model, serialised here
                raise UndeclaredReply(f"{op} answered {result.status} with a {type(result).__name__}; declared: {spec}")
            return result
        return _json(op, result)

    handle.__name__ = handle.__qualname__ = getattr(op.handler, "__name__", op.operation_id)
    handle.operation = op  # type: ignore[attr-defined] - how tests and tools find a route's declaration
    return handle


def operation_of(route: web.AbstractRoute) -> Operation | None:
    """The declaration of a registered route (None for a route added without `register`)."""
    return getattr(route.handler, "operation", None)


def register(app: web.Application, operations: tuple[Operation, ...]) -> None:
    """Add every operation's route (a GET also answers HEAD, as aiohttp's `add_get` does)."""
    for op in operations:
        if op.method == "GET":
            app.router.add_get(op.path, _wrap(op))
        else:
            app.router.add_route(op.method, op.path, _wrap(op))


# --------------------------------------------------------------------------- shared responses

ERR_503 = Err(
    "`backbone_unavailable`: NATS is not connected or did not answer; nothing was accepted, retry later",
    retry_after=True,
)
ERR_500 = Err("`internal_error`: a bug; quote the `request_id` (the body says nothing of the server's internals)")

__all__ = [
    "ERR_500", "ERR_503", "Empty", "Err", "Event", "Events", "Json", "Media", "Operation", "Reply",
    "Stream", "UndeclaredReply", "derived_event", "operation_of", "register",
]  # fmt: skip
