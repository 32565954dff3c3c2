"""Every integer a request may carry is bounded (issue 16): a property of every declared operation.

An unbounded integer once reached the vector store (a `page_to` of 4,300 digits overflowed its float filter,
answered 502 and grew DEADLETTER). Here, over every operation of `edge_api.routes.OPERATIONS`: every integer
of its request models (bodies and forms, nested models included) and of its parameters declares a `maximum`;
and over real HTTP, every integer of a JSON body or form set just past its maximum, or to 400 digits, is a 400
naming the field, and every integer query parameter of 400 digits is a 400, before anything is published.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterator

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from bus.generations import GenerationStore
from bus.topology import ensure_topology
from contracts.topology import Subjects
from edge_api import EdgeSettings, create_app
from edge_api.routes import OPERATIONS
from tests.engine import NatsServer

HUGE = 10**400
PATH_VALUES = {"{doc_id}": "a" * 32, "{page}": "1", "{id}": "g1"}


def _resolve(schema: dict, defs: dict) -> dict:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def integers(schema: dict, defs: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """(path, schema) of every integer in `schema`: properties, nested models, nullable unions, array items."""
    schema = _resolve(schema, defs)
    for option in [*schema.get("anyOf", ()), *schema.get("oneOf", ()), *schema.get("allOf", ())]:
        yield from integers(option, defs, path)
    if schema.get("type") == "integer":
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from integers(sub, defs, (*path, name))
    if "items" in schema:
        yield from integers(schema["items"], defs, (*path, "[]"))


def request_integers() -> list[tuple[str, str, tuple[str, ...], dict]]:
    """(operation, where, path, schema) of every integer any declared operation takes."""
    found = []
    for op in OPERATIONS:
        for media, model in op.request.items():
            schema = model.model_json_schema()
            for path, sub in integers(schema, schema.get("$defs", {})):
                found.append((str(op), media, path, sub))
        for param in op.parameters:
            for path, sub in integers(param["schema"], {}):
                found.append((str(op), param["in"], (param["name"], *path), sub))
    return found


def test_every_integer_of_every_operation_has_an_upper_bound() -> None:
    found = request_integers()
    # The ones we know of must be among them (the walk itself works): top_k, page ranges, widths, pages, limits.
    names = {path[-1] for _, _, path, _ in found}
    assert {"top_k", "page_from", "page_to", "width", "page", "limit", "chunk_max_tokens"} <= names, names
    unbounded = [(op, where, ".".join(path)) for op, where, path, schema in found if "maximum" not in schema]
    assert not unbounded, f"integers without a declared maximum (bound them in the model or parameter): {unbounded}"
    unbounded_below = [(op, ".".join(path)) for op, _, path, schema in found if "minimum" not in schema]
    assert not unbounded_below, unbounded_below


def _set(body: dict, path: tuple[str, ...], value: int) -> dict:
    """`body` with `value` at `path`; a ``[]`` step is the first item of a list."""
    out = copy.deepcopy(body)
    node: dict | list = out
    for name, after in zip(path, path[1:]):  # noqa: B905 - the last step is set below
        empty: dict | list = [] if after == "[]" else {}
        if isinstance(node, list):
            node = node[0] if node else (node.append(empty) or node[0])
        else:
            if not isinstance(node.get(name), type(empty)):  # absent, or a placeholder word of `_example`
                node[name] = empty
            node = node[name]
    if isinstance(node, list):
        node.append(value)
    else:
        node[path[-1]] = value
    return out


def _field(path: tuple[str, ...]) -> str:
    """How an error names the field at `path` (list items by index)."""
    return ".".join("0" if name == "[]" else name for name in path)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def _example(schema: dict) -> dict:
    """A minimal valid body: each required text field a word."""
    return {name: "pumps" for name in schema.get("required", ())}


@pytest.fixture
async def edge(nats_server: NatsServer):  # noqa: ANN201
    nc = await nats.connect(nats_server.url)
    await ensure_topology(nc.jetstream())
    await (await GenerationStore.open(nc.jetstream())).bootstrap(1)
    published: list[str] = []

    async def seen(msg) -> None:  # noqa: ANN001
        published.append(msg.subject)

    await nc.subscribe(Subjects.query(Subjects.QUERY_RETRIEVE, "*"), cb=seen)
    app = create_app(EdgeSettings(nats_url=nats_server.url, auth="off"))  # local mode: every operation allowed
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        yield server, http, published
    await nc.close()


async def test_an_integer_past_its_bound_is_a_400_naming_it(edge) -> None:  # noqa: ANN001
    server, http, published = edge
    checked = 0
    for op in OPERATIONS:
        url = str(server.make_url(re.sub(r"\{[a-z_]+\}", lambda m: PATH_VALUES.get(m.group(0), "x1"), op.path)))
        for media, model in op.request.items():
            schema = model.model_json_schema()
            for path, sub in integers(schema, schema.get("$defs", {})):
                for value in (sub["maximum"] + 1, HUGE):
                    if media == "application/json":
                        kwargs: dict = {"json": _set(_example(schema), path, value)}
                    else:
                        if len(path) != 1:
                            continue
                        form = aiohttp.FormData()
                        form.add_field("image", _png(), filename="q.png", content_type="image/png")
                        form.add_field(path[0], str(value))
                        kwargs = {"data": form}
                    async with http.request(op.method, url, **kwargs) as resp:
                        body = await resp.json()
                        assert resp.status == 400, (str(op), path, value if value != HUGE else "HUGE", body)
                        fields = [d["field"] for d in body["error"].get("details") or []]
                        assert _field(path) in fields, (str(op), path, body)
                    checked += 1
        for param in op.parameters:
            if param["in"] != "query" or param["schema"].get("type") != "integer":
                continue
            async with http.request(op.method, url, params={param["name"]: str(HUGE)}) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["error"]["field"] == param["name"], (str(op), body)
            checked += 1
    assert checked >= 15, checked
    assert published == []  # nothing out of bounds reached the agents
