"""Requests aiohttp's HTTP parser refuses before any handler runs get the API's JSON error body too.

Sent as raw bytes over loopback to the edge API served the way `python -m edge_api` serves it
(`edge_api.serving`): an over-long request line (a 10,000-character document id), an over-long header, a
malformed request line, a header with a control character.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from edge_api import EdgeSettings, create_app
from edge_api.serving import JsonErrorsAppRunner
from tests.engine import NatsServer, free_port


@pytest.fixture
async def edge_port(nats_server: NatsServer) -> AsyncIterator[int]:
    runner = JsonErrorsAppRunner(create_app(EdgeSettings(nats_url=nats_server.url)), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; the status, headers (lower-case names) and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)  # the server closes the connection after a refusal
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


LONG_ID = "d" * 10_000
PROBES = {
    "a 10,000-character document id": (
        f"GET /v1/documents/{LONG_ID} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), "line_too_long"
    ),
    "a header line over 8,190 bytes": (
        b"GET /v1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * 10_000 + b"\r\n\r\n", "line_too_long"
    ),
    "a malformed request line": (b"GET\x01 / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None),
    "a control character in a header": (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\r\n\r\n", None),
}


@pytest.mark.parametrize("probe", list(PROBES))
async def test_a_request_the_parser_refuses_gets_a_json_error(edge_port: int, probe: str) -> None:
    request, code = PROBES[probe]
    status, headers, body = await raw(edge_port, request)
    assert status == 400, body
    assert headers["content-type"].startswith("application/json"), (headers, body)
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "request_id"}, error
    assert error["code"] == (code or error["code"]) and error["code"] in ("line_too_long", "bad_request", "bad_request_line")
    assert error["request_id"] == headers["x-request-id"]
    assert LONG_ID[:100] not in body.decode() and "\\x01" not in body.decode()  # the input is not echoed


async def test_requests_the_parser_accepts_are_answered_as_before(edge_port: int) -> None:
    status, headers, body = await raw(edge_port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["nats"] == "connected"
    status, headers, body = await raw(edge_port, b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


async def test_python_m_edge_api_answers_json_refusals_and_stops_on_sigterm(nats_server: NatsServer) -> None:
    """The process `mmrag up` starts serves through `edge_api.serving.run`, and SIGTERM still ends it cleanly."""
    port = free_port()
    env = os.environ | {"MMRAG_HOST": "127.0.0.1", "MMRAG_PORT": str(port), "NATS_URL": nats_server.url}
    proc = subprocess.Popen([sys.executable, "-m", "edge_api"], env=env, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                status, _, _ = await raw(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("python -m edge_api never listened")
        assert status == 200
        request, _ = PROBES["a 10,000-character document id"]
        status, headers, body = await raw(port, request)
        assert status == 400 and json.loads(body)["error"]["code"] == "line_too_long", body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
