"""Who is asking, as a tenant: the ONE place where a request's identity becomes a tenant.

With auth on (`MMRAG_AUTH=on`, the default) `edge_api.auth.auth_middleware` authenticates the request's API key
and stores its `Identity` on the request; the tenant is the key's. With auth off (`mmrag up` on loopback) every
request is the settings' default tenant. Every route takes its tenant from here, never from a body or a path.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from edge_api.errors import ApiError
from edge_api.state import SETTINGS


@dataclass(frozen=True)
class Identity:
    tenant: str
    role: str
    key_id: str


IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def tenant_of(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    if settings.auth == "off":
        return settings.default_tenant
    identity = request.get(IDENTITY)
    if identity is None:  # a route the auth middleware let through as open must never ask for a tenant
        raise ApiError(401, "unauthorized", "send an API key", headers={"WWW-Authenticate": 'Bearer realm="mmrag"'})
    return identity.tenant
