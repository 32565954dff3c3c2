"""PPTX (python-pptx): per slide its title, text, tables, speaker notes and pictures.

- A chunk's ``page`` is its slide (1-based, in the deck's order); its context (``headings``) is the slide's
  title (a slide with nothing else has its title as its text); its locator is "slide N: Title", with ", table K" for a table (K counts the slide's tables) and
  ", notes" for the speaker notes (read under a "Notes" heading).
- Shapes are read in the slide's order, groups opened; a table's first row is its header.
- Pictures (PNG, JPEG, WebP, TIFF) go through the image path of a PDF's images: an OCR work each (stored, read,
  found by their image vector), unless smaller than 32 px on a side or already seen on an earlier slide (a
  logo). Their ``bbox`` is the picture's place on the slide in points; charts, SmartArt and media are not read.
"""

from __future__ import annotations

import io

from ..chunks import Chunker, ParsedChunk
from ..extract import DocumentRejected
from ..reader import OcrWork, ParsedDocument, ParsedPage, ParseSettings
from .common import Flow, clean, located, picture, read_with
from .ooxml import check_package

NOTES = "Notes"
_EMU_PER_POINT = 12700


def parse_pptx(data: bytes, settings: ParseSettings) -> ParsedDocument:
    check_package(data, "pptx")
    import pptx

    deck = read_with("the PPTX", lambda: pptx.Presentation(io.BytesIO(data)))
    seen: set[str] = set()
    pages = read_with("the PPTX", lambda: [_slide(n, slide, settings, seen) for n, slide in enumerate(deck.slides, 1)])
    if not any(page.chunks or page.ocr for page in pages):
        raise DocumentRejected("empty deck: the PPTX holds no text, table or picture; upload a deck with content")
    return ParsedDocument(len(pages), iter(pages))


def _slide(number: int, slide, settings: ParseSettings, seen: set[str]) -> ParsedPage:  # noqa: ANN001
    flow = Flow(number)
    title_shape = slide.shapes.title
    title = clean(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    if title:
        flow.heading(title, 1)
    where = f"slide {number}" + (f": {title}" if title else "")
    pictures: list[OcrWork] = []
    tables = 0
    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False):
            rows = [[clean(cell.text) for cell in row.cells] for row in shape.table.rows]
            rows = [row for row in rows if any(row)]
            if rows:
                tables += 1
                flow.table(f"s{number}-t{tables}", rows)
        elif getattr(shape, "has_text_frame", False):
            if text := clean(shape.text_frame.text):
                flow.text(text)
        elif (work := _picture(number, shape, title, where, seen)) is not None:
            pictures.append(work)
    if slide.has_notes_slide and (frame := slide.notes_slide.notes_text_frame) is not None:
        if notes := clean(frame.text):
            flow.heading(NOTES, 2)
            flow.text(notes)
    if title and not flow.tables and all(block.kind == "heading" for block in flow.blocks):
        flow.text(title)  # a slide that is only its title: the title is its text
    chunks = Chunker(settings.chunk_max_tokens, settings.chunk_max_chars).feed(flow.content())
    return ParsedPage(number, located(chunks, lambda c: _locator(where, c)), tuple(pictures))


def _locator(where: str, chunk: ParsedChunk) -> str:
    if chunk.table_id:
        return f"{where}, table {chunk.table_id.rsplit('-t', 1)[1]}"
    return f"{where}, notes" if chunk.headings[-1:] == (NOTES,) else where


def _shapes(shapes):  # noqa: ANN001, ANN202 - the shapes of a slide in order, groups opened
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _picture(number: int, shape, title: str, where: str, seen: set[str]) -> OcrWork | None:  # noqa: ANN001
    try:
        image = shape.image
    except (AttributeError, ValueError, KeyError):  # not a picture, or a linked picture without its bytes
        return None
    x, y = (shape.left or 0) / _EMU_PER_POINT, (shape.top or 0) / _EMU_PER_POINT
    bbox = (x, y, x + (shape.width or 0) / _EMU_PER_POINT, y + (shape.height or 0) / _EMU_PER_POINT)
    return picture(number, image.blob, image.content_type, seen, headings=(title,) if title else (),
                   locator=f"{where}, picture", nearby=title, bbox=bbox)  # fmt: skip
