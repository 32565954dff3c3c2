"""The probes: liveness (`/health`: is this process alive), readiness (`/ready`: can it do its job now) and
the Prometheus metrics (`/metrics`, served by `edge_api.metrics`)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contracts.topology import REQUIRED_STREAMS
from edge_api import metrics
from edge_api.operations import Json, Media, Operation, Reply
from edge_api.state import backbone


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_Response):
    """Liveness: always 200 while the process runs; `nats` says whether requests can work."""

    status: Literal["ok", "degraded"] = Field(description="`degraded` while NATS is disconnected")
    nats: Literal["connected", "disconnected"]


class Ready(_Response):
    """Readiness: NATS is connected and every stream the API needs exists."""

    status: Literal["ready"]
    nats: Literal["connected"]


class NotReady(_Response):
    """Not ready: NATS is disconnected, or some streams the API needs do not exist (yet)."""

    status: Literal["not ready"]
    nats: Literal["connected", "disconnected"]
    missing_streams: list[str] | None = Field(default=None, description="present when NATS is connected")


async def health(request: web.Request) -> Health:
    # Always 200: restarting this process would not bring NATS back. `nats` says whether requests can work.
    if backbone(request).is_connected:
        return Health(status="ok", nats="connected")
    return Health(status="degraded", nats="disconnected")


async def ready(request: web.Request) -> Ready | Reply:
    bb = backbone(request)
    if not bb.is_connected or bb.js is None:
        return Reply(NotReady(status="not ready", nats="disconnected"), status=503)
    missing = []
    for name in REQUIRED_STREAMS:
        try:
            await bb.js.stream_info(name)
        except Exception:  # noqa: BLE001 - any failure means that stream is not usable
            missing.append(name)
    if missing:
        return Reply(NotReady(status="not ready", nats="connected", missing_streams=missing), status=503)
    return Ready(status="ready", nats="connected")


OPERATIONS = (
    Operation(
        "GET", "/health", health, "health", "probes", "Liveness of the process", role=None,
        responses={200: Json("always, while the process runs", Health)},
    ),
    Operation(
        "GET", "/ready", ready, "ready", "probes", "Readiness: NATS connected, streams exist", role=None,
        responses={200: Json("ready to serve requests", Ready), 503: Json("not ready (yet)", NotReady)},
    ),
    Operation(
        "GET", "/metrics", metrics.metrics, "metrics", "probes", "Prometheus metrics of this process", role=None,
        description="Request counts and latencies per route, method and status. The format follows `Accept`: the "
        "Prometheus text format by default, OpenMetrics when the scraper asks for it.",
        responses={
            200: Media("the metrics", {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            }),
        },
    ),
)  # fmt: skip
