"""Roles that match the blast radius, and a limit on what one caller can grow at the edge (issue 16).

Real parts: a nats-server, the edge API over loopback HTTP with MMRAG_AUTH=on and a keys file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer

from bus.generations import GenerationStore
from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import DocumentStatus
from contracts.topology import PROGRESS_BUCKET, IndexGeneration
from edge_api import EdgeSettings, create_app
from edge_api.keys import create_key, revoke_key
from tests.engine import NatsServer
from tests.uploads import uploads_state

ACME, BETA = "acme", "beta"
ENDS_WITHIN_S = 10.0  # a revoked key's stream must end well before any of its own timeouts (60 s here)


@dataclass
class Edge:
    base: str
    nc: nats.NATS
    http: aiohttp.ClientSession
    keys_file: Path
    keys: dict[str, str]
    ids: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    async def call(self, method: str, path: str, name: str, **kwargs: object) -> tuple[int, dict, dict]:
        async with self.http.request(method, self.base + path, headers=self.auth(name), **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, await resp.json(), dict(resp.headers)

    async def seed_in_progress(self, tenant: str, doc_id: str) -> None:
        """A document of `tenant` still being ingested (so a progress stream stays open)."""
        store = ProgressStore(await self.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
        await store.update(tenant, doc_id, lambda _: store.new(tenant, doc_id, 1, DocumentStatus.PARSING, filename="x.pdf"))


@contextlib.asynccontextmanager
async def edge_app(nats_server: NatsServer, tmp_path: Path, **settings: object) -> AsyncIterator[Edge]:
    keys_file = tmp_path / "api-keys.json"
    keys, ids = {}, {}
    for name, tenant, role in (
        ("acme_admin", ACME, "admin"), ("beta_admin", BETA, "admin"), ("acme_reader", ACME, "reader"),
        ("acme_reader2", ACME, "reader"), ("ops", ACME, "operator"),
    ):  # fmt: skip
        entry, key = create_key(keys_file, tenant, role)
        keys[name], ids[name] = key, entry.id
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        await ensure_topology(nc.jetstream())
        await (await GenerationStore.open(nc.jetstream())).bootstrap(1)  # what the agents do at start
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)))
        config = EdgeSettings(
            nats_url=nats_server.url, auth="on", api_keys_file=str(keys_file), api_keys="", query_timeout_s=60.0,
            **settings,
        )  # fmt: skip
        server = await stack.enter_async_context(TestServer(create_app(config)))
        yield Edge(str(server.make_url("")).rstrip("/"), nc, http, keys_file, keys, ids)


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each event of an SSE response, until the stream ends (closed or cut)."""
    event, data = "message", []
    with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())


# --------------------------------------------------------------------------- 1. roles


async def test_a_tenant_admin_cannot_run_the_index_an_operator_can(nats_server: NatsServer, tmp_path: Path) -> None:
    async with edge_app(nats_server, tmp_path) as edge:
        # acme's admin: no re-index, no cancel, no list of every tenant's generations and counts.
        for method, path, kwargs in (
            ("POST", "/v1/reindex", {"json": {}}), ("GET", "/v1/reindex", {}), ("GET", "/v1/reindex/g1", {}),
            ("DELETE", "/v1/reindex/g2", {}), ("GET", "/v1/reindex/g1/events", {}),
        ):  # fmt: skip
            status, body, _ = await edge.call(method, path, "acme_admin", **kwargs)
            assert (status, body["error"]["code"]) == (403, "forbidden"), (method, path, body)
            assert "operator" in body["error"]["message"]
        # The operator starts one, beta's admin cannot cancel it, the operator can.
        status, started, _ = await edge.call("POST", "/v1/reindex", "ops", json={})
        assert status == 202 and started["id"] == "g2", started
        status, body, _ = await edge.call("DELETE", "/v1/reindex/g2", "beta_admin")
        assert status == 403, body
        status, listed, _ = await edge.call("GET", "/v1/reindex", "ops")
        assert status == 200 and [g["id"] for g in listed["generations"]] == ["g1", "g2"]
        status, cancelled, _ = await edge.call("DELETE", "/v1/reindex/g2", "ops")
        assert status == 202 and cancelled["state"] == "cancelled", cancelled
        # A tenant's admin still manages its own tenant: upload and delete its documents.
        form = aiohttp.FormData()
        form.add_field("file", b"acme's notes\n", filename="n.txt", content_type="text/plain")
        status, up, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=form)
        assert status == 202, up
        assert (await edge.call("DELETE", f"/v1/documents/{up['doc_id']}", "acme_admin"))[0] == 202
        status, session, _ = await edge.call("GET", "/v1/session", "ops")
        assert status == 200 and session["role"] == "operator", session


async def test_local_mode_keeps_everything_for_its_one_user(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_topology(nc.jetstream())
        await (await GenerationStore.open(nc.jetstream())).bootstrap(1)
        app = create_app(EdgeSettings(nats_url=nats_server.url, auth="off"))
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            async with http.post(server.make_url("/v1/reindex"), json={}) as resp:
                assert resp.status == 202, await resp.text()
            async with http.get(server.make_url("/v1/session")) as resp:
                assert (await resp.json())["role"] == "operator"
    finally:
        await nc.close()


# --------------------------------------------------------------------------- 2. revoking ends open streams


async def test_revoking_a_key_ends_its_open_streams(nats_server: NatsServer, tmp_path: Path) -> None:
    async with edge_app(nats_server, tmp_path) as edge:
        await edge.seed_in_progress(ACME, "0" * 32)
        started: dict[str, float] = {}

        async def follow(name: str, method: str, path: str, **kwargs: object) -> list[tuple[str, str]]:
            async with edge.http.request(method, edge.base + path, headers=edge.auth(name), **kwargs) as resp:  # type: ignore[arg-type]
                assert resp.status == 200, await resp.text()
                started[f"{name} {path}"] = time.monotonic()
                return [e async for e in sse(resp)]

        # The reader's progress and ask streams (no answer ever comes: the ask would wait 60 s), and another
        # key's progress stream, which must go on.
        async def search() -> int:
            async with edge.http.post(edge.base + "/v1/search", headers=edge.auth("acme_reader"),
                                      json={"query": "pumps"}) as resp:  # fmt: skip
                return resp.status

        assert (await edge.call("POST", "/v1/reindex", "ops", json={}))[0] == 202  # g2 builds (no agent runs)
        progress = asyncio.create_task(follow("acme_reader", "GET", "/v1/progress"))
        ask = asyncio.create_task(follow("acme_reader", "POST", "/v1/ask", json={"question": "pumps?"}))
        reindex = asyncio.create_task(follow("ops", "GET", "/v1/reindex/g2/events"))
        waiting = asyncio.create_task(search())  # no results ever come: it would wait 60 s
        other = asyncio.create_task(follow("acme_reader2", "GET", "/v1/progress"))
        deadline = time.monotonic() + 10
        while len(started) < 4:
            assert time.monotonic() < deadline, started
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert not any(t.done() for t in (progress, ask, reindex, waiting))
        revoke_key(edge.keys_file, edge.ids["acme_reader"])
        revoke_key(edge.keys_file, edge.ids["ops"])
        revoked_at = time.monotonic()
        for stream in (progress, ask, reindex):
            events = await asyncio.wait_for(stream, ENDS_WITHIN_S)
            assert events and events[-1][0] == "error", events
            assert json.loads(events[-1][1])["code"] == "unauthorized", events
        with pytest.raises(aiohttp.ClientError):  # a search waiting for its results is cut
            await asyncio.wait_for(waiting, ENDS_WITHIN_S)
        assert time.monotonic() - revoked_at < ENDS_WITHIN_S
        assert not other.done()  # another key's stream is untouched
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other
        status, body, _ = await edge.call("GET", "/v1/progress", "acme_reader")
        assert status == 401, body


# --------------------------------------------------------------------------- 3. streams per caller capped


async def test_concurrent_streams_per_key_are_capped(nats_server: NatsServer, tmp_path: Path) -> None:
    async with edge_app(nats_server, tmp_path, max_streams_per_caller=2) as edge:
        await edge.seed_in_progress(ACME, "0" * 32)
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(2):
                resp = await stack.enter_async_context(
                    edge.http.get(edge.base + "/v1/progress", headers=edge.auth("acme_reader"))
                )
                assert resp.status == 200
            consumers = (await edge.nc.jetstream().stream_info("KV_mmrag-progress")).state.consumer_count
            status, body, headers = await edge.call("GET", "/v1/progress", "acme_reader")
            assert (status, body["error"]["code"]) == (429, "too_many_streams"), body
            assert "MMRAG_MAX_STREAMS_PER_CALLER=2" in body["error"]["message"]
            assert int(headers["Retry-After"]) >= 1
            status, body, _ = await edge.call("POST", "/v1/ask", "acme_reader", json={"question": "pumps?"})
            assert status == 429, body
            # The refused request made no consumer; another key has its own allowance; a plain GET is no stream.
            assert (await edge.nc.jetstream().stream_info("KV_mmrag-progress")).state.consumer_count == consumers
            assert (await edge.call("GET", "/v1/documents", "acme_reader"))[0] == 200
            async with edge.http.get(edge.base + "/v1/progress", headers=edge.auth("acme_reader2")) as other:
                assert other.status == 200
        # Once the streams are closed, the key may open streams again.
        deadline = time.monotonic() + 10
        while True:
            async with edge.http.get(edge.base + "/v1/progress", headers=edge.auth("acme_reader")) as resp:
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, "the closed streams were never released"
            await asyncio.sleep(0.2)


async def test_stream_cap_with_auth_off_is_per_client_address(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_topology(nc.jetstream())
        store = ProgressStore(await nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
        await store.update("default", "0" * 32, lambda _: store.new("default", "0" * 32, 1, DocumentStatus.PARSING))
        app = create_app(EdgeSettings(nats_url=nats_server.url, auth="off", max_streams_per_caller=1))
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            async with http.get(server.make_url("/v1/progress")) as first:
                assert first.status == 200
                async with http.get(server.make_url("/v1/progress")) as second:
                    assert second.status == 429 and (await second.json())["error"]["code"] == "too_many_streams"
                    assert "client address" in (await second.json())["error"]["message"]
    finally:
        await nc.close()


# --------------------------------------------------------------------------- 4. per-tenant quotas


def _form(data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="notes.txt", content_type="text/plain")
    return form


async def _uploads_messages(edge: Edge) -> int:
    return (await uploads_state(edge.nc.jetstream(), ACME))[0]


async def test_document_quota_per_tenant(nats_server: NatsServer, tmp_path: Path) -> None:
    async with edge_app(nats_server, tmp_path, tenant_max_documents=2) as edge:
        docs = []
        for n in range(2):
            status, body, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"note %d\n" % n))
            assert status == 202, body
            docs.append(body["doc_id"])
        before = await _uploads_messages(edge)
        status, body, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"one too many\n"))
        assert (status, body["error"]["code"]) == (413, "quota_exceeded"), body
        assert (body["error"]["quota"], body["error"]["usage"]) == (2, 2)
        assert "MMRAG_TENANT_MAX_DOCUMENTS" in body["error"]["message"] and "delete" in body["error"]["message"]
        assert await _uploads_messages(edge) == before  # nothing of the refused upload was stored
        # Another tenant has its own quota; a delete frees a place.
        assert (await edge.call("POST", "/v1/documents", "beta_admin", data=_form(b"beta\n")))[0] == 202
        assert (await edge.call("DELETE", f"/v1/documents/{docs[0]}", "acme_admin"))[0] == 202
        assert (await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"again\n")))[0] == 202


async def test_byte_quota_per_tenant(nats_server: NatsServer, tmp_path: Path) -> None:
    async with edge_app(nats_server, tmp_path, tenant_max_bytes=100) as edge:
        status, first, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"a" * 59 + b"\n"))
        assert status == 202, first
        before = await _uploads_messages(edge)
        status, body, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"b" * 49 + b"\n"))
        assert (status, body["error"]["code"]) == (413, "quota_exceeded"), body
        assert (body["error"]["quota"], body["error"]["usage"]) == (100, 60)
        assert "MMRAG_TENANT_MAX_BYTES" in body["error"]["message"] and "40 bytes left" in body["error"]["message"]
        assert await _uploads_messages(edge) == before
        assert (await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"c" * 39 + b"\n")))[0] == 202
        status, body, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"d\n"))
        assert (status, body["error"]["usage"]) == (413, 100), body
        # beta's bytes are beta's; acme's delete gives its bytes back.
        assert (await edge.call("POST", "/v1/documents", "beta_admin", data=_form(b"e" * 99 + b"\n")))[0] == 202
        assert (await edge.call("DELETE", f"/v1/documents/{first['doc_id']}", "acme_admin"))[0] == 202
        assert (await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"f" * 49 + b"\n")))[0] == 202


async def test_page_quota_per_tenant(nats_server: NatsServer, tmp_path: Path) -> None:
    """Pages are what the parser read (the progress record's `pages`): uploads are refused once they reach it."""
    async with edge_app(nats_server, tmp_path, tenant_max_pages=10) as edge:
        status, first, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"a manual\n"))
        assert status == 202, first
        assert (await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"unparsed: 0 pages\n")))[0] == 202
        progress = ProgressStore(await edge.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
        record = await progress.update(ACME, first["doc_id"], lambda r: r and r.model_copy(update={"pages": 10}))
        assert record is not None and record.pages == 10  # as the parser records it
        status, body, _ = await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"one page more\n"))
        assert (status, body["error"]["code"]) == (413, "quota_exceeded"), body
        assert (body["error"]["quota"], body["error"]["usage"]) == (10, 10)
        assert "MMRAG_TENANT_MAX_PAGES" in body["error"]["message"]
        assert (await edge.call("POST", "/v1/documents", "beta_admin", data=_form(b"beta\n")))[0] == 202
        assert (await edge.call("DELETE", f"/v1/documents/{first['doc_id']}", "acme_admin"))[0] == 202
        assert (await edge.call("POST", "/v1/documents", "acme_admin", data=_form(b"again\n")))[0] == 202
