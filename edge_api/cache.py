"""The answer cache of the edge API: final `/v1/search` results and complete `/v1/ask` event streams, in Redis.

- When: ``MMRAG_REDIS_URL`` is set and ``MMRAG_CACHE=on`` (the default). Without a Redis there is no cache and
  nothing is logged about it.
- Key: ``mmrag:cache:entry:<tenant>:<global epoch>:<tenant epoch>:<digest>``; the digest is SHA-256 of the
  index generation the edge API serves and the `QueryRequest`'s JSON without its ``request_id``: the tenant,
  mode, query, top_k, filters, schema version, and any field added to the request later, with no list to
  keep up to date. The epochs are read (and created if missing) *before* the request is published, in the
  same script as the entry (`bus.cache_epochs`): an answer computed before an ingest that the indexer then
  announces is stored under the old epoch, where nobody looks any more.
- What: for a search, the response body; for a question, every SSE event as it was sent (name, data, id) so
  a hit replays the same sequence. Only answers that ended with ``done`` and never sent ``error`` or
  ``reset`` are stored: an error, a timeout or a provider failover is never replayed.
- TTL ``MMRAG_CACHE_TTL_S`` on every entry; entries over `MAX_ENTRY_BYTES` are not stored.
- Redis down or slow (timeouts of `MMRAG_REDIS_TIMEOUT_S`): the request is answered without the
  cache (a miss that is not stored), ``mmrag_answer_cache_total{result="unavailable"}`` counts it, one warning
  is logged per outage and one line when Redis answers again. After an error Redis is not asked for
  `REDIS_RETRY_S`, so an outage costs at most one timeout per interval.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from pydantic import TypeAdapter

from bus.cache_epochs import ENTRY_PREFIX, GLOBAL_EPOCH_KEY, new_epoch, redis_client, redis_failure, tenant_epoch_key
from contracts.messages import AnswerEvent, Hit, QueryRequest
from edge_api.settings import EdgeSettings
from telemetry.metrics import ANSWER_CACHE

log = logging.getLogger(__name__)

REDIS_RETRY_S = 1.0
MAX_ENTRY_BYTES = 1024 * 1024

# KEYS: tenant epoch, global epoch. ARGV: a fresh epoch (used where one is missing), the entry key's prefix,
# the digest. Returns the entry key and its value (nil on a miss). Atomic, so two readers never set two epochs.
_LOOKUP = """
local function epoch(key)
  local value = redis.call('GET', key)
  if not value then
    value = ARGV[1]
    redis.call('SET', key, value)
  end
  return value
end
local tenant = epoch(KEYS[1])
local global = epoch(KEYS[2])
local key = ARGV[2] .. global .. ':' .. tenant .. ':' .. ARGV[3]
return {key, redis.call('GET', key)}
"""


# The shape of what is cached (hits and answer events): a release that changes it reads none of the entries an
# older one stored (a stored body the routes' declared models now reject would otherwise answer 500 until its TTL).
CACHED_SHAPE = hashlib.sha256(
    json.dumps([Hit.model_json_schema(), TypeAdapter(AnswerEvent).json_schema()], sort_keys=True).encode()
).hexdigest()[:16]


def digest(query: QueryRequest, generation: int) -> str:
    """What the answer depends on, hashed: the request without its id, the index generation and the shape of the
    cached bodies."""
    data = query.model_dump(mode="json", exclude={"request_id"})
    canonical = json.dumps({"generation": generation, "request": data, "shape": CACHED_SHAPE}, sort_keys=True,
                           separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Lookup:
    """The outcome of a lookup: the cached value (None on a miss), and where to store the answer on a miss
    (None when the cache is off or Redis failed: nothing is stored then)."""

    value: bytes | None
    slot: str | None


MISS_NO_STORE = Lookup(None, None)


class AnswerCache:
    """The cache of one app. `lookup` and `store` never raise."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.enabled = settings.cache == "on" and bool(settings.redis_url)
        self.ttl_s = settings.cache_ttl_s
        self._client = None
        self._script = None
        self._skip_until = 0.0
        self._failing = False
        self._unavailable_since_log = 0

    async def start(self) -> None:
        if self.enabled:
            self._client = redis_client(self.settings.redis_url, self.settings.redis_timeout_s)
            self._script = self._client.register_script(_LOOKUP)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = self._script = None

    async def lookup(self, query: QueryRequest, route: str, generation: int) -> Lookup:
        """The cached answer of `query`, or where to store it. Counted per route as hit, miss or unavailable."""
        if self._script is None:
            return MISS_NO_STORE
        if time.monotonic() < self._skip_until:
            self._unavailable(route, None)
            return MISS_NO_STORE
        prefix = f"{ENTRY_PREFIX}{query.tenant}:"
        try:
            key, value = await self._script(
                keys=[tenant_epoch_key(query.tenant), GLOBAL_EPOCH_KEY],
                args=[new_epoch(), prefix, digest(query, generation)],
            )
        except Exception as err:  # noqa: BLE001 - connection refused, timeout, a script error: answer without
            self._unavailable(route, err)
            return MISS_NO_STORE
        self._recovered()
        ANSWER_CACHE.labels(route, "miss" if value is None else "hit").inc()
        return Lookup(value, key.decode() if isinstance(key, bytes) else str(key))

    async def store(self, slot: str | None, value: bytes) -> bool:
        """Store an answer where its lookup said; False when not stored (no slot, too large, Redis failed)."""
        if self._client is None or slot is None or len(value) > MAX_ENTRY_BYTES:
            return False
        try:
            await self._client.set(slot, value, ex=self.ttl_s)
        except Exception as err:  # noqa: BLE001
            self._unavailable(None, err)
            return False
        return True

    def _unavailable(self, route: str | None, err: Exception | None) -> None:
        if route is not None:
            ANSWER_CACHE.labels(route, "unavailable").inc()
            self._unavailable_since_log += 1
        if err is None:
            return
        self._skip_until = time.monotonic() + REDIS_RETRY_S
        if not self._failing:
            self._failing = True
            log.warning("answer cache: %s; answering without the cache until it is back", redis_failure(err))

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info(
                "answer cache: Redis answers again (%d requests were answered without the cache)",
                self._unavailable_since_log,
            )
        self._unavailable_since_log = 0


ANSWER_CACHE_KEY = web.AppKey("answer_cache", AnswerCache)


def answer_cache(request: web.Request) -> AnswerCache:
    return request.app[ANSWER_CACHE_KEY]


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    cache = app[ANSWER_CACHE_KEY]
    await cache.start()
    try:
        yield
    finally:
        await cache.close()


def setup(app: web.Application, settings: EdgeSettings) -> None:
    app[ANSWER_CACHE_KEY] = AnswerCache(settings)
    app.cleanup_ctx.append(_lifecycle)


# --------------------------------------------------------------------------- what is stored for /v1/ask

SentEvent = tuple[str, str, str | None]  # (event name, data, id) exactly as sent on the SSE stream


def encode_events(events: list[SentEvent]) -> bytes:
    return json.dumps([list(e) for e in events], separators=(",", ":")).encode()


def decode_events(value: bytes) -> list[SentEvent]:
    return [(str(name), str(data), None if sid is None else str(sid)) for name, data, sid in json.loads(value)]


def cacheable_answer(events: list[SentEvent]) -> bool:
    """A complete answer that never failed: ends with ``done``, no ``error`` nor ``reset`` anywhere."""
    names = [name for name, _, _ in events]
    return bool(names) and names[-1] == "done" and "error" not in names and "reset" not in names
