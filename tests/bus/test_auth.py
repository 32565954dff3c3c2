"""API keys, roles and tenant isolation: the edge API with MMRAG_AUTH=on against a real nats-server.

The tests act as the agents (as in tests/bus/test_edge_api.py): they read the QueryRequests the API publishes on
``query.retrieve.<tenant>`` and answer on ``answer.<tenant>.<request_id>``. That the retriever searches only
the request's tenant is tested with the agents; here: the request always carries the key's tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from httpx_sse import aconnect_sse

from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import DocumentStatus, DoneEvent, Hit, QueryRequest, ResultsEvent, RetrievalEvent
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects, uploads_bucket
from edge_api import EdgeSettings, create_app
from edge_api.keys import KEY_PREFIX, KeyRing, create_key, hash_key, load_file, revoke_key
from edge_api.openapi import build_document
from mmrag import client as engine_client
from mmrag.runner import _auth_env
from tests.engine import NatsServer
from tests.uploads import uploads_state as tenant_uploads_state

WAIT_S = 30.0
A, B = "tenant-a", "tenant-b"


@dataclass
class AuthEdge:
    base: str
    nc: nats.NATS
    http: aiohttp.ClientSession
    keys_file: Path
    keys: dict[str, str]  # name -> key
    ids: dict[str, str]  # name -> key id

    async def call(self, method: str, path: str, key: str | None = None, **kwargs: object) -> tuple[int, dict, dict]:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, f"{self.base}{path}", headers=headers, **kwargs) as resp:  # type: ignore[arg-type]
            assert resp.content_type == "application/json", (resp.status, await resp.text())
            return resp.status, await resp.json(), dict(resp.headers)

    async def progress(self) -> ProgressStore:
        return ProgressStore(await self.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))


@pytest.fixture
async def auth_edge(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[AuthEdge]:
    keys_file = tmp_path / "api-keys.json"
    keys, ids = {}, {}
    for name, tenant, role in (
        ("a_reader", A, "reader"), ("a_writer", A, "writer"), ("b_writer", B, "writer"), ("a_admin", A, "admin"),
    ):  # fmt: skip
        entry, key = create_key(keys_file, tenant, role)
        keys[name], ids[name] = key, entry.id
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        await ensure_topology(nc.jetstream())
        http = await stack.enter_async_context(aiohttp.ClientSession())
        settings = EdgeSettings(
            nats_url=nats_server.url, query_timeout_s=5.0, auth="on", api_keys_file=str(keys_file), api_keys=""
        )
        server = await stack.enter_async_context(TestServer(create_app(settings)))
        yield AuthEdge(str(server.make_url("")).rstrip("/"), nc, http, keys_file, keys, ids)


def form(data: bytes = b"hello world\n", filename: str = "notes.txt") -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("file", data, filename=filename, content_type="text/plain")
    return f


async def uploads_state(edge: AuthEdge) -> tuple[int, int]:
    return await tenant_uploads_state(edge.nc.jetstream(), A)


async def upload(edge: AuthEdge, key: str, data: bytes = b"hello world\n") -> str:
    status, body, _ = await edge.call("POST", "/v1/documents", key, data=form(data))
    assert status == 202, body
    return body["doc_id"]


def assert_401(status: int, body: dict, headers: dict) -> None:
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert headers.get("WWW-Authenticate", "").startswith("Bearer"), headers


# --------------------------------------------------------------------------- 401 and 403


async def test_no_key_wrong_key_and_revoked_key_are_401(auth_edge: AuthEdge) -> None:
    good = auth_edge.keys["a_reader"]
    for method, path, kwargs in (
        ("GET", "/v1/documents", {}),
        ("GET", f"/v1/documents/{'a' * 32}", {}),
        ("POST", "/v1/search", {"json": {"query": "pumps"}}),
        ("POST", "/v1/ask", {"json": {"question": "pumps?"}}),
        ("POST", "/v1/documents", {"data": form()}),
        ("DELETE", f"/v1/documents/{'a' * 32}", {}),
    ):
        assert_401(*await auth_edge.call(method, path, None, **kwargs))
        assert_401(*await auth_edge.call(method, path, KEY_PREFIX + "x" * 43, **kwargs))
    assert_401(*await auth_edge.call("GET", "/v1/documents", headers={"Authorization": f"Basic {good}"}))
    assert_401(*await auth_edge.call("GET", "/v1/documents", headers={"Authorization": "Bearer "}))

    # Both headers work; then the key is revoked while the API runs: refused from the next request on.
    assert (await auth_edge.call("GET", "/v1/documents", good))[0] == 200
    assert (await auth_edge.call("GET", "/v1/documents", headers={"X-API-Key": good}))[0] == 200
    revoke_key(auth_edge.keys_file, auth_edge.ids["a_reader"])
    assert_401(*await auth_edge.call("GET", "/v1/documents", good))
    assert_401(*await auth_edge.call("GET", "/v1/documents", headers={"X-API-Key": good}))
    # Other keys of the same file still work, and a key added now works without a restart.
    assert (await auth_edge.call("GET", "/v1/documents", auth_edge.keys["a_writer"]))[0] == 200
    _, new_key = create_key(auth_edge.keys_file, B, "reader")
    assert (await auth_edge.call("GET", "/v1/documents", new_key))[0] == 200


async def test_open_paths_need_no_key(auth_edge: AuthEdge) -> None:
    for path in ("/health", "/ready", "/metrics", "/v1/openapi.json", "/v1/docs"):
        async with auth_edge.http.get(f"{auth_edge.base}{path}") as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
    async with auth_edge.http.get(f"{auth_edge.base}/v1/nothing-here") as resp:  # unknown path: 404, not 401
        assert resp.status == 404


async def test_reader_may_not_upload_or_delete(auth_edge: AuthEdge) -> None:
    reader = auth_edge.keys["a_reader"]
    doc_id = await upload(auth_edge, auth_edge.keys["a_writer"])
    before = await uploads_state(auth_edge)
    status, body, _ = await auth_edge.call("POST", "/v1/documents", reader, data=form())
    assert (status, body["error"]["code"]) == (403, "forbidden"), body
    assert await uploads_state(auth_edge) == before  # nothing stored
    status, body, _ = await auth_edge.call("DELETE", f"/v1/documents/{doc_id}", reader)
    assert (status, body["error"]["code"]) == (403, "forbidden"), body
    status, view, _ = await auth_edge.call("GET", f"/v1/documents/{doc_id}", reader)
    assert status == 200 and view["status"] == "queued", view  # not deleted
    # The writer and the admin may delete.
    assert (await auth_edge.call("DELETE", f"/v1/documents/{doc_id}", auth_edge.keys["a_writer"]))[0] == 202
    other = await upload(auth_edge, auth_edge.keys["a_admin"])
    assert (await auth_edge.call("DELETE", f"/v1/documents/{other}", auth_edge.keys["a_admin"]))[0] == 202


# --------------------------------------------------------------------------- tenant isolation


async def test_tenant_a_never_sees_or_deletes_tenant_b_documents(auth_edge: AuthEdge) -> None:
    a_key, b_key = auth_edge.keys["a_writer"], auth_edge.keys["b_writer"]
    a_doc = await upload(auth_edge, a_key, b"tenant A's notes\n")
    b_doc = await upload(auth_edge, b_key, b"tenant B's secret\n")
    store = await auth_edge.progress()
    b_indexed = "0000000000bb" + "b" * 20  # an indexed document of B, seeded as the indexer would leave it
    await store.update(B, b_indexed, lambda _: store.new(B, b_indexed, 1, DocumentStatus.INDEXED, filename="b.pdf"))
    # The upload stored B's bytes under B's name, and the submission on B's subject.
    js = auth_edge.nc.jetstream()
    submitted = json.loads((await js.get_last_msg(DOCS_STREAM.name, Subjects.ingest(B, b_doc))).data)
    assert submitted["tenant"] == B
    assert (await (await js.object_store(uploads_bucket(B))).get(submitted["object_name"])).data == b"tenant B's secret\n"
    with pytest.raises(nats.js.errors.NotFoundError):  # in B's bucket only
        await (await js.object_store(uploads_bucket(A))).get_info(submitted["object_name"])

    for doc in (b_doc, b_indexed):
        status, body, _ = await auth_edge.call("GET", f"/v1/documents/{doc}", a_key)
        assert (status, body["error"]["code"]) == (404, "not_found"), body
        status, body, _ = await auth_edge.call("DELETE", f"/v1/documents/{doc}", a_key)
        assert (status, body["error"]["code"]) == (404, "not_found"), body
    status, page, _ = await auth_edge.call("GET", "/v1/documents", a_key)
    assert status == 200 and [d["doc_id"] for d in page["documents"]] == [a_doc], page
    assert all(d["tenant"] == A for d in page["documents"])

    # B's documents are all still there for B (A's delete did nothing), and B does not see A's.
    for doc in (b_doc, b_indexed):
        status, view, _ = await auth_edge.call("GET", f"/v1/documents/{doc}", b_key)
        assert status == 200 and view["tenant"] == B and view["status"] != "deleted", view
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_last_msg(DOCS_STREAM.name, Subjects.delete(B, doc))
    status, page, _ = await auth_edge.call("GET", "/v1/documents", b_key)
    assert sorted(d["doc_id"] for d in page["documents"]) == sorted([b_doc, b_indexed]), page
    status, body, _ = await auth_edge.call("GET", f"/v1/documents/{a_doc}", b_key)
    assert status == 404, body


@contextlib.asynccontextmanager
async def requests_seen(nc: nats.NATS) -> AsyncIterator[asyncio.Queue[tuple[str, QueryRequest]]]:
    """(subject, request) of every QueryRequest the API publishes, for any tenant, as the retriever sees them."""
    queue: asyncio.Queue[tuple[str, QueryRequest]] = asyncio.Queue()

    async def on_request(msg: nats.aio.msg.Msg) -> None:
        await queue.put((msg.subject, QueryRequest.model_validate_json(msg.data)))

    sub = await nc.subscribe(Subjects.query(Subjects.QUERY_RETRIEVE, "*"), cb=on_request)
    await nc.flush()
    try:
        yield queue
    finally:
        await sub.unsubscribe()


async def first_request(requests: asyncio.Queue, call: asyncio.Task) -> tuple[str, QueryRequest]:
    """The next published request; fails at once (with the answer) if the HTTP call ends before publishing."""
    got = asyncio.ensure_future(requests.get())
    done, _ = await asyncio.wait({got, call}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    if got not in done:
        got.cancel()
        raise AssertionError(
            f"no QueryRequest published; the call ended with {call.result() if call in done else None}"
        )
    return got.result()


def a_hit() -> Hit:
    return Hit(chunk_id="c1", doc_id="a" * 32, filename="a.pdf", page=1, text="tenant A's text", score=0.9)


async def test_search_and_ask_are_published_for_the_keys_tenant_only(auth_edge: AuthEdge) -> None:
    nc = auth_edge.nc
    for name, tenant in (("a_reader", A), ("b_writer", B)):
        key = auth_edge.keys[name]
        async with requests_seen(nc) as requests:
            search = asyncio.create_task(
                auth_edge.call("POST", "/v1/search", key, json={"query": "pump pressure", "top_k": 3})
            )
            subject, request = await first_request(requests, search)
            assert subject == Subjects.query(Subjects.QUERY_RETRIEVE, tenant) == f"query.retrieve.{tenant}"
            assert request.tenant == tenant
            results = ResultsEvent(request_id=request.request_id, seq=0, hits=[a_hit()])
            await nc.publish(Subjects.answer(tenant, request.request_id), results.model_dump_json().encode())
            status, body, _ = await asyncio.wait_for(search, WAIT_S)
            assert status == 200 and [h["chunk_id"] for h in body["hits"]] == ["c1"], body
            assert requests.empty()  # exactly one request, for this tenant only

    key = auth_edge.keys["a_reader"]
    async with (
        requests_seen(nc) as requests,
        engine_client.client(auth_edge.base, api_key=key) as http,
    ):

        async def read() -> list:
            async with aconnect_sse(http, "POST", "/v1/ask", json={"question": "pump pressure?"}) as es:
                assert es.response.status_code == 200
                return [sse.event async for sse in es.aiter_sse()]

        reader = asyncio.create_task(read())
        subject, request = await first_request(requests, reader)
        assert (subject, request.tenant) == (f"query.retrieve.{A}", A)
        # An answer published for another tenant under the same request id never reaches A's stream.
        stray = DoneEvent(request_id=request.request_id, seq=1, answerer="stray")
        await nc.publish(Subjects.answer(B, request.request_id), stray.model_dump_json().encode())
        for event in (RetrievalEvent(request_id=request.request_id, seq=0, hits=[a_hit()]),
                      DoneEvent(request_id=request.request_id, seq=1, answerer="extractive")):  # fmt: skip
            await nc.publish(Subjects.answer(A, request.request_id), event.model_dump_json().encode())
        assert await asyncio.wait_for(reader, WAIT_S) == ["retrieval", "done"]
        assert requests.empty()


# --------------------------------------------------------------------------- keys, client, configuration


def test_keys_file_stores_no_key_and_revoked_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    entry, key = create_key(path, "acme", "writer")
    text = path.read_text()
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 43
    assert key not in text and key[len(KEY_PREFIX) :] not in text and hash_key(key) in text
    assert (path.stat().st_mode & 0o777) == 0o600
    assert set(json.loads(text)["keys"][0]) == {"id", "tenant", "role", "sha256", "created_at", "revoked"}
    ring = KeyRing(path)
    assert ring.lookup(key) == entry and ring.lookup(key + "x") is None
    revoke_key(path, entry.id)
    assert ring.lookup(key) is None and load_file(path)[0].revoked
    # The same JSON from the environment (a Kubernetes Secret).
    assert KeyRing(None, text.replace("true", "false")).lookup(key) is not None


async def test_auth_on_without_any_key_refuses_everything_but_open_paths(nats_server: NatsServer) -> None:
    app = create_app(EdgeSettings(nats_url=nats_server.url, auth="on", api_keys_file="", api_keys=""))
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/v1/documents"), headers={"Authorization": "Bearer x"}) as resp:
            body = await resp.json()
            assert resp.status == 401 and "no API keys" in body["error"]["message"], body
        async with http.get(server.make_url("/health")) as resp:
            assert resp.status == 200


async def test_cli_client_sends_the_api_key(auth_edge: AuthEdge) -> None:
    async with engine_client.client(auth_edge.base) as http:
        with pytest.raises(engine_client.EngineError) as info:
            await anext(engine_client.documents(http))
        assert info.value.status == 401
    await upload(auth_edge, auth_edge.keys["a_writer"])
    async with engine_client.client(auth_edge.base, api_key=auth_edge.keys["a_reader"]) as http:
        docs = [d async for d in engine_client.documents(http)]
    assert len(docs) == 1 and docs[0]["tenant"] == A


def test_mmrag_up_auth_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("MMRAG_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("MMRAG_API_KEYS", raising=False)
    assert _auth_env(False, tmp_path) == {"MMRAG_AUTH": "off"}
    assert not (tmp_path / "api-keys.json").exists()
    env = _auth_env(True, tmp_path)
    keys_file = Path(env["MMRAG_API_KEYS_FILE"])
    assert env["MMRAG_AUTH"] == "on" and keys_file == tmp_path / "api-keys.json"
    printed = capsys.readouterr().out
    (entry,) = load_file(keys_file)
    assert (entry.tenant, entry.role) == ("default", "operator")  # the engine's owner runs it, re-index included
    key = next(word for word in printed.split() if word.startswith(KEY_PREFIX))
    assert KeyRing(keys_file).lookup(key) == entry
    # A second start reuses the file: no new key, nothing printed.
    assert _auth_env(True, tmp_path) == env
    assert KEY_PREFIX not in capsys.readouterr().out and len(load_file(keys_file)) == 1


def test_openapi_marks_protected_operations() -> None:
    doc = build_document()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }  # fmt: skip
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            if path in ("/health", "/ready", "/metrics", "/v1/openapi.json", "/v1/docs", "/", "/ui/{asset}"):
                assert op["security"] == [] and "401" not in op["responses"], (method, path)
            else:
                assert op["security"] and {"401", "403"} <= op["responses"].keys(), (method, path)
