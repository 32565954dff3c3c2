"""The cross-modal side of a query, for the retriever: what to search the ``image`` vector with, and the text an
image query brings.

- An image query (`QueryRequest.image`, bytes in the query-images bucket): its image vector searches the
  images' vectors (image -> image: CLIP, or the perceptual hash with its Hamming cut-off), and, when the request
  has no text of its own, the text OCR reads in it becomes the query text (image -> text: dense + sparse).
- A text query with CLIP configured: the text tower's vector searches the images' vectors (text -> image).

Image rankings keep one hit per image (an image whose OCR text was split into several chunks carries the same
vector on each) and, for the perceptual hash, only hits within ``MAX_HAMMING`` bits: a different picture is no
match, however it ranks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from contracts.messages import QueryRequest
from contracts.topology import QUERY_IMAGES_BUCKET
from documents.images import ImageRejected
from models import image_vectors
from search.vectorstore import IMAGE_DENSE, SearchFilter, VectorDimError, VectorHit, VectorStore

log = logging.getLogger(__name__)

# What OCR reads in a picture without text is stray glyphs ("9", "1H", "O" at confidence 0.5-0.87 on drawn
# shapes), and a query made of them finds unrelated pages; real text reads at 0.95+. A query line needs both.
MIN_LINE_CHARS = 3
MIN_LINE_CONFIDENCE = 0.9
MAX_QUERY_CHARS = 4000  # QueryRequest.query's limit: the OCR text stands in for it


class QueryImageUnusable(Exception):
    """The request's query image cannot be searched with (gone from its bucket, or not an image); retrying will not help."""


@dataclass(frozen=True)
class ImageQuery:
    """One search of the ``image`` vector: the query vector and the score under which a hit is no match."""

    vector: list[float]
    min_score: float | None


@dataclass(frozen=True)
class CrossModal:
    """What a request adds to the text search: ``text`` is the text to search with (the request's own, else what
    OCR read in its image; None = no text search), ``images`` the searches of the image vector."""

    text: str | None
    images: list[ImageQuery] = field(default_factory=list)
    ocr_text: str = ""


def read_text(data: bytes) -> str:
    """The text OCR reads in an image (lines joined), '' when none; never raises for an unreadable image."""
    from documents.ocr import DEFAULT_OCR, ocr_image

    try:
        lines = ocr_image(data, settings=DEFAULT_OCR)
    except ImageRejected:
        return ""
    text = "\n".join(
        line.text for line in lines
        if line.confidence >= MIN_LINE_CONFIDENCE and sum(ch.isalnum() for ch in line.text) >= MIN_LINE_CHARS
    )  # fmt: skip
    return text[:MAX_QUERY_CHARS]


class CrossModalQueries:
    """Prepares the cross-modal part of each request (see the module docstring). One per retriever."""

    def __init__(self, js, encoder: image_vectors.ImageEncoder, *, ocr: bool) -> None:  # noqa: ANN001 - JetStream
        self._js = js
        self._encoder = encoder
        self._ocr = ocr
        self._bucket: ObjectStore | None = None

    async def _image_bytes(self, request: QueryRequest) -> bytes:
        assert request.image is not None
        if self._bucket is None:
            self._bucket = await self._js.object_store(QUERY_IMAGES_BUCKET)
        try:
            data = (await self._bucket.get(request.image.object_name)).data or b""
        except NotFoundError as err:
            raise QueryImageUnusable("the query image is gone (its search ended or it expired); search again") from err
        return data

    async def prepare(self, request: QueryRequest) -> CrossModal:
        text, images, ocr_text = request.query, [], ""
        encoder = self._encoder
        if request.image is not None:
            data = await self._image_bytes(request)
            try:
                image = await asyncio.to_thread(image_vectors.decode, data)
            except ImageRejected as err:  # the edge API checked it: only a tampered request gets here
                raise QueryImageUnusable(f"the query image cannot be used: {err}") from err
            [vector] = await asyncio.to_thread(encoder.embed_images, [image])
            images.append(ImageQuery(vector, encoder.min_score))
            if self._ocr and text is None:
                ocr_text = await asyncio.to_thread(read_text, data)
                text = ocr_text or None
        if request.query is not None and encoder.text_space:
            [vector] = await asyncio.to_thread(encoder.embed_texts, [request.query])
            images.append(ImageQuery(vector, None))
        return CrossModal(text, images, ocr_text)


def image_ranking(store: VectorStore, alias: str, query: ImageQuery, where: SearchFilter, limit: int) -> list[VectorHit]:
    """Image hits nearest to ``query``, one per image, best first; [] when the collection has no image vector
    of this size (built before image vectors, or with another encoder: re-index to search images)."""
    try:
        hits = store.search(alias, query.vector, using=IMAGE_DENSE, filter=where, limit=limit)
    except VectorDimError as err:
        log.warning("retriever: image vectors not searchable in %s: %s", alias, err)
        return []
    seen: set[str] = set()
    out = []
    for hit in hits:
        if query.min_score is not None and hit.score < query.min_score:
            continue
        key = hit.payload.image.object_name if hit.payload.image else hit.id
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out
