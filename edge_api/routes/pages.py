"""Pictures of a tenant's documents for a browser: a page of the stored original, and an image a hit points at.

- ``GET /v1/documents/{doc_id}/pages/{page}?width=N``: page ``page`` (1-based) of the original (a PDF page
  rendered by PyMuPDF; an uploaded image file is its own page 1) as a PNG ``N`` pixels wide (default
  `DEFAULT_WIDTH`, clamped to `MIN_WIDTH`..`MAX_WIDTH`). ``X-Page-Width``/``X-Page-Height`` give the page's size
  in the units of a chunk's bbox (PDF points; pixels for an image file) and ``X-Page-Count`` the pages, so
  a client scales a bbox by ``picture width / X-Page-Width``.
- ``GET /v1/documents/{doc_id}/pages/{page}/text``: the page's text layer (a PDF), or a text file's text (page 1).
- ``GET /v1/documents/{doc_id}/images/{image_id}?width=N``: the image of an image hit (`Hit.image.object_name`
  is ``<tenant>/<doc_id>/images/<image_id>``) as a PNG at most ``N`` wide.

Tenant check: the object names are built from `tenant_of(request)`, never from the client, and the document's
progress record must exist for that tenant and not be deleted; anything else is the same 404 as an unknown
document. Errors: 400 ``invalid_query`` (width not an integer from 1), 404 ``not_found`` (document, page or
image), 422 ``not_renderable`` (a text, CSV or office document: no page pictures; an encrypted or broken file).

Caching: the renders (and the originals they come from) are kept in bounded in-process LRUs (`ByteLRU`). A
doc id and revision name one upload's bytes forever, so a render never goes stale: responses carry a strong ``ETag``
and ``Cache-Control: private, max-age`` (private: they are one tenant's), and ``If-None-Match`` gets 304.
The tenant check runs before the cache is consulted, so a deleted document's renders are never served.
"""

from __future__ import annotations

import asyncio
import re

import nats.js.errors
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import DocumentStatus
from contracts.topology import TOKEN, object_name
from edge_api.errors import ApiError
from edge_api.identity import tenant_of
from edge_api.operations import ERR_503, Empty, Err, Json, Media, Operation
from edge_api.page_images import (
    ByteLRU,
    NotRenderable,
    PageOutOfRange,
    Rendered,
    page_text,
    render_image,
    render_page,
)
from contracts.messages import Identifier
from edge_api.routes.documents import DOC_ID, DOC_PATH
from edge_api.state import backbone

DEFAULT_WIDTH = 800
MIN_WIDTH = 64
MAX_WIDTH = 2000
RENDER_CACHE_BYTES = 64 * 1024 * 1024
SOURCE_CACHE_BYTES = 128 * 1024 * 1024  # originals above a quarter of this are fetched again for each render
CACHE_MAX_AGE_S = 24 * 3600
MAX_CONCURRENT_RENDERS = 2  # renders are CPU-bound threads: never more than this at once per process
MAX_PAGE_NUMBER = 999_999  # a page path segment is at most 6 digits (a bigger number is a 404, never parsed)
_WIDTH = re.compile(r"^[0-9]{1,6}\Z")  # a bigger width is a 400; up to this it is clamped to MAX_WIDTH
_PAGE = re.compile(r"^[0-9]{1,6}\Z")

RENDERS = web.AppKey("page_renders", ByteLRU)
SOURCES = web.AppKey("page_sources", ByteLRU)
RENDER_SLOTS = web.AppKey("page_render_slots", asyncio.Semaphore)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what)


def requested_width(request: web.Request) -> int:
    raw = request.query.get("width", str(DEFAULT_WIDTH))
    if not _WIDTH.match(raw) or int(raw) < 1:
        raise ApiError(
            400, "invalid_query", f"width must be a whole number of pixels from 1 (got {raw[:20]!r})", field="width"
        )
    return min(MAX_WIDTH, max(MIN_WIDTH, int(raw)))


async def _check_document(request: web.Request, tenant: str, doc_id: str) -> int:
    """404 unless `doc_id` is a live document of `tenant` (the same answer for another tenant's document); else
    its revision (a `PUT /v1/documents/{doc_id}` replaces the upload: caches and ETags are per revision)."""
    if not TOKEN.match(doc_id):
        raise _not_found(f"no document {doc_id[:100]!r}")
    record = await (await backbone(request).progress()).get(tenant, doc_id)
    if record is None or record.status == DocumentStatus.DELETED:
        raise _not_found(f"no document {doc_id!r}")
    if record.status == DocumentStatus.FAILED:  # refused by the parser (a bomb, a broken file): never decoded here
        raise ApiError(422, "not_renderable", f"document {doc_id!r} failed to ingest, so it has no pages to show: "
                       f"{record.error or 'see its status'}")  # fmt: skip
    return record.revision


async def _object(request: web.Request, name: str, missing: str, revision: int = 0) -> bytes:
    sources = request.app[SOURCES]
    data = sources.get((name, revision))
    if data is None:
        store = await backbone(request).uploads(tenant_of(request))  # the caller's own bucket only
        try:
            data = (await store.get(name)).data or b""
        except nats.js.errors.NotFoundError:  # never stored, or deleted
            raise _not_found(missing) from None
        sources.put((name, revision), data)
    return data


def _picture(request: web.Request, rendered: Rendered, etag: str) -> web.Response:
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={CACHE_MAX_AGE_S}",
        "Vary": "Authorization, X-API-Key",
        "X-Page-Width": f"{rendered.page_width:g}",
        "X-Page-Height": f"{rendered.page_height:g}",
        "X-Page-Count": str(rendered.pages),
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=rendered.png, content_type="image/png", headers=headers)


async def _render(request: web.Request, key: tuple, name: str, missing: str, make, revision: int = 0) -> Rendered:  # noqa: ANN001
    """The cached picture `key`, or `make(original)` of the object `name`: fetched and rendered inside one render
    slot, so that concurrent requests never hold more originals in memory than there are slots."""
    renders = request.app[RENDERS]
    rendered = renders.get(key)
    if rendered is None:
        async with request.app[RENDER_SLOTS]:
            source = await _object(request, name, missing, revision)
            try:
                rendered = await asyncio.to_thread(make, source)
            except NotRenderable as err:
                raise ApiError(422, "not_renderable", str(err)) from None
            except PageOutOfRange as err:
                raise _not_found(str(err)) from None
        renders.put(key, rendered)
    return rendered


async def page_image(request: web.Request) -> web.Response:
    tenant, doc_id = tenant_of(request), request.match_info["doc_id"]
    raw_page = request.match_info["page"]
    width = requested_width(request)
    revision = await _check_document(request, tenant, doc_id)
    if not _PAGE.match(raw_page) or int(raw_page) < 1:
        raise _not_found(f"no page {raw_page[:20]!r}: pages are numbered from 1")
    page = int(raw_page)
    key = ("page", tenant, doc_id, revision, page, width)
    rendered = request.app[RENDERS].get(key)
    if rendered is None:
        rendered = await _render(request, key, object_name(tenant, doc_id),
                                 f"the original of document {doc_id!r} is gone",
                                 lambda source: render_page(source, page, width), revision)  # fmt: skip
    return _picture(request, rendered, f'"p-{doc_id}-{revision}-{page}-{width}"')


async def hit_image(request: web.Request) -> web.Response:
    tenant, doc_id, image_id = tenant_of(request), request.match_info["doc_id"], request.match_info["image_id"]
    width = requested_width(request)
    await _check_document(request, tenant, doc_id)
    if not TOKEN.match(image_id):
        raise _not_found(f"no image {image_id[:100]!r} in document {doc_id!r}")
    key = ("image", tenant, doc_id, image_id, width)
    rendered = request.app[RENDERS].get(key)
    if rendered is None:
        name = f"{object_name(tenant, doc_id)}/images/{image_id}"  # the parser's name for a document's image
        rendered = await _render(request, key, name, f"no image {image_id!r} in document {doc_id!r}",
                                 lambda data: render_image(data, width))  # fmt: skip
    return _picture(request, rendered, f'"i-{doc_id}-{image_id}-{width}"')


class PageTextView(BaseModel):
    """The text of one page: a PDF page's text layer in reading order, or a text file's text (its only page)."""

    model_config = ConfigDict(extra="forbid")

    doc_id: Identifier
    page: int = Field(ge=1)
    pages: int = Field(ge=1, description="pages of the document")
    text: str = Field(description="empty for a page without a text layer (a scan: its OCR text is in its chunks)")


async def page_text_view(request: web.Request) -> PageTextView:
    tenant, doc_id = tenant_of(request), request.match_info["doc_id"]
    raw_page = request.match_info["page"]
    await _check_document(request, tenant, doc_id)
    if not _PAGE.match(raw_page) or int(raw_page) < 1:
        raise _not_found(f"no page {raw_page[:20]!r}: pages are numbered from 1")
    page = int(raw_page)
    key = ("text", tenant, doc_id, page)
    found = request.app[RENDERS].get(key)
    if found is None:
        found = await _render(request, key, object_name(tenant, doc_id), f"the original of document {doc_id!r} is gone",
                              lambda source: page_text(source, page))  # fmt: skip
    return PageTextView(doc_id=doc_id, page=page, pages=found.pages, text=found.text)


def setup(app: web.Application) -> None:
    """The render caches and the render slots of this app."""
    app[RENDERS] = ByteLRU(RENDER_CACHE_BYTES)
    app[SOURCES] = ByteLRU(SOURCE_CACHE_BYTES)
    app[RENDER_SLOTS] = asyncio.Semaphore(MAX_CONCURRENT_RENDERS)


WIDTH = {
    "name": "width", "in": "query", "required": False,
    "description": f"pixels; clamped to {MIN_WIDTH}..{MAX_WIDTH} (a value of more than 6 digits is a 400)",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH, "default": DEFAULT_WIDTH},
}  # fmt: skip
PAGE = {
    "name": "page", "in": "path", "required": True, "description": "1-based page number",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NUMBER},
}  # fmt: skip
IMAGE_ID = {
    "name": "image_id", "in": "path", "required": True,
    "description": "the last segment of a hit's `image.object_name`",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip
PICTURE = Media(
    "the picture",
    {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}},
    headers={
        "ETag": {"description": "strong: a document revision's pictures never change", "schema": {"type": "string"}},
        "X-Page-Width": {
            "description": "the page's width in the units of a chunk's bbox (PDF points; pixels for an image)",
            "schema": {"type": "string", "pattern": r"^[0-9.e+-]+$"},
        },
        "X-Page-Height": {"description": "the page's height, likewise", "schema": {"type": "string"}},
        "X-Page-Count": {"description": "pages of the document", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    },
)
NOT_MODIFIED = Empty("`If-None-Match` named this picture's ETag")
ERR_BAD_WIDTH = Err("`invalid_query`: `width` is not a whole number from 1 (`field` is `width`)")
ERR_NOT_RENDERABLE = Err(
    "`not_renderable`: a text, CSV or office document (DOCX, PPTX, XLSX) has no page pictures (its hits carry a "
    "`locator` instead); or the document failed to ingest, or cannot be drawn"
)

OPERATIONS = (
    Operation(
        "GET", DOC_PATH + "/pages/{page}", page_image, "getPageImage", "documents", "A page of a document as a PNG",
        role="reader", parameters=(DOC_ID, PAGE, WIDTH),
        description="A PDF page rendered at `width` pixels, or an uploaded image (page 1, never enlarged). Scale a "
        "hit's `bbox` by `picture width / X-Page-Width`. Cached: `ETag`, `If-None-Match`.",
        responses={
            200: PICTURE,
            304: NOT_MODIFIED,
            400: ERR_BAD_WIDTH,
            404: Err("`not_found`: no such document, or no such page (the message says how many)"),
            422: ERR_NOT_RENDERABLE,
            503: ERR_503,
        },
    ),
    Operation(
        "GET", DOC_PATH + "/pages/{page}/text", page_text_view, "getPageText", "documents",
        "The text of a page", role="reader", parameters=(DOC_ID, PAGE),
        description="A PDF page's text layer in reading order, or a text file's text (its page 1). A scanned page "
        "has no text layer (empty `text`): the text OCR read in it is in its chunks, found by search.",
        responses={
            200: Json("the page's text", PageTextView),
            404: Err("`not_found`: no such document, or no such page (the message says how many)"),
            422: Err("`not_renderable`: an image file (no text layer), a file that cannot be read, or a document "
                     "that failed to ingest"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", DOC_PATH + "/images/{image_id}", hit_image, "getHitImage", "documents",
        "The image of an image hit, as a PNG", role="reader", parameters=(DOC_ID, IMAGE_ID, WIDTH),
        responses={
            200: PICTURE,
            304: NOT_MODIFIED,
            400: ERR_BAD_WIDTH,
            404: Err("`not_found`: no such document or image"),
            422: ERR_NOT_RENDERABLE,
            503: ERR_503,
        },
    ),
)  # fmt: skip
