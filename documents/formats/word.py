"""DOCX (python-docx): paragraphs, headings as the section context, tables as tables.

- The body is read in order (paragraphs and tables, and those inside content controls, as on a cover page), a
  paragraph's text with its tracked insertions and without its tracked deletions (the document as it would read
  once the changes are accepted); headers, footers, comments and text boxes are not read. Pictures in the body's paragraphs (PNG, JPEG, WebP, TIFF) go through the image
  path of a PDF's images, as a slide's do (`common.picture`): locator "section N: ..., picture", the text
  before them as their nearby text.
- A heading is a paragraph whose style (or the style it is based on, or the paragraph itself) has an outline
  level, or a style named "Heading N" / "Title" (Title is level 0). Headings are the chunks' context, as in a PDF.
- A chunk's ``page`` is its **section**: a new one starts at each heading of the outermost level the document
  uses (content before the first such heading is section 1). Its locator is "section N: Title > Heading > ...",
  and for a table "..., table K" (K counts the document's tables from 1).
- A table's first row is its header; merged cells repeat their text in each cell they cover.
"""

from __future__ import annotations

import io
import re

from ..chunks import Chunker, ParsedChunk
from ..extract import DocumentRejected
from ..reader import OcrWork, ParsedDocument, ParsedPage, ParseSettings
from .common import Flow, clean, located, picture, read_with
from .ooxml import check_package

_HEADING_NAME = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
# A paragraph's runs, those python-docx's `Paragraph.text` leaves out included: tracked insertions not yet accepted,
# smart tags, simple fields, inline content controls (a tracked deletion's text is w:delText: never read).
_RUNS = "w:r | w:hyperlink/w:r | w:ins/w:r | w:smartTag/w:r | w:fldSimple/w:r | w:sdt/w:sdtContent/w:r"


def parse_docx(data: bytes, settings: ParseSettings) -> ParsedDocument:
    check_package(data, "docx")
    import docx  # python-docx: loaded on first use

    document = read_with("the DOCX", lambda: docx.Document(io.BytesIO(data)))
    items = read_with("the DOCX", lambda: list(_items(document)))
    levels = [level for kind, level, _ in items if kind == "heading" and level > 0]
    top = min(levels, default=None)
    flows: list[Flow] = [Flow(1)]
    pictures: dict[int, list[OcrWork]] = {}
    path: list[tuple[int, str]] = []  # the heading path, as the chunker keeps it: (level, text), outermost first
    seen: set[str] = set()
    tables = 0
    last_text = ""
    for kind, level, value in items:
        if kind == "heading" and level == top and (flows[-1].blocks or flows[-1].tables or flows[-1].page in pictures):
            flows.append(Flow(len(flows) + 1))
        flow = flows[-1]
        if kind == "heading":
            flow.heading(value, level)
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, value))
        elif kind == "text":
            flow.text(value)
            last_text = value
        elif kind == "table":
            tables += 1
            flow.table(f"t{tables}", value)
        else:
            blob, content_type = value
            headings = tuple(text for _, text in path)
            where = f"section {flow.page}" + (f": {' > '.join(headings)}" if headings else "") + ", picture"
            work = picture(flow.page, blob, content_type, seen, headings=headings, locator=where, nearby=last_text)
            if work is not None:
                pictures.setdefault(flow.page, []).append(work)
    chunker = Chunker(settings.chunk_max_tokens, settings.chunk_max_chars)
    pages = [ParsedPage(flow.page, located(chunker.feed(flow.content()), _locator), tuple(pictures.get(flow.page, ())))
             for flow in flows]  # fmt: skip
    if not any(page.chunks or page.ocr for page in pages):
        raise DocumentRejected("empty document: the DOCX holds no text or table; upload a document with content")
    return ParsedDocument(len(pages), iter(pages))


def _locator(chunk: ParsedChunk) -> str:
    where = f"section {chunk.page}" + (f": {' > '.join(chunk.headings)}" if chunk.headings else "")
    return where + (f", table {chunk.table_id[1:]}" if chunk.table_id else "")


def _items(document):  # noqa: ANN001, ANN202 - yields ("heading", level, text) | ("text", 0, text) | ("table", 0, rows)
    # | ("picture", 0, (bytes, content type)), a paragraph's pictures after its text
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for item in _blocks(document.element.body, document._body):
        if isinstance(item, Paragraph):
            text = _text(item._p)
            level = _heading_level(item)
            if text:
                yield ("text", 0, text) if level is None else ("heading", level, text)
            for rid in item._p.xpath(".//a:blip/@r:embed"):
                part = document.part.related_parts.get(rid)
                if part is not None and hasattr(part, "blob"):
                    yield ("picture", 0, (part.blob, part.content_type))
        elif isinstance(item, Table):
            rows = [[clean("\n".join(_text(p) for p in cell._tc.xpath("w:p"))) for cell in row.cells] for row in item.rows]
            rows = [row for row in rows if any(row)]
            if rows:
                yield ("table", 0, rows)


def _text(p) -> str:  # noqa: ANN001 - a w:p element
    return clean("".join(run.text for run in p.xpath(_RUNS)))


def _blocks(element, parent):  # noqa: ANN001, ANN202
    """The paragraphs and tables under ``element`` in order, content controls (``w:sdt``: a cover page, a form's
    fields) opened, which `Document.iter_inner_content` skips."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in element.iterchildren():
        if child.tag == f"{_W}p":
            yield Paragraph(child, parent)
        elif child.tag == f"{_W}tbl":
            yield Table(child, parent)
        elif child.tag == f"{_W}sdt" and (content := child.find(f"{_W}sdtContent")) is not None:
            yield from _blocks(content, parent)


def _heading_level(paragraph) -> int | None:  # noqa: ANN001
    """0 for the title, 1.. for headings, None for body text."""
    level = _outline_level(paragraph._p.pPr)
    style = paragraph.style
    seen = 0
    while level is None and style is not None and seen < 10:  # a style based on a heading style is a heading
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        if match := _HEADING_NAME.match(name):
            return int(match.group(1))
        level = _outline_level(style.element.pPr)
        style, seen = style.base_style, seen + 1
    return level


def _outline_level(ppr) -> int | None:  # noqa: ANN001
    """The w:outlineLvl of paragraph properties, 0-based in the file (9 = body text), as a heading level."""
    node = ppr.find(f"{_W}outlineLvl") if ppr is not None else None
    if node is None:
        return None
    value = node.get(f"{_W}val")
    return int(value) + 1 if value is not None and value.isdigit() and int(value) < 9 else None
