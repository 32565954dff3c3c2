"""The API's own description: the OpenAPI 3.1 document (`edge_api.openapi`, assembled from every route module's
`OPERATIONS`) and a static page that renders it.

The page (`edge_api/static/docs.html`) is plain HTML and JavaScript of ours: it fetches the document from this
server and loads nothing from anywhere else (no CDN, no external fonts). The document is built once, when the app
is (`create_app` stores it under `API_DOCUMENT`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from aiohttp import web

from edge_api.operations import Media, Operation

OPENAPI_PATH = "/v1/openapi.json"
PAGE_PATH = "/v1/docs"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_FILE = STATIC_DIR / "docs.html"
# The page runs only its own inline script and style, and may fetch only from this origin.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
API_DOCUMENT = web.AppKey("api_document", str)  # the OpenAPI document as JSON text


@functools.cache
def _page() -> bytes:
    return PAGE_FILE.read_bytes()


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(text=request.app[API_DOCUMENT])


async def reference_page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(), content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": PAGE_CSP}
    )


def setup(app: web.Application, document: dict) -> None:
    """Serve `document` (the app's OpenAPI document) at `OPENAPI_PATH`."""
    app[API_DOCUMENT] = json.dumps(document)


OPERATIONS = (
    Operation(
        "GET", OPENAPI_PATH, openapi_document, "openapi", "meta", "This document", role=None,
        responses={200: Media("the OpenAPI 3.1 document", {"application/json": {"schema": {"type": "object"}}})},
    ),
    Operation(
        "GET", PAGE_PATH, reference_page, "docsPage", "meta", "This document as a readable page", role=None,
        responses={
            200: Media("an HTML page (no external resources)", {"text/html": {"schema": {"type": "string"}}}),
        },
    ),
)  # fmt: skip
