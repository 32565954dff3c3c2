"""Pages and images of a stored original, rendered as PNGs sized for a screen; a bounded LRU of byte strings.

Pure functions (no NATS, no aiohttp): `edge_api.routes.pages` fetches the bytes and calls them in a thread.

- ``render_page(source, page, width)``: page ``page`` (1-based) of a PDF rendered with PyMuPDF, or the image
  itself for an uploaded image file (its only page is 1), scaled to ``width`` pixels (never above the page's
  own size for an image). The `Rendered` result also carries the page's size in the units of a chunk's bbox:
  PDF points with a top-left origin on the page as displayed (rotation applied) for a PDF, pixels for an
  image. A client scales a bbox to the picture by ``picture width / page width``. Office, e-book, web-page,
  e-mail, text and CSV documents have none: `NotRenderable` says so (their chunks carry a ``locator`` instead).
- ``page_text(source, page)``: the text layer of a PDF page, or a text file's text (its page 1).
- ``render_image(data, width)``: any image Pillow reads (TIFF and WebP included) as a PNG at most ``width``
  wide: what a browser can show for an image hit.

Every picture is at most `MAX_PIXELS` pixels, whatever the page's aspect ratio: a 1 x 10000 pt page cannot
make a 2000-pixel-wide render allocate gigabytes. An image is never decoded when its header claims more pixels
than the parser's limit (`documents.images.MAX_IMAGE_PIXELS`): the same image-bomb rule on both sides.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

import pymupdf
from PIL import Image, UnidentifiedImageError

from documents.filetypes import sniff_image_format
from documents.images import MAX_IMAGE_PIXELS

MAX_PIXELS = 2048 * 3072
PDF_SNIFF_BYTES = 1024


class NotRenderable(Exception):
    """The stored bytes cannot be shown as a page (a text document, an encrypted or broken file)."""


class PageOutOfRange(Exception):
    def __init__(self, page: int, pages: int) -> None:
        super().__init__(f"page {page} does not exist: the document has {pages} page{'s' if pages != 1 else ''}")
        self.pages = pages


@dataclass(frozen=True)
class Rendered:
    png: bytes
    pages: int
    page_width: float  # in bbox units: PDF points, or pixels for an image file
    page_height: float

    def __len__(self) -> int:  # what a `ByteLRU` charges for it
        return len(self.png)


def is_pdf(source: bytes) -> bool:
    return b"%PDF-" in source[:PDF_SNIFF_BYTES]


def _fit(width: int, w: float, h: float) -> float:
    """The scale that makes a w x h picture `width` wide, lowered so that it stays within MAX_PIXELS."""
    scale = width / w
    return min(scale, math.sqrt(MAX_PIXELS / (w * h)))


# Documents that have no page pictures (decision 74): their chunks say where they are in their `locator`.
NO_PICTURES = {
    "ZIP": "an office document or an e-book (DOCX, PPTX, XLSX, EPUB) has no page to show: its passages say where "
           "they are by their locator (slide, sheet rows, section, chapter), shown with each hit and citation",
    "TEXT": "a text document (plain text, Markdown, CSV, a web page, an e-mail) has no page to show: its passages "
            "are shown as text, with their locator where they have one (a section, a CSV's rows)",
}  # fmt: skip


def render_page(source: bytes, page: int, width: int) -> Rendered:
    if is_pdf(source):
        return _render_pdf_page(source, page, width)
    if (reason := NO_PICTURES.get(sniff_image_format(source) or "")) is not None:
        raise NotRenderable(reason)
    image = _open_image(source)
    if page != 1:
        raise PageOutOfRange(page, 1)
    return Rendered(_png(image, width), 1, float(image.width), float(image.height))


@contextlib.contextmanager
def _pdf_page(source: bytes, page: int) -> Iterator[tuple[pymupdf.Page, int]]:
    """Page `page` (1-based) of a PDF and the PDF's page count, while the document is open; `NotRenderable` for a
    broken or encrypted PDF, `PageOutOfRange` past its last page."""
    try:
        doc = pymupdf.open(stream=source, filetype="pdf")
    except Exception as err:  # noqa: BLE001 - MuPDF raises several types for a broken file
        raise NotRenderable(f"the PDF cannot be opened ({err})") from None
    try:
        if doc.needs_pass:
            raise NotRenderable("the PDF is encrypted")
        if not 1 <= page <= doc.page_count:
            raise PageOutOfRange(page, doc.page_count)
        yield doc[page - 1], doc.page_count
    finally:
        doc.close()


def _render_pdf_page(source: bytes, page: int, width: int) -> Rendered:
    with _pdf_page(source, page) as (pdf_page, page_count):
        rect = pdf_page.rect  # the page as displayed (rotation applied): the space of a chunk's bbox
        if rect.width <= 0 or rect.height <= 0:
            raise NotRenderable(f"page {page} has no area")
        zoom = _fit(width, rect.width, rect.height)
        pix = pdf_page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        return Rendered(pix.tobytes("png"), page_count, rect.width, rect.height)


def _open_image(data: bytes) -> Image.Image:
    """The image's header, checked against the parser's image-bomb limit before a pixel is decoded (a 21 KB PNG
    claiming 13,300 x 13,300 pixels, refused by the parser, took 1-2 GB here per render)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.size  # noqa: B018 - the header is read: an unknown format has failed by now
    except Image.DecompressionBombError as err:  # PIL's own check, at twice documents.images' limit
        raise NotRenderable(f"the image is over the limit of {MAX_IMAGE_PIXELS:,} pixels ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise NotRenderable("the stored file is not a PDF or an image: it has no page to show") from None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise NotRenderable(f"the image claims {image.width}x{image.height} pixels, over the limit of "
                            f"{MAX_IMAGE_PIXELS:,} that the parser also applies")  # fmt: skip
    return image


def _png(image: Image.Image, width: int) -> bytes:
    """The image at most `width` wide (never enlarged), as a PNG."""
    scale = min(1.0, _fit(width, image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    try:
        image.draft("RGB", size)  # JPEG: decode at a reduced size straight away
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        image = image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image
        out = io.BytesIO()
        image.save(out, format="PNG")
    except (Image.DecompressionBombError, OSError, ValueError) as err:
        raise NotRenderable(f"the image cannot be decoded ({err})") from None
    return out.getvalue()


def render_image(data: bytes, width: int) -> Rendered:
    image = _open_image(data)
    return Rendered(_png(image, width), 1, float(image.width), float(image.height))


MAX_PAGE_TEXT_CHARS = 200_000  # a text file's "page" (it has one) is cut there; the rest is in its chunks


@dataclass(frozen=True)
class PageText:
    text: str
    pages: int

    def __len__(self) -> int:  # what a `ByteLRU` charges for it
        return len(self.text.encode())


def page_text(source: bytes, page: int) -> PageText:
    """The text layer of page `page` of a PDF (in reading order), or a UTF-8 text file's text (its only page is 1,
    cut at `MAX_PAGE_TEXT_CHARS`). An image file has no text layer: `NotRenderable` (its OCR text is in its chunks)."""
    if is_pdf(source):
        with _pdf_page(source, page) as (pdf_page, page_count):
            return PageText(pdf_page.get_text("text", sort=True).strip(), page_count)
    if sniff_image_format(source) == "ZIP":
        raise NotRenderable("an office document or an e-book (DOCX, PPTX, XLSX, EPUB) has no text layer by page: its "
                            "passages are its chunks, each with its locator (slide, sheet rows, section, chapter)")
    try:
        text = source.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotRenderable("an image has no text layer: the text read in it is in its chunks (search it)") from None
    if page != 1:
        raise PageOutOfRange(page, 1)
    return PageText(text[:MAX_PAGE_TEXT_CHARS], 1)


class ByteLRU:
    """A least-recently-used map bounded by the total size (``len``) of its values; thread-safe.

    A value larger than a quarter of the budget is not kept (it would evict everything else).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable):  # noqa: ANN201 - whatever was put
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value) -> None:  # noqa: ANN001 - anything with a len()
        size = len(value)
        if size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += size
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)
