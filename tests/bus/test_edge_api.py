"""The edge API against a real nats-server, with no agent running: the tests act as the agents.

Each test bootstraps the topology with `bus.topology.ensure_topology`, serves `create_app` on aiohttp's
TestServer, and talks HTTP to it (aiohttp, or httpx + httpx-sse as an independent SSE client).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from httpx_sse import aconnect_sse
from nats.js import JetStreamContext

from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import (
    DocumentDeleted,
    DocumentStatus,
    DocumentSubmitted,
    DoneEvent,
    ErrorEvent,
    Hit,
    QueryMode,
    QueryRequest,
    ResultsEvent,
    RetrievalEvent,
    TokenEvent,
)
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects, object_name, uploads_bucket
from edge_api import EdgeSettings, create_app
from edge_api.errors import error_middleware
from tests.engine import NatsServer
from tests.uploads import uploads_state as tenant_uploads_state

TENANT = "default"
EVIL = "http://evil.example"
_UPLOADS = itertools.count(1)
WAIT_S = 30.0  # generous: every wait ends as soon as its condition holds


@dataclass
class Edge:
    base: str
    port: int
    nc: nats.NATS
    http: aiohttp.ClientSession

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    async def progress(self, generation: int = 1) -> ProgressStore:
        return ProgressStore(await self.js.key_value(PROGRESS_BUCKET), IndexGeneration(generation))


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def start_edge(nats_server: NatsServer) -> AsyncIterator[StartEdge]:
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        await ensure_topology(nc.jetstream())
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(**overrides: object) -> Edge:
            settings = EdgeSettings(**{"nats_url": nats_server.url, "query_timeout_s": 5.0, **overrides})
            server = await stack.enter_async_context(TestServer(create_app(settings)))
            return Edge(str(server.make_url("")).rstrip("/"), server.port, nc, http)

        yield start


@pytest.fixture
async def edge(start_edge: StartEdge) -> Edge:
    return await start_edge()


def multipart(data: bytes, filename: str = "notes.txt", content_type: str = "text/plain") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    return form


async def upload(edge: Edge, data: bytes | None = None, **headers: str) -> tuple[int, dict]:
    """Upload `data` (by default a text of its own each time: the same bytes twice are a 409 `duplicate`)."""
    data = data if data is not None else f"hello world {next(_UPLOADS)}\n".encode()
    async with edge.http.post(f"{edge.base}/v1/documents", data=multipart(data), headers=headers) as resp:
        return resp.status, await resp.json()


async def uploads_state(edge: Edge) -> tuple[int, int]:
    """Messages and bytes of the uploads bucket's stream: any object or chunk written changes them."""
    return await tenant_uploads_state(edge.js, TENANT)


def assert_error(status: int, body: dict, wanted_status: int, code: str) -> dict:
    assert status == wanted_status, body
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["request_id"], str) and len(err["request_id"]) >= 16
    return err


async def call(edge: Edge, method: str, path: str, **kwargs: object) -> tuple[int, dict]:
    async with edge.http.request(method, f"{edge.base}{path}", **kwargs) as resp:  # type: ignore[arg-type]
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


# --------------------------------------------------------------------------- errors are JSON


async def test_every_error_is_json(edge: Edge) -> None:
    assert_error(*await call(edge, "GET", "/v1/nothing-here"), 404, "not_found")
    async with edge.http.delete(f"{edge.base}/health") as resp:
        assert "GET" in resp.headers["Allow"]
        assert_error(resp.status, await resp.json(), 405, "method_not_allowed")
    huge = json.dumps({"question": "x" * (200 * 1024)})
    status, body = await call(edge, "POST", "/v1/ask", data=huge, headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "too_large")
    status, body = await call(edge, "POST", "/v1/ask", data="what?", headers={"Content-Type": "text/plain"})
    assert_error(status, body, 415, "unsupported_media_type")
    status, body = await call(edge, "POST", "/v1/documents", json={"file": "x"})
    assert_error(status, body, 415, "unsupported_media_type")


async def test_a_crash_is_an_opaque_500_with_a_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError("cannot open /srv/secret/config.yaml")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/broken")) as resp:
            text = await resp.text()
            err = assert_error(resp.status, json.loads(text), 500, "internal_error")
            assert resp.headers["X-Request-Id"] == err["request_id"]
    assert "/srv" not in text and "RuntimeError" not in text
    assert any(err["request_id"] in r.getMessage() and r.exc_info for r in caplog.records)


# --------------------------------------------------------------------------- CSRF, DNS rebinding


async def test_foreign_origin_cannot_upload_or_delete_and_nothing_is_stored(edge: Edge) -> None:
    before = await uploads_state(edge)
    status, body = await upload(edge, Origin=EVIL)
    assert_error(status, body, 403, "forbidden_origin")
    status, body = await upload(edge, Origin="null")
    assert_error(status, body, 403, "forbidden_origin")
    assert await uploads_state(edge) == before

    status, body = await upload(edge, Origin=edge.base)  # same origin
    assert status == 202, body
    status, body = await upload(edge, Origin=f"http://localhost:{edge.port}")  # loopback alias of this server
    assert status == 202, body
    assert_error(
        *await call(edge, "DELETE", f"/v1/documents/{body['doc_id']}", headers={"Origin": EVIL}),
        403,
        "forbidden_origin",
    )
    status, _ = await call(edge, "GET", f"/v1/documents/{body['doc_id']}")
    assert status == 200


async def test_configured_origin_is_accepted(start_edge: StartEdge) -> None:
    edge = await start_edge(allowed_origins="https://app.example.com, https://other.example")
    status, body = await upload(edge, Origin="https://app.example.com")
    assert status == 202, body
    assert_error(*await upload(edge, Origin=f"http://localhost:{edge.port}"), 403, "forbidden_origin")


async def test_foreign_host_is_refused_but_probes_answer(edge: Edge) -> None:
    headers = {"Host": f"evil.example:{edge.port}"}
    assert_error(*await call(edge, "GET", "/v1/documents", headers=headers), 421, "forbidden_host")
    assert_error(*await upload(edge, **headers), 421, "forbidden_host")
    status, body = await call(edge, "GET", "/health", headers=headers)
    assert status == 200 and body == {"status": "ok", "nats": "connected"}
    status, body = await call(edge, "GET", "/v1/documents", headers={"Host": f"localhost:{edge.port}"})
    assert status == 200, body


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize("top_k", ["5", 5.0, True, 0, 51, None])
async def test_top_k_must_be_a_json_integer_in_range(edge: Edge, top_k: object) -> None:
    for path, field in (("/v1/ask", "question"), ("/v1/search", "query")):
        status, body = await call(edge, "POST", path, json={field: "what is mmrag?", "top_k": top_k})
        err = assert_error(status, body, 400, "invalid_body")
        assert [d["field"] for d in err["details"]] == ["top_k"]


@pytest.mark.parametrize(
    "question", ["", "   \n\t ", "?!", "what\x00is this", "bell\x07", "x" * 4001, None, 42]
)  # fmt: skip
async def test_question_must_say_something(edge: Edge, question: object) -> None:
    status, body = await call(edge, "POST", "/v1/ask", json={"question": question})
    err = assert_error(status, body, 400, "invalid_body")
    assert [d["field"] for d in err["details"]] == ["question"]


async def test_no_tenant_from_a_body(edge: Edge) -> None:
    status, body = await call(edge, "POST", "/v1/search", json={"query": "q", "tenant": "other"})
    err = assert_error(status, body, 400, "invalid_body")
    assert [d["field"] for d in err["details"]] == ["tenant"]


# --------------------------------------------------------------------------- upload


async def test_upload_stores_object_submission_and_queued_record(edge: Edge) -> None:
    status, body = await upload(edge, b"# Title\n\nsome text\n")
    assert status == 202, body
    doc_id = body["doc_id"]
    assert body["status"] == "queued" and body["size"] == 19 and body["content_type"] == "text/plain"
    msg = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.ingest(TENANT, doc_id))
    submitted = DocumentSubmitted.model_validate_json(msg.data)
    assert submitted.object_name == object_name(TENANT, doc_id) and submitted.tenant == TENANT
    # One message id per submission (main's scheme since the deletes work): a later revision is a new message.
    assert msg.headers and msg.headers.get("Nats-Msg-Id") == f"{doc_id}:{submitted.submitted_at.isoformat()}"
    obj = await (await edge.js.object_store(uploads_bucket(TENANT))).get(submitted.object_name)
    assert obj.data == b"# Title\n\nsome text\n"
    record = await (await edge.progress()).get(TENANT, doc_id)
    assert record is not None and record.status == DocumentStatus.QUEUED and record.revision == msg.seq

    status, view = await call(edge, "GET", f"/v1/documents/{doc_id}")
    assert status == 200 and view["status"] == "queued" and view["filename"] == "notes.txt"
    assert not {"batches_indexed", "schema_version", "revision", "generation"} & view.keys()


BOUNDARY = "mmragtestboundary"


async def post_raw_multipart(edge: Edge, raw: bytes) -> tuple[int, dict]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await call(edge, "POST", "/v1/documents", data=raw, headers=headers)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"this is not multipart at all", id="no-boundary"),
        pytest.param(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
            + b"\xff\xfe\xfd.txt"
            + f'"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{BOUNDARY}--\r\n'.encode(),
            id="non-utf8-filename",
        ),
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename*=utf-8''%FF%FE.txt\r\n"
            f"Content-Type: text/plain\r\n\r\nhello\r\n--{BOUNDARY}--\r\n".encode(),
            id="non-utf8-rfc5987-filename",
            marks=pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam"),
        ),
        pytest.param(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\n".encode()
            + b"hello\n" * 40_000,  # never closed: the body ends inside the part
            id="truncated",
        ),
    ],
)
async def test_malformed_multipart_is_400_and_stores_nothing(edge: Edge, raw: bytes) -> None:
    before = await uploads_state(edge)
    assert_error(*await post_raw_multipart(edge, raw), 400, "invalid_multipart")
    assert await uploads_state(edge) == before


async def test_submission_on_the_stream_without_progress_is_queued(edge: Edge) -> None:
    doc_id = "0000000000aa" + "b" * 20
    submitted = DocumentSubmitted(
        doc_id=doc_id, tenant=TENANT, filename="lost.pdf", content_type="application/pdf",
        object_name=object_name(TENANT, doc_id), size=10,
    )  # fmt: skip
    await edge.js.publish(Subjects.ingest(TENANT, doc_id), submitted.model_dump_json().encode())
    status, view = await call(edge, "GET", f"/v1/documents/{doc_id}")
    assert status == 200 and view["status"] == "queued" and view["filename"] == "lost.pdf", view
    for missing in ("f" * 32, "not.a.token", "x" * 65):
        assert_error(*await call(edge, "GET", f"/v1/documents/{missing}"), 404, "not_found")


# --------------------------------------------------------------------------- list and delete


async def test_list_is_paginated_newest_first_and_tenant_scoped(edge: Edge) -> None:
    store = await edge.progress()
    mine = [f"{i:012x}{'a' * 20}" for i in range(1, 8)]
    for i, doc_id in enumerate(mine):
        status = DocumentStatus.DELETED if i == 3 else DocumentStatus.INDEXED
        record = store.new(TENANT, doc_id, i + 1, status, filename=f"{i}.txt")
        await store.update(TENANT, doc_id, lambda _, r=record: r)
    for i in range(3):  # another tenant's records, and our tenant in another generation: never listed
        other = f"{i + 100:012x}{'c' * 20}"
        await store.update("other", other, lambda _, o=other: store.new("other", o, 1, DocumentStatus.INDEXED))
    gen2 = await edge.progress(generation=2)
    await gen2.update(TENANT, "f" * 32, lambda _: gen2.new(TENANT, "f" * 32, 1, DocumentStatus.INDEXED))

    expected = sorted((d for i, d in enumerate(mine) if i != 3), reverse=True)
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        status, body = await call(edge, "GET", f"/v1/documents{query}")
        assert status == 200, body
        assert all(d["tenant"] == TENANT and "batches_indexed" not in d for d in body["documents"])
        seen += [d["doc_id"] for d in body["documents"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected and pages == 2
    for bad in ("0", "201", "abc", "5.0", "-1", ""):
        err = assert_error(*await call(edge, "GET", f"/v1/documents?limit={bad}"), 400, "invalid_query")
        assert err["field"] == "limit"
    assert_error(*await call(edge, "GET", "/v1/documents?cursor=a.b"), 400, "invalid_query")


async def test_list_of_a_tenant_without_documents_is_empty(edge: Edge) -> None:
    status, body = await call(edge, "GET", "/v1/documents")
    assert (status, body) == (200, {"documents": [], "next_cursor": None, "total": 0})


async def test_delete_hides_the_document_and_publishes_a_tombstone(edge: Edge) -> None:
    status, body = await upload(edge)
    assert status == 202
    doc_id = body["doc_id"]
    status, body = await call(edge, "DELETE", f"/v1/documents/{doc_id}")
    assert (status, body) == (202, {"doc_id": doc_id, "status": "deleted"})

    assert_error(*await call(edge, "GET", f"/v1/documents/{doc_id}"), 404, "not_found")
    _, listed = await call(edge, "GET", "/v1/documents")
    assert doc_id not in [d["doc_id"] for d in listed["documents"]]
    msg = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.delete(TENANT, doc_id))
    tombstone = DocumentDeleted.model_validate_json(msg.data)
    assert (tombstone.doc_id, tombstone.tenant) == (doc_id, TENANT)
    record = await (await edge.progress()).get(TENANT, doc_id)
    assert record is not None and record.status == DocumentStatus.DELETED and record.revision == msg.seq

    assert_error(*await call(edge, "DELETE", f"/v1/documents/{doc_id}"), 404, "not_found")
    assert_error(*await call(edge, "DELETE", f"/v1/documents/{'e' * 32}"), 404, "not_found")


async def test_a_filename_of_ten_thousand_characters_is_a_400_that_says_to_rename(edge: Edge) -> None:
    """Valid UTF-8, just long: the answer must not call it "not UTF-8" (it did), and nothing is stored."""
    before = await uploads_state(edge)
    form = multipart(b"hello world\n", filename="\u00e9" * 10_000 + ".txt")
    async with edge.http.post(f"{edge.base}/v1/documents", data=form) as resp:
        status, body = resp.status, await resp.json()
    err = assert_error(status, body, 400, "invalid_multipart")
    assert "rename the file" in err["message"] and "UTF-8" not in err["message"]
    assert await uploads_state(edge) == before


async def test_a_delete_after_a_resubmission_is_never_dropped_as_a_duplicate(edge: Edge) -> None:
    """Delete, re-submit the same doc_id (as an external publisher may), delete again within the dedup window: the
    second delete must reach the stream and the record (before, its message id repeated the first one's)."""
    status, body = await upload(edge)
    doc_id = body["doc_id"]
    assert (await call(edge, "DELETE", f"/v1/documents/{doc_id}"))[0] == 202
    first = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.delete(TENANT, doc_id))
    resubmitted = DocumentSubmitted(doc_id=doc_id, tenant=TENANT, filename="again.txt", content_type="text/plain",
                                    object_name=object_name(TENANT, doc_id), size=1)  # fmt: skip
    ack = await edge.js.publish(Subjects.ingest(TENANT, doc_id), resubmitted.model_dump_json().encode(),
                                headers={"Nats-Msg-Id": f"{doc_id}-again"})  # fmt: skip
    store = await edge.progress()  # what the parser records when it takes the new revision
    await store.update(TENANT, doc_id, lambda _: store.new(TENANT, doc_id, ack.seq, DocumentStatus.INDEXED,
                                                           filename="again.txt"))  # fmt: skip

    assert (await call(edge, "DELETE", f"/v1/documents/{doc_id}"))[0] == 202
    second = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.delete(TENANT, doc_id))
    assert second.seq > ack.seq > first.seq
    record = await store.get(TENANT, doc_id)
    assert record is not None and record.status == DocumentStatus.DELETED and record.revision == second.seq
    assert_error(*await call(edge, "GET", f"/v1/documents/{doc_id}"), 404, "not_found")


# --------------------------------------------------------------------------- answers


@contextlib.asynccontextmanager
async def requests_seen(edge: Edge) -> AsyncIterator[asyncio.Queue[QueryRequest]]:
    """The QueryRequests the edge API publishes, as the retriever would receive them."""
    queue: asyncio.Queue[QueryRequest] = asyncio.Queue()

    async def on_request(msg: nats.aio.msg.Msg) -> None:
        await queue.put(QueryRequest.model_validate_json(msg.data))

    sub = await edge.nc.subscribe(Subjects.query(Subjects.QUERY_RETRIEVE, "*"), cb=on_request)
    await edge.nc.flush()
    try:
        yield queue
    finally:
        await sub.unsubscribe()


async def emit(edge: Edge, request: QueryRequest, *events: object) -> None:
    for event in events:
        await edge.nc.publish(Subjects.answer(request.tenant, request.request_id), event.model_dump_json().encode())  # type: ignore[attr-defined]
    await edge.nc.flush()


def hit(n: int) -> Hit:
    return Hit(chunk_id=f"c{n}", doc_id="d" * 32, filename="a.pdf", page=n, text=f"text {n}", score=1.0 / n)


async def test_ask_delivers_each_event_once_in_order_despite_retries(edge: Edge) -> None:
    async with requests_seen(edge) as requests, httpx.AsyncClient(base_url=edge.base, timeout=WAIT_S) as client:

        async def read_stream() -> list:
            async with aconnect_sse(client, "POST", "/v1/ask", json={"question": "What is mmrag?", "top_k": 3}) as es:
                assert es.response.status_code == 200
                return [sse async for sse in es.aiter_sse()]

        reader = asyncio.create_task(read_stream())
        request = await asyncio.wait_for(requests.get(), WAIT_S)
        assert (request.tenant, request.query, request.top_k, request.mode) == (
            TENANT,
            "What is mmrag?",
            3,
            QueryMode.ASK,
        )
        rid = request.request_id

        def token(seq: int) -> TokenEvent:
            return TokenEvent(request_id=rid, seq=seq, text=f"piece {seq} ")

        retrieval = RetrievalEvent(request_id=rid, seq=0, hits=[hit(1), hit(2)])
        done = DoneEvent(request_id=rid, seq=4, answerer="extractive")
        # A retried request: retrieval twice, tokens out of order and repeated, done before a straggler.
        await emit(
            edge, request, retrieval, token(2), retrieval, token(1), token(3), token(2), token(1), done, token(3)
        )
        events = await asyncio.wait_for(reader, WAIT_S)

    assert [(e.event, e.id) for e in events] == [
        ("retrieval", "0"), ("token", "1"), ("token", "2"), ("token", "3"), ("done", "4"),
    ]  # fmt: skip
    assert json.loads(events[0].data) == {"hits": [h.model_dump(mode="json") for h in (hit(1), hit(2))], "searched": None}
    assert [json.loads(e.data) for e in events[1:4]] == [{"text": f"piece {n} "} for n in (1, 2, 3)]
    assert json.loads(events[4].data) == {"answerer": "extractive", "abstained": False}


async def test_ask_error_event_ends_the_stream(edge: Edge) -> None:
    async with requests_seen(edge) as requests, httpx.AsyncClient(base_url=edge.base, timeout=WAIT_S) as client:

        async def read_stream() -> list:
            async with aconnect_sse(client, "POST", "/v1/ask", json={"question": "why?"}) as es:
                return [sse async for sse in es.aiter_sse()]

        reader = asyncio.create_task(read_stream())
        request = await asyncio.wait_for(requests.get(), WAIT_S)
        rid = request.request_id
        await emit(
            edge, request,
            TokenEvent(request_id=rid, seq=1, text="never shown: seq 0 never came"),
            ErrorEvent(request_id=rid, code="no_index", message="nothing indexed yet"),
            RetrievalEvent(request_id=rid, seq=0, hits=[]),
        )  # fmt: skip
        events = await asyncio.wait_for(reader, WAIT_S)
    assert [(e.event, json.loads(e.data)) for e in events] == [
        ("error", {"code": "no_index", "message": "nothing indexed yet"})
    ]


async def test_ask_times_out_with_an_error_event(start_edge: StartEdge) -> None:
    edge = await start_edge(query_timeout_s=0.3)
    async with httpx.AsyncClient(base_url=edge.base, timeout=WAIT_S) as client:
        async with aconnect_sse(client, "POST", "/v1/ask", json={"question": "anyone there?"}) as es:
            events = [sse async for sse in es.aiter_sse()]
    assert [(e.event, json.loads(e.data)["code"]) for e in events] == [("error", "timeout")]


async def test_ask_stream_sends_keep_alive_comments_while_waiting(start_edge: StartEdge) -> None:
    edge = await start_edge(sse_ping_s=0.2)
    raw = bytearray()
    async with requests_seen(edge) as requests, httpx.AsyncClient(base_url=edge.base, timeout=WAIT_S) as client:
        async with client.stream("POST", "/v1/ask", json={"question": "slow answer?"}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            request = await asyncio.wait_for(requests.get(), WAIT_S)
            chunks = resp.aiter_raw()
            # No event yet: the agents are "slow" until the client has seen a keep-alive comment.
            while b"\n:" not in b"\n" + bytes(raw):
                raw += await asyncio.wait_for(anext(chunks), WAIT_S)
            rid = request.request_id
            await emit(
                edge, request,
                RetrievalEvent(request_id=rid, seq=0, hits=[]), DoneEvent(request_id=rid, seq=1, answerer="x"),
            )  # fmt: skip
            async for chunk in chunks:
                raw += chunk
    lines = bytes(raw).decode().splitlines()
    first_comment = next(i for i, line in enumerate(lines) if line.startswith(":"))
    first_event = next(i for i, line in enumerate(lines) if line.startswith("event:"))
    assert first_comment < first_event
    assert [line for line in lines if line.startswith("event:")] == ["event: retrieval", "event: done"]


async def test_search_returns_results_or_the_agents_error(edge: Edge) -> None:
    async with requests_seen(edge) as requests:

        async def search() -> tuple[int, dict]:
            return await call(edge, "POST", "/v1/search", json={"query": "  find me  "})

        pending = asyncio.create_task(search())
        request = await asyncio.wait_for(requests.get(), WAIT_S)
        assert (request.query, request.top_k, request.mode) == ("find me", 10, QueryMode.SEARCH)
        results = ResultsEvent(request_id=request.request_id, seq=0, hits=[hit(1)])
        await emit(edge, request, results, results)
        assert await asyncio.wait_for(pending, WAIT_S) == (200, {"hits": [hit(1).model_dump(mode="json")]})

        pending = asyncio.create_task(search())
        request = await asyncio.wait_for(requests.get(), WAIT_S)
        await emit(edge, request, ErrorEvent(request_id=request.request_id, code="no_index", message="empty"))
        err = assert_error(*await asyncio.wait_for(pending, WAIT_S), 502, "query_failed")
        assert err["reason"] == "no_index"


async def test_search_times_out_with_504(start_edge: StartEdge) -> None:
    edge = await start_edge(query_timeout_s=0.3)
    assert_error(*await call(edge, "POST", "/v1/search", json={"query": "anyone?"}), 504, "timeout")


async def test_health_says_nats_is_connected(edge: Edge) -> None:
    assert await call(edge, "GET", "/health") == (200, {"status": "ok", "nats": "connected"})
    assert await call(edge, "GET", "/ready") == (200, {"status": "ready", "nats": "connected"})


# --------------------------------------------------------------------------- lost acknowledgements


async def test_lost_ack_of_a_stored_submission_is_still_202(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    from bus import publish as bus_publish
    from edge_api.routes import documents

    attempts = []

    async def ack_lost(js: JetStreamContext, out: bus_publish.Outgoing, *, timeout_s: float) -> None:
        attempts.append(out.msg_id)
        await bus_publish.publish(js, out, timeout_s=timeout_s)  # stored (deduplicated on retries)...
        raise TimeoutError  # ...but the acknowledgement never arrives

    monkeypatch.setattr(documents, "publish", ack_lost)
    status, body = await upload(edge)
    assert status == 202, body
    assert len(attempts) == documents.PUBLISH_ATTEMPTS and len(set(attempts)) == 1  # every retry: the same id
    assert attempts[0].startswith(f"{body['doc_id']}:")
    info = await edge.js.stream_info(DOCS_STREAM.name, subjects_filter=Subjects.ingest(TENANT, body["doc_id"]))
    assert info.state.messages == 1  # the retries were deduplicated
    msg = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.ingest(TENANT, body["doc_id"]))
    record = await (await edge.progress()).get(TENANT, body["doc_id"])
    assert record is not None and record.status == DocumentStatus.QUEUED and record.revision == msg.seq


async def test_submission_never_stored_is_503_and_leaves_no_object(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_api.routes import documents

    async def never_stored(*_: object, **__: object) -> None:
        raise TimeoutError

    monkeypatch.setattr(documents, "publish", never_stored)
    before = await uploads_state(edge)
    status, body = await upload(edge)
    err = assert_error(status, body, 503, "backbone_unavailable")
    assert "nothing was accepted" in err["message"]
    assert await uploads_state(edge) == before
