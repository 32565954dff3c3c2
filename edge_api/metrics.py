"""Request metrics of the edge API (`telemetry.metrics`): a middleware that times every request, and ``GET /metrics``
(declared with the probes in `edge_api.routes.health`).

The ``route`` label is the matched route's canonical path (``/v1/documents/{doc_id}``), so a label set is
per endpoint, never per document; a request no route matched (404, 405) is ``other``. The middleware is the
outermost one: it records the status the client got, JSON errors included.
"""

from __future__ import annotations

import time

from aiohttp import web

from edge_api.errors import Handler
from telemetry.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, exposition

UNMATCHED_ROUTE = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    method = request.method if request.method in _METHODS else "other"
    route = route_label(request)
    status = 500  # what the client gets if an exception escapes below
    start = time.perf_counter()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # the few that pass error_middleware (redirects)
        status = exc.status
        raise
    finally:
        HTTP_REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - start)
        HTTP_REQUESTS.labels(method, route, str(status)).inc()


async def metrics(request: web.Request) -> web.Response:
    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})
