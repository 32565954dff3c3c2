"""One OpenTelemetry SERVER span per HTTP request: where a question's or an upload's trace begins.

The span is current while the route runs, so what it publishes (`bus.publish` injects the current context)
carries its ``traceparent``, and every agent's span of that ask or upload is in this trace. A client that
sends a ``traceparent`` itself gets its trace continued. Log lines written meanwhile carry ``request_id`` and
``tenant`` (`telemetry.logs`).

Span name: method and route template (``POST /v1/ask``, ``GET /v1/documents/{doc_id}``), never the raw path;
attributes: method, route, status code, ``mmrag.request_id``, ``mmrag.tenant``. A 5xx marks it as an error.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from opentelemetry.trace import SpanKind, Status, StatusCode

from edge_api.errors import request_id
from edge_api.identity import tenant_of
from telemetry import tracing


def route_template(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _tenant(request: web.Request) -> str | None:
    """The tenant, if the request's identity is known by now (it may not be before authentication)."""
    try:
        return tenant_of(request)
    except Exception:  # noqa: BLE001 - no identity (yet): the attribute is set later, or never
        return None


@web.middleware
async def tracing_middleware(request: web.Request, handler) -> web.StreamResponse:
    route = route_template(request)
    rid = request_id(request)
    attributes = {
        "http.request.method": request.method,
        "url.path": request.path,
        "mmrag.request_id": rid,
    }
    if route is not None:
        attributes["http.route"] = route
    logged = {"request_id": rid}
    if (tenant := _tenant(request)) is not None:
        attributes["mmrag.tenant"] = logged["tenant"] = tenant
    name = f"{request.method} {route}" if route is not None else f"{request.method}"
    with (
        tracing.tracer().start_as_current_span(
            name, context=tracing.extract(request.headers), kind=SpanKind.SERVER, attributes=attributes,
            set_status_on_exception=False,
        ) as span,
        structlog.contextvars.bound_contextvars(**logged),
    ):  # fmt: skip
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if tenant is None and (tenant := _tenant(request)) is not None:
                span.set_attribute("mmrag.tenant", tenant)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
