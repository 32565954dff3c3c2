"""Fixture builders shared by the test suite: documents generated in memory, no files on disk."""

from __future__ import annotations

import io

import pymupdf

A4 = pymupdf.paper_rect("a4")
_MARGIN = 72.0
USER_PASSWORD = "user-secret"
OWNER_PASSWORD = "owner-secret"


def make_pdf(pages: list[str], *, fontsize: float = 11) -> bytes:
    """An A4 PDF with one page per string; blank lines in a string start a new text block.

    Text that does not fit the page's text box raises ValueError rather than being silently dropped.
    """
    doc = pymupdf.open()
    try:
        for number, text in enumerate(pages, start=1):
            page = doc.new_page(width=A4.width, height=A4.height)
            box = pymupdf.Rect(_MARGIN, _MARGIN, A4.width - _MARGIN, A4.height - _MARGIN)
            if page.insert_textbox(box, text, fontsize=fontsize) < 0:
                raise ValueError(f"text of page {number} does not fit on an A4 page at fontsize {fontsize}")
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def make_encrypted_pdf(pages: list[str]) -> bytes:
    """``make_pdf(pages)`` encrypted with AES-256 and a user password (so it cannot be opened without one)."""
    doc = pymupdf.open(stream=make_pdf(pages), filetype="pdf")
    try:
        return doc.tobytes(
            encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=USER_PASSWORD, owner_pw=OWNER_PASSWORD
        )
    finally:
        doc.close()


def make_image_only_pdf() -> bytes:
    """A one-page PDF with drawn shapes and no text layer at all (what a scan looks like to a text extractor)."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.draw_rect(pymupdf.Rect(100, 100, 400, 300), color=(0, 0, 0), fill=(0.7, 0.7, 0.9))
        page.draw_circle(pymupdf.Point(300, 500), 80, color=(1, 0, 0))
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def corrupt_pdf() -> bytes:
    """A PDF header followed by binary garbage: no xref, no objects; PyMuPDF cannot open or repair it."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 8


def truncated_pdf(pages: list[str]) -> bytes:
    """``make_pdf(pages)`` cut to its first 40% of bytes (an interrupted upload).

    What PyMuPDF 2.0 (MuPDF 1.28) does with it depends on where the cut lands, not on how much is kept:
    the xref table and trailer at the end are gone, so MuPDF scans for objects and tries to rebuild one.
    If the catalog and page tree survive (MuPDF writes them first) the file opens WITHOUT error,
    ``doc.is_repaired`` is True, ``page_count`` is the full count, pages whose content stream survived keep
    their text, a page whose deflated stream is cut keeps a prefix of it, later pages are empty; the
    repair notes go to ``pymupdf.TOOLS.mupdf_warnings()``, not to an exception. Otherwise ``open`` raises
    ``FileDataError`` (e.g. a one-page document cut at 40%, or ``FIVE_PAGES`` cut at 60%).

    For ``FIVE_PAGES`` at 40%: 5 pages, page 1 complete, page 2 partial, pages 3-5 empty (the fact is lost).
    """
    data = make_pdf(pages)
    return data[: int(len(data) * 0.4)]


FACT = "The Zorblax-7 reactor core operates at exactly 4127 degrees Kelvin."
QUESTION = "What temperature does the Zorblax-7 reactor core operate at?"
FACT_PHRASE = "4127 degrees Kelvin"

FIVE_PAGES = [
    (
        "Coastal Birds of the Northern Shore\n\n"
        "Along the northern shore, colonies of puffins return each spring to the same cliff burrows. "
        "Their bright bills fade after the breeding season, and many observers mistake juveniles for "
        "another species entirely.\n\n"
        "Gulls, by contrast, are opportunists. They follow fishing boats, raid picnic baskets and have "
        "learned to drop shellfish onto rocks to crack them open.\n\n"
        "Volunteers count the nests every June, and the counts have been stable for a decade."
    ),
    (
        "A Short History of Bread\n\n"
        "Bread is among the oldest prepared foods. Early loaves were flat and unleavened, baked on hot "
        "stones near the fire.\n\n"
        "Leavened bread spread once bakers learned to keep a portion of fermented dough for the next "
        "batch. Sourdough cultures can be kept alive for generations.\n\n"
        "Industrial milling in the nineteenth century made white flour cheap, changing diets across "
        "entire continents."
    ),
    (
        "Engineering Notes on the Zorblax Programme\n\n"
        "The Zorblax programme built a series of experimental power plants, each designed to test a "
        "different cooling arrangement.\n\n"
        f"{FACT} Engineers chose this setting after long trials of the heat exchangers.\n\n"
        "Maintenance crews inspect the shielding every quarter and log any deviation in the control room."
    ),
    (
        "Choosing a Hiking Boot\n\n"
        "A good hiking boot balances support with weight. Heavy leather boots last for years but need "
        "a long breaking-in period.\n\n"
        "Synthetic boots dry quickly and are comfortable from the first day, though they wear out sooner "
        "on rocky trails.\n\n"
        "Always try boots on in the afternoon, when feet are slightly swollen from the day's walking."
    ),
    (
        "The Economics of Small Libraries\n\n"
        "Small public libraries run on tight budgets. Most of the money goes to staff and buildings, "
        "leaving little for new acquisitions.\n\n"
        "Interlibrary loans let a small branch offer a huge catalogue at the cost of a few days of "
        "waiting.\n\n"
        "Many libraries now lend tools, seeds and musical instruments alongside books."
    ),
]


def five_page_pdf_with_fact() -> tuple[bytes, str, str]:
    """(pdf, question, distinctive phrase): five pages on unrelated topics; only page 3 states ``FACT``,
    which answers ``QUESTION`` and contains the phrase."""
    return make_pdf(FIVE_PAGES), QUESTION, FACT_PHRASE


_WORDS = (
    "archive basalt cobalt delta ember fjord granite harbor iris juniper kelp lantern meadow nickel orchard "
    "prairie quartz river saffron tundra umber valley willow xenon yarrow zephyr beacon canyon dune estuary"
).split()


def synthetic_pages(doc_number: int, pages: int = 10, sentences_per_page: int = 14) -> list[str]:
    """Deterministic prose for corpus tests and benchmarks; every page states one unique, findable fact.

    Page p of document d contains "Ledger entry D{d}P{p} records {value} crates." with a value derived from
    d and p, so a test can ask about any page and know the answer.
    """
    out = []
    for page in range(1, pages + 1):
        sentences = []
        for s in range(sentences_per_page):
            i = doc_number * 7919 + page * 104729 + s * 31
            words = [_WORDS[(i // (k + 1) + k * 13) % len(_WORDS)] for k in range(9)]
            sentences.append(" ".join(words).capitalize() + ".")
        sentences.insert(sentences_per_page // 2, f"Ledger entry D{doc_number}P{page} records {ledger_value(doc_number, page)} crates.")
        half = len(sentences) // 2
        out.append(" ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:]))
    return out


def ledger_value(doc_number: int, page: int) -> int:
    return 1000 + (doc_number * 37 + page * 11) % 9000


def synthetic_pdf(doc_number: int, pages: int = 10) -> bytes:
    return make_pdf(synthetic_pages(doc_number, pages), fontsize=9)


# --------------------------------------------------------------------------- multi-modal fixtures (parser)
# Pixels are generated with Pillow; text in images is rendered by PyMuPDF (Helvetica), so OCR ground truth is known.

TABLE_3X4 = [
    ["Part", "Material", "Weight", "Supplier"],
    ["Flange", "Steel", "4.2 kg", "Arden Works"],
    ["Gasket", "Rubber", "0.3 kg", "Belmont Seals"],
]


def _draw_table(page: pymupdf.Page, rows: list[list[str]], *, x0: float = 72, y0: float = 200,
                col_width: float = 110, row_height: float = 24, fontsize: float = 10) -> pymupdf.Rect:  # fmt: skip
    """Ruled grid with one text string per cell; returns the table's rect."""
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            rect = pymupdf.Rect(x0 + c * col_width, y0 + r * row_height, x0 + (c + 1) * col_width, y0 + (r + 1) * row_height)
            page.draw_rect(rect, color=(0, 0, 0), width=0.8)
            page.insert_text((rect.x0 + 4, rect.y1 - 8), cell, fontsize=fontsize)
    return pymupdf.Rect(x0, y0, x0 + len(rows[0]) * col_width, y0 + len(rows) * row_height)


def make_table_pdf(rows: list[list[str]] | None = None, *, text_above: str = "Parts list",
                   text_below: str = "All weights are nominal.") -> bytes:  # fmt: skip
    """One A4 page: a paragraph, a ruled table of ``rows`` (default ``TABLE_3X4``: 3 rows x 4 columns), a paragraph."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 150), text_above, fontsize=11)
        rect = _draw_table(page, rows or TABLE_3X4)
        page.insert_text((72, rect.y1 + 40), text_below, fontsize=11)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def spanning_table_rows(n: int = 40, start: int = 1) -> list[list[str]]:
    return [[f"R{i}", f"alpha{i}", f"{i * 3}", f"beta{i}"] for i in range(start, start + n)]


def make_spanning_table_pdf(first_rows: int = 24, second_rows: int = 10, *, repeat_header: bool = True) -> bytes:
    """Two A4 pages: page 1 has an intro then a ruled 4-column table to the bottom of the page; page 2 continues
    it at the top (with the header row repeated when ``repeat_header``), followed by a closing paragraph."""
    header = ["Code", "Name", "Count", "Group"]
    doc = pymupdf.open()
    try:
        p1 = doc.new_page(width=A4.width, height=A4.height)
        p1.insert_text((72, 100), "Inventory by code", fontsize=11)
        _draw_table(p1, [header, *spanning_table_rows(first_rows)], y0=120)
        p2 = doc.new_page(width=A4.width, height=A4.height)
        rows2 = spanning_table_rows(second_rows, start=first_rows + 1)
        rect = _draw_table(p2, [header, *rows2] if repeat_header else rows2, y0=90)
        p2.insert_text((72, rect.y1 + 40), "End of inventory.", fontsize=11)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def make_png(width: int, height: int, color: tuple[int, int, int] = (200, 60, 60), *, pattern: bool = True) -> bytes:
    """A PNG of ``width`` x ``height`` (with a few stripes so it is not trivially compressible when ``pattern``)."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), color)
    if pattern:
        draw = ImageDraw.Draw(img)
        for x in range(0, width, max(4, width // 8)):
            draw.line([(x, 0), (x, height)], fill=(255 - color[0], 255 - color[1], 255 - color[2]), width=2)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


FIGURE_1 = "Figure 1: Pressure gauge on the inlet valve."
FIGURE_2 = "Figure 2: Wiring diagram of the pump controller."


def make_figures_pdf(*, logo: bool = True) -> tuple[bytes, list[pymupdf.Rect]]:
    """One A4 page: intro text; a red image with ``FIGURE_1`` below it; a paragraph; a blue image with
    ``FIGURE_2`` below it; and (``logo``) an 8x8 logo in the top corner.
    Returns (pdf, [rect of image 1, rect of image 2])."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 80), "Maintenance of the pump station", fontsize=16)
        page.insert_text((72, 110), "The figures below show the inlet and the controller.", fontsize=11)
        r1 = pymupdf.Rect(72, 130, 272, 280)
        page.insert_image(r1, stream=make_png(400, 300, (200, 60, 60)))
        page.insert_text((72, r1.y1 + 16), FIGURE_1, fontsize=10)
        page.insert_text((72, 340), "Check the gauge weekly; replace it when the needle sticks.", fontsize=11)
        r2 = pymupdf.Rect(300, 380, 520, 540)
        page.insert_image(r2, stream=make_png(440, 320, (40, 80, 200)))
        page.insert_text((300, r2.y1 + 16), FIGURE_2, fontsize=10)
        if logo:
            page.insert_image(pymupdf.Rect(540, 20, 560, 40), stream=make_png(8, 8, (0, 0, 0), pattern=False))
        return doc.tobytes(deflate=True), [r1, r2]
    finally:
        doc.close()


SCAN_SENTENCES = [
    "The pump must be switched off before opening the cover.",
    "Replace the filter cartridge every six months.",
    "Record the pressure reading in the maintenance log.",
    "Contact the service desk if the alarm light flashes red.",
]


def render_text_image(lines: list[str], *, width_pt: float = 480, fontsize: float = 12, dpi: int = 150,
                      angle: float = 0.0, fmt: str = "PNG") -> bytes:  # fmt: skip
    """Text rendered to a white image (like a scan or a screenshot): PyMuPDF draws the text at ``dpi``, Pillow
    rotates it by ``angle`` degrees (counter-clockwise, white fill) and encodes it as ``fmt``."""
    import io

    from PIL import Image

    height_pt = 40 + len(lines) * fontsize * 2.2
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=width_pt, height=height_pt)
        for i, line in enumerate(lines):
            page.insert_text((20, 30 + i * fontsize * 2.2), line, fontsize=fontsize)
        zoom = dpi / 72
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
        img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    finally:
        doc.close()
    if angle:
        img = img.rotate(angle, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.convert("RGB" if fmt == "JPEG" else "L").save(out, format=fmt)
    return out.getvalue()


def make_scanned_pdf(lines: list[str] | None = None, *, angle: float = 0.0, dpi: int = 150, pages: int = 1,
                     fontsize: float = 12) -> bytes:  # fmt: skip
    """A "scanned" PDF: each A4 page's only content is one full-page image of ``lines`` (default
    ``SCAN_SENTENCES``) rendered at ``dpi`` and tilted by ``angle`` degrees; no text layer."""
    import io

    from PIL import Image

    lines = lines or SCAN_SENTENCES
    text_png = render_text_image(lines, width_pt=A4.width - 100, fontsize=fontsize, dpi=dpi, angle=angle)
    text_img = Image.open(io.BytesIO(text_png))
    zoom = dpi / 72
    sheet = Image.new("L", (int(A4.width * zoom), int(A4.height * zoom)), 255)
    sheet.paste(text_img, (int(50 * zoom), int(60 * zoom)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    doc = pymupdf.open()
    try:
        for _ in range(pages):
            page = doc.new_page(width=A4.width, height=A4.height)
            page.insert_image(page.rect, stream=buf.getvalue())
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


SCREENSHOT_LABEL = "CONFIG SAVED OK"


def make_screenshot_pdf(label: str = SCREENSHOT_LABEL) -> tuple[bytes, pymupdf.Rect]:
    """A normal text page with a screenshot-like image (a grey window with ``label`` inside it), and the
    image's rect on the page."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_textbox(pymupdf.Rect(72, 72, 520, 200),
                            "After changing the settings, press Save. The dialog below confirms the change.\n\n"
                            "If it does not appear, repeat the steps from the start.", fontsize=11)  # fmt: skip
        rect = pymupdf.Rect(100, 260, 420, 360)
        page.insert_image(rect, stream=render_text_image([label], width_pt=240, fontsize=18, dpi=150))
        page.insert_text((100, 380), "Figure 4: The confirmation dialog.", fontsize=10)
        return doc.tobytes(deflate=True), rect
    finally:
        doc.close()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims ``width`` x ``height`` pixels (an image bomb by its header): a valid
    signature and IHDR, one tiny IDAT, IEND. Decoding it would try to allocate width * height * 3 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


BROKEN_IMAGE_PAGE_TEXT = "This page has a photo whose data was damaged in transit."


def make_broken_image_pdf() -> bytes:
    """One page with a paragraph and a 300x200 image whose stream bytes were replaced by garbage (the object
    still claims FlateDecode, 300x200, DeviceRGB)."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 100), BROKEN_IMAGE_PAGE_TEXT, fontsize=11)
        page.insert_image(pymupdf.Rect(72, 150, 372, 350), stream=make_png(300, 200))
        xref = page.get_images()[0][0]
        doc.update_stream(xref, b"\x00garbage-not-zlib" * 7, compress=False)
        doc.xref_set_key(xref, "Filter", "/FlateDecode")
        doc.xref_set_key(xref, "DecodeParms", "null")
        return doc.tobytes()
    finally:
        doc.close()


def make_pdf_image_bomb() -> bytes:
    """One page with text and an image XObject whose dictionary claims 100000 x 100000 pixels (tiny stream)."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 100), "A page with an absurd image.", fontsize=11)
        page.insert_image(pymupdf.Rect(72, 150, 372, 350), stream=make_png(300, 200))
        xref = page.get_images()[0][0]
        doc.xref_set_key(xref, "Width", "100000")
        doc.xref_set_key(xref, "Height", "100000")
        return doc.tobytes()
    finally:
        doc.close()


def make_repeated_logo_pdf(pages: int = 3) -> bytes:
    """``pages`` A4 pages, each with a paragraph and the same 120x60 logo (inserted anew on each page, so each
    page has its own XObject with identical bytes)."""
    logo = make_png(120, 60, (10, 120, 10))
    doc = pymupdf.open()
    try:
        for number in range(1, pages + 1):
            page = doc.new_page(width=A4.width, height=A4.height)
            page.insert_image(pymupdf.Rect(72, 40, 192, 100), stream=logo)
            page.insert_text((72, 140), f"Page {number} of the quarterly report.", fontsize=11)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def make_image_pages_pdf(pages: int, *, side: int = 160) -> bytes:
    """``pages`` A4 pages, each with a heading, a paragraph and its own distinct ``side`` x ``side`` image."""
    doc = pymupdf.open()
    try:
        for number in range(1, pages + 1):
            page = doc.new_page(width=A4.width, height=A4.height)
            page.insert_text((72, 80), f"Section {number}", fontsize=16)
            page.insert_text((72, 110), f"Body text of page {number} describing the photo below.", fontsize=11)
            color = ((number * 37) % 256, (number * 91) % 256, (number * 53) % 256)
            page.insert_image(pymupdf.Rect(72, 130, 272, 330), stream=make_png(side, side, color))
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def make_searchable_scan_pdf(lines: list[str] | None = None) -> bytes:
    """``make_scanned_pdf(lines)`` with an invisible text layer of the same lines (what OCR software writes)."""
    lines = lines or SCAN_SENTENCES
    doc = pymupdf.open(stream=make_scanned_pdf(lines), filetype="pdf")
    try:
        for i, line in enumerate(lines):
            doc[0].insert_text((70, 90 + i * 26.4), line, fontsize=12, render_mode=3)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian's fonts-dejavu: Cyrillic glyphs
CYRILLIC_NOTICE = ("Уважаемые соседи! В субботу с десяти утра во дворе пройдёт общий субботник. Приглашаем всех "
                   "жильцов принять участие в уборке территории и посадке деревьев. Инвентарь выдаёт дворник. ") * 4  # fmt: skip


def make_scanned_text_pdf(text: str = CYRILLIC_NOTICE) -> bytes:
    """One page that is only a 150-dpi picture of `text` set in DejaVu Sans (any script it has glyphs for; no text
    layer): the parser sends it to OCR. With the default text, a Cyrillic notice the shipped OCR models cannot read."""
    src = pymupdf.open()
    page = src.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(60, 60, 535, 780), text, fontsize=13, fontname="dejavu", fontfile=DEJAVU)
    png = page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY).tobytes("png")
    out = pymupdf.open()
    out.new_page(width=595, height=842).insert_image(pymupdf.Rect(0, 0, 595, 842), stream=png)
    return out.tobytes(deflate=True)


# --------------------------------------------------------------------------- e-books

CHAPTERS = [
    ("Getting started", "<h1>Getting started</h1><p>Unpack the pump and read the safety notes.</p>"
                        "<h2>Tools</h2><p>You need a 13 mm spanner.</p>"),
    ("Installation", "<h1>Installation</h1><p>Mount the pump on a flat surface.</p>"
                     "<table><tr><th>Bolt</th><th>Torque</th></tr><tr><td>Anchor</td><td>12 Nm</td></tr></table>"),
    ("Maintenance", "<p>Replace the filter every six months.</p>"),  # no heading: the title is the context
]
EPUB_SCRIPT = "SECRETSCRIPTTEXT"


def make_epub(chapters: list[tuple[str, str]] = CHAPTERS, *, cover: bool = True) -> bytes:
    """An EPUB 3 (written by ebooklib) of a cover without text, then ``chapters`` ((title, XHTML body)) in the
    spine and the table of contents; each chapter ends with a script holding ``EPUB_SCRIPT``."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("pump-manual-1")
    book.set_title("Pump manual")
    book.set_language("en")
    spine: list = []
    if cover:
        spine.append(epub.EpubHtml(title="Cover", file_name="cover.xhtml", content="<p></p>"))  # no text
    items = []
    for i, (title, body) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=title, file_name=f"chap_{i}.xhtml", lang="en")
        item.content = f"<html><body>{body}<script>var x = '{EPUB_SCRIPT}';</script></body></html>"
        items.append(item)
    for item in spine + items:
        book.add_item(item)
    book.toc = [epub.Link(item.file_name, title, f"c{i}") for i, (item, (title, _)) in enumerate(zip(items, chapters))]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [*spine, *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()
