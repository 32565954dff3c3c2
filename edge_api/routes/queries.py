"""Questions and searches: publish a `QueryRequest`, read its events from ``answer.<tenant>.<request_id>``.

The subscription is made before the request is published, so no event can be missed. Events may arrive
duplicated and out of order (a retried stage emits its events again under the same numbers): every event
goes through `bus.answers.AnswerSequencer`, and the client sees each exactly once, in seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats.errors
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.answers import AnswerSequencer
from bus.conversations import ConversationLimit, ConversationNotFound, ConversationStore, StorageFull
from contracts.conversations import MAX_ANSWER_CHARS, MAX_CITATION_TEXT_CHARS, MAX_TURN_CITATIONS, Turn, TurnCitation
from bus.publish import Outgoing, publish
from contracts.messages import (
    AnswerEvent,
    CitationEvent,
    DoneEvent,
    MAX_HISTORY_TURNS,
    MAX_PRIOR_ANSWER_CHARS,
    ErrorEvent,
    Hit,
    PriorTurn,
    QueryFilters,
    QueryMode,
    QueryRequest,
    ResetEvent,
    ResultsEvent,
    RetrievalEvent,
    TokenEvent,
    answer_event_adapter,
)
from contracts.topology import Subjects
from edge_api.bodies import JSON_BODY_ERRORS, MAX_TOP_K, MIN_TOP_K, AskBody, SearchBody, read_body
from edge_api.cache import (
    MISS_NO_STORE,
    AnswerCache,
    Lookup,
    SentEvent,
    answer_cache,
    cacheable_answer,
    decode_events,
    encode_events,
)
from edge_api.errors import ApiError, BackboneLost, request_id
from edge_api.identity import tenant_of
from edge_api.operations import ERR_503, Err, Event, Events, Json, Operation, Stream, derived_event
from edge_api.routes.conversations import limit_error, not_found, owner_of
from edge_api.query_image_upload import delete_query_image, read_image_search, store_query_image
from edge_api.state import Backbone, backbone

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
# Fields of an event that are the stream's framing, not its data (the SSE event name and id carry them).
FRAMING_FIELDS = frozenset({"schema_version", "request_id", "seq", "event", "attempt"})



class ConversationData(BaseModel):
    """The first event of an ask in a conversation: which conversation, and the number its answer's turn gets."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str
    turn: int = Field(ge=1, description="the turn this answer becomes (`PUT .../turns/{turn}/feedback` rates it)")


# The events of `/v1/ask` in stream order; each `data:` is the contract event without its framing fields.
ASK_EVENTS = Events(
    Event("conversation", ConversationData, "no `id`; first, only with `conversation_id`: the turn being answered"),
    derived_event("retrieval", RetrievalEvent, "`id: 0`; the hits the answer is built from, best first", FRAMING_FIELDS),
    derived_event("token", TokenEvent, "`id: 1, 2, ...`; the next piece of the answer text", FRAMING_FIELDS),
    derived_event("citation", CitationEvent, "`id: 1, 2, ...`; a source the answer cites as [n]", FRAMING_FIELDS),
    derived_event(
        "reset", ResetEvent, "`id: n`; discard the answer text streamed so far: a new attempt follows from scratch",
        FRAMING_FIELDS,
    ),
    derived_event("done", DoneEvent, "the last event of a complete answer", FRAMING_FIELDS),
    derived_event(
        "error", ErrorEvent, "ends the stream; `code` is `timeout`, `backbone_unavailable` or an agent's code",
        FRAMING_FIELDS,
    ),
)
ErrorData = ASK_EVENTS.by_name["error"].model  # `{"code", "message"}`: how every stream of the API ends in error


class SearchResults(BaseModel):
    """The best chunks for the query, best first."""

    model_config = ConfigDict(extra="forbid")

    hits: list[Hit]


class SearchImageForm(BaseModel):
    """`multipart/form-data`: search with an image (what is in it, or the same picture), optionally with text."""

    image: bytes = Field(
        json_schema_extra={"format": "binary", "contentMediaType": "application/octet-stream"},
        description="PNG, JPEG, WebP or TIFF (the type is read from the bytes), at most MMRAG_MAX_QUERY_IMAGE_BYTES "
        "and 40 megapixels",
    )
    query: str | None = Field(default=None, description="text searched together with the image")
    top_k: int | None = Field(default=None, ge=MIN_TOP_K, le=MAX_TOP_K, description="decimal integer (default 10)")
    filters: str | None = Field(default=None, description="the JSON of a search body's `filters`")


class QueryTimeout(Exception):
    pass


ASK_ROUTE, SEARCH_ROUTE = "/v1/ask", "/v1/search"


@dataclass(frozen=True)
class Pending:
    """A request on its way: the subscription to its answer subject, the request, its cache lookup, and the
    connection's `Backbone.outage` it was published on. When `cached.value` is set the answer came from the
    answer cache and nothing was published."""

    sub: Subscription
    query: QueryRequest
    cached: Lookup
    outage: asyncio.Future[None]


@contextlib.asynccontextmanager
async def _query(
    bb: Backbone, tenant: str, text: str | None, top_k: int, mode: QueryMode, filters: QueryFilters,
    image: bytes | None = None,
    cache: AnswerCache | None = None, route: str = "", history: list[PriorTurn] | None = None,
) -> AsyncIterator[Pending]:  # fmt: skip
    """Subscribe to the request's answer subject, then publish the request; unsubscribe (and delete the query
    image, if any) at exit."""
    js = bb.jetstream()
    assert bb.nc is not None
    outage = bb.outage()  # taken while connected: done if this connection is lost before the answer came
    rid = uuid.uuid4().hex
    sub = await bb.nc.subscribe(Subjects.answer(tenant, rid))
    stored = None
    try:
        stored = await store_query_image(js, tenant, rid, image) if image is not None else None
        query = QueryRequest(request_id=rid, tenant=tenant, query=text, top_k=top_k, mode=mode, filters=filters,
                             image=stored, history=history or [])  # fmt: skip
        # The lookup reads the tenant's cache epoch *before* the request is published (see edge_api.cache).
        cached = MISS_NO_STORE if cache is None else await cache.lookup(query, route, (await bb.serving_generation()).number)
        if cached.value is None:
            await publish(
                js,
                Outgoing(Subjects.query(Subjects.QUERY_RETRIEVE, tenant), query, msg_id=rid),
                timeout_s=PUBLISH_TIMEOUT_S,
            )
        yield Pending(sub, query, cached, outage)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if stored is not None and bb.is_connected:  # else the bucket's TTL removes it, without waiting on an outage
            with contextlib.suppress(Exception):
                await delete_query_image(js, stored)


async def _events(pending: Pending, timeout_s: float) -> AsyncIterator[AnswerEvent]:
    """The request's events as the client must see them; ends after the terminal one.

    Raises `QueryTimeout` when `timeout_s` passes without any event arriving, and `BackboneLost` as soon as the
    connection the request was published on is lost (its answer would never come).
    """
    sequencer = AnswerSequencer()
    while not sequencer.finished:
        msg = await _next_answer(pending, timeout_s)
        try:
            event = answer_event_adapter.validate_json(msg.data)
        except ValidationError as err:
            log.warning("ignored an invalid answer event on %s: %s", msg.subject, err.errors(include_url=False)[:1])
            continue
        for ready in sequencer.push(event):
            yield ready


async def _next_answer(pending: Pending, timeout_s: float) -> Msg:
    """The next message on the answer subject; `QueryTimeout` after `timeout_s`, `BackboneLost` on an outage."""
    if pending.outage.done():
        raise BackboneLost
    receiving = asyncio.ensure_future(pending.sub.next_msg(timeout=timeout_s))
    try:
        await asyncio.wait((receiving, pending.outage), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiving.done():
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
                await receiving
    if receiving.cancelled():
        raise BackboneLost
    try:
        return receiving.result()
    except nats.errors.TimeoutError:
        raise QueryTimeout from None


def event_data(event: AnswerEvent) -> str:
    return ASK_EVENTS.data(event.event, event)


@dataclass(frozen=True)
class InConversation:
    """An ask in a conversation: where its turn goes, and the turns it may follow up on."""

    store: ConversationStore
    tenant: str
    owner: str
    conversation_id: str
    turn: int
    history: list[PriorTurn]
    regenerate: bool


def prior_turn(turn: Turn) -> PriorTurn:
    doc_ids = list(dict.fromkeys(c.doc_id for c in turn.citations))
    return PriorTurn(question=turn.searched, answer=turn.answer[:MAX_PRIOR_ANSWER_CHARS], doc_ids=doc_ids)


async def _conversation(request: web.Request, body: AskBody) -> InConversation | None:
    """The conversation an ask belongs to (None without `conversation_id`); 404/409 before anything is asked."""
    if body.conversation_id is None:
        if body.regenerate:
            raise ApiError(400, "invalid_body", "`regenerate` needs the `conversation_id` whose last answer it redoes")
        return None
    store = await backbone(request).conversations()
    tenant, owner = tenant_of(request), owner_of(request)
    found = await store.get(tenant, owner, body.conversation_id)
    if found is None:
        raise not_found(body.conversation_id)
    prior = found.turns[:-1] if body.regenerate else found.turns
    if len(prior) >= store.max_turns:
        raise limit_error(ConversationLimit("turns", store.turn_limit_message()))
    history = [prior_turn(t) for t in prior[-MAX_HISTORY_TURNS:]]
    return InConversation(store, tenant, owner, body.conversation_id, len(prior) + 1, history, body.regenerate)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def turn_of(question: str, sent: list[SentEvent]) -> Turn | None:
    """The turn an answer's events make (None unless it ended with `done`): the text after the last `reset`."""
    searched, text, citations = question, [], []
    for name, data, _ in sent:
        fields = json.loads(data) if data else {}
        if name == "retrieval":
            searched = fields.get("searched") or question
        elif name == "token":
            text.append(fields["text"])
        elif name == "reset":
            text, citations = [], []
        elif name == "citation" and len(citations) < MAX_TURN_CITATIONS:
            citations.append(TurnCitation(n=fields["n"], doc_id=fields["doc_id"], filename=fields["filename"],
                                          page=fields["page"], bbox=fields.get("bbox"),
                                          text=_clip(fields.get("text") or "", MAX_CITATION_TEXT_CHARS)))  # fmt: skip
        elif name == "done":
            return Turn(n=1, question=question, searched=searched, answer=_clip("".join(text), MAX_ANSWER_CHARS),
                        answerer=fields["answerer"], abstained=fields.get("abstained", False), citations=citations)  # fmt: skip
    return None


async def _keep_turn(request: web.Request, conv: InConversation, question: str, sent: list[SentEvent]) -> None:
    turn = turn_of(question, sent)
    if turn is None:  # an error or a timeout: nothing to keep, the question can be asked again
        return
    try:
        await conv.store.append(conv.tenant, conv.owner, conv.conversation_id, turn, replace_last=conv.regenerate)
    except (ConversationLimit, ConversationNotFound, StorageFull) as err:  # deleted or filled while answering
        log.info("request %s: answer not kept in conversation %s: %s", request_id(request), conv.conversation_id, err)


async def ask(request: web.Request) -> web.StreamResponse:
    bb = backbone(request)
    bb.jetstream()
    body = await read_body(request, AskBody)
    conv = await _conversation(request, body)
    timeout_s = bb.settings.query_timeout_s
    # A regenerated answer must not be the cached one; a follow-up's key includes its history (the request's).
    cache = None if body.regenerate else answer_cache(request)
    async with _query(
        bb, tenant_of(request), body.question, body.top_k, QueryMode.ASK, body.filters, cache=cache, route=ASK_ROUTE,
        history=conv.history if conv is not None else None,
    ) as pending:  # fmt: skip
        # Until here every failure is a JSON error; from here on it can only be an `error` event.
        response = EventSourceResponse(
            ping_interval=bb.settings.sse_ping_s, allow_all_methods=True, headers={"X-Request-Id": request_id(request)}
        )
        await response.prepare(request)
        async with response:
            try:
                if conv is not None:
                    started = ConversationData(conversation_id=conv.conversation_id, turn=conv.turn)
                    await response.send(ASK_EVENTS.data("conversation", started), event="conversation")
                if pending.cached.value is not None:  # the same events, in the same order, as when it was answered
                    sent = decode_events(pending.cached.value)
                    for name, data, sid in sent:
                        await response.send(data, event=name, id=sid)
                else:
                    sent = await _stream_answer(request, response, pending, timeout_s)
                    if cache is not None and cacheable_answer(sent):  # never an error, a timeout or a failed-over answer
                        await cache.store(pending.cached.slot, encode_events(sent))
                if conv is not None:  # before the stream ends: a client that reads the conversation next sees it
                    await _keep_turn(request, conv, body.question, sent)
            except ConnectionResetError:  # the client went away: nothing left to tell it
                log.info("request %s: client closed the answer stream", request_id(request))
    return response


async def _stream_answer(
    request: web.Request, response: EventSourceResponse, pending: Pending, timeout_s: float
) -> list[SentEvent]:
    """Send the request's events as they come; returns what was sent (an `error` it ends with included)."""
    sent: list[SentEvent] = []
    try:
        async for event in _events(pending, timeout_s):
            data, sid = event_data(event), None if event.seq is None else str(event.seq)
            await response.send(data, event=event.event, id=sid)
            sent.append((event.event, data, sid))
    except QueryTimeout:
        timeout = ErrorData(code="timeout", message=f"no answer event within {timeout_s}s")
        await response.send(ASK_EVENTS.data("error", timeout), event="error")
        sent.append(("error", "", None))
    except (nats.errors.Error, TimeoutError) as err:
        log.warning("request %s: answer stream lost: %r", request_id(request), err)
        gone = ErrorData(
            code="backbone_unavailable",
            message="the message backbone (NATS) became unreachable while the answer was on its way; ask again in a moment",
        )
        await response.send(ASK_EVENTS.data("error", gone), event="error")
        sent.append(("error", "", None))
    return sent


async def search(request: web.Request) -> SearchResults:
    bb = backbone(request)
    bb.jetstream()
    image = None
    if request.content_type == "multipart/form-data":  # an image search (edge_api.query_image_upload)
        form = await read_image_search(request, max_bytes=bb.settings.max_query_image_bytes)
        text, top_k, filters, image = form.query, form.top_k, form.filters, form.image
    else:
        body = await read_body(request, SearchBody)
        text, top_k, filters = body.query, body.top_k, body.filters
    timeout_s = bb.settings.query_timeout_s
    cache = None if image is not None else answer_cache(request)  # an image search is never the same twice
    async with _query(
        bb, tenant_of(request), text, top_k, QueryMode.SEARCH, filters, image, cache=cache, route=SEARCH_ROUTE
    ) as pending:
        if pending.cached.value is not None:
            return SearchResults.model_validate_json(pending.cached.value)
        try:
            async for event in _events(pending, timeout_s):
                if isinstance(event, ResultsEvent):
                    results = SearchResults(hits=event.hits)
                    if cache is not None:
                        await cache.store(pending.cached.slot, results.model_dump_json().encode())
                    return results
                if isinstance(event, ErrorEvent):
                    raise ApiError(502, "query_failed", event.message, reason=event.code)
        except QueryTimeout:
            raise ApiError(504, "timeout", f"no search results within {timeout_s}s") from None
    raise ApiError(502, "query_failed", "the search ended without results", reason="no_results")


ASK_DESCRIPTION = """\
Answers the question as a stream of Server-Sent Events. Each event's `event:` is its type, `id:` its sequence
number (none on `conversation` and `error`), `data:` one JSON object (the schemas `ConversationData`,
`RetrievalData`, `TokenData`, `CitationData`, `ResetData`, `DoneData`, `ErrorData`):

- `conversation` (no id; only with `conversation_id`, first): `{"conversation_id", "turn"}`: the turn this answer
  becomes; the question may follow up on the earlier turns, and the answer is kept as that turn when it ends
- `retrieval` (id 0): `{"hits": [<Hit>...], "searched"}`: `searched` is the question that was searched (a
  follow-up resolved against its conversation)
- `token` (1, 2, ...): `{"text"}`, the next piece of the answer
- `citation` (1, 2, ...): `{"n", "doc_id", "filename", "page", "bbox", "text", "image"}`
- `reset` (n): `{"reason"}`: an LLM provider failed mid-answer, or the generation was redelivered after a partial
  answer; discard the `token` text received so far, a new answer follows from scratch (a client shows the text
  after the last `reset`)
- `done` (last): `{"answerer", "abstained"}`; the stream ends. `abstained` is true when nothing retrieved scored
  above `MMRAG_ABSTAIN_THRESHOLD`: the answer says it was not found in your documents, without citations
- `error`: `{"code", "message"}`; the stream ends. `code` is `timeout` when no event came for
  `MMRAG_QUERY_TIMEOUT_S`, `backbone_unavailable` when NATS went away, or an agent's code

Each event is delivered exactly once and in `id` order. Lines starting with `:` are keep-alive comments
(every `MMRAG_SSE_PING_S` seconds). Failures before the stream starts are JSON errors; after it started,
only an `error` event.
"""

OPERATIONS = (
    Operation(
        "POST", ASK_ROUTE, ask, "ask", "queries", "Ask a question; the answer streams (SSE)", role="reader",
        description=ASK_DESCRIPTION,
        request={"application/json": AskBody},
        responses={
            200: Stream("the answer's events", ASK_EVENTS), **JSON_BODY_ERRORS,
            404: Err("`not_found`: `conversation_id` names no conversation of this API key"),
            409: Err("`conversation_full`: the conversation has `MMRAG_CONVERSATION_MAX_TURNS` turns: start a new one"),
            503: ERR_503,
        },
    ),
    Operation(
        "POST", SEARCH_ROUTE, search, "search", "queries", "The best chunks for a query", role="reader",
        description="JSON searches with text; `multipart/form-data` with an `image` field searches with an image: "
        "the same picture in a document (CLIP, or its perceptual hash), and the text read in it.",
        request={"application/json": SearchBody, "multipart/form-data": SearchImageForm},
        responses={
            200: Json("the hits, best first", SearchResults),
            400: Err(
                "`invalid_body` as for JSON (a form's fields too); for a form also `missing_field` (no "
                "`image`), `invalid_field` (unknown or repeated field), `invalid_multipart`, `empty_image`, "
                "`invalid_image` (unreadable header, 0-pixel side)"
            ),
            413: Err("`too_large`: a JSON body over 64 KiB, an image over MMRAG_MAX_QUERY_IMAGE_BYTES; "
                     "`image_too_large`: an image of more than 40 megapixels (an image bomb)"),
            415: Err("`unsupported_media_type`: neither JSON nor multipart/form-data, or an `image` that "
                     "is not a PNG, JPEG, WebP or TIFF by its content"),
            502: Err("`query_failed`: the agents failed the query; `reason` is their error code"),
            503: ERR_503,
            504: Err("`timeout`: no results within `MMRAG_QUERY_TIMEOUT_S`"),
        },
    ),
)  # fmt: skip
