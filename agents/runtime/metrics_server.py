"""The Prometheus endpoint of an agent process: ``/metrics`` and ``/health`` on `AgentSettings.metrics_port`.

It also keeps the consumer gauges (``mmrag_consumer_pending`` and ``mmrag_consumer_ack_pending``, the
autoscaling signal) of the durable consumers this process runs. They are refreshed by a background task every
`CONSUMER_REFRESH_S` seconds rather than by a custom Collector at scrape time, because:

- ``consumer_info`` is an async NATS request and a Collector's ``collect()`` is synchronous, run by
  ``generate_latest`` on the event loop: it cannot await the answer;
- a scrape then never waits on NATS (several scrapers, or NATS down, cost nothing more), and the load on the
  JetStream API is one request per consumer per interval, whatever scrapes;
- a few seconds of staleness is nothing to an autoscaler that averages over a minute.

The same numbers are served as JSON on ``/lag`` (total, per durable *role* summed over index generations, per
consumer): KEDA's `metrics-api` trigger scales the ingest agents on it, because its `nats-jetstream` trigger
needs one exact durable name and the ingest durables change name with every re-index (``parser-g1`` ->
``parser-g2``).

A consumer whose state cannot be read (NATS down, consumer deleted) loses its series until it can again:
an absent series is honest, a frozen backlog would keep scaling on a number that is no longer true.

A port already taken (several `mmrag agent` processes on one host) is logged and the agents run without the
endpoint: metrics are never worth an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from aiohttp import web
from nats.js import JetStreamContext

from bus.tasks import cancel_and_wait
from contracts.topology import ConsumerDef, durable_role
from telemetry.metrics import exposition, forget_consumer_state, set_consumer_state

log = logging.getLogger(__name__)

CONSUMER_REFRESH_S = 5.0
_INFO_TIMEOUT_S = 2.0


async def metrics(request: web.Request) -> web.Response:
    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def refresh_consumer_gauges(
    js: JetStreamContext, consumers: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """Read each (stream, durable)'s state from the server and set its gauges; forget those that fail.

    Returns (pending, ack pending) of each consumer that could be read."""
    consumers = list(consumers)
    infos = await asyncio.gather(
        *(js.consumer_info(stream, durable, timeout=_INFO_TIMEOUT_S) for stream, durable in consumers),
        return_exceptions=True,
    )
    read: dict[tuple[str, str], tuple[int, int]] = {}
    for (stream, durable), info in zip(consumers, infos, strict=True):
        if isinstance(info, BaseException):
            forget_consumer_state(stream, durable)
        else:
            read[(stream, durable)] = (info.num_pending or 0, info.num_ack_pending or 0)
            set_consumer_state(stream, durable, *read[(stream, durable)])
    return read


def lag_view(read: dict[tuple[str, str], tuple[int, int]]) -> dict[str, object]:
    """The body of ``GET /lag``: backlog (not yet delivered) in total and per durable role, summed over index
    generations, so that an autoscaler's query names no generation and keeps working after a re-index."""
    by_role: Counter[str] = Counter()
    for (_, durable), (pending, _) in sorted(read.items()):
        by_role[durable_role(durable)] += pending
    return {
        "pending": sum(p for p, _ in read.values()),
        "ack_pending": sum(a for _, a in read.values()),
        "by_role": dict(by_role),
        "consumers": {f"{stream}/{durable}": {"pending": p, "ack_pending": a} for (stream, durable), (p, a) in
                      sorted(read.items())},
    }  # fmt: skip


class MetricsServer:
    """Serves the default registry over HTTP and refreshes the consumer gauges while it runs.

    ``port=0`` binds a free port (tests); the host does not create a server at all when the setting is 0.
    """

    def __init__(
        self,
        port: int,
        js: JetStreamContext,
        consumers: Iterable[ConsumerDef],
        *,
        host: str | None = None,  # None = all interfaces: Prometheus scrapes the pod's address
        refresh_s: float = CONSUMER_REFRESH_S,
    ) -> None:
        self._port = port
        self._host = host
        self._js = js
        self._consumers = sorted({(c.stream, c.durable) for c in consumers})
        self._refresh_s = refresh_s
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._last_warning = 0.0
        self.port: int | None = None  # the bound port, once started
        self._read: dict[tuple[str, str], tuple[int, int]] = {}  # the last refresh's (pending, ack pending)

    def set_consumers(self, consumers: Iterable[ConsumerDef]) -> None:
        """Report these consumers from the next refresh on (the host's set changes with index generations)."""
        self._consumers = sorted({(c.stream, c.durable) for c in consumers})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        app.router.add_get("/lag", self._lag_endpoint)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            log.error("metrics endpoint not started, port %d unavailable: %s", self._port, err)
            return
        self._runner = runner
        self.port = runner.addresses[0][1]
        self._refresher = asyncio.create_task(self._refresh_forever(), name="metrics:consumer-gauges")
        log.info("metrics on :%d/metrics", self.port)

    async def _lag_endpoint(self, request: web.Request) -> web.Response:
        """The consumers' backlog as JSON, for KEDA's `metrics-api` trigger (`valueLocation: by_role.<role>`).
        503 until a refresh has read at least one consumer: an autoscaler must not read "no backlog" then."""
        if not self._read:
            return web.json_response({"error": "no consumer state read yet (NATS unreachable?)"}, status=503)
        return web.json_response(lag_view(self._read))

    async def stop(self) -> None:
        await cancel_and_wait(self._refresher)
        self._refresher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _refresh_forever(self) -> None:
        while True:
            try:
                self._read = await refresh_consumer_gauges(self._js, self._consumers)
            except Exception as err:  # noqa: BLE001 - a gauge refresh must never take the agents down
                if time.monotonic() - self._last_warning >= 60:
                    self._last_warning = time.monotonic()
                    log.warning("consumer gauges not refreshed: %r", err)
            await asyncio.sleep(self._refresh_s)
