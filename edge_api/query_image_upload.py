"""`POST /v1/search` with an image: the multipart form, its limits, and where the image waits while the search runs.

The form (multipart/form-data) has the fields ``image`` (required: PNG, JPEG, WebP or TIFF), ``query`` (text,
optional), ``top_k`` (decimal integer, optional) and ``filters`` (the JSON of the body's ``filters``, optional).
Any other field, or a field twice, is a 400. Limits, checked while reading, before anything is stored:

- the image is read up to ``MMRAG_MAX_QUERY_IMAGE_BYTES`` and no further: one byte more is a 413;
- its type is sniffed from its first bytes, never taken from its name or declared type: not an image is a 415;
- its dimensions are read from the header only (PIL's lazy open decodes no pixel): more than ``MAX_PIXELS``
  (an image bomb: a small file claiming e.g. 100000 x 100000) is a 413, an unreadable header or a 0-pixel
  side a 400. The retriever decodes it with the parser's guards again.

The image is stored in the query-images bucket under ``<tenant>/<request_id>`` (the contract requires exactly
that name) and deleted when the request ends; the bucket's TTL removes it if the edge API dies first.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from nats.js import JetStreamContext
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.messages import QueryFilters, QueryImage
from contracts.topology import QUERY_IMAGES_BUCKET
from documents.filetypes import sniff_image
from edge_api.bodies import MAX_TOP_K, MIN_TOP_K, SEARCH_DEFAULT_TOP_K, Text
from edge_api.errors import ApiError

# The parser's budget (documents.images.MAX_IMAGE_PIXELS): 40 megapixels.
MAX_PIXELS = 40_000_000
MAX_FIELD_BYTES = 64 * 1024  # query, top_k, filters
READ_CHUNK = 64 * 1024
FIELDS = ("image", "query", "top_k", "filters")
_INT = re.compile(r"^\s*[0-9]{1,6}\s*\Z")
_MULTIPART_ERRORS = (ValueError, HttpProcessingError)


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    query: Text | None = None
    top_k: int = Field(default=SEARCH_DEFAULT_TOP_K, ge=MIN_TOP_K, le=MAX_TOP_K)
    filters: QueryFilters = Field(default_factory=QueryFilters)


@dataclass(frozen=True)
class ImageSearch:
    query: str | None
    top_k: int
    filters: QueryFilters
    image: bytes


def _bad_multipart() -> ApiError:
    return ApiError(400, "invalid_multipart", "the body is not valid multipart/form-data")


async def _read(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None as soon as it is longer than `limit` (the rest is never read)."""
    data = bytearray()
    while piece := await part.read_chunk(READ_CHUNK):
        data.extend(piece)
        if len(data) > limit:
            return None
    return bytes(data)


def check_image(data: bytes) -> None:
    """Raise the `ApiError` an unusable query image gets: 400 empty, 415 not an image, 413/400 by its header."""
    if not data:
        raise ApiError(400, "empty_image", "the 'image' field is empty")
    if sniff_image(data[:16]) is None:
        raise ApiError(415, "unsupported_media_type",
                       "the 'image' field is not a PNG, JPEG, WebP or TIFF image (by its content, whatever its name)")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        width, height = MAX_PIXELS, 2  # PIL refused it for its size: over our budget too
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ApiError(400, "invalid_image", "the image's header cannot be read (corrupt or truncated)") from None
    if width <= 0 or height <= 0:
        raise ApiError(400, "invalid_image", f"the image is empty: {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise ApiError(413, "image_too_large",
                       f"the image claims {width}x{height} pixels, over the limit of {MAX_PIXELS:,}; downscale it")  # fmt: skip


async def read_image_search(request: web.Request, *, max_bytes: int) -> ImageSearch:
    """The validated form of an image search (see the module docstring), or the `ApiError` it deserves."""
    values: dict[str, object] = {}
    image: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            name = part.name if isinstance(part, BodyPartReader) else None
            if name not in FIELDS:
                raise ApiError(400, "invalid_field", f"unknown form field {name!r}: send {', '.join(FIELDS)}")
            if name == "image" and image is not None or name in values:
                raise ApiError(400, "invalid_field", f"the form field {name!r} is sent twice")
            assert isinstance(part, BodyPartReader)
            if name == "image":
                image = await _read(part, max_bytes)
                if image is None:
                    raise ApiError(413, "too_large", f"the image is larger than the limit of {max_bytes} bytes")
                continue
            raw = await _read(part, MAX_FIELD_BYTES)
            if raw is None:
                raise ApiError(413, "too_large", f"the form field {name!r} is over {MAX_FIELD_BYTES} bytes")
            values[name] = raw.decode("utf-8")
    except _MULTIPART_ERRORS:
        raise _bad_multipart() from None
    if image is None:
        raise ApiError(400, "missing_field", "the form has no 'image' field (send JSON to search with text only)")
    check_image(image)
    try:
        if "top_k" in values:
            if not _INT.match(str(values["top_k"])):
                raise ApiError(400, "invalid_body", "invalid form: see details",
                               details=[{"field": "top_k", "problem": "must be a decimal integer"}])  # fmt: skip
            values["top_k"] = int(str(values["top_k"]))
        if "filters" in values:
            values["filters"] = json.loads(str(values["filters"]))
        form = _Form.model_validate(values)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise ApiError(400, "invalid_body", "invalid form: see details",
                       details=[{"field": "filters", "problem": "must be a JSON object (of QueryFilters' fields)"}]) from None  # fmt: skip
    except ValidationError as err:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(form)", "problem": e["msg"]}
                   for e in err.errors(include_url=False, include_input=False)]  # fmt: skip
        raise ApiError(400, "invalid_body", "invalid form: see details", details=details) from None
    return ImageSearch(form.query, form.top_k, form.filters, image)


async def store_query_image(js: JetStreamContext, tenant: str, request_id: str, data: bytes) -> QueryImage:
    """Put the image where the retriever reads it; returns the request's reference to it."""
    name = f"{tenant}/{request_id}"
    bucket = await js.object_store(QUERY_IMAGES_BUCKET)
    await bucket.put(name, data)
    return QueryImage(object_name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


async def delete_query_image(js: JetStreamContext, image: QueryImage) -> None:
    bucket = await js.object_store(QUERY_IMAGES_BUCKET)
    await bucket.delete(image.object_name)
