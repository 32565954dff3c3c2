"""Connecting to NATS: retry until the server is up, reconnect forever, and log like a service should."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from bus.identities import inbox_prefix
from contracts.topology import TOKEN

log = logging.getLogger(__name__)


class _ThrottledErrors:
    """nats-py calls `error_cb` on every failed reconnect attempt (twice a second while the server is down);
    logging each with a traceback filled logs at ~430 KB a minute. One line per `interval_s` instead."""

    def __init__(self, name: str, interval_s: float = 30.0) -> None:
        self._name = name
        self._interval_s = interval_s
        self._last = 0.0
        self._suppressed = 0

    async def log(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last line)" if self._suppressed else ""
        log.warning("%s: NATS error: %s%s", self._name, err or type(err).__name__, more)
        self._last, self._suppressed = now, 0


def connect_options(url: str, *, user: str | None = None, password: str | None = None) -> dict[str, Any]:
    """The servers, credentials and inbox prefix for `nats.connect`: user/password given here win over the URL's."""
    servers = [s.strip() for s in url.split(",") if s.strip()]
    url_user = next((urlsplit(s).username for s in servers if urlsplit(s).username), None)
    who = user or url_user
    options: dict[str, Any] = {"servers": servers}
    if user:
        options |= {"user": user, "password": password or ""}
    if who and TOKEN.match(who):
        options["inbox_prefix"] = inbox_prefix(who)
    return options


async def _connect_once(url: str, user: str | None, password: str | None, **options: Any) -> NATS:
    """`nats.connect`, except that refused credentials end it: nats-py would retry them forever (it reconnects
    without limit, and reports each refusal only to `error_cb`)."""
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    error_cb = options.pop("error_cb")

    async def on_error(err: Exception) -> None:
        if refused_credentials(err) and not refused.done():
            refused.set_result(err)
        await error_cb(err)

    connecting = asyncio.ensure_future(
        nats.connect(**connect_options(url, user=user, password=password), error_cb=on_error, **options)
    )
    await asyncio.wait([connecting, refused], return_when=asyncio.FIRST_COMPLETED)
    if connecting.done() and not refused.done():
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(BaseException):
        nc = await connecting
        await nc.close()
    err = refused.result() if refused.done() else None
    raise CredentialsRefused(
        f"NATS at {redacted(url)} refused the credentials of {options.get('name')} ({err}): set "
        "MMRAG_NATS_USER/MMRAG_NATS_PASSWORD (or nats://user:password@host:port) to this process's identity "
        "(docs/operations.md, 'NATS identities')"
    ) from err


class CredentialsRefused(RuntimeError):
    """The server refused this identity (wrong user or password, or none given); the message says what to set."""


def refused_credentials(err: BaseException) -> bool:
    """Whether a connect error is the server refusing the credentials (nats-py raises a plain `Error` for it)."""
    return isinstance(err, nats.errors.AuthorizationError) or "authorization violation" in str(err).lower()


def redacted(url: str) -> str:
    """`url` (comma-separated servers) with any password replaced by ``***``: for logs and messages."""
    out = []
    for server in url.split(","):
        parts = urlsplit(server.strip())
        if parts.password:
            server = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
        out.append(server)
    return ",".join(out)


async def connect(
    url: str,
    *,
    name: str,
    connect_within_s: float = 30.0,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_disconnect: Callable[[], None] | None = None,
    user: str | None = None,
    password: str | None = None,
) -> NATS:
    """Connect, retrying with backoff while the server is not up yet (e.g. pods starting together).

    The caller owns the connection and closes it (``drain()`` on shutdown). Once connected, nats-py
    reconnects by itself forever, and awaits `on_reconnect` after each reconnection. `on_disconnect` is called
    (synchronously, before any reconnect attempt) each time the connection is lost, never on our own drain or
    close: what waits on the connection can give up at once instead of after its own timeout.

    `user`/`password` (`ProcessSettings.nats_credentials`) override credentials in the URL. The inbox prefix is
    the identity's own (`bus.identities.inbox_prefix`): the server lets each identity subscribe only there.
    """

    throttled = _ThrottledErrors(name)
    client: list[NATS] = []  # set once connected, so the callbacks can tell a shutdown from an outage

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own drain/close: not news
        log.warning("%s: disconnected from NATS; reconnecting", name)
        if on_disconnect is not None:
            try:
                on_disconnect()
            except Exception:  # noqa: BLE001 - a failed hook must not kill the client's reconnect loop
                log.exception("%s: on_disconnect hook failed", name)

    async def reconnected() -> None:
        log.info("%s: reconnected to NATS", name)
        if on_reconnect is not None:
            try:
                await on_reconnect()
            except Exception:  # noqa: BLE001 - a failed hook must not kill the client's reconnect loop
                log.exception("%s: on_reconnect hook failed", name)

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(connect_within_s),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception_type((OSError, nats.errors.NoServersError, asyncio.TimeoutError)),
        reraise=True,
    ):
        with attempt:
            nc = await _connect_once(
                url, user, password,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=throttled.log,
            )
            client.append(nc)
            return nc
    raise AssertionError("unreachable")
