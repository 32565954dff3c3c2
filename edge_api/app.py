"""The edge API: HTTP + Server-Sent Events for clients, NATS for everything behind it.

It never imports an agent: it publishes contract messages and reads their answers. Its state (settings and
the NATS handles, `edge_api.state`) is stored under typed keys before the app is frozen; the cleanup context
`backbone_lifecycle` connects and closes NATS around the app's life.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bus.connection import connect
from edge_api import cache, mcp, metrics, ratelimit, streams
from edge_api.auth import KEYRING, auth_middleware, keyring_for
from edge_api.errors import error_middleware
from edge_api.openapi import build_document
from edge_api.operations import register
from edge_api.routes import OPERATIONS, api_reference, pages
from edge_api.security import security_middleware
from edge_api.settings import EdgeSettings
from edge_api.state import BACKBONE, SETTINGS, Backbone
from edge_api.tracing import tracing_middleware

log = logging.getLogger(__name__)

# Largest body of a JSON endpoint (a question is at most a few KiB); uploads stream and have their own limit.
MAX_JSON_BODY_BYTES = 64 * 1024

__all__ = ["BACKBONE", "SETTINGS", "Backbone", "backbone_lifecycle", "create_app"]


async def backbone_lifecycle(app: web.Application) -> AsyncIterator[None]:
    bb = app[BACKBONE]
    user, password = bb.settings.nats_credentials()
    bb.nc = await connect(
        bb.settings.nats_url, name="mmrag-edge-api", user=user, password=password, on_disconnect=bb.connection_lost
    )
    bb.js = bb.nc.jetstream()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await bb.nc.drain()
        bb.nc = bb.js = None


def create_app(settings: EdgeSettings | None = None) -> web.Application:
    """The aiohttp application. The caller runs it (and so owns its lifecycle)."""
    settings = settings or EdgeSettings()
    # Middlewares run outermost first: every error below, the security checks included, becomes JSON, and the
    # metrics middleware records the status the client got. The tracing middleware (a span per request, current
    # while the route publishes) sees that status too. Authentication comes after the Host/Origin checks, and
    # the rate limit after authentication (its bucket is the API key's; a refused key takes no token), and the
    # count of a caller's open requests (the stream cap, the end of a revoked key's streams) after the rate limit.
    keyring = keyring_for(settings)  # an invalid keys file raises here: the API does not start
    app = web.Application(
        middlewares=[
            metrics.metrics_middleware,
            tracing_middleware,
            error_middleware,
            security_middleware,
            auth_middleware,
            ratelimit.ratelimit_middleware,
            streams.streams_middleware,
        ],
        client_max_size=MAX_JSON_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[BACKBONE] = Backbone(settings)
    if keyring is not None:
        app[KEYRING] = keyring
    app.cleanup_ctx.append(backbone_lifecycle)
    ratelimit.setup(app, settings)  # its Redis client (if any) opens and closes with the app
    streams.setup(app)  # the stream cap, and the watch that ends a revoked key's requests
    cache.setup(app, settings)  # the answer cache (edge_api.cache): the same, with MMRAG_REDIS_URL
    pages.setup(app)  # the page pictures' render caches
    api_reference.setup(app, build_document())
    register(app, OPERATIONS)  # every route, as its module declares it (edge_api.operations)
    mcp.setup(app)  # /mcp: the MCP server (JSON-RPC, described by the MCP spec, not by the OpenAPI document)
    return app
