"""The Python client (mmrag/client.py) checked against the OpenAPI document the edge API serves (built here from
the same declarations; tests/e2e/test_client_engine.py reads the served one): its models are the document's
schemas, each method calls an operation of it, the blocking client has every method, errors are typed by status."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

from edge_api.openapi import build_document, documented_operations
from mmrag import client as engine_client
from mmrag.client import AsyncClient, Client, error_from_body

MODELS = ["UploadAccepted", "DocumentView", "DeleteAccepted", "PageTextView", "ImageRef", "Hit", "ConversationData",
          "RetrievalData", "TokenData", "CitationData", "ResetData", "DoneData", "ErrorData"]  # fmt: skip


def _public_methods() -> dict[str, object]:
    return {n: f for n, f in inspect.getmembers(AsyncClient, inspect.isfunction) if not n.startswith("_")}


@pytest.mark.parametrize("name", MODELS)
def test_each_model_has_the_fields_of_the_documents_schema(name: str) -> None:
    schema = build_document()["components"]["schemas"][name]
    model: type[BaseModel] = getattr(engine_client, name)
    assert set(model.model_fields) == set(schema["properties"]), f"{name}: fields differ from the API's schema"
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert required <= set(schema.get("required", [])), f"{name} requires what the API may leave out"


def test_the_answer_events_are_the_documents() -> None:
    ask = build_document()["paths"]["/v1/ask"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    names = {option["properties"]["event"]["const"] for option in ask["schema"]["oneOf"]}
    assert set(engine_client.ASK_EVENTS) == names


def test_every_method_calls_an_operation_of_the_document() -> None:
    operations = documented_operations(build_document())
    methods = _public_methods()
    assert {n for n, f in methods.items() if not hasattr(f, "route")} == {"aclose"}
    wrong = {n: f.route for n, f in methods.items() if hasattr(f, "route") and f.route not in operations}
    assert not wrong, f"methods calling a route the API does not have: {wrong}"


def test_the_blocking_client_has_every_method() -> None:
    with Client("http://127.0.0.1:9") as blocking:
        for name, method in _public_methods().items():
            assert callable(getattr(blocking, name)), name
        with pytest.raises(AttributeError):
            blocking.no_such_method  # noqa: B018
        with pytest.raises(engine_client.EngineUnreachable):  # a call goes through the async client's HTTP path
            blocking.search("anything")


@pytest.mark.parametrize("status, kind", [
    (400, engine_client.InvalidRequest), (401, engine_client.Unauthorized), (403, engine_client.Forbidden),
    (404, engine_client.NotFound), (409, engine_client.Conflict), (413, engine_client.TooLarge),
    (422, engine_client.NotRenderable), (429, engine_client.TooManyRequests), (503, engine_client.Unavailable),
    (418, engine_client.EngineError),
])  # fmt: skip
def test_errors_are_typed_by_status(status: int, kind: type) -> None:
    body = b'{"error": {"code": "some_code", "message": "what happened", "request_id": "r"}}'
    err = error_from_body(status, body)
    assert type(err) is kind and err.status == status and err.code == "some_code"
    assert str(err) == f"HTTP {status}: what happened"
    assert err.transient is (status == 503)
