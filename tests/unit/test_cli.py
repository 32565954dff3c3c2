"""The `mmrag` console script against a port where nothing listens and against a small aiohttp stub of the
edge API (real HTTP over loopback, the real script as a subprocess): every ordinary error is one line on
stderr with a non-zero exit, ingest rides out a restarting engine, and search/docs/delete print what the
API answered. Against a real `mmrag up`: tests/e2e/test_cli_engine.py."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from tests.engine import BIN, free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DOC_ID = "0" * 12 + "a" * 20
# Whole bodies, as the edge API answers them: the client validates every answer with the API's own models.
ACCEPTED = {"doc_id": DOC_ID, "status": "queued", "filename": "notes.md", "content_type": "text/markdown", "size": 17}


def view(**fields: object) -> dict:
    """A whole `DocumentView` (edge_api/routes/documents.py)."""
    return {"doc_id": DOC_ID, "tenant": "default", "filename": "notes.md", "status": "queued", "pages": None,
            "pages_parsed": 0, "chunks_total": None, "chunks_indexed": 0, "error": None,
            "updated_at": "2026-01-01T00:00:00Z", **fields}  # fmt: skip


def api_error(status: int, code: str, message: str, **extra: object) -> web.Response:
    """The edge API's error shape (edge_api/errors.py)."""
    return web.json_response({"error": {"code": code, "message": message, "request_id": "r1", **extra}}, status=status)


class Stub:
    """An aiohttp server in a thread of its own: `on(method, path, handler)`; `calls` records every request."""

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.handlers[(method, path)] = handler

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _, _ in self.calls if (m, p) == (method, path))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append((request.method, request.path, dict(request.query), body))
        handler = self.handlers.get((request.method, request.path))
        if handler is None:
            return api_error(404, "not_found", "no such endpoint; see docs/api.md")
        return await handler(request)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, self.sock).start()
        return runner

    def __enter__(self) -> Stub:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.sock.close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    with Stub() as s:
        yield s


def mmrag(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `mmrag` script; `env` adds variables (a tenant's `MMRAG_API_KEY`) to this process's environment."""
    return subprocess.run(
        [str(BIN / "mmrag"), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def json_of(status: int, body: object) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    return handler


def sse(events: list[tuple[str, dict]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for n, (event, data) in enumerate(events):
            await resp.write(f"id: {n}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode())
        await resp.write_eof()
        return resp

    return handler


# --------------------------------------------------------------------------- no engine at the URL


@pytest.mark.parametrize("command", [["ask", "what?"], ["search", "what?"], ["documents"], ["delete", DOC_ID]])
def test_no_engine_is_one_line_naming_the_url(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    run = mmrag(*command, "--url", url)
    assert run.returncode == 1
    line = one_line(run.stderr)
    assert f"cannot reach the engine at {url}" in line and "mmrag up" in line
    assert run.stdout == ""


def test_ingest_with_no_engine_is_one_line(tmp_path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("hello")
    url = f"http://127.0.0.1:{free_port()}"
    run = mmrag("ingest", str(doc), "--url", url)
    assert run.returncode == 1
    assert f"cannot reach the engine at {url}" in one_line(run.stderr)


# --------------------------------------------------------------------------- ask


def test_ask_empty_question_prints_the_message_and_the_field(stub: Stub) -> None:
    details = [{"field": "question", "problem": "String should have at least 1 character"}]
    stub.on("POST", "/v1/ask", json_of(400, {"error": {"code": "invalid_body", "request_id": "r1",
                                                      "message": "invalid request body: see details", "details": details}}))  # fmt: skip
    run = mmrag("ask", "", "--url", stub.url)
    assert run.returncode == 1
    line = one_line(run.stderr)
    assert "HTTP 400" in line and "invalid request body" in line
    assert "question: String should have at least 1 character" in line
    assert json.loads(stub.calls[0][3]) == {"question": "", "top_k": 5}


def test_ask_streams_tokens_then_citations(stub: Stub) -> None:
    stub.on("POST", "/v1/ask", sse([
        ("retrieval", {"hits": []}),
        ("token", {"text": "The reactor runs at "}),
        ("token", {"text": "4127 K [1]."}),
        ("citation", {"n": 1, "doc_id": DOC_ID, "filename": "reactor.pdf", "page": 3, "bbox": None, "text": "x"}),
        ("done", {"answerer": "extractive", "abstained": False}),
    ]))  # fmt: skip
    run = mmrag("ask", "How hot?", "--url", stub.url, "--top-k", "3")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["The reactor runs at 4127 K [1].", f"[1] reactor.pdf page 3 (doc {DOC_ID})"]
    assert json.loads(stub.calls[0][3]) == {"question": "How hot?", "top_k": 3}


def test_ask_reset_voids_what_was_printed_and_keeps_the_new_answer(stub: Stub) -> None:
    stub.on("POST", "/v1/ask", sse([
        ("retrieval", {"hits": []}),
        ("token", {"text": "The reactor runs at 99"}),
        ("citation", {"n": 2, "doc_id": DOC_ID, "filename": "old.pdf", "page": 9, "bbox": None, "text": "x"}),
        ("reset", {"reason": "provider 'a' failed mid-answer"}),
        ("token", {"text": "It runs at 4127 K [1]."}),
        ("citation", {"n": 1, "doc_id": DOC_ID, "filename": "reactor.pdf", "page": 3, "bbox": None, "text": "x"}),
        ("done", {"answerer": "extractive", "abstained": False}),
    ]))  # fmt: skip
    run = mmrag("ask", "How hot?", "--url", stub.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2:] == ["It runs at 4127 K [1].", f"[1] reactor.pdf page 3 (doc {DOC_ID})"]
    assert "old.pdf" not in run.stdout and "answer restarted: provider 'a' failed mid-answer" in run.stderr


def test_ask_error_event_is_one_line_and_exit_1(stub: Stub) -> None:
    stub.on("POST", "/v1/ask", sse([("token", {"text": "partial"}), ("error", {"code": "timeout", "message": "no answer within 30s"})]))
    run = mmrag("ask", "q", "--url", stub.url)
    assert run.returncode == 1
    assert one_line(run.stderr).endswith("timeout: no answer within 30s")


def test_ask_503_is_the_engines_message(stub: Stub) -> None:
    message = "the message backbone (NATS) is not connected; nothing was accepted, retry later"
    stub.on("POST", "/v1/ask", json_of(503, {"error": {"code": "backbone_unavailable", "message": message}}))
    run = mmrag("ask", "q", "--url", stub.url)
    assert run.returncode == 1
    assert one_line(run.stderr) == f"error: HTTP 503: {message}"


# --------------------------------------------------------------------------- ingest


def _upload_ok(stub: Stub) -> None:
    stub.on("POST", "/v1/documents", json_of(202, ACCEPTED))


def test_ingest_rides_out_503_and_404_while_polling(stub: Stub, tmp_path) -> None:
    answers = [
        (503, {"error": {"code": "backbone_unavailable", "message": "NATS is not connected"}}),
        (503, {"error": {"code": "backbone_unavailable", "message": "NATS is not connected"}}),
        (404, {"error": {"code": "not_found", "message": f"no document {DOC_ID!r}"}}),
        (200, view(status="embedding", chunks_total=4, chunks_indexed=1)),
        (200, view(status="indexed", pages=2, chunks_total=4, chunks_indexed=4)),
    ]

    async def status(_: web.Request) -> web.Response:
        code, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.json_response(body, status=code)

    _upload_ok(stub)
    stub.on("GET", f"/v1/documents/{DOC_ID}", status)
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nquokkas")
    run = mmrag("ingest", str(doc), "--url", stub.url, "--poll", "0.05")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [DOC_ID, str(doc)]
    assert stub.count("GET", f"/v1/documents/{DOC_ID}") == 5  # two 503s, one 404, embedding, indexed
    assert "Traceback" not in run.stderr
    upload = stub.calls[0]
    assert upload[:2] == ("POST", "/v1/documents") and b'filename="notes.md"' in upload[3]


def test_ingest_gives_up_on_a_document_after_retry_for(stub: Stub, tmp_path) -> None:
    _upload_ok(stub)
    stub.on("GET", f"/v1/documents/{DOC_ID}", json_of(503, {"error": {"code": "backbone_unavailable", "message": "down"}}))
    doc = tmp_path / "a.txt"
    doc.write_text("x")
    run = mmrag("ingest", str(doc), "--url", stub.url, "--poll", "0.05", "--retry-for", "1")
    assert run.returncode == 1
    assert f"gave up on {DOC_ID}: HTTP 503: down" in run.stderr
    assert "Traceback" not in run.stderr
    assert stub.count("GET", f"/v1/documents/{DOC_ID}") >= 3  # it did retry before giving up


def test_ingest_rejected_upload_and_failed_document(stub: Stub, tmp_path) -> None:
    async def upload(request: web.Request) -> web.Response:
        if b"bad.pdf" in await request.read():
            return web.json_response({"error": {"code": "unsupported_media_type", "message": "not a PDF"}}, status=415)
        return web.json_response(ACCEPTED, status=202)

    stub.on("POST", "/v1/documents", upload)
    stub.on("GET", f"/v1/documents/{DOC_ID}", json_of(200, view(status="failed", error="encrypted PDF")))
    bad, good = tmp_path / "bad.pdf", tmp_path / "good.pdf"
    bad.write_bytes(b"nope")
    good.write_bytes(b"%PDF-1.7")
    run = mmrag("ingest", str(bad), str(good), "--url", stub.url, "--poll", "0.05")
    assert run.returncode == 1
    assert f"rejected {bad}: HTTP 415: not a PDF" in run.stderr
    assert f"failed {DOC_ID}: encrypted PDF" in run.stderr
    assert run.stdout.split() == [DOC_ID, str(good)]


# --------------------------------------------------------------------------- search, docs, delete


def test_search_prints_ranked_hits(stub: Stub) -> None:
    hits = [
        {"chunk_id": "c1", "doc_id": DOC_ID, "filename": "reactor.pdf", "page": 3, "bbox": None, "modality": "text",
         "text": "The reactor\nruns at 4127 K. " + "filler " * 40, "score": 0.912},
        {"chunk_id": "c2", "doc_id": DOC_ID, "filename": "notes.md", "page": 1, "bbox": None, "modality": "text",
         "text": "Quokkas.", "score": 0.5},
    ]  # fmt: skip
    stub.on("POST", "/v1/search", json_of(200, {"hits": hits}))
    run = mmrag("search", "reactor temperature", "--url", stub.url, "--top-k", "2")
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    assert first.startswith(" 1. 0.912  reactor.pdf  page 3  The reactor runs at 4127 K.") and first.endswith("…")
    assert len(first) < 160  # an excerpt, not the whole chunk
    assert second == " 2. 0.500  notes.md  page 1  Quokkas."
    assert json.loads(stub.calls[0][3]) == {"query": "reactor temperature", "top_k": 2}


def test_search_bad_top_k_is_the_field_detail(stub: Stub) -> None:
    details = [{"field": "top_k", "problem": "Input should be less than or equal to 50"}]
    stub.on("POST", "/v1/search", json_of(400, {"error": {"code": "invalid_body", "message": "invalid request body: see details", "details": details}}))
    run = mmrag("search", "x", "--url", stub.url, "--top-k", "500")
    assert run.returncode == 1
    assert "top_k: Input should be less than or equal to 50" in one_line(run.stderr)


def test_documents_follows_next_cursor(stub: Stub) -> None:
    def doc(n: int, **kw: object) -> dict:
        return view(**{"doc_id": f"{n:032x}", "status": "indexed", "filename": f"f{n}.pdf", "pages": n,
                       "chunks_total": 2 * n, "chunks_indexed": 2 * n, **kw})  # fmt: skip

    async def listing(request: web.Request) -> web.Response:
        if request.query.get("cursor") is None:
            return web.json_response({"documents": [doc(3), doc(2)], "next_cursor": f"{2:032x}"})
        assert request.query["cursor"] == f"{2:032x}"
        return web.json_response({"documents": [doc(1, status="parsing", pages=None, chunks_total=None, chunks_indexed=0)],
                                  "next_cursor": None})  # fmt: skip

    stub.on("GET", "/v1/documents", listing)
    run = mmrag("documents", "--url", stub.url, "--limit", "2")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [f"{3:032x}", f"{2:032x}", f"{1:032x}"]
    assert lines[0].split()[1:] == ["indexed", "3", "pages", "6/6", "chunks", "f3.pdf"]
    assert lines[2].split()[1:] == ["parsing", "-", "pages", "-", "chunks", "f1.pdf"]
    queries = [q for m, p, q, _ in stub.calls if (m, p) == ("GET", "/v1/documents")]
    assert queries == [{"limit": "2"}, {"limit": "2", "cursor": f"{2:032x}"}]
    assert "3 documents" in run.stderr


def test_delete_202_is_deleted_and_404_is_one_line(stub: Stub) -> None:
    missing = "f" * 32
    stub.on("DELETE", f"/v1/documents/{DOC_ID}", json_of(202, {"doc_id": DOC_ID, "status": "deleted"}))
    stub.on("DELETE", f"/v1/documents/{missing}", json_of(404, {"error": {"code": "not_found", "message": f"no document {missing!r}"}}))
    run = mmrag("delete", DOC_ID, missing, "--url", stub.url)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [f"{DOC_ID}  deleted"]
    assert one_line(run.stderr) == f"error: {missing}: HTTP 404: no document '{missing}'"
    assert stub.count("DELETE", f"/v1/documents/{DOC_ID}") == 1


def test_delete_of_existing_only_exits_0(stub: Stub) -> None:
    stub.on("DELETE", f"/v1/documents/{DOC_ID}", json_of(202, {"doc_id": DOC_ID, "status": "deleted"}))
    run = mmrag("delete", DOC_ID, "--url", stub.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{DOC_ID}  deleted\n"
