"""Liveness (`/health`: is this process alive) and readiness (`/ready`: can it do its job now)."""

from __future__ import annotations

from aiohttp import web

from contracts.topology import REQUIRED_STREAMS
from edge_api.state import backbone


async def health(request: web.Request) -> web.Response:
    # Always 200: restarting this process would not bring NATS back. `nats` says whether requests can work.
    if backbone(request).is_connected:
        return web.json_response({"status": "ok", "nats": "connected"})
    return web.json_response({"status": "degraded", "nats": "disconnected"})


async def ready(request: web.Request) -> web.Response:
    bb = backbone(request)
    if not bb.is_connected or bb.js is None:
        return web.json_response({"status": "not ready", "nats": "disconnected"}, status=503)
    missing = []
    for name in REQUIRED_STREAMS:
        try:
            await bb.js.stream_info(name)
        except Exception:  # noqa: BLE001 - any failure means that stream is not usable
            missing.append(name)
    if missing:
        return web.json_response({"status": "not ready", "nats": "connected", "missing_streams": missing}, status=503)
    return web.json_response({"status": "ready", "nats": "connected"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
