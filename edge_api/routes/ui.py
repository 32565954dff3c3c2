"""The web UI: static files of ours (plain ES modules and CSS, no build step) and the session it starts from.

- ``GET /`` is the page (`edge_api/static/ui/index.html`); ``GET /ui/{asset}`` its modules, stylesheet and
  icon. The set of assets is the directory's files, read once: any other name is a 404, and no path can leave
  the directory (an asset name is one path segment of known characters). Both are open (no API key): the
  page holds no data; every request it makes for data carries the key the user signs in with.
- ``GET /v1/session``: who the caller is, ``{"auth": "on"|"off", "tenant", "role"}``. With auth on and no
  valid key it is the usual 401, which is how the page learns that it must ask for a key.

The page's Content-Security-Policy allows only this origin's scripts, styles and requests, and images from
this origin or ``blob:`` (pictures fetched with the API key are shown through object URLs).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import Tenant
from edge_api.errors import ApiError
from edge_api.identity import identity_of, tenant_of
from edge_api.keys import Role
from edge_api.operations import Empty, Err, Json, Media, Operation
from edge_api.state import SETTINGS

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
INDEX = "index.html"
PAGE_PATH = "/"
ASSET_PATH = "/ui/{asset}"
SESSION_PATH = "/v1/session"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_ASSET_NAME = re.compile(r"^[a-z0-9_-]{1,64}\.[a-z]{2,4}\Z")


class Session(BaseModel):
    """Who the caller is: the tenant every request of this key acts for, and what its role allows."""

    model_config = ConfigDict(extra="forbid")

    auth: Literal["on", "off"] = Field(description="`off`: no key needed, every request is the default tenant")
    tenant: Tenant
    role: Role = Field(description="with auth off: `operator` (the one local user may do everything)")


@functools.cache
def assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, ETag) of every servable file of the UI directory."""
    out = {}
    for path in sorted(UI_DIR.iterdir()):
        if path.is_file() and _ASSET_NAME.match(path.name) and path.suffix in CONTENT_TYPES:
            body = path.read_bytes()
            out[path.name] = (body, CONTENT_TYPES[path.suffix], f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return out


def _serve(request: web.Request, name: str) -> web.Response:
    found = assets().get(name)
    if found is None:
        raise ApiError(404, "not_found", f"the web UI has no file {name[:100]!r}")
    body, content_type, etag = found
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",  # revalidate: a new release is picked up at once, unchanged files are 304
        "X-Content-Type-Options": "nosniff",
    }
    if content_type == "text/html":
        headers["Content-Security-Policy"] = PAGE_CSP
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


async def page(request: web.Request) -> web.Response:
    return _serve(request, INDEX)


async def asset(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["asset"])


async def session(request: web.Request) -> Session:
    settings = request.app[SETTINGS]
    identity = identity_of(request)
    role = identity.role if identity is not None else "operator"  # auth off: every request may do everything
    return Session(auth=settings.auth, tenant=tenant_of(request), role=role)


NOT_MODIFIED = Empty("`If-None-Match` named this picture's ETag")
ASSET = {
    "name": "asset", "in": "path", "required": True, "description": "a file of the UI, e.g. `app.js`",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip

OPERATIONS = (
    Operation(
        "GET", PAGE_PATH, page, "uiPage", "ui", "The web UI", role=None,
        responses={
            200: Media("an HTML page (no external resources)", {"text/html": {"schema": {"type": "string"}}}),
            304: NOT_MODIFIED,
        },
    ),
    Operation(
        "GET", ASSET_PATH, asset, "uiAsset", "ui", "A module, stylesheet or icon of the web UI", role=None,
        parameters=(ASSET,),
        responses={
            200: Media("the file", {t: {"schema": {"type": "string"}} for t in sorted(set(CONTENT_TYPES.values()))}),
            304: NOT_MODIFIED,
            404: Err("`not_found`: no such file"),
        },
    ),
    Operation(
        "GET", SESSION_PATH, session, "session", "ui", "Who the caller is (tenant and role)", role="reader",
        responses={200: Json("the caller", Session)},
    ),
)  # fmt: skip
