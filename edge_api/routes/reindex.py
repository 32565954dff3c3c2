"""Re-index (admin): start a new index generation, and follow it.

- ``POST /v1/reindex`` (body `contracts.generations.ReindexRequest`): creates generation N+1 ``building`` in
  the `mmrag-index` bucket, with the serving generation's settings plus the requested ones, and answers 202
  with its view. The agents (every process, through `agents.runtime.host`) start its consumers, which replay
  the ingest stream; the coordinator (`agents.reindexer`) flips the alias when it has caught up. 409
  ``reindex_running`` while another generation is building.
- ``GET /v1/reindex``: every generation, oldest first. ``GET /v1/reindex/{id}`` (``id`` = ``g<N>``): one.
- ``DELETE /v1/reindex/{id}``: cancel a building generation (409 ``not_cancellable`` once its flip began, or
  when it is not building): its consumers stop and the coordinator drops it at once.
- ``GET /v1/reindex/{id}/events``: Server-Sent Events ``progress`` (the view, each time it changes) until the
  generation is no longer building (it serves, or was cancelled), then ``done`` with the final view.

The edge API never touches the vector store or the consumers: it writes and reads records; the agents act.
"""

from __future__ import annotations

import asyncio
import json
import re

import nats.errors
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from pydantic import BaseModel, ConfigDict, Field

from bus.generations import NotCancellable, ReindexConflict
from contracts.generations import GenerationRecord, GenerationState, ReindexRequest
from edge_api.bodies import read_body
from edge_api.errors import ApiError, request_id
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


def view(record: GenerationRecord) -> dict:
    """A generation as the API shows it (a `GenerationView`)."""
    return GenerationView(id=record.index_generation.token, **dict(record)).model_dump(mode="json")


def _finished(record: GenerationRecord) -> bool:
    return record.state is not GenerationState.BUILDING


async def _record(request: web.Request) -> GenerationRecord:
    raw = request.match_info["id"]
    match = _ID.match(raw)
    record = await (await backbone(request).generations()).get(int(match.group(1))) if match else None
    if record is None:
        raise ApiError(404, "not_found", f"no index generation {raw[:20]!r} (ids look like g2)")
    return record


async def start_reindex(request: web.Request) -> web.Response:
    bb = backbone(request)
    bb.jetstream()
    body = await read_body(request, ReindexRequest)
    try:
        record = await (await bb.generations()).start_reindex(body.settings)
    except ReindexConflict as err:
        raise ApiError(409, "reindex_running", f"{err}: follow it at {REINDEX_PATH}/{err.building.index_generation.token}",
                       id=err.building.index_generation.token) from None  # fmt: skip
    except RuntimeError as err:  # no serving generation recorded: the agents never started
        raise ApiError(503, "backbone_unavailable", str(err), headers={"Retry-After": "1"}) from None
    return web.json_response(view(record), status=202, headers={"Location": f"{REINDEX_PATH}/{view(record)['id']}"})


async def list_generations(request: web.Request) -> web.Response:
    bb = backbone(request)
    bb.jetstream()
    records = await (await bb.generations()).all()
    return web.json_response({"generations": [view(r) for r in records]})


async def get_generation(request: web.Request) -> web.Response:
    backbone(request).jetstream()
    return web.json_response(view(await _record(request)))


async def cancel_generation(request: web.Request) -> web.Response:
    bb = backbone(request)
    bb.jetstream()
    record = await _record(request)
    try:
        cancelled = await (await bb.generations()).cancel(record.generation)
    except NotCancellable as err:
        raise ApiError(409, "not_cancellable", str(err)) from None
    assert cancelled is not None  # _record found it, and records are never deleted
    return web.json_response(view(cancelled), status=202)


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
                    await response.send(json.dumps(current), event="progress")
                    last = current
                if _finished(record):
                    await response.send(json.dumps(current), event="done")
                    break
                await asyncio.sleep(EVENTS_POLL_S)
                record = await generations.get(record.generation) or record
        except ConnectionResetError:
            pass  # the client went away
        except (nats.errors.Error, TimeoutError):
            message = {"code": "backbone_unavailable", "message": "the message backbone went away; follow again"}
            await response.send(json.dumps(message), event="error")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post(REINDEX_PATH, start_reindex)
    app.router.add_get(REINDEX_PATH, list_generations)
    app.router.add_get(REINDEX_ID_PATH, get_generation)
    app.router.add_delete(REINDEX_ID_PATH, cancel_generation)
    app.router.add_get(REINDEX_EVENTS_PATH, generation_events)
