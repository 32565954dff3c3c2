"""The OpenAPI document (`edge_api.openapi`): valid OpenAPI 3.1, complete, and true of a running engine.

- The document validates against the OpenAPI 3.1 meta-schema (the one schemathesis ships) and every schema in
  it against JSON Schema 2020-12; every route the app registers has a declaration (`edge_api.operations`), and
  the document has an operation for each, with the role the auth middleware enforces.
- A handler that answers with a status, model or event its declaration does not state gets a 500 (so the
  engine tests below, and every test of the API, fail on it) instead of an undescribed body.
- schemathesis generates requests for every operation (the streaming ask included: it reads the event stream
  and checks each event against the document) against a real `mmrag up`, and checks that no answer is a 5xx
  and that every status, content type, header and body is the one the document states.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import aiohttp
import hypothesis
import jsonschema_rs
import PIL.Image
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp_sse import EventSourceResponse
from hypothesis import HealthCheck
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from contracts.messages import DocumentStatus
from edge_api.auth import required_role
from edge_api.errors import error_middleware
from edge_api.mcp import MCP_PATH
from edge_api.openapi import build_document, documented_operations
from edge_api.operations import Event, Events, Json, Operation, Reply, Stream, operation_of, register
from edge_api.routes import OPERATIONS
from edge_api.routes.api_reference import OPENAPI_PATH, PAGE_PATH
from edge_api.routes.documents import DocumentView
from edge_api.routes.health import Health, NotReady
from edge_api.settings import EdgeSettings
from tests.engine import Engine, upload_bytes, wait_status

MAX_UPLOAD_BYTES = 64 * 1024
MAX_EXAMPLES = 25  # per operation, in schemathesis' fuzzing phase (its examples and coverage phases add more)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _walk_schemas(document: dict) -> Iterator[tuple[str, object]]:
    """(where, schema) of every Schema Object in the document."""
    for name, schema in document["components"]["schemas"].items():
        yield f"components.schemas.{name}", schema
    for path, item in document["paths"].items():
        for key, op in item.items():
            if key == "parameters":
                for p in op:
                    yield f"{path} parameter {p['name']}", p["schema"]
                continue
            for p in op.get("parameters", []):
                yield f"{key} {path} parameter {p['name']}", p["schema"]
            bodies = [("request", op.get("requestBody", {}))] + list(op["responses"].items())
            for status, body in bodies:
                for media_type, media in body.get("content", {}).items():
                    yield f"{key} {path} {status} {media_type}", media["schema"]
                for header, definition in body.get("headers", {}).items():
                    yield f"{key} {path} {status} header {header}", definition["schema"]


# --------------------------------------------------------------------------- the document itself


def test_document_is_valid_openapi_3_1() -> None:
    document = build_document()
    assert document["openapi"].startswith("3.1.")
    errors = [
        f"{e.instance_path}: {e.message}" for e in jsonschema_rs.Draft202012Validator(OPENAPI_31).iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
    # The OpenAPI meta-schema leaves Schema Objects unchecked: each must be a valid JSON Schema 2020-12.
    for where, schema in _walk_schemas(document):
        assert jsonschema_rs.meta.is_valid(schema), f"{where} is not a valid JSON Schema: {schema}"
    json.dumps(document, allow_nan=False)  # plain JSON, servable as it is


def test_every_reference_resolves() -> None:
    document = build_document()
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {ref.split("/")[-1] for ref in _refs(document)}
    assert refs and refs <= names, f"dangling: {refs - names}"
    assert "$defs" not in text, "definitions must be hoisted into components.schemas"


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_route_is_declared_and_documented() -> None:
    """A route added to the app without a declaration fails here, and so does one missing from the document."""
    from edge_api.app import create_app

    app = create_app(EdgeSettings(nats_url="nats://127.0.0.1:1"))
    # /mcp speaks JSON-RPC (the Model Context Protocol describes it), not the REST API this document describes.
    routes = [r for r in app.router.routes() if r.resource is not None and r.resource.canonical != MCP_PATH]
    assert [r.method for r in app.router.routes() if r.resource.canonical == MCP_PATH] == ["*"]
    undeclared = [f"{r.method} {r.resource.canonical}" for r in routes if operation_of(r) is None]
    assert not undeclared, f"routes added without an Operation (declare them in their module's OPERATIONS): {undeclared}"
    for route in routes:  # each route runs the handler of its own declaration
        op = operation_of(route)
        assert route.resource.canonical == op.path and route.method in (op.method, "HEAD"), (route, op)
    registered = {(r.method, r.resource.canonical) for r in routes}
    # aiohttp answers HEAD on every GET route (add_get's allow_head); the document says so once, in its info.
    implicit_heads = {("HEAD", path) for method, path in registered if method == "GET"}
    assert registered - implicit_heads == documented_operations() == {(op.method, op.path) for op in OPERATIONS}


def test_declared_roles_are_the_enforced_ones() -> None:
    """The document's security comes from each declaration's role; the auth middleware must enforce the same."""
    wrong = [(str(op), op.role, required_role(op.method, op.path)) for op in OPERATIONS
             if op.role != required_role(op.method, op.path)]  # fmt: skip
    assert not wrong, f"declared vs enforced (edge_api.auth): {wrong}"


def test_document_view_shows_every_status_but_deleted() -> None:
    statuses = set(DocumentView.model_json_schema()["properties"]["status"]["enum"])
    assert statuses == {s.value for s in DocumentStatus} - {"deleted"}


def test_error_responses_use_the_error_schema() -> None:
    for path, item in build_document()["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and not (path == "/ready" and status == "503"):
                    assert response["content"] == {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    }, f"{method} {path} {status}"


# --------------------------------------------------------------------------- against a running engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[Engine]:
    """One `mmrag up` for this module, with a small upload limit (so generated uploads can cross it)."""
    root = tmp_path_factory.mktemp("openapi-engine")
    eng = Engine(
        root / "data", root / "engine.log",
        env={"MMRAG_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "MMRAG_QUERY_TIMEOUT_S": "20"},
    ).start()  # fmt: skip
    try:
        asyncio.run(_seed(eng.url))
    except BaseException:
        eng.stop()
        raise
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


# --------------------------------------------------------------------------- a body its declaration rejects


class Other(BaseModel):
    status: str


async def _answers(*operations: Operation) -> dict[str, tuple[int, str]]:
    """path -> (status, body text) of a GET to each operation, served over loopback like the real app."""
    app = web.Application(middlewares=[error_middleware])
    register(app, operations)
    out = {}
    async with TestServer(app) as server, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for op in operations:
            async with http.get(server.make_url(op.path)) as resp:
                try:
                    out[op.path] = (resp.status, await resp.text())
                except aiohttp.ClientPayloadError:  # the server cut the answer
                    out[op.path] = (resp.status, "<cut>")
    return out


async def test_an_undeclared_body_status_or_event_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def declared(request: web.Request) -> Health:
        return Health(status="ok", nats="connected")

    async def other_model(request: web.Request) -> Other:
        return Other(status="ok")

    async def other_status(request: web.Request) -> Reply:
        return Reply(NotReady(status="not ready", nats="disconnected"), status=503)

    async def raw_json(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "nats": "connected"})  # right shape, but not through the model

    async def other_event(request: web.Request) -> web.StreamResponse:
        response = EventSourceResponse()
        await response.prepare(request)
        async with response:
            await response.send(EVENTS.data("health", Other(status="ok")), event="health")
        return response

    EVENTS = Events(Event("health", Health, "the health"))  # noqa: N806 - as a route module names it
    ops = [
        Operation("GET", f"/{handler.__name__}", handler, handler.__name__, "t", "s", role=None,
                  responses={200: Json("ok", Health)} if handler is not other_event else {200: Stream("s", EVENTS)})
        for handler in (declared, other_model, other_status, raw_json, other_event)
    ]  # fmt: skip
    answers = await _answers(*ops)
    assert answers["/declared"] == (200, '{"status":"ok","nats":"connected"}')
    for path in ("/other_model", "/other_status", "/raw_json"):
        status, text = answers[path]
        assert status == 500 and json.loads(text)["error"]["code"] == "internal_error", (path, text)
    # A stream has begun when its event is refused: the connection is cut there, without the undeclared data.
    assert answers["/other_event"] == (200, "<cut>")
    logged = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    for wanted in ("GET /other_model answered 200 with Other", "GET /other_status answered 503 with NotReady",
                   "GET /raw_json answered 200 with a Response", "event 'health' sent a Other"):  # fmt: skip
        assert wanted in logged, logged


def test_served_document_is_the_built_one(engine: Engine) -> None:
    served = requests.get(f"{engine.url}{OPENAPI_PATH}", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == build_document()


def test_reference_page_is_self_contained(engine: Engine) -> None:
    page = requests.get(f"{engine.url}{PAGE_PATH}", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "openapi.json" in page.text
    for external in ("http://", "https://", "//cdn", "fonts.googleapis"):
        assert external not in page.text, f"the page must load nothing from elsewhere ({external!r})"
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]


SEED = (
    b"# Pumps\n\nThe centrifugal pump P-101 moves cooling water at 40 litres per second.\n\n"
    b"## Maintenance\n\nReplace the seal of P-101 every 2000 hours of operation.\n"
)


async def _seed(url: str) -> None:
    """One indexed document, so that searches and answers have hits (the `Hit` schema is then exercised)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        resp = await upload_bytes(http, url, SEED, "pumps.md", "text/markdown")
        assert resp.status == 202, await resp.text()
        await wait_status(http, url, (await resp.json())["doc_id"], {"indexed"})


# Loaded from the built document (equal to the served one, see above): `schemathesis.pytest.from_fixture`, which
# could load it from the engine, fails on pytest 9 (it sets `Function._nodeid`, which pytest 9 no longer has).
schema = schemathesis.openapi.from_dict(build_document())


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_document(case: schemathesis.Case, engine: Engine) -> None:
    """Every generated request (valid and invalid ones): no 5xx, and the answer is what the document says."""
    case.call_and_validate(base_url=engine.url, checks=CHECKS, timeout=60)


def test_document_lifecycle_conforms(engine: Engine) -> None:
    """What random ids cannot reach: a real document's upload, status, list page, search hit, answer, delete."""
    # schemathesis names the part `file` with no content type: a PNG is known by its bytes whatever its name.
    image = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), "white").save(image, format="PNG")
    upload = schema["/v1/documents"]["POST"].Case(body={"file": image.getvalue()}, media_type="multipart/form-data")
    accepted = upload.call_and_validate(base_url=engine.url, checks=CHECKS, timeout=60)
    assert accepted.status_code == 202, accepted.text
    doc_id = accepted.json()["doc_id"]
    status = schema["/v1/documents/{doc_id}"]["GET"].Case(path_parameters={"doc_id": doc_id})
    assert status.call_and_validate(base_url=engine.url, checks=CHECKS).status_code == 200
    page = schema["/v1/documents"]["GET"].Case(query={"limit": 1})
    first = page.call_and_validate(base_url=engine.url, checks=CHECKS)
    assert first.status_code == 200 and first.json()["next_cursor"] is not None, first.text
    rest = schema["/v1/documents"]["GET"].Case(query={"limit": 200, "cursor": first.json()["next_cursor"]})
    assert rest.call_and_validate(base_url=engine.url, checks=CHECKS).json()["documents"]
    search = schema["/v1/search"]["POST"].Case(
        body={"query": "how often is the seal replaced?", "top_k": 3}, media_type="application/json"
    )
    hits = search.call_and_validate(base_url=engine.url, checks=CHECKS, timeout=60).json()["hits"]
    assert any(hit["filename"] == "pumps.md" for hit in hits), hits
    ask = schema["/v1/ask"]["POST"].Case(body={"question": "How often is the seal of P-101 replaced?"})
    stream = ask.call_and_validate(base_url=engine.url, checks=CHECKS, timeout=60)
    assert "event: citation" in stream.text and "event: done" in stream.text, stream.text
    delete = schema["/v1/documents/{doc_id}"]["DELETE"].Case(path_parameters={"doc_id": doc_id})
    assert delete.call_and_validate(base_url=engine.url, checks=CHECKS).status_code == 202
    assert status.call_and_validate(base_url=engine.url, checks=CHECKS).status_code == 404


async def test_ask_errors_before_the_stream_are_json(engine: Engine) -> None:
    """The ask's 400 and 415 come before any event: plain JSON errors in the document's error schema."""
    validator = jsonschema_rs.Draft202012Validator(_component("ErrorBody"))
    async with aiohttp.ClientSession() as http:
        cases = [
            (dict(json={"question": "   "}), 400, "invalid_body"),
            (dict(json={"question": "why?", "top_k": "5"}), 400, "invalid_body"),
            (dict(data=b"question=why", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        ]
        for kwargs, status, code in cases:
            async with http.post(f"{engine.url}/v1/ask", **kwargs) as resp:
                assert resp.status == status
                assert resp.content_type == "application/json"
                body = await resp.json()
                validator.validate(body)
                assert body["error"]["code"] == code


def _component(name: str) -> dict:
    """A component schema with the document's other components, so its references resolve."""
    document = build_document()
    components = document["components"]["schemas"]
    return {**components[name], "components": {"schemas": components}}
