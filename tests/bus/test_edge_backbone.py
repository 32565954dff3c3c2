"""The edge API when NATS goes away and comes back: precise 503s, then service again, no restart needed."""

from __future__ import annotations

import asyncio

import aiohttp
import nats
from aiohttp.test_utils import TestServer

from bus.topology import ensure_topology
from contracts.messages import DocumentProgress, DocumentStatus
from contracts.topology import PROGRESS_BUCKET, IndexGeneration, progress_key
from edge_api import EdgeSettings, create_app
from tests.engine import NatsServer, upload_bytes
from tests.factories import make_pdf


async def test_backbone_down_gives_503_and_recovers(nats_server: NatsServer) -> None:
    async with await nats.connect(nats_server.url) as nc:
        await ensure_topology(nc.jetstream())
    app = create_app(EdgeSettings(nats_url=nats_server.url, query_timeout_s=2))
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        base = str(server.make_url("")).rstrip("/")
        async with http.get(f"{base}/ready") as resp:
            assert resp.status == 200

        nats_server.stop()
        async with http.get(f"{base}/health") as resp:
            assert resp.status == 200  # the process is alive...
            assert await resp.json() == {"status": "degraded", "nats": "disconnected"}
        async with http.get(f"{base}/ready") as resp:
            assert resp.status == 503  # ...but not ready
            assert (await resp.json())["nats"] == "disconnected"
        async with http.post(f"{base}/v1/search", json={"query": "anything"}) as resp:
            assert resp.status == 503
            body = await resp.json()
            assert body["error"]["code"] == "backbone_unavailable" and "retry later" in body["error"]["message"]
        resp = await upload_bytes(http, base, make_pdf(["hello"]), "a.pdf")
        assert resp.status == 503

        nats_server.start()  # same port, same store: the edge API reconnects by itself
        async with await nats.connect(nats_server.url) as nc:
            await ensure_topology(nc.jetstream())  # the memory stream QUERIES is re-created, as agents do
        for _ in range(100):
            async with http.get(f"{base}/ready") as resp:
                ready = (resp.status, await resp.json())
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert ready[0] == 200, ready
        resp = await upload_bytes(http, base, make_pdf(["hello again"]), "b.pdf")
        assert resp.status == 202


async def test_requests_waiting_for_their_answer_end_with_503_when_nats_goes_away(nats_server: NatsServer) -> None:
    """A search, a page of passages and an ask already published (no agent answers them) when nats-server stops:
    the search and the passages get a JSON 503 `backbone_unavailable`, the ask's stream an `error` event with that
    code, instead of waiting out the query timeout for a 504 / a `timeout` event (their answers would travel on
    core NATS and are lost with the connection). A progress stream ends the same way."""
    async with await nats.connect(nats_server.url) as nc:
        await ensure_topology(nc.jetstream())
        record = DocumentProgress(
            doc_id="d1", tenant="default", generation=1, revision=1, status=DocumentStatus.PARSING, filename="a.pdf"
        )
        await (await nc.jetstream().key_value(PROGRESS_BUCKET)).put(
            progress_key(IndexGeneration(1), "default", "d1"), record.model_dump_json().encode()
        )  # a document in progress: its /v1/progress stream stays open
    app = create_app(EdgeSettings(nats_url=nats_server.url, query_timeout_s=20))
    spy = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        published = await spy.subscribe("query.retrieve.>")
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            base = str(server.make_url("")).rstrip("/")

            async def answer(method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
                async with http.request(method, f"{base}{path}", json=body) as resp:
                    if resp.content_type == "application/json":
                        return resp.status, await resp.json()
                    return resp.status, await resp.text()

            search = asyncio.create_task(answer("POST", "/v1/search", {"query": "anything"}))
            passages = asyncio.create_task(answer("GET", "/v1/documents/d1/passages"))
            ask = asyncio.create_task(answer("POST", "/v1/ask", {"question": "anything?"}))
            for _ in range(3):  # all three are published and wait for their answers
                await published.next_msg(timeout=10)
            progress = await http.get(f"{base}/v1/progress")
            assert (await progress.content.readline()).strip() == b"event: document"  # its first event came

            nats_server.stop()
            for task in (search, passages):
                status, body = await task
                assert status == 503, body
                assert isinstance(body, dict) and body["error"]["code"] == "backbone_unavailable", body
                assert "unreachable" in body["error"]["message"] and "retry" in body["error"]["message"]
            status, stream = await ask
            assert status == 200 and isinstance(stream, str)
            assert "event: error" in stream and "backbone_unavailable" in stream and '"timeout"' not in stream, stream
            rest = (await progress.content.read()).decode()
            assert "event: error" in rest and "backbone_unavailable" in rest, rest
            progress.release()
    finally:
        await spy.close()
