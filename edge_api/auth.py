"""Authentication (API keys, `edge_api.keys`) and authorization (roles) of every request but the open ones.

- The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. None, an unknown one or a revoked
  one: 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``.
- Roles: ``reader`` may GET and search/ask; ``writer`` may also upload and delete; ``admin`` manages its own
  tenant; ``operator`` runs the whole deployment: a re-index (start, cancel, list, follow) spans every tenant and
  shows every tenant's counts, so it is the operator's alone (no tenant key is an operator unless made one).
  An operation not listed below is the operator's (fail closed). Not allowed: 403 ``forbidden``.
- Open to anyone: the probes, ``/metrics`` and the API's own description (`OPEN_PATHS`); an unknown path or
  method is answered (404/405) without looking at keys: it reveals nothing.
- With ``MMRAG_AUTH=on`` and no key source configured (neither ``MMRAG_API_KEYS_FILE`` nor ``MMRAG_API_KEYS``)
  the API starts, logs an error, and answers 401 to every protected request: it fails closed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from edge_api.errors import ApiError, Handler
from edge_api.identity import IDENTITY, Identity
from edge_api.keys import ROLE_RANK, KeyRing
from edge_api.settings import EdgeSettings
from edge_api.state import SETTINGS

log = logging.getLogger(__name__)

KEYRING = web.AppKey("keyring", KeyRing)
API_KEY_HEADER = "X-API-Key"
# (Literal paths: `edge_api.openapi` imports this module to mark each operation's security.)
# The web UI's page and static assets ("/", "/ui/{asset}") hold no data: every data request they make needs a key.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/v1/openapi.json", "/v1/docs", "/", "/ui/{asset}"})
# (method, route) -> the least role that may call it; an unlisted GET/HEAD is `reader`, anything else unlisted
# `operator`. Each route declares the same role (`Operation.role`); tests/e2e/test_openapi.py checks they agree.
REQUIRED_ROLE: dict[tuple[str, str], str] = {
    ("POST", "/v1/search"): "reader",
    ("POST", "/v1/ask"): "reader",
    # A conversation is its owner's (the key that made it): a reader asks, so a reader keeps conversations.
    ("POST", "/v1/conversations"): "reader",
    ("PATCH", "/v1/conversations/{id}"): "reader",
    ("DELETE", "/v1/conversations/{id}"): "reader",
    ("PUT", "/v1/conversations/{id}/turns/{n}/feedback"): "reader",
    ("POST", "/v1/documents"): "writer",
    ("DELETE", "/v1/documents/{doc_id}"): "writer",
    ("PUT", "/v1/documents/{doc_id}"): "writer",
    ("PATCH", "/v1/documents/{doc_id}"): "writer",
    ("PUT", "/v1/documents/{doc_id}/collections"): "writer",  # a new revision of the stored upload
    ("POST", "/v1/documents/{doc_id}/reparse"): "writer",
    # MCP (edge_api.mcp): its tools call the routes above with the same key, which decide what the role may do.
    ("POST", "/mcp"): "reader",
    ("DELETE", "/mcp"): "reader",
    # A re-index re-parses every tenant's documents, becomes what every tenant searches, and its records count
    # every tenant's documents: starting, cancelling and following one is the operator's, not a tenant admin's.
    ("POST", "/v1/reindex"): "operator",
    ("DELETE", "/v1/reindex/{id}"): "operator",
    ("GET", "/v1/reindex"): "operator",
    ("GET", "/v1/reindex/{id}"): "operator",
    ("GET", "/v1/reindex/{id}/events"): "operator",
    # Evaluations run the tenant's questions and keep its reports: its admin's (a given generation: operator,
    # checked by the route, `edge_api.routes.evaluations`).
    ("POST", "/v1/evaluations"): "admin",
    ("GET", "/v1/evaluations"): "admin",
    ("GET", "/v1/evaluations/{id}"): "admin",
}
_CHALLENGE = 'Bearer realm="mmrag"'


def required_role(method: str, route: str) -> str | None:
    """The least role for an operation; None if it is open to anyone."""
    if route in OPEN_PATHS:
        return None
    if (method, route) in REQUIRED_ROLE:
        return REQUIRED_ROLE[(method, route)]
    if method in ("GET", "HEAD"):
        return "reader"
    return "operator"


def keyring_for(settings: EdgeSettings) -> KeyRing | None:
    """The key ring of these settings (None with auth off). Raises `KeysFileError` on an invalid keys file."""
    if settings.auth == "off":
        return None
    ring = KeyRing(Path(settings.api_keys_file) if settings.api_keys_file else None, settings.api_keys)
    if not ring.configured:
        log.error(
            "MMRAG_AUTH=on but no API keys are configured (MMRAG_API_KEYS_FILE or MMRAG_API_KEYS): every request "
            "but /health, /ready, /metrics and the API description is refused with 401; create a key with "
            "`mmrag keys create --tenant T --role R --file F`"
        )
    return ring


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        return value.strip() or None if scheme.lower() == "bearer" else None
    return request.headers.get(API_KEY_HEADER, "").strip() or None


def _unauthorized(message: str, error: str | None = None) -> ApiError:
    challenge = f'{_CHALLENGE}, error="{error}"' if error else _CHALLENGE
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.app[SETTINGS].auth == "off":
        return await handler(request)
    match = request.match_info
    if match.http_exception is not None:  # unknown path or method: 404/405 from the handler
        return await handler(request)
    route = match.route.resource.canonical if match.route.resource is not None else request.path
    role = required_role(request.method, route)
    if role is None:
        return await handler(request)
    ring = request.app[KEYRING]
    if not ring.configured:
        raise _unauthorized("authentication is on and this server has no API keys configured")
    key = presented_key(request)
    if key is None:
        raise _unauthorized(f"send an API key: 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'")
    entry = ring.lookup(key)
    if entry is None:
        raise _unauthorized("the API key is not valid (unknown or revoked)", "invalid_token")
    if ROLE_RANK[entry.role] < ROLE_RANK[role]:
        raise ApiError(403, "forbidden", f"the API key's role {entry.role!r} may not do this (needs {role!r})")
    request[IDENTITY] = Identity(tenant=entry.tenant, role=entry.role, key_id=entry.id)
    return await handler(request)
