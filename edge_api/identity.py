"""Who is asking, as a tenant: the ONE place where a request's identity becomes a tenant.

Today every request is the settings' default tenant. When API keys arrive, this function maps the key to
its tenant; every route already takes its tenant from here and never from a body or a path.
"""

from __future__ import annotations

from aiohttp import web

from edge_api.state import SETTINGS


def tenant_of(request: web.Request) -> str:
    return request.app[SETTINGS].default_tenant
