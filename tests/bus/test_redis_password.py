"""Redis with a password (`redis-server --requirepass`, as compose and Kubernetes run it): the edge API's answer
cache and rate limiter work when MMRAG_REDIS_URL carries it (``redis://:PASSWORD@host:6379/0``); a wrong or
missing one is a warning that names the fix, and requests are answered, neither cached nor limited (fail-open,
the documented behaviour of a Redis that cannot be used), never refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from edge_api.ratelimit import KEY_PREFIX
from tests.bus.test_cache import Agents, StartEdge, agents, start_edge  # noqa: F401 - fixtures
from tests.bus.test_ratelimit import RedisServer

PASSWORD = "s3cret-7f1c2e9a"
LIMITS = {"rate_limit_per_minute": 60, "rate_limit_burst": 3}


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    yield server
    server.stop()


async def test_the_cache_and_the_rate_limiter_work_with_the_password(
    start_edge: StartEdge, agents: Agents, locked_redis: RedisServer  # noqa: F811
) -> None:
    edge = await start_edge(redis_url=locked_redis.url, **LIMITS)
    first, second = await edge.search(top_k=3), await edge.search(top_k=3)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert len(agents.requests) == 1, "the second search is a cache hit"
    status, _ = await edge.search(query="another question")  # the bucket (3) is empty now
    assert status == 200
    status, body = await edge.search(query="a fourth question")
    assert status == 429, body
    client = Redis.from_url(locked_redis.url)
    try:
        assert await client.keys(f"{KEY_PREFIX}*"), "the bucket lives in Redis"
        assert await client.keys("mmrag:cache:entry:*"), "the answer is cached in Redis"
    finally:
        await client.aclose()


@pytest.mark.parametrize("password", ["wrong-password", None], ids=["wrong", "missing"])
async def test_refused_credentials_are_reported_and_requests_go_through_uncached_and_unlimited(
    start_edge: StartEdge, agents: Agents, locked_redis: RedisServer, password: str | None,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    edge = await start_edge(redis_url=locked_redis.url_with(password), **LIMITS)
    statuses = [(await edge.search(top_k=3))[0] for _ in range(LIMITS["rate_limit_burst"] + 2)]
    assert statuses == [200] * 5, "never refused, never limited"
    assert len(agents.requests) == 5, "never cached: every search asked the agents"
    lines = [r.getMessage() for r in caplog.records if r.name in ("edge_api.cache", "edge_api.ratelimit")]
    for name in ("answer cache", "rate limiting"):
        [line] = [x for x in lines if x.startswith(name)]  # one warning per outage, not one per request
        assert "refused the credentials of MMRAG_REDIS_URL" in line and "redis://:PASSWORD@" in line, line
        assert "failing open" in line or "without the cache" in line, line
    assert not [x for x in lines if (password and password in x) or PASSWORD in x], "a password in the log"
