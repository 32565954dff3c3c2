"""A document's bytes -> its chunks and its OCR work, page by page; OCR work -> chunks. Pure and synchronous.

:func:`parse` checks the upload at once (:class:`~documents.extract.DocumentRejected`, its message meant for the
person who uploaded it) and returns a :class:`ParsedDocument` that knows its page count and yields one
:class:`ParsedPage` at a time: a 1,000-page PDF is never held whole. Each page carries its chunks (text and
table chunks, in reading order, without ids) and its :class:`OcrWork`: the kept images of the page (their
text is read with them) and, for a scanned page, its raster. The caller numbers chunks and batches, stores
rasters and publishes; :func:`read_page` and :func:`read_image` turn a piece of OCR work into chunks.

- PDF: :func:`~documents.layout.iter_pages` + :class:`~documents.chunks.Chunker`; per page, the chunks, then
  one image work per kept image (in page order, with the heading path at the end of the page), then the scan
  work if the page needs OCR;
- image file (PNG/JPEG/WebP/TIFF): its real type must be the declared one and its header within budget; one
  page whose only output is one image work over the whole image;
- plain text: one page of chunks without bboxes;
- the formats of ``FORMAT_READERS`` (Markdown, HTML, EPUB, GIF, e-mail): their module of ``documents/formats``.
"""

from __future__ import annotations

import importlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import pymupdf
from PIL import Image

from .chunks import MAX_CHARS, MAX_TOKENS, Chunker, ParsedChunk, page_chunks, split_to_tokens, wordpiece_counter
from .extract import DocumentRejected, extract_text, open_checked_pdf
from .filetypes import IMAGE_CONTENT_TYPES, describe_format, sniff_image_format
from .images import MAX_IMAGE_PIXELS, ImageRejected, decode_image, probe_image
from .layout import PageBlock, PageContent, iter_pages
from .ocr import DEFAULT_OCR, Legibility, OcrLine, OcrSettings, legibility, lines_to_paragraphs, ocr_image, ocr_pixels, render_page, tesseract_pixels

log = logging.getLogger(__name__)

# Formats read by a module of `documents.formats`, loaded on first use: content type -> (module, function), the
# function taking (data, ParseSettings) and returning a ParsedDocument. Looked up before the image types: a GIF
# is read by its module (the first frame), not as an image file.
FORMAT_READERS = {
    "text/markdown": ("markdown", "parse_markdown"),
    "text/html": ("html", "parse_html"),
    "application/epub+zip": ("epub", "parse_epub"),
    "image/gif": ("gif", "parse_gif"),
    "message/rfc822": ("eml", "parse_eml"),
}

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ParseSettings:
    """What parsing needs. ``chunk_max_tokens``: MMRAG_CHUNK_MAX_TOKENS (or the index generation's override);
    ``chunk_max_chars``: MMRAG_CHUNK_MAX_CHARS; ``ocr``: render and OCR levers."""

    chunk_max_tokens: int = MAX_TOKENS
    chunk_max_chars: int = MAX_CHARS
    ocr: OcrSettings = DEFAULT_OCR


@dataclass(frozen=True)
class OcrWork:
    """A raster to read. ``kind="page"``: a scanned page rendered as a grey PNG, ``bbox`` the page in points;
    ``kind="image"``: an image of a PDF page (``digest`` its sha256 prefix, ``bbox`` on the page) or an
    uploaded image file (``digest`` None, ``bbox`` the image in pixels), with what is known of it."""

    kind: Literal["page", "image"]
    page: int
    bbox: BBox
    raster: bytes = field(repr=False)
    headings: tuple[str, ...] = ()
    digest: str | None = None
    mime: str | None = None
    width: int = 0
    height: int = 0
    caption: str | None = None
    nearby_text: str | None = None


@dataclass(frozen=True)
class ParsedPage:
    """One page's output: its chunks in reading order, then its OCR work (images, then the scan)."""

    page: int
    chunks: tuple[ParsedChunk, ...]
    ocr: tuple[OcrWork, ...] = ()


class ParsedDocument:
    """A checked document: ``page_count`` known at once, its pages read as it is iterated (once). Close it (or
    use it as a context manager) to release a PDF."""

    def __init__(self, page_count: int, pages: Iterator[ParsedPage], pdf: pymupdf.Document | None = None) -> None:
        self.page_count = page_count
        self._pages = pages
        self._pdf = pdf

    def __iter__(self) -> Iterator[ParsedPage]:
        return self._pages

    def close(self) -> None:
        close = getattr(self._pages, "close", None)
        if close is not None:  # a generator suspended inside the page walk lets go of the page first
            close()
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None

    def __enter__(self) -> ParsedDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse(data: bytes, content_type: str, settings: ParseSettings = ParseSettings(), *,
          pages: range | None = None) -> ParsedDocument:  # fmt: skip
    """Check ``data`` (raises DocumentRejected) and return its pages to iterate; see the module docstring.

    ``pages`` (PDF only, 0-based page numbers): parse only that range, alone: its heading context and table
    continuations start fresh at its first page."""
    if content_type == "application/pdf":
        return _parse_pdf(data, settings, pages)
    if (reader := FORMAT_READERS.get(content_type)) is not None:
        module, function = reader
        return getattr(importlib.import_module(f"{__package__}.formats.{module}"), function)(data, settings)
    if content_type in IMAGE_CONTENT_TYPES:
        return ParsedDocument(1, iter([_parse_image(data, content_type)]))
    blocks = extract_text(data)
    content = PageContent(page=1, width=0.0, height=0.0, blocks=tuple(PageBlock(1, (0.0, 0.0, 0.0, 0.0), b.text) for b in blocks),
                          tables=(), images=(), skipped_images=(), needs_ocr=False)  # fmt: skip
    chunks = Chunker(settings.chunk_max_tokens, settings.chunk_max_chars).feed(content)
    return ParsedDocument(1, iter([ParsedPage(1, tuple(replace(c, bbox=None) for c in chunks))]))


def _parse_pdf(data: bytes, settings: ParseSettings, pages: range | None) -> ParsedDocument:
    pdf = open_checked_pdf(data)
    count = pdf.page_count
    if pages is not None and (pages.step != 1 or not 0 <= pages.start <= pages.stop <= count):
        pdf.close()
        raise ValueError(f"pages must be a range of step 1 within 0..{count}, got {pages}")

    def walk() -> Iterator[ParsedPage]:
        chunker = Chunker(settings.chunk_max_tokens, settings.chunk_max_chars)
        for content in iter_pages(pdf, pages):
            chunks = tuple(chunker.feed(content))
            headings = chunker.headings()
            work = [
                OcrWork("image", image.page, image.bbox, image.data, headings, image.digest, image.mime, image.width,
                        image.height, image.caption, image.nearby_text)  # fmt: skip
                for image in content.images
            ]
            if content.needs_ocr:
                raster, bbox = page_raster(pdf[content.page - 1], settings.ocr)
                work.append(OcrWork("page", content.page, bbox, raster))
            yield ParsedPage(content.page, chunks, tuple(work))

    return ParsedDocument(pdf.page_count, walk(), pdf)


def _parse_image(data: bytes, content_type: str) -> ParsedPage:
    expected = IMAGE_CONTENT_TYPES[content_type]
    real = sniff_image_format(data)
    if real != expected:
        raise DocumentRejected(
            f"not {describe_format(expected)}: its bytes are {describe_format(real)}; "
            "upload it with the right type or extension"
        )
    try:
        header = probe_image(data)
    except ImageRejected as err:
        raise DocumentRejected(str(err)) from err  # its message already says what to do
    bbox = (0.0, 0.0, float(header.width), float(header.height))
    work = OcrWork("image", 1, bbox, data, mime=content_type, width=header.width, height=header.height)
    return ParsedPage(1, (), (work,))


def page_raster(page: pymupdf.Page, settings: OcrSettings = DEFAULT_OCR) -> tuple[bytes, BBox]:
    """The displayed page as a grey PNG for OCR, and the page's bbox in points (what the raster covers)."""
    img, _ = render_page(page, settings.dpi, settings.max_pixels)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False, compress_level=1)
    rect = page.rect
    return out.getvalue(), (0.0, 0.0, float(rect.width), float(rect.height))


# --------------------------------------------------------------------------- OCR work -> chunks


@dataclass(frozen=True)
class OcrRead:
    """What OCR made of a page or an image: its chunks, and whether it could read the text it found (a script the
    shipped models do not read, noise: `documents.ocr.legibility`)."""

    chunks: list[ParsedChunk]
    legibility: Legibility


def read_page(raster: bytes, bbox: BBox, settings: ParseSettings = ParseSettings()) -> list[ParsedChunk]:
    """OCR a rendered page; chunks in page points."""
    return read_page_checked(raster, bbox, settings).chunks


def read_page_checked(raster: bytes, bbox: BBox, settings: ParseSettings = ParseSettings()) -> OcrRead:
    """`read_page` with the legibility of what OCR found on the page."""
    with Image.open(io.BytesIO(raster)) as img:
        img.load()
        scale = (bbox[2] - bbox[0]) / img.width
        found = ocr_pixels(img, scale=scale, offset=(bbox[0], bbox[1]), settings=settings.ocr, keep_empty=True)
        found = _fallback(found, img, settings.ocr, scale=scale, offset=(bbox[0], bbox[1]))
    # Shapes and noise read as stray symbols ("=", "|"): a line without two letters or digits is not text.
    lines = [line for line in found if sum(ch.isalnum() for ch in line.text) >= 2]
    blocks = tuple(PageBlock(1, box, text, "text", "ocr") for box, text in lines_to_paragraphs(lines))
    content = PageContent(page=1, width=bbox[2], height=bbox[3], blocks=blocks, tables=(), images=(),
                          skipped_images=(), needs_ocr=False)  # fmt: skip
    chunks = list(page_chunks(content, [], settings.chunk_max_tokens, wordpiece_counter(), settings.chunk_max_chars))
    return OcrRead(chunks, legibility(found))


def _fallback(found: list[OcrLine], img: Image.Image, ocr: OcrSettings, *, scale: float,
              offset: tuple[float, float] = (0.0, 0.0)) -> list[OcrLine]:  # fmt: skip
    """PP-OCR's lines, or, when they are illegible and fallback languages are set, Tesseract's if it reads more."""
    if not ocr.fallback_languages or not legibility(found).illegible:
        return found
    again = tesseract_pixels(img, ocr.fallback_languages, scale=scale, offset=offset)
    return again if legibility(again).share > legibility(found).share else found


# The text of an image chunk whose image holds no words and has no caption or nearby text (what a hit shows).
NO_TEXT = "(a picture with no text)"


def read_image(raster: bytes, caption: str | None, nearby: str | None, bbox: BBox,
               settings: ParseSettings = ParseSettings()) -> list[ParsedChunk]:  # fmt: skip
    """The text an image chunk carries: caption + OCR text, or the nearby text when it has neither."""
    return read_image_checked(raster, caption, nearby, bbox, settings).chunks


def read_image_checked(raster: bytes, caption: str | None, nearby: str | None, bbox: BBox,
                       settings: ParseSettings = ParseSettings()) -> OcrRead:  # fmt: skip
    """`read_image` with the legibility of what OCR found in the image (of its own text, not the caption's)."""
    readable = True
    found: list[OcrLine] = []
    try:
        found = ocr_image(raster, settings=settings.ocr, keep_empty=True)
        if settings.ocr.fallback_languages and legibility(found).illegible:
            full_width = probe_image(raster).width
            img = decode_image(raster, max_pixels=MAX_IMAGE_PIXELS, target_pixels=settings.ocr.max_pixels)
            found = _fallback(found, img, settings.ocr, scale=full_width / img.width)
        ocr_text = "\n".join(line.text for line in found if sum(ch.isalnum() for ch in line.text) >= 2)
    except ImageRejected as err:
        log.info("ocr: image not readable (%s); indexing its caption only", err)
        ocr_text, readable = "", False
    read = legibility(found)
    text = "\n".join(t for t in (caption, ocr_text) if t) or (nearby or "")
    if not text.strip():
        # A readable picture with no words around or in it is still found by its image vector (the embedder's:
        # CLIP, or its perceptual hash): it gets a chunk saying so; an unreadable one has nothing to index.
        return OcrRead([ParsedChunk(1, bbox, NO_TEXT, "image")] if readable else [], read)
    pieces = split_to_tokens(text, settings.chunk_max_tokens, wordpiece_counter(), settings.chunk_max_chars)
    return OcrRead([ParsedChunk(1, bbox, piece, "image") for piece in pieces], read)