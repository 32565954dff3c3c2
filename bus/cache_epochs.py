"""Invalidation of the answer cache (`edge_api.cache`) by epochs: the names of the keys, and the writer's side.

Every cache entry's key contains the current *epoch* of its tenant and the global epoch. An epoch is an opaque
random token (not a counter) kept in Redis without a TTL:

- ``mmrag:cache:epoch:<tenant>``: replaced by the indexer after every batch it makes searchable and every
  deletion it applies for that tenant (`EpochInvalidator.bump`), so the tenant's entries written before can
  never be read again (they expire by their TTL);
- ``mmrag:cache:epoch``: the global epoch, replaced by whoever changes what every tenant's search reads
  (`EpochInvalidator.bump_all`, e.g. when the serving index generation changes).

Tokens rather than INCR: a counter that is evicted (an LRU-configured Redis) or lost would start again at a
value whose old entries may still be stored; a token is never reused. A reader that finds no epoch sets a
fresh one (`edge_api.cache`), so a lost epoch invalidates everything written under the old one.

Fail-open: an invalidation that fails (Redis down or slow) never fails the indexer's batch; the tenants are
remembered and the bump is retried every `RETRY_S` until Redis answers. Entries a failed bump should have
retired can be served until then (only if this process cannot reach a Redis that the edge API still reaches),
and never beyond their TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable

from bus.tasks import cancel_and_wait

log = logging.getLogger(__name__)

KEY_PREFIX = "mmrag:cache:"
GLOBAL_EPOCH_KEY = KEY_PREFIX + "epoch"
ENTRY_PREFIX = KEY_PREFIX + "entry:"
REDIS_TIMEOUT_S = 0.25  # the default of MMRAG_REDIS_TIMEOUT_S: past it the caller goes on without the cache
RETRY_S = 1.0
GLOBAL = "*"  # in the pending set: the global epoch (a tenant can never be "*")


def tenant_epoch_key(tenant: str) -> str:
    return f"{KEY_PREFIX}epoch:{tenant}"


def new_epoch() -> str:
    return secrets.token_hex(8)


def redis_failure(err: BaseException) -> str:
    """A failed Redis call, for a log line. Refused credentials name the fix: they never heal by waiting."""
    from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError

    what = f"{type(err).__name__}: {err}"
    if isinstance(err, AuthenticationError | AuthorizationError | NoPermissionError) or str(err).startswith(
        ("NOAUTH", "WRONGPASS", "NOPERM")
    ):
        return (
            f"Redis refused the credentials of MMRAG_REDIS_URL ({what}): put the password the server requires, or "
            "an ACL user allowed GET, SET, EVALSHA and SCRIPT, in the URL: redis://:PASSWORD@HOST:6379/0 or "
            "redis://USER:PASSWORD@HOST:6379/0 (rediss:// for TLS)"
        )
    return f"Redis unavailable ({what})"


def redis_client(url: str, timeout_s: float = REDIS_TIMEOUT_S):  # noqa: ANN201 - redis.asyncio.Redis
    """An async client that fails fast: short socket timeouts and no retries (callers fail open)."""
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False, health_check_interval=0,
    )  # fmt: skip


class EpochInvalidator:
    """The writer's side: replace epochs so cached answers of a tenant (or of everyone) are never read again.

    Without a Redis URL it does nothing (there is no cache to invalidate). Owned by one agent; `close()` it.
    """

    def __init__(self, url: str | None, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self._client = redis_client(url, timeout_s) if url else None
        self._pending: set[str] = set()
        self._retry: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def pending(self) -> frozenset[str]:
        """Tenants (and `GLOBAL`) whose bump failed and is being retried."""
        return frozenset(self._pending)

    async def bump(self, tenants: Iterable[str]) -> bool:
        """Give each tenant a new epoch. True when Redis took it (or there is no cache); never raises."""
        if self._client is None:
            return True
        self._pending.update(tenants)
        if self._failing:  # the retry task is on it: no timeout per batch while Redis is away
            return False
        return await self._flush()

    async def bump_all(self) -> bool:
        """Give everyone a new epoch (the global one). Same contract as `bump`."""
        return await self.bump([GLOBAL])

    async def _flush(self) -> bool:
        assert self._client is not None
        if not self._pending:
            return True
        batch = set(self._pending)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for tenant in batch:
                    pipe.set(GLOBAL_EPOCH_KEY if tenant == GLOBAL else tenant_epoch_key(tenant), new_epoch())
                await pipe.execute()
        except Exception as err:  # noqa: BLE001 - Redis down, slow or refusing: never fail the caller
            if not self._failing:
                log.warning(
                    "answer cache: cannot invalidate: %s; retrying every %g s, cached answers of %d "
                    "tenant(s) may be served until then or until they expire", redis_failure(err), RETRY_S,
                    len(self._pending),
                )  # fmt: skip
                self._failing = True
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._retry_forever())
            return False
        self._pending -= batch
        if self._failing and not self._pending:
            self._failing = False
            log.info("answer cache: invalidation works again")
        return True

    async def _retry_forever(self) -> None:
        while self._pending:
            await asyncio.sleep(RETRY_S)
            await self._flush()

    async def close(self) -> None:
        await cancel_and_wait(self._retry)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
