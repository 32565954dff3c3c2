"""Re-index (the `operator` role: it spans every tenant): start a new index generation, and follow it.

- ``POST /v1/reindex`` (body `contracts.generations.ReindexRequest`): creates generation N+1 ``building`` in
  the `mmrag-index` bucket, with the serving generation's settings plus the requested ones, and answers 202
  with its view. The agents (every process, through `agents.runtime.host`) start its consumers, which replay
  the ingest stream; the coordinator (`agents.reindexer`) flips the alias when it has caught up. 409
  ``reindex_running`` while another generation is building.
- ``GET /v1/reindex``: every generation, oldest first. ``GET /v1/reindex/{id}`` (``id`` = ``g<N>``): one.
- ``DELETE /v1/reindex/{id}``: cancel a building generation (409 ``not_cancellable`` once its flip began, or
  when it is not building): its consumers stop and the coordinator drops it at once.
- ``GET /v1/reindex/{id}/events``: Server-Sent Events ``progress`` (the view, each time it changes) until the
  generation is no longer building (it serves, or was cancelled) or its evaluation gate refused the flip
  (``gate_outcome.state`` ``refused``/``failed``: it stays building, unflipped), then ``done`` with the final view.
- A body's ``gate`` (`contracts.evaluation.EvaluationGate`): the coordinator evaluates the gate's questions on
  both generations once the new one is built and flips only if the metric is not worse beyond the tolerance.

The edge API never touches the vector store or the consumers: it writes and reads records; the agents act.
"""

from __future__ import annotations

import asyncio
import re

import nats.errors
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from pydantic import BaseModel, ConfigDict, Field

from bus.generations import NotCancellable, ReindexConflict
from contracts.generations import GenerationRecord, GenerationState, ReindexRequest
from edge_api.bodies import JSON_BODY_ERRORS, read_body
from edge_api.errors import ApiError, request_id
from edge_api.operations import ERR_503, Err, Event, Events, Json, Operation, Reply, Stream
from edge_api.routes.queries import ErrorData
from edge_api.state import backbone

REINDEX_PATH = "/v1/reindex"
REINDEX_ID_PATH = "/v1/reindex/{id}"
REINDEX_EVENTS_PATH = "/v1/reindex/{id}/events"
EVENTS_POLL_S = 0.5
_ID = re.compile(r"^g([1-9][0-9]{0,8})\Z")


class GenerationView(GenerationRecord):
    """An index generation as the API shows it: its record (`contracts.generations.GenerationRecord`) and its
    ``id``, the generation's token (``g2``). ``settings`` holds every overridable setting (null = the agents'
    process setting)."""

    id: str = Field(pattern=r"^g[1-9][0-9]*$", description="`g<N>`: use it in /v1/reindex/{id}")


class GenerationList(BaseModel):
    """Every index generation, oldest first (dropped ones included)."""

    model_config = ConfigDict(extra="forbid")

    generations: list[GenerationView]


def view(record: GenerationRecord) -> GenerationView:
    """A generation as the API shows it."""
    return GenerationView(id=record.index_generation.token, **dict(record))


EVENTS = Events(
    Event("progress", GenerationView, "the generation's view, at once and then each time it changes"),
    Event("done", GenerationView, "the final view, once the generation is no longer `building` or its gate "
          "refused the flip; the stream ends"),
    Event("error", ErrorData, "`backbone_unavailable`: NATS went away; the stream ends (follow again)"),
)


def _finished(record: GenerationRecord) -> bool:
    return record.state is not GenerationState.BUILDING or record.held  # held: its gate refused the flip


async def _record(request: web.Request) -> GenerationRecord:
    raw = request.match_info["id"]
    match = _ID.match(raw)
    record = await (await backbone(request).generations()).get(int(match.group(1))) if match else None
    if record is None:
        raise ApiError(404, "not_found", f"no index generation {raw[:20]!r} (ids look like g2)")
    return record


async def start_reindex(request: web.Request) -> Reply:
    bb = backbone(request)
    bb.jetstream()
    body = await read_body(request, ReindexRequest)
    try:
        record = await (await bb.generations()).start_reindex(body.settings, body.gate)
    except ReindexConflict as err:
        raise ApiError(409, "reindex_running", f"{err}: follow it at {REINDEX_PATH}/{err.building.index_generation.token}",
                       id=err.building.index_generation.token) from None  # fmt: skip
    except RuntimeError as err:  # no serving generation recorded: the agents never started
        raise ApiError(503, "backbone_unavailable", str(err), headers={"Retry-After": "1"}) from None
    started = view(record)
    return Reply(started, status=202, headers={"Location": f"{REINDEX_PATH}/{started.id}"})


async def list_generations(request: web.Request) -> GenerationList:
    bb = backbone(request)
    bb.jetstream()
    records = await (await bb.generations()).all()
    return GenerationList(generations=[view(r) for r in records])


async def get_generation(request: web.Request) -> GenerationView:
    backbone(request).jetstream()
    return view(await _record(request))


async def cancel_generation(request: web.Request) -> Reply:
    bb = backbone(request)
    bb.jetstream()
    record = await _record(request)
    try:
        cancelled = await (await bb.generations()).cancel(record.generation)
    except NotCancellable as err:
        raise ApiError(409, "not_cancellable", str(err)) from None
    assert cancelled is not None  # _record found it, and records are never deleted
    return Reply(view(cancelled), status=202)


async def generation_events(request: web.Request) -> web.StreamResponse:
    bb = backbone(request)
    bb.jetstream()
    record = await _record(request)
    generations = await bb.generations()
    response = EventSourceResponse(ping_interval=bb.settings.sse_ping_s, headers={"X-Request-Id": request_id(request)})
    await response.prepare(request)
    async with response:
        last = None
        try:
            while True:
                current = view(record)
                if current != last:
                    await response.send(EVENTS.data("progress", current), event="progress")
                    last = current
                if _finished(record):
                    await response.send(EVENTS.data("done", current), event="done")
                    break
                await asyncio.sleep(EVENTS_POLL_S)
                record = await generations.get(record.generation) or record
        except ConnectionResetError:
            pass  # the client went away
        except (nats.errors.Error, TimeoutError):
            message = ErrorData(code="backbone_unavailable", message="the message backbone went away; follow again")
            await response.send(EVENTS.data("error", message), event="error")
    return response


EVENTS_DESCRIPTION = """\
Follows a re-index as Server-Sent Events, each `data:` one JSON `GenerationView`:

- `progress`: the generation's view, sent at once and then each time it changes (documents rebuilt, messages
  still pending)
- `done`: the final view, once the generation is no longer `building` (it serves: the alias flipped), or its
  evaluation gate refused the flip (`gate_outcome.state` is `refused` or `failed`; `gate_outcome.reason` says
  why); the stream ends
- `error`: `{"code": "backbone_unavailable", "message"}`: NATS went away; the stream ends (follow again)
"""
GEN_ID = {
    "name": "id", "in": "path", "required": True, "description": "`g<N>`, the `id` the start answered with",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip
ERR_404_GEN = Err("`not_found`: no such index generation")

OPERATIONS = (
    Operation(
        "POST", REINDEX_PATH, start_reindex, "startReindex", "reindex", "Start a re-index (a new generation)",
        role="operator",
        description="Builds index generation N+1 beside the serving one by replaying every stored submission "
        "through new consumers into a new collection, with the serving generation's settings and the requested "
        "ones on top. The serving generation keeps answering; when the new one has caught up the alias flips, "
        "and the old one is dropped after `MMRAG_REINDEX_GRACE_S`. With a `gate`, the flip waits for an evaluation "
        "of both generations on the gate's questions and happens only if the new one is not worse.",
        request={"application/json": ReindexRequest},
        responses={
            202: Json("started; follow it at `Location`", GenerationView),
            **JSON_BODY_ERRORS,
            400: Err("`invalid_body`: an unknown field or a setting out of range; `details` names it"),
            409: Err("`reindex_running`: another generation is being built; `id` names it"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", REINDEX_PATH, list_generations, "listGenerations", "reindex", "Every index generation",
        role="operator",
        responses={200: Json("oldest first", GenerationList), 503: ERR_503},
    ),
    Operation(
        "GET", REINDEX_ID_PATH, get_generation, "getGeneration", "reindex", "One index generation's state",
        role="operator", parameters=(GEN_ID,),
        responses={200: Json("its state and progress", GenerationView), 404: ERR_404_GEN, 503: ERR_503},
    ),
    Operation(
        "DELETE", REINDEX_ID_PATH, cancel_generation, "cancelReindex", "reindex", "Cancel a building generation",
        role="operator", parameters=(GEN_ID,),
        description="Its consumers stop and it is dropped (collection, durables, progress keys) at once; the "
        "serving generation is untouched.",
        responses={
            202: Json("cancelled", GenerationView),
            404: ERR_404_GEN,
            409: Err("`not_cancellable`: it is not building, or its switch to serving has begun"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", REINDEX_EVENTS_PATH, generation_events, "followGeneration", "reindex", "Follow a re-index (SSE)",
        role="operator", parameters=(GEN_ID,),
        description=EVENTS_DESCRIPTION,
        responses={200: Stream("its progress events", EVENTS), 404: ERR_404_GEN, 503: ERR_503},
    ),
)  # fmt: skip
