"""What the office readers share: a library's failure turned into a message for the user, and chunks of blocks
laid out in reading order (the PDF path's :class:`~documents.chunks.Chunker`, fed one slide or section at a time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from ..chunks import ParsedChunk, bounded
from ..extract import DocumentRejected
from ..images import ImageRejected, digest, probe_image
from ..layout import MIN_IMAGE_SIDE_PX, PageBlock, PageContent
from ..reader import OcrWork
from ..tables import Table, TableCells

PICTURE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/tiff"}  # what the OCR path reads

T = TypeVar("T")


def read_with(what: str, read: Callable[[], T]) -> T:
    """``read()``, a library's failure on a broken file reported as DocumentRejected (its type, never its text:
    that may name server paths)."""
    try:
        return read()
    except DocumentRejected:
        raise
    except Exception as err:  # noqa: BLE001 - python-docx/pptx and openpyxl raise many kinds on a broken file
        raise DocumentRejected(
            f"corrupt file: {what} cannot be read ({type(err).__name__}); check that it opens in an office "
            "application and upload it again"
        ) from None


class Flow:
    """Blocks and tables of one slide or section in reading order, as a :class:`PageContent` the chunker reads
    (positions are only the order: these formats have no geometry)."""

    def __init__(self, page: int) -> None:
        self.page = page
        self.blocks: list[PageBlock] = []
        self.tables: list[Table] = []

    def _box(self) -> tuple[float, float, float, float]:
        y = float(len(self.blocks) + len(self.tables))
        return (0.0, y, 1.0, y + 0.5)

    def heading(self, text: str, level: int) -> None:
        """A heading of ``level`` (0 = the title, 1 = the outermost section, ...)."""
        self.blocks.append(PageBlock(self.page, self._box(), text, "heading", font_size=100.0 - level))

    def text(self, text: str) -> None:
        self.blocks.append(PageBlock(self.page, self._box(), text))

    def table(self, table_id: str, rows: Sequence[Sequence[str]]) -> None:
        width = max(len(r) for r in rows)
        padded = tuple(tuple(r) + ("",) * (width - len(r)) for r in rows)
        cells = TableCells(padded[0], padded[1:])
        self.tables.append(Table(self.page, self._box(), table_id, padded, padded[0], cells.markdown, width, ()))

    def content(self) -> PageContent:
        return PageContent(page=self.page, width=0.0, height=0.0, blocks=tuple(self.blocks), tables=tuple(self.tables),
                           images=(), skipped_images=(), needs_ocr=False)  # fmt: skip


def located(chunks: Sequence[ParsedChunk], locate: Callable[[ParsedChunk], str]) -> tuple[ParsedChunk, ...]:
    """The chunks without a bbox (no page picture to place it on), each with its locator."""
    return tuple(replace(c, bbox=None, locator=bounded(locate(c))) for c in chunks)


def clean(text: str | None) -> str:
    """Runs of whitespace collapsed, line breaks kept."""
    lines = (" ".join(line.split()) for line in (text or "").splitlines())
    return "\n".join(line for line in lines if line)


def picture(page: int, blob: bytes, content_type: str, seen: set[str], *, headings: tuple[str, ...], locator: str,
            nearby: str | None, bbox: tuple[float, float, float, float] | None = None) -> OcrWork | None:  # fmt: skip
    """The OCR work of a picture of a slide or a document, as a PDF's images get (stored, read, an image vector);
    None for a type the OCR path does not read, a header that does not decode or is over the pixel limit, a
    decoration (under `MIN_IMAGE_SIDE_PX` on a side) and a repeat (``seen`` holds the digests so far). ``bbox``:
    where it is placed, in points; without one, the picture in its own pixels."""
    if content_type not in PICTURE_TYPES:
        return None
    try:
        header = probe_image(blob)
    except ImageRejected:
        return None
    sha = digest(blob)
    if header.width < MIN_IMAGE_SIDE_PX or header.height < MIN_IMAGE_SIDE_PX or sha in seen:
        return None
    seen.add(sha)
    box = bbox or (0.0, 0.0, float(header.width), float(header.height))
    return OcrWork("image", page, box, blob, headings, sha, content_type, header.width, header.height,
                   nearby_text=nearby or None, locator=bounded(locator))  # fmt: skip
