"""`/mcp` is bounded like the API's other streams (edge_api/mcp.py): the edge API in-process on a real nats-server,
no agents, so an MCP `ask` stays open until its query times out. An MCP request is one of its key's streams
(`MMRAG_MAX_STREAMS_PER_CALLER`: one more is a 429), and a revoked key's open MCP request ends."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import nats
from aiohttp.test_utils import TestServer

from bus.generations import GenerationStore
from bus.topology import ensure_topology
from edge_api import EdgeSettings, create_app
from edge_api.keys import create_key, revoke_key
from tests.engine import NatsServer

ACCEPT = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


def call(tool: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}


async def test_an_mcp_request_is_a_stream_of_its_key_and_ends_when_the_key_is_revoked(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys.json"
    entry, key = create_key(keys, "t1", "reader")
    nc = await nats.connect(nats_server.url)
    await ensure_topology(nc.jetstream())
    await (await GenerationStore.open(nc.jetstream())).bootstrap(1)
    # Two streams per key: an MCP `ask` holds both (its POST to /mcp, and the /v1/ask it makes with the same key).
    settings = EdgeSettings(nats_url=nats_server.url, auth="on", api_keys_file=str(keys), api_keys="",
                            max_streams_per_caller=2, query_timeout_s=30.0)  # fmt: skip
    headers = {**ACCEPT, "Authorization": f"Bearer {key}"}
    try:
        async with TestServer(create_app(settings)) as server, aiohttp.ClientSession(headers=headers) as http:
            url = str(server.make_url("/mcp"))

            async def ask() -> str:
                async with http.post(url, json=call("ask", {"question": "What is the pump's flow?"})) as resp:
                    return f"{resp.status} {await resp.text()}"

            pending = asyncio.create_task(ask())
            await asyncio.sleep(1.0)  # the ask is waiting for agents that do not exist
            assert not pending.done()
            async with http.post(url, json=call("list_documents", {})) as resp:
                body = await resp.json()
                assert resp.status == 429 and body["error"]["code"] == "too_many_streams", body
                assert resp.headers["Retry-After"] == "5"

            revoke_key(keys, entry.id)
            started = time.monotonic()
            try:
                outcome = await asyncio.wait_for(pending, timeout=10)
            except aiohttp.ClientError as err:  # the connection was cut
                outcome = repr(err)
            assert time.monotonic() - started < 5, "the revoked key's MCP request should end within seconds"
            assert "Response payload is not completed" in outcome, outcome  # cut, not answered
            async with http.post(url, json=call("list_documents", {})) as resp:
                assert resp.status == 401
                assert json.loads(await resp.text())["error"]["code"] == "unauthorized"
    finally:
        await nc.close()
