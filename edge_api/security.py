"""Browser-facing defences: CSRF (Origin), DNS rebinding (Host) and JSON-only bodies.

- A ``Host`` header naming a host this server does not answer to is refused (421) on every method and every
  path but the probes (/health, /ready): a page on
  ``evil.example`` that re-resolves its name to 127.0.0.1 reaches us with ``Host: evil.example``.
- An unsafe method (POST, PUT, PATCH, DELETE) with an ``Origin`` that is not allowed is refused (403): a page
  of another site cannot make the user's browser upload, ask or delete. Requests without ``Origin``
  (curl, the CLI, server-to-server) are not browsers' cross-site requests and pass.
- JSON endpoints accept only ``application/json`` (415): a cross-site form or ``text/plain`` fetch, which a
  browser sends without a CORS preflight, never reaches a handler.
- CORS: a browser page from an allowed origin (``MMRAG_ALLOWED_ORIGINS``) gets the ``Access-Control-*``
  headers it needs, preflights included; any other origin gets none (and its preflight a 403), so its script
  cannot read our responses.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from edge_api.errors import ApiError, Handler
from edge_api.state import SETTINGS

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Probes (kubelet, load balancers) call these by IP: they reveal and change nothing, so any Host may.
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, X-API-Key, Content-Type, Last-Event-ID, traceparent"
CORS_EXPOSED = "X-Request-Id, Retry-After, X-RateLimit-Remaining"
CORS_MAX_AGE_S = 600
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})


def _split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` or ``[v6]:port`` -> (lowercase name without brackets, port or None); ('', None) if invalid."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def _default_host_names(request: web.Request) -> set[str]:
    names = set(LOOPBACK_NAMES)
    bind = request.app[SETTINGS].host.strip("[]").lower()
    if bind not in _WILDCARD_BINDS:
        names.add(bind)
    return names


def host_allowed(request: web.Request) -> bool:
    allowed = request.app[SETTINGS].hosts
    if "*" in allowed:
        return True
    name, port = _split_host(request.host)
    if not name:
        return False
    if not allowed:
        return name in _default_host_names(request)
    for entry in allowed:
        entry_name, entry_port = _split_host(entry)
        if entry_name == name and (entry_port is None or entry_port == port):
            return True
    return False


def origin_allowed(request: web.Request, origin: str) -> bool:
    origin = origin.strip().lower().rstrip("/")
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        return False
    configured = request.app[SETTINGS].origins
    if origin in configured:
        return True
    # Same origin: the page was served by this very host (whose name passed the Host check).
    if parts.netloc == request.host.lower():
        return True
    if configured:  # an explicit list replaces the loopback defaults below
        return False
    # The loopback names on this server's port, e.g. http://localhost:8080 calling http://127.0.0.1:8080.
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname in _default_host_names(request) and (origin_port or default_port) == _local_port(request)


def require_json(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise ApiError(
            415, "unsupported_media_type",
            f"send the body as application/json (got {request.content_type or 'no content type'})",
        )  # fmt: skip


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in PROBE_PATHS and not host_allowed(request):
        raise ApiError(
            421, "forbidden_host",
            f"this server does not answer to host {request.host!r}; add it to MMRAG_ALLOWED_HOSTS if it is yours",
        )  # fmt: skip
    origin = request.headers.get("Origin")
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if origin is not None and (request.method in UNSAFE_METHODS or preflight) and not origin_allowed(request, origin):
        raise ApiError(
            403, "forbidden_origin",
            f"requests from origin {origin!r} are not allowed; add it to MMRAG_ALLOWED_ORIGINS if it is yours",
        )  # fmt: skip
    if preflight and not isinstance(request.match_info.http_exception, web.HTTPNotFound):  # a route of ours
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
    else:
        response = await handler(request)
    if origin is not None and origin_allowed(request, origin):
        # Only an allowed origin is ever echoed: the browser then lets that page read the response.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        response.headers.add("Vary", "Origin")
    return response
