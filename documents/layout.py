"""One PDF page -> :class:`PageContent` (text blocks, headings, tables, images, captions, OCR need). Pure, synchronous.

Entry points:

- :func:`extract_page` (page, ...) -> PageContent: one page, no state beyond what the caller passes;
- :func:`iter_pages` (doc, pages=None) -> Iterator[PageContent]: every page (or a range of pages) in order with
  cross-page state (table continuations, repeated-image detection), holding at most two pages' content at a
  time: a 1,000-page PDF is never materialised (PyMuPDF loads a page's objects only when the page is loaded,
  and we drop it after).

Coordinates are PDF points of the *displayed* page (rotation applied), top-left origin, as in extract.py.

Rules (also the answer to "why was my image / text missing"):

Text blocks: PyMuPDF's blocks in reading order (``sort=True``: top-to-bottom, then left-to-right), ligatures
  expanded and hyphenation joined as in extract.py; lines whose centre lies inside a table are removed (the
  table carries that text). Glyphs that map to no character (control codes, U+FFFD: music notation, symbol
  fonts) are removed, and a block of which they are a quarter or more of the visible characters is dropped
  (a score's noteheads and dynamics, not text; it would not count towards the body size either). A block is a *heading* when it has at most 3 lines and 150 characters, does not
  end with a period, and its largest font is >= 1.15x the page's body size (the size with most characters),
  or it is entirely bold, <= 80 characters and not smaller than the body size. A block is a *caption* when it
  starts with "Figure N", "Fig. N", "Table N", "Image N", "Chart N", "Diagram N", "Photo N" or "Plate N".
Running headers and footers (:func:`iter_pages` only: it sees the neighbouring pages) are removed: a block within
  the top or bottom 12% of the page, of at most 120 characters, whose text with its digits masked (page numbers)
  is also a margin block of one of the two pages before or of the page after ("Chapter 4: Drawing commands 16",
  "GNU Bash 5.2 ... 21", a lone page number). They would otherwise open a chunk of every page, as a heading too.
Images (placements from ``page.get_image_info``), skipped with a :class:`SkippedImage` reason when:
  - "decoration": smaller than 32 px on a side (intrinsic), or displayed on < 1% of the page area;
  - "repeat": the same image (same xref, or the same bytes by sha256) was already emitted on an earlier page
    (logos, letterheads, backgrounds): stored once, on its first page;
  - "too large": more than MAX_IMAGE_PIXELS by its PDF dictionary, checked before decoding (image bombs);
    such an XObject is replaced by a 1x1 stand-in *in the opened document* (not saved) so that MuPDF can
    report its placement without decoding it: pass a document opened for parsing only;
  - "undecodable" / "empty": the stream cannot be decoded (corrupt, truncated, 0x0); the page's text is kept;
  - "inline": inline images (``BI ... EI`` in the content stream) are not extracted;
  - "off page": placed outside the visible page;
  - "scan": on a page that needs OCR, an image covering >= 50% of the page is the scan itself: the page's
    OCR text stands for it;
  - "background": on a page with a text layer, an image covering >= 90% of the page (a searchable scan's
    page image, or a page background): storing one per page would store the document again as pixels.
  MuPDF's warnings and its object store are process-wide: the damage check resets the former and empties
  the latter around each extraction (one document at a time per process, as the agent runs).
Captions: each caption block is linked to at most one image (or table, for "Table N" captions), the nearest
  one whose bbox overlaps it horizontally and whose vertical gap to it is <= 36 pt, preferring a caption
  below the image over one above at equal distance (ties at +6 pt). ``nearby_text`` of an image is the
  closest other body block within 72 pt (any side), truncated to 500 characters.
OCR need: a page *needs OCR* when its text layer has fewer than 50 non-space characters *and* it has
  content: images covering >= 10% of the page, or vector drawings. Reading it (and the kept images) is OCR
  work for :mod:`documents.reader`, done apart from the page walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import pymupdf

from .images import MAX_IMAGE_PIXELS, ImageRejected, decode_image, digest, probe_image
from .tables import Table, body_band, find_tables, link_continuation, mark_continued

BBox = tuple[float, float, float, float]

_PDF_TEXT_FLAGS = (pymupdf.TEXTFLAGS_DICT & ~pymupdf.TEXT_PRESERVE_LIGATURES & ~pymupdf.TEXT_PRESERVE_IMAGES) | (
    pymupdf.TEXT_DEHYPHENATE
)

# A glyph that maps to no character (a C0 control code, U+FFFD): music notation or a symbol font's picture. Removed
# from the text; a block of which such glyphs are at least NOTATION_SHARE is notation, not text, and dropped.
UNMAPPED_GLYPH = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]")
NOTATION_SHARE = 0.25
# Running headers and footers (`iter_pages`): a block within the top or bottom 12% of the page, of at most 120
# characters, whose text (digits aside) a neighbouring page repeats in the same band.
RUNNING_MARGIN = 0.12
RUNNING_MAX_CHARS = 120
MIN_IMAGE_SIDE_PX = 32
MIN_IMAGE_PAGE_FRACTION = 0.01
CAPTION_MAX_GAP = 36.0
NEARBY_MAX_GAP = 72.0
NEEDS_OCR_MAX_CHARS = 50
NEEDS_OCR_MIN_IMAGE_FRACTION = 0.10
SCAN_IMAGE_FRACTION = 0.50
BACKGROUND_IMAGE_FRACTION = 0.90
_BOLD = 16  # span flag bit
_STREAM_DAMAGE = re.compile(r"error|truncated|premature|corrupt|invalid|unexpected", re.IGNORECASE)
CAPTION = re.compile(r"^(Figure|Fig\.?|Table|Image|Chart|Diagram|Photo|Plate)\s*\d+[A-Za-z]?\b", re.IGNORECASE)


@dataclass(frozen=True)
class PageBlock:
    """A paragraph-like block. ``kind``: "text", "heading" or "caption"; ``source``: "text" (text layer) or
    "ocr"; ``font_size``: the largest size in the block (None for OCR)."""

    page: int
    bbox: BBox
    text: str
    kind: Literal["text", "heading", "caption"] = "text"
    source: Literal["text", "ocr"] = "text"
    font_size: float | None = None


@dataclass(frozen=True)
class PageImage:
    """An image worth storing. ``width``/``height``: intrinsic pixels; ``data``: PNG or JPEG bytes
    (``mime``); ``digest``: sha256 of ``data`` (first 32 hex chars); ``xref``: the PDF object (0 for an
    uploaded file); ``index``: its position among the page's kept images."""

    page: int
    index: int
    bbox: BBox
    width: int
    height: int
    xref: int
    digest: str
    mime: str
    data: bytes = field(repr=False)
    caption: str | None = None
    nearby_text: str | None = None


@dataclass(frozen=True)
class SkippedImage:
    """An image placement that was not kept, and why (see the module docstring for the rule names)."""

    page: int
    bbox: BBox | None  # None when refused before its placement was computed (by its dictionary)
    xref: int
    reason: str


@dataclass(frozen=True)
class PageContent:
    page: int
    width: float
    height: float
    blocks: tuple[PageBlock, ...]
    tables: tuple[Table, ...]
    images: tuple[PageImage, ...]
    skipped_images: tuple[SkippedImage, ...]
    needs_ocr: bool


@dataclass
class DocumentState:
    """What :func:`iter_pages` carries from page to page (small: ids and digests, never page content)."""

    seen_xrefs: dict[int, int] = field(default_factory=dict)  # xref -> first page
    seen_digests: dict[str, int] = field(default_factory=dict)  # digest -> first page
    last_table: Table | None = None
    last_table_body_below: bool = True
    recent_margins: list[set[str]] = field(default_factory=list)  # `margin_key`s of the last two pages


# --------------------------------------------------------------------------- entry points


def iter_pages(doc: pymupdf.Document, pages: range | None = None) -> Iterator[PageContent]:
    """Every page's content in order (or the pages of ``pages``, 0-based page numbers, a range parsed alone:
    its first table links to nothing before it and images are "repeats" only of images in the range), with
    table continuations linked both ways, repeated images skipped and running headers and footers removed.

    Holds the previous page's content until the next page is extracted (to set ``continued_by`` and to see
    whether a margin line runs on), so at most two pages are in memory; each page object is released after
    extraction.
    """
    state = DocumentState()
    pending: PageContent | None = None
    for number in range(doc.page_count) if pages is None else pages:
        page = doc.load_page(number)
        try:
            content = extract_page(page, state=state)
        finally:
            del page
        if pending is not None:
            yield _without_running_lines(_forward_links(pending, content), state, content)
        pending = content
    if pending is not None:
        yield _without_running_lines(pending, state, None)


def margin_key(block: PageBlock, height: float) -> str | None:
    """What a running header or footer repeats, for a block in the top or bottom `RUNNING_MARGIN` of the page
    with at most `RUNNING_MAX_CHARS` characters: its text lowercased, digits as ``#`` (page numbers change),
    spaces collapsed; prefixed by the band. None for any other block."""
    if height <= 0 or len(block.text) > RUNNING_MAX_CHARS:
        return None
    if block.bbox[3] <= RUNNING_MARGIN * height:
        band = "top"
    elif block.bbox[1] >= (1 - RUNNING_MARGIN) * height:
        band = "bottom"
    else:
        return None
    return band + ":" + " ".join(re.sub(r"\d+", "#", block.text.lower()).split())


def _without_running_lines(content: PageContent, state: DocumentState, following: PageContent | None) -> PageContent:
    """``content`` without its running headers and footers: margin blocks (`margin_key`) whose key is also a
    margin block's key on one of the two pages before or on the page after (a chapter's first page has no
    predecessor with its title, its successor has). Records this page's keys in ``state``."""
    keys = [margin_key(b, content.height) for b in content.blocks]
    around = set().union(*state.recent_margins)
    if following is not None:
        around |= {k for b in following.blocks if (k := margin_key(b, following.height))}
    state.recent_margins = [*state.recent_margins, {k for k in keys if k}][-2:]
    if not any(k in around for k in keys if k):
        return content
    return replace(content, blocks=tuple(b for b, k in zip(content.blocks, keys, strict=True) if not k or k not in around))


def _forward_links(previous: PageContent, current: PageContent) -> PageContent:
    first = current.tables[0] if current.tables else None
    if first is None or first.continues is None or not previous.tables:
        return previous
    tables = list(previous.tables)
    tables[-1] = mark_continued(tables[-1], first)
    return replace(previous, tables=tuple(tables))


def extract_page(page: pymupdf.Page, *, state: DocumentState | None = None) -> PageContent:
    """The content of one page; see the module docstring for the rules. ``state`` (optional) links tables
    to the previous page and skips images already seen."""
    number = page.number + 1
    rect = page.rect
    # One text page for the words and the blocks: building it runs the content stream, about 1 ms of a plain
    # page's 5 (bench/parse_manuals.py). The words are unsorted: only counted here and placed into cells by
    # their block/line/word numbers (sorting costs more than the rest of a text page).
    textpage = page.get_textpage(flags=_PDF_TEXT_FLAGS)
    words = page.get_text("words", textpage=textpage)
    paths = _drawings(page)
    drawings = bool(paths)
    # The finder's "lines" strategy needs vector lines; without any drawing it cannot find a table. With
    # drawings it runs only where they can form a ruled grid (tables.table_regions).
    tables = find_tables(page, words, drawings=paths) if drawings else []
    blocks = _text_blocks(page, textpage, [t.bbox for t in tables])
    text_chars = sum(len(w[4]) for w in words)  # the whole text layer, tables included
    placements, refused = _image_placements(page, sparse_text=text_chars < NEEDS_OCR_MAX_CHARS)
    image_area = sum(_area(_clip(b, rect)) for b, _info in placements)
    needs_ocr = text_chars < NEEDS_OCR_MAX_CHARS and (
        image_area >= NEEDS_OCR_MIN_IMAGE_FRACTION * _area(rect) or drawings
    )
    images, skipped = _images(page, placements, needs_ocr, state, has_text=text_chars >= NEEDS_OCR_MAX_CHARS)
    skipped = refused + skipped

    tables, blocks, images = _link_captions(tables, blocks, images)
    if state is not None:
        tables = _link_tables(tables, blocks, rect.height, state)
    return PageContent(
        page=number, width=rect.width, height=rect.height, blocks=tuple(blocks), tables=tuple(tables),
        images=tuple(images), skipped_images=tuple(skipped), needs_ocr=needs_ocr,
    )  # fmt: skip


# --------------------------------------------------------------------------- text


def _text_blocks(page: pymupdf.Page, textpage: pymupdf.TextPage, table_boxes: list[BBox]) -> list[PageBlock]:
    number = page.number + 1
    raw = page.get_text("dict", textpage=textpage, sort=True)["blocks"]
    matrix = page.rotation_matrix
    unrotated_tables = [pymupdf.Rect(b) * ~matrix for b in table_boxes]
    sizes: dict[float, int] = {}
    kept: list[tuple[pymupdf.Rect, list[str], float, bool]] = []
    for block in raw:
        if block.get("type", 0) != 0:
            continue
        # The loop runs on every line of every page: plain floats and one regex pass, no Rect per line (a
        # third of a plain page's time went to building them, bench/parse_manuals.py).
        lines, box, max_size, all_bold = [], None, 0.0, True
        block_sizes: dict[float, int] = {}
        visible = unmapped = 0
        for line in block["lines"]:
            lx0, ly0, lx1, ly1 = line["bbox"]
            if unrotated_tables:
                centre = pymupdf.Point((lx0 + lx1) / 2, (ly0 + ly1) / 2)
                if any(centre in t for t in unrotated_tables):
                    continue
            raw_text = "".join(span["text"] for span in line["spans"])
            visible += len("".join(raw_text.split()))
            mapped, n_unmapped = UNMAPPED_GLYPH.subn("", raw_text)
            unmapped += n_unmapped
            text = " ".join(mapped.split())
            if not text:
                continue
            for span in line["spans"]:
                chars = len(span["text"].strip())
                if chars:
                    size = span["size"]  # rounded once per block below, not once per span
                    block_sizes[size] = block_sizes.get(size, 0) + chars
                    if size > max_size:
                        max_size = size
                    all_bold = all_bold and bool(span["flags"] & _BOLD)
            lines.append(text)
            if lx0 < lx1 and ly0 < ly1:  # as Rect's union: an empty line box adds nothing
                box = (lx0, ly0, lx1, ly1) if box is None else (
                    min(box[0], lx0), min(box[1], ly0), max(box[2], lx1), max(box[3], ly1)
                )  # fmt: skip
        if lines and unmapped < NOTATION_SHARE * visible:  # else notation drawn with a font, not text
            kept.append((pymupdf.Rect(box) if box else pymupdf.Rect(), lines, max_size, all_bold))
            for size, chars in block_sizes.items():
                size = round(size, 1)
                sizes[size] = sizes.get(size, 0) + chars
    body = max(sizes, key=lambda s: sizes[s]) if sizes else 0.0
    blocks = []
    for bbox, lines, max_size, all_bold in kept:
        text = " ".join(lines)
        r = bbox * matrix
        kind = _kind_of(text)
        if kind == "text" and _is_heading(text, len(lines), max_size, all_bold, body):
            kind = "heading"
        blocks.append(PageBlock(number, (r.x0, r.y0, r.x1, r.y1), text, kind, "text", round(max_size, 1)))
    return blocks


def _kind_of(text: str) -> Literal["text", "caption"]:
    return "caption" if CAPTION.match(text) else "text"


def _is_heading(text: str, n_lines: int, size: float, bold: bool, body: float) -> bool:
    if n_lines > 3 or len(text) > 150 or text.endswith(".") or not any(c.isalpha() for c in text):
        return False
    return size >= 1.15 * body or (bold and len(text) <= 80 and size >= body * 0.99)


def _drawings(page: pymupdf.Page) -> list[dict]:
    try:
        return page.get_cdrawings()
    except Exception:
        return []


# --------------------------------------------------------------------------- images


def _image_placements(page: pymupdf.Page, *, sparse_text: bool) -> tuple[list[tuple[BBox, dict]], list[SkippedImage]]:
    """Placements (displayed bbox, info with xref/width/height) of the page's images, and refusals.

    The dictionary sizes (``get_images(full=True)``: no decoding) are checked first: an XObject claiming
    more than MAX_IMAGE_PIXELS, or 0 on a side, is refused before MuPDF touches its pixels.
    ``get_image_info`` decodes every image of the page to report placements; when MuPDF refuses (its own
    limits, e.g. "Overly large image"), the page's other images are reported as skipped, its text is kept.

    ``get_image_info`` runs the page's whole content stream (1.4 ms of a plain page's 5.6, bench/parse_manuals.py),
    so it is skipped on a page that lists no image XObject and has text (not `sparse_text`): only inline images
    could be there, and those are never extracted; on a page without text one may be the scan to OCR.
    """
    number = page.number + 1
    skipped: list[SkippedImage] = []
    refused: set[int] = set()
    try:
        items = page.get_images(full=True)
    except Exception:
        items = []
    if not items and not sparse_text:
        return [], []
    for item in items:
        xref, width, height = item[0], item[2], item[3]
        if width <= 0 or height <= 0:
            refused.add(xref)
            skipped.append(SkippedImage(number, None, xref, f"empty: {width}x{height} pixels"))
        elif width * height > MAX_IMAGE_PIXELS:
            refused.add(xref)
            skipped.append(SkippedImage(number, None, xref, f"too large: {width}x{height} pixels is over the limit "
                                        f"of {MAX_IMAGE_PIXELS:,} (refused from its dictionary, not decoded)"))  # fmt: skip
    doc = page.parent
    for xref in refused:  # MuPDF would decode them to report placements: swap in a 1x1 stand-in first
        _neutralise(doc, xref)
    try:
        infos = page.get_image_info(xrefs=True)
    except Exception as exc:
        for item in items:
            if item[0] not in refused:
                skipped.append(SkippedImage(number, None, item[0], f"undecodable: the page's images cannot be read ({exc})"))
        return [], skipped
    out = []
    for info in infos:
        r = pymupdf.Rect(info["bbox"]) * page.rotation_matrix
        bbox = (r.x0, r.y0, r.x1, r.y1)
        if info.get("xref", 0) in refused:  # now we know where it was
            skipped = [replace(s, bbox=bbox) if s.xref == info["xref"] and s.bbox is None else s for s in skipped]
            continue
        out.append((bbox, info))
    return out, skipped


def _neutralise(doc: pymupdf.Document, xref: int) -> None:
    """Replace an refused image XObject by a 1x1 grey pixel *in the opened document only* (never saved), so
    that MuPDF reports its placement without decoding the original."""
    try:
        for key in ("Filter", "DecodeParms", "SMask", "Mask", "Decode"):
            doc.xref_set_key(xref, key, "null")
        doc.xref_set_key(xref, "Width", "1")
        doc.xref_set_key(xref, "Height", "1")
        doc.xref_set_key(xref, "BitsPerComponent", "8")
        doc.xref_set_key(xref, "ColorSpace", "/DeviceGray")
        doc.update_stream(xref, b"\x80", compress=False)
    except Exception:  # not a stream we can touch: get_image_info's own limits then decide
        pass


def _images(
    page: pymupdf.Page, placements: list[tuple[BBox, dict]], needs_ocr: bool, state: DocumentState | None,
    *, has_text: bool,
) -> tuple[list[PageImage], list[SkippedImage]]:
    number, rect = page.number + 1, page.rect
    page_area = _area(rect)
    images: list[PageImage] = []
    skipped: list[SkippedImage] = []
    seen_here: dict[int, int] = {}
    for bbox, info in placements:
        xref, width, height = info.get("xref", 0), info.get("width", 0), info.get("height", 0)

        def skip(reason: str) -> None:
            skipped.append(SkippedImage(number, bbox, xref, reason))

        shown = _area(_clip(bbox, rect))
        if shown <= 0:
            skip("off page: placed outside the visible page")
            continue
        if width <= 0 or height <= 0:
            skip(f"empty: {width}x{height} pixels")
            continue
        if width < MIN_IMAGE_SIDE_PX or height < MIN_IMAGE_SIDE_PX or shown < MIN_IMAGE_PAGE_FRACTION * page_area:
            skip(f"decoration: {width}x{height} px shown on {shown / page_area:.2%} of the page "
                 f"(< {MIN_IMAGE_SIDE_PX} px on a side or < {MIN_IMAGE_PAGE_FRACTION:.0%} of the page)")  # fmt: skip
            continue
        if width * height > MAX_IMAGE_PIXELS:
            skip(f"too large: {width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS:,} (not decoded)")
            continue
        if needs_ocr and shown >= SCAN_IMAGE_FRACTION * page_area:
            skip("scan: the image is the scanned page; its text comes from OCR of the page")
            continue
        if not needs_ocr and shown >= BACKGROUND_IMAGE_FRACTION * page_area and has_text:
            skip("background: a full-page image behind a text layer (a searchable scan or a page background)")
            continue
        if xref == 0:
            skip("inline: inline images in the content stream are not extracted")
            continue
        first = seen_here.get(xref) or (state.seen_xrefs.get(xref) if state else None)
        if first is not None:
            skip(f"repeat: the same image was kept on page {first}")
            continue
        try:
            data, mime, header = _extract_xref(page.parent, xref)
        except ImageRejected as exc:
            skip(str(exc))
            continue
        sha = digest(data)
        first = state.seen_digests.get(sha) if state else None
        if first is not None:
            skip(f"repeat: the same image was kept on page {first}")
            continue
        seen_here[xref] = number
        if state is not None:
            state.seen_xrefs[xref] = number
            state.seen_digests[sha] = number
        images.append(PageImage(number, len(images), bbox, header.width, header.height, xref, sha, mime, data))
    return images, skipped


def _extract_xref(doc: pymupdf.Document, xref: int):
    """(bytes, mime, header) of an image XObject, decoded once to prove the stream is sound."""
    # MuPDF repairs broken streams silently (a zlib error becomes "treating as end of file", the rest padded)
    # and only says so in its warnings; decode afresh (empty store) and read the warnings of this image alone.
    pymupdf.TOOLS.mupdf_warnings(reset=True)
    pymupdf.TOOLS.store_shrink(100)
    try:
        extracted = doc.extract_image(xref)
    except Exception as exc:  # MuPDF raises RuntimeError/ValueError subclasses for broken streams
        raise ImageRejected(f"undecodable: the image stream cannot be decoded ({exc})") from exc
    warnings = pymupdf.TOOLS.mupdf_warnings(reset=True)
    damage = [w for w in warnings.splitlines() if _STREAM_DAMAGE.search(w)]
    if damage:
        raise ImageRejected(f"undecodable: the image stream is damaged ({'; '.join(damage[:3])})")
    if not extracted or not extracted.get("image"):
        raise ImageRejected("undecodable: the image stream is empty or cannot be decoded")
    data, ext = extracted["image"], extracted.get("ext", "")
    if ext not in ("png", "jpeg", "jpg"):
        try:  # JPX, JBIG2, CCITT, ...: re-encode as PNG
            pix = pymupdf.Pixmap(doc, xref)
            if pix.alpha or pix.colorspace is None or pix.colorspace.n not in (1, 3):
                pix = pymupdf.Pixmap(pymupdf.csRGB, pix)
            data = pix.tobytes("png")
        except Exception as exc:
            raise ImageRejected(f"undecodable: the {ext or 'image'} stream cannot be decoded ({exc})") from exc
    try:
        header = probe_image(data)
        decode_image(data).close()  # full decode: a corrupt JPEG/PNG payload is found here, not downstream
    except ImageRejected as exc:
        raise ImageRejected(f"undecodable: {exc}") from exc
    return data, "image/png" if header.format == "PNG" else "image/jpeg", header


# --------------------------------------------------------------------------- captions and links


def _link_captions(
    tables: list[Table], blocks: list[PageBlock], images: list[PageImage]
) -> tuple[list[Table], list[PageBlock], list[PageImage]]:
    candidates = []  # (score, caption index, "image"/"table", target index)
    captions = [i for i, b in enumerate(blocks) if b.kind == "caption"]
    for ci in captions:
        cap = blocks[ci]
        is_table_caption = cap.text.lower().startswith("table")
        targets = [("table", ti, t.bbox) for ti, t in enumerate(tables)] if is_table_caption else []
        targets += [("image", ii, im.bbox) for ii, im in enumerate(images)]
        for kind, ti, bbox in targets:
            if not _h_overlap(cap.bbox, bbox):
                continue
            below_gap = cap.bbox[1] - bbox[3]
            above_gap = bbox[1] - cap.bbox[3]
            gap, penalty = (below_gap, 0.0) if below_gap >= -2 else (above_gap, 6.0)
            if -2 <= gap <= CAPTION_MAX_GAP:
                candidates.append((max(gap, 0.0) + penalty, ci, kind, ti))
    used_captions, used_targets = set(), set()
    image_captions: dict[int, str] = {}
    table_captions: dict[int, str] = {}
    for _score, ci, kind, ti in sorted(candidates):
        if ci in used_captions or (kind, ti) in used_targets:
            continue
        used_captions.add(ci)
        used_targets.add((kind, ti))
        (image_captions if kind == "image" else table_captions)[ti] = blocks[ci].text
    images = [
        replace(im, caption=image_captions.get(ii), nearby_text=_nearby(im.bbox, blocks, used_captions))
        for ii, im in enumerate(images)
    ]
    tables = [replace(t, caption=table_captions[ti]) if ti in table_captions else t for ti, t in enumerate(tables)]
    return tables, blocks, images


def _nearby(bbox: BBox, blocks: list[PageBlock], caption_indices: set[int]) -> str | None:
    best, best_gap = None, NEARBY_MAX_GAP
    for i, b in enumerate(blocks):
        if i in caption_indices or b.kind == "heading":
            continue
        gap = _gap(bbox, b.bbox)
        if gap <= best_gap:
            best, best_gap = b, gap
    return best.text[:500] if best else None


def _link_tables(tables: list[Table], blocks: list[PageBlock], height: float, state: DocumentState) -> list[Table]:
    top, bottom = body_band(height)
    body = [b for b in blocks if b.bbox[3] > top and b.bbox[1] < bottom and b.kind != "caption"]
    if tables:
        first = tables[0]
        body_above = any(b.bbox[3] <= first.bbox[1] for b in body)
        tables[0] = link_continuation(state.last_table, state.last_table_body_below, first, body_above)
        last = tables[-1]
        state.last_table = last
        state.last_table_body_below = any(b.bbox[1] >= last.bbox[3] for b in body)
    else:
        state.last_table = None
    return tables


# --------------------------------------------------------------------------- geometry


def _area(r) -> float:
    x0, y0, x1, y1 = tuple(r)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def _clip(b: BBox, rect: pymupdf.Rect) -> BBox:
    return (max(b[0], rect.x0), max(b[1], rect.y0), min(b[2], rect.x1), min(b[3], rect.y1))


def _h_overlap(a: BBox, b: BBox) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0


def _gap(a: BBox, b: BBox) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return (dx * dx + dy * dy) ** 0.5
