"""Rate limits per caller: a token bucket of ``MMRAG_RATE_LIMIT_BURST`` tokens refilled at
``MMRAG_RATE_LIMIT_PER_MINUTE`` tokens a minute (0 = no limit, the default).

- Who is a caller: with ``MMRAG_AUTH=on``, the API key (its id, set by `edge_api.auth`); with auth off, the
  client's IP address as the TCP peer (``request.remote``). ``X-Forwarded-For`` is not trusted: behind a
  proxy with auth off every client shares the proxy's bucket. A request refused with 401/403 never reaches
  the limiter (it runs after authentication) and takes no token.
- What is limited: every matched ``/v1/*`` route but the API description (`edge_api.auth.OPEN_PATHS`);
  ``/health``, ``/ready`` and ``/metrics`` never are; nor are unknown paths (404/405).
- Over the limit: 429 ``rate_limited`` with ``Retry-After`` (whole seconds, rounded up) and
  ``mmrag_ratelimited_total{route}``. An allowed request's response carries ``X-RateLimit-Remaining``.
- Where the bucket lives: with ``MMRAG_REDIS_URL``, in Redis (hash ``mmrag:rl:<identity>`` with a TTL of a
  full refill, updated by one Lua script on Redis's own clock), so every edge replica shares it; without it,
  in this process (a bounded LRU dict on the monotonic clock).
- Redis unreachable or slow (socket timeouts ``MMRAG_RATE_LIMIT_REDIS_TIMEOUT_S``): the request goes through
  unlimited (fail-open), ``mmrag_ratelimit_failopen_total`` counts it, and one warning is logged per
  `FAILOPEN_LOG_INTERVAL_S` (not per request). After an error Redis is not asked again for
  `REDIS_RETRY_S`, so an outage costs at most one timeout per interval, not one per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from bus.cache_epochs import redis_failure
from edge_api.auth import OPEN_PATHS
from edge_api.errors import ApiError, Handler
from edge_api.identity import IDENTITY
from edge_api.settings import EdgeSettings
from edge_api.state import SETTINGS
from telemetry.metrics import RATELIMIT_FAILOPEN, RATELIMITED

log = logging.getLogger(__name__)

REMAINING_HEADER = "X-RateLimit-Remaining"
KEY_PREFIX = "mmrag:rl:"
MAX_LOCAL_BUCKETS = 10_000
FAILOPEN_LOG_INTERVAL_S = 60.0
REDIS_RETRY_S = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int  # whole tokens left after this request
    retry_after_s: float  # 0 when allowed: when the next token is there

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class LocalBuckets:
    """Token buckets in this process: identity -> (tokens, last update on `clock`), least recently used evicted
    beyond `max_keys` (an evicted caller starts again with a full bucket)."""

    def __init__(
        self, burst: int, per_minute: float, *, max_keys: int = MAX_LOCAL_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, identity: str) -> Decision:
        now = self.clock()
        tokens, last = self._buckets.pop(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            decision = Decision(True, int(tokens), 0.0)
        else:
            decision = Decision(False, 0, (1.0 - tokens) / self.rate)
        self._buckets[identity] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return decision

    def __len__(self) -> int:
        return len(self._buckets)


# KEYS[1] the bucket; ARGV: burst, tokens per second, TTL in ms. Redis's clock (TIME), so replicas with skewed
# clocks agree. Floats travel as strings (a Lua number reply is truncated to an integer).
_LUA = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, math.floor(tokens), string.format('%.6f', retry)}
"""


class RedisBuckets:
    """The same bucket in Redis, shared by every edge replica that uses this Redis."""

    def __init__(self, url: str, burst: int, per_minute: float, timeout_s: float) -> None:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.burst = burst
        self.rate = per_minute / 60.0
        self.ttl_ms = math.ceil(burst / self.rate * 1000) + 1000  # a full refill: then absent == full
        self.client = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False, health_check_interval=0,
        )  # fmt: skip
        self._script = self.client.register_script(_LUA)

    async def take(self, identity: str) -> Decision:
        allowed, remaining, retry = await self._script(
            keys=[KEY_PREFIX + identity], args=[self.burst, repr(self.rate), self.ttl_ms]
        )
        return Decision(bool(int(allowed)), int(remaining), float(retry))

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    """The limiter of one app: Redis buckets with a fail-open path, or local ones."""

    def __init__(self, settings: EdgeSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.rate_limit_per_minute > 0
        self.settings = settings
        self.clock = clock
        self.local = LocalBuckets(settings.rate_limit_burst, settings.rate_limit_per_minute, clock=clock)
        self.redis: RedisBuckets | None = None
        self._skip_redis_until = 0.0
        self._last_failopen_log: float | None = None
        self._failopen_since_log = 0
        self._failing = False

    async def start(self) -> None:
        s = self.settings
        if self.enabled and s.redis_url:
            self.redis = RedisBuckets(
                s.redis_url, s.rate_limit_burst, s.rate_limit_per_minute, s.rate_limit_redis_timeout_s
            )

    async def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.close()
            self.redis = None

    async def take(self, identity: str) -> Decision | None:
        """The decision for one request; None = let through unlimited (Redis failed: fail-open)."""
        if self.redis is None:
            return self.local.take(identity)
        now = time.monotonic()
        if now < self._skip_redis_until:
            self._fail_open(None)
            return None
        try:
            decision = await self.redis.take(identity)
        except Exception as err:  # connection refused, timeout, a script error: never block a request on it
            self._skip_redis_until = time.monotonic() + REDIS_RETRY_S
            self._fail_open(err)
            return None
        if self._failing:
            self._failing = False
            log.info(
                "rate limiting: Redis answers again, limits are enforced (%d requests let through unlimited)",
                self._failopen_since_log,
            )
            self._failopen_since_log = 0
            self._last_failopen_log = None
        return decision

    def _fail_open(self, err: Exception | None) -> None:
        RATELIMIT_FAILOPEN.inc()
        self._failing = True
        self._failopen_since_log += 1
        now = time.monotonic()
        if err is not None and (
            self._last_failopen_log is None or now - self._last_failopen_log >= FAILOPEN_LOG_INTERVAL_S
        ):
            log.warning(
                "rate limiting: %s; failing open, requests are not limited "
                "(%d let through since the last such line; next line in %.0f s at most)",
                redis_failure(err), self._failopen_since_log, FAILOPEN_LOG_INTERVAL_S,
            )  # fmt: skip
            self._last_failopen_log = now
            self._failopen_since_log = 0


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
_REMAINING = web.RequestKey("ratelimit_remaining", int)


def limited_route(request: web.Request) -> str | None:
    """The canonical route of a request the limiter applies to, else None."""
    match = request.match_info
    if match.http_exception is not None or match.route.resource is None:
        return None
    route = match.route.resource.canonical
    if not route.startswith("/v1/") or route in OPEN_PATHS or request.method == "OPTIONS":
        return None
    return route


def identity_key(request: web.Request) -> str:
    identity = request.get(IDENTITY)
    if request.app[SETTINGS].auth == "on" and identity is not None:
        return f"key:{identity.key_id}"
    return f"ip:{request.remote or 'unknown'}"


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiter = request.app[RATE_LIMITER]
    if not limiter.enabled:
        return await handler(request)
    route = limited_route(request)
    if route is None:
        return await handler(request)
    decision = await limiter.take(identity_key(request))
    if decision is not None and not decision.allowed:
        RATELIMITED.labels(route).inc()
        retry = decision.retry_after_header
        raise ApiError(
            429, "rate_limited", f"too many requests for this API key or client; retry in {retry} s",
            headers={"Retry-After": retry}, retry_after_s=int(retry),
        )  # fmt: skip
    if decision is not None:
        request[_REMAINING] = decision.remaining
    return await handler(request)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    remaining = request.get(_REMAINING)
    if remaining is not None:  # streamed answers included: this runs before their headers are sent
        response.headers[REMAINING_HEADER] = str(remaining)


async def ratelimit_lifecycle(app: web.Application) -> AsyncIterator[None]:
    limiter = app[RATE_LIMITER]
    await limiter.start()
    try:
        yield
    finally:
        await limiter.close()


def setup(app: web.Application, settings: EdgeSettings) -> None:
    app[RATE_LIMITER] = RateLimiter(settings)
    app.cleanup_ctx.append(ratelimit_lifecycle)
    app.on_response_prepare.append(_on_prepare)
