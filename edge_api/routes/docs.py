"""The API's own description: the OpenAPI 3.1 document (`edge_api.openapi`) and a static page that renders it.

The page (`edge_api/static/docs.html`) is plain HTML and JavaScript of ours: it fetches the document from this
server and loads nothing from anywhere else (no CDN, no external fonts).
"""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from edge_api.openapi import DOCS_PAGE_PATH, OPENAPI_PATH, build_document

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
DOCS_PAGE = STATIC_DIR / "docs.html"
# The page runs only its own inline script and style, and may fetch only from this origin.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _page() -> bytes:
    return DOCS_PAGE.read_bytes()


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_document())


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(), content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": PAGE_CSP}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, openapi_document)
    app.router.add_get(DOCS_PAGE_PATH, docs_page)
