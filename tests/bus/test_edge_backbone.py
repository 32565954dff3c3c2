"""The edge API when NATS goes away and comes back: precise 503s, then service again, no restart needed."""

from __future__ import annotations

import asyncio

import aiohttp
import nats
from aiohttp.test_utils import TestServer

from bus.topology import ensure_topology
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
