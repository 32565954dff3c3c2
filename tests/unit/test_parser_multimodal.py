"""Multi-modal parsing: tables, images, captions, OCR and bad input. Pure functions on generated fixtures whose
ground truth is known; OCR runs the real PP-OCR models shipped in the rapidocr wheel (no network)."""

from __future__ import annotations

import difflib
import io
import time
import tracemalloc

import pymupdf
import pytest
from PIL import Image

from documents import DocumentRejected, ParsedChunk, ParsedPage, page_raster, parse, read_image, read_page
from documents.chunks import MAX_TOKENS, wordpiece_counter
from documents.filetypes import sniff_image_format
from documents.images import ImageRejected, probe_image
from documents.layout import PageContent, extract_page, iter_pages
from documents.ocr import ENGINES, OcrSettings, _engine, ocr_image, ocr_pixels, render_page
from documents.tables import Table, link_continuation, table_chunks, to_markdown
from tests.factories import (
    A4,
    BROKEN_IMAGE_PAGE_TEXT,
    FIGURE_1,
    FIGURE_2,
    SCAN_SENTENCES,
    SCREENSHOT_LABEL,
    TABLE_3X4,
    make_broken_image_pdf,
    make_figures_pdf,
    make_image_pages_pdf,
    make_pdf,
    make_pdf_image_bomb,
    make_png,
    make_repeated_logo_pdf,
    make_scanned_pdf,
    make_searchable_scan_pdf,
    make_screenshot_pdf,
    make_spanning_table_pdf,
    make_table_pdf,
    png_bomb,
    render_text_image,
    spanning_table_rows,
    synthetic_pages,
)

OCR = OcrSettings()


def _pages(data: bytes) -> list[PageContent]:
    doc = pymupdf.open(stream=data, filetype="pdf")
    try:
        return list(iter_pages(doc))
    finally:
        doc.close()


def _parsed(data: bytes, content_type: str = "application/pdf") -> list[ParsedPage]:
    with parse(data, content_type) as doc:
        return list(doc)


def _found(sentence: str, text: str) -> float:
    """The share of ``sentence``'s words that OCR recovered somewhere in ``text``."""
    norm = lambda s: [w.strip(".,:;").lower() for w in s.split()]  # noqa: E731
    words, seen = norm(sentence), set(norm(text))
    return sum(w in seen for w in words) / len(words)


def _near(a: tuple[float, ...], b: pymupdf.Rect, tol: float = 2.0) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, tuple(b)))


def _best_ratio(sentence: str, text_lines: list[str]) -> float:
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return max((difflib.SequenceMatcher(None, norm(sentence), norm(line)).ratio() for line in text_lines), default=0.0)


# --------------------------------------------------------------------------- tables


def test_3x4_ruled_table_every_cell_in_order_and_not_duplicated_in_text() -> None:
    [page] = _pages(make_table_pdf())

    [table] = page.tables
    assert [list(r) for r in table.rows] == TABLE_3X4
    assert table.header == tuple(TABLE_3X4[0]) and table.col_count == 4 and table.page == 1
    assert table.markdown.splitlines() == [
        "|Part|Material|Weight|Supplier|",
        "|---|---|---|---|",
        "|Flange|Steel|4.2 kg|Arden Works|",
        "|Gasket|Rubber|0.3 kg|Belmont Seals|",
    ]
    x0, y0, x1, y1 = table.bbox
    assert (x0, y0) == pytest.approx((72, 200), abs=2) and (x1, y1) == pytest.approx((512, 272), abs=2)
    texts = [b.text for b in page.blocks]
    assert texts == ["Parts list", "All weights are nominal."]  # table text only in the table
    assert not page.needs_ocr and table.continues is None and table.group_id is None


@pytest.mark.parametrize("repeat_header", [True, False], ids=["header-repeated", "no-header-on-page-2"])
def test_table_spanning_two_pages_is_linked_and_loses_no_row(repeat_header: bool) -> None:
    p1, p2 = _pages(make_spanning_table_pdf(24, 10, repeat_header=repeat_header))

    [first], [second] = p1.tables, p2.tables
    assert second.continues == first.table_id and first.continued_by == second.table_id
    assert first.group_id == second.group_id == first.table_id
    data_rows = [r for r in (*first.rows, *second.rows) if r[0] != "Code"]
    assert [list(r) for r in data_rows] == spanning_table_rows(34)
    assert second.markdown.splitlines()[0] == "|Code|Name|Count|Group|"  # the part reads on its own
    assert [b.text for b in p2.blocks] == ["End of inventory."]


def test_separate_tables_on_consecutive_pages_are_not_linked() -> None:
    doc = pymupdf.open()
    for rows in (TABLE_3X4, [["a", "b"], ["1", "2"]]):
        one = pymupdf.open(stream=make_table_pdf(rows), filetype="pdf")
        doc.insert_pdf(one)
    p1, p2 = _pages(doc.tobytes())

    assert p2.tables[0].continues is None and p1.tables[0].continued_by is None


def test_table_chunks_cut_between_rows_and_repeat_the_header() -> None:
    [page] = _pages(make_spanning_table_pdf(24, 1))[:1]
    table = page.tables[0]

    pieces = [piece.markdown for piece in table_chunks(table, 200)]

    assert len(pieces) > 3 and all(len(p) <= 200 for p in pieces)
    body = []
    for piece in pieces:
        lines = piece.splitlines()
        assert lines[:2] == ["|Code|Name|Count|Group|", "|---|---|---|---|"]
        assert all(line.startswith("|") and line.endswith("|") and line.count("|") == 5 for line in lines[2:])
        body += lines[2:]
    assert body == table.markdown.splitlines()[2:]


def test_a_cell_holding_a_pipe_stays_one_cell_from_the_page_to_the_chunk() -> None:
    rows = [["Part", "Fits"], ["Adapter", "M8|M10"], ["Hose", "1/2 in"]]
    [page] = _parsed(make_table_pdf(rows))

    [chunk] = [c for c in page.chunks if c.modality == "table"]
    assert chunk.table is not None
    assert chunk.table.header == ("Part", "Fits")
    assert chunk.table.rows == (("Adapter", "M8|M10"), ("Hose", "1/2 in"))
    assert "|Adapter|M8\\|M10|" in chunk.text  # the markdown escapes it; the cells are not parsed back from it


def test_each_table_chunk_carries_the_cells_of_its_own_rows_under_the_header() -> None:
    chunks = [c for p in _parsed(make_spanning_table_pdf(24, 10, repeat_header=False)) for c in p.chunks
              if c.modality == "table"]  # fmt: skip

    assert all(c.table is not None and c.table.header == ("Code", "Name", "Count", "Group") for c in chunks)
    assert [list(r) for c in chunks for r in c.table.rows] == spanning_table_rows(34)  # type: ignore[union-attr]
    assert all(c.text == c.table.markdown for c in chunks)  # type: ignore[union-attr]


def test_a_third_part_without_a_header_still_shows_the_groups_header() -> None:
    header, edges = ("Code", "Name"), (72.0, 182.0, 292.0)

    def part(page: int, rows: tuple[tuple[str, ...], ...]) -> Table:
        return Table(page, (72, 100, 292, 700), f"p{page}-t0", rows, rows[0], to_markdown(rows), 2, edges)

    first = part(1, (header, ("R1", "alpha")))
    second = link_continuation(first, False, part(2, (("R2", "beta"),)), False)
    third = link_continuation(second, False, part(3, (("R3", "gamma"),)), False)

    assert third.continues == second.table_id and third.group_id == first.table_id and third.header is None
    assert third.markdown.splitlines()[0] == "|Code|Name|" and third.cells().rows == (("R3", "gamma"),)


def test_a_table_row_longer_than_max_chars_continues_on_further_rows() -> None:
    long = " ".join(f"word{i}" for i in range(60))
    rows = (("Code", "Notes"), ("A1", "short"), ("B2", long))
    table = Table(1, (0, 0, 100, 100), "p1-t0", rows, rows[0], to_markdown(rows), 2, ())

    pieces = table_chunks(table, 10_000, max_chars=150)

    assert all(len(p.markdown) <= 150 for p in pieces)
    assert all(p.header == ("Code", "Notes") for p in pieces)
    rows = [r for p in pieces for r in p.rows]
    assert rows[0] == ("A1", "short") and rows[1][0] == "B2" and all(r[0] == "" for r in rows[2:])
    assert " ".join(r[1] for r in rows[1:]) == long  # nothing lost, cut at word boundaries


# --------------------------------------------------------------------------- images and captions


def test_images_extracted_with_page_bbox_size_and_the_right_captions() -> None:
    pdf, (r1, r2) = make_figures_pdf()
    [page] = _pages(pdf)

    first, second = page.images
    assert (first.page, first.width, first.height) == (1, 400, 300) and _near(first.bbox, r1)
    assert (second.page, second.width, second.height) == (1, 440, 320) and _near(second.bbox, r2)
    assert first.caption == FIGURE_1 and second.caption == FIGURE_2
    assert first.nearby_text and "figures below" in first.nearby_text
    for image, color in ((first, (200, 60, 60)), (second, (40, 80, 200))):
        pixels = Image.open(io.BytesIO(image.data))
        assert pixels.size == (image.width, image.height) and image.mime == "image/png"
        assert pixels.convert("RGB").getpixel((25, pixels.height // 2)) == color
    assert [b.kind for b in page.blocks] == ["heading", "text", "caption", "text", "caption"]


def test_tiny_logo_is_skipped_as_a_decoration() -> None:
    [page] = _pages(make_figures_pdf(logo=True)[0])

    assert len(page.images) == 2
    [skipped] = page.skipped_images
    assert skipped.reason.startswith("decoration: 8x8 px")
    assert skipped.bbox == pytest.approx((540, 20, 560, 40), abs=1)


def test_repeated_logo_is_kept_once_on_its_first_page() -> None:
    pages = _pages(make_repeated_logo_pdf(3))

    assert [len(p.images) for p in pages] == [1, 0, 0]
    assert [s.reason for p in pages[1:] for s in p.skipped_images] == ["repeat: the same image was kept on page 1"] * 2


def test_broken_image_stream_skips_the_image_and_keeps_the_text() -> None:
    start = time.perf_counter()
    [page] = _pages(make_broken_image_pdf())

    assert [b.text for b in page.blocks] == [BROKEN_IMAGE_PAGE_TEXT]
    assert page.images == ()
    [skipped] = page.skipped_images
    assert skipped.reason.startswith("undecodable") and "zlib" in skipped.reason
    assert time.perf_counter() - start < 5


def test_image_bomb_inside_a_pdf_is_refused_from_its_dictionary() -> None:
    tracemalloc.start()
    start = time.perf_counter()
    [page] = _pages(make_pdf_image_bomb())
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert [b.text for b in page.blocks] == ["A page with an absurd image."]
    [skipped] = page.skipped_images
    assert skipped.reason.startswith("too large: 100000x100000")
    assert skipped.bbox == pytest.approx((72, 150, 372, 350), abs=1)  # placed, yet never decoded
    assert elapsed < 5 and peak < 50_000_000


def test_searchable_scan_keeps_its_text_layer_and_does_not_store_the_page_image() -> None:
    [page] = _pages(make_searchable_scan_pdf())

    assert not page.needs_ocr and page.images == ()
    assert [s.reason.split(":")[0] for s in page.skipped_images] == ["background"]
    assert SCAN_SENTENCES[2] in " ".join(b.text for b in page.blocks)


# --------------------------------------------------------------------------- OCR


def test_page_with_a_text_layer_does_not_need_ocr_and_a_blank_page_neither() -> None:
    doc = pymupdf.open(stream=make_pdf(synthetic_pages(1, 1)), filetype="pdf")
    doc.new_page()
    text_page, blank = (extract_page(p) for p in doc)

    assert not text_page.needs_ocr and not blank.needs_ocr and blank.blocks == ()


def test_scanned_page_is_ocr_work_and_its_read_recovers_the_sentences_in_page_coordinates() -> None:
    [content] = _pages(make_scanned_pdf())
    assert content.needs_ocr and content.blocks == ()  # the page walk flags it; reading is OCR work
    assert [s.reason.split(":")[0] for s in content.skipped_images] == ["scan"]
    [page] = _parsed(make_scanned_pdf())
    [work] = page.ocr

    assert page.chunks == () and (work.kind, work.page) == ("page", 1)
    chunks = read_page(work.raster, work.bbox)

    text = " ".join(c.text for c in chunks)
    for sentence in SCAN_SENTENCES:
        assert _found(sentence, text) >= 0.9, (sentence, text)
    for chunk in chunks:  # text was drawn from x=50+20 pt, y=60+... pt on the page
        x0, y0, x1, y1 = chunk.bbox  # type: ignore[misc]
        assert 55 <= x0 < x1 <= A4.width and 60 <= y0 < y1 <= 250
    assert all(c.modality == "text" and c.page == 1 for c in chunks)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_ocr_engine_reads_a_scan_with_the_shipped_models(engine: str) -> None:
    settings = OcrSettings(engine=engine)
    doc = pymupdf.open(stream=make_scanned_pdf(), filetype="pdf")
    img, _ = render_page(doc[0], settings.dpi, settings.max_pixels)

    text = " ".join(line.text for line in ocr_pixels(img, settings=settings))

    for sentence in SCAN_SENTENCES:
        assert _found(sentence, text) >= 0.9, (engine, sentence, text)
    ocr = _engine(settings)  # the runtime asked for is the one that ran (no silent fallback to another)
    assert {type(model.session).__module__.split(".")[2] for model in (ocr.text_det, ocr.text_rec)} == {engine}


def test_an_unknown_ocr_engine_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="onnxruntime"):
        _engine(OcrSettings(engine="tesseract"))


def test_slanted_scan_is_still_mostly_read() -> None:
    doc = pymupdf.open(stream=make_scanned_pdf(angle=4), filetype="pdf")
    raster, bbox = page_raster(doc[0], OCR)
    text = " ".join(c.text for c in read_page(raster, bbox))

    good = [s for s in SCAN_SENTENCES if _found(s, text) >= 0.8]
    assert len(good) >= 3, text


def test_label_inside_a_screenshot_is_read_with_its_caption_and_the_image_bbox() -> None:
    pdf, rect = make_screenshot_pdf()
    [page] = _parsed(pdf)

    [work] = page.ocr
    assert work.kind == "image" and work.caption == "Figure 4: The confirmation dialog."
    [chunk] = read_image(work.raster, work.caption, work.nearby_text, work.bbox)
    assert chunk.modality == "image" and chunk.text.startswith(work.caption)
    assert _found(SCREENSHOT_LABEL, chunk.text) == 1.0, chunk.text
    x0, y0, x1, y1 = chunk.bbox  # type: ignore[misc]
    assert rect.x0 - 1 <= x0 < x1 <= rect.x1 + 1 and rect.y0 - 1 <= y0 < y1 <= rect.y1 + 1


# --------------------------------------------------------------------------- uploaded image files


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("TIFF", "image/tiff")],
)
def test_uploaded_image_is_one_piece_of_ocr_work_and_its_text_is_read(fmt: str, content_type: str) -> None:
    data = render_text_image(["Invoice number 4711"], fontsize=16, fmt=fmt)

    [page] = _parsed(data, content_type)

    [work] = page.ocr
    assert page.chunks == () and (work.kind, work.page, work.mime, work.digest) == ("image", 1, content_type, None)
    assert work.raster == data and work.bbox == (0, 0, work.width, work.height)
    assert Image.open(io.BytesIO(data)).size == (work.width, work.height)
    [chunk] = read_image(work.raster, None, None, work.bbox)
    assert "4711" in chunk.text and _best_ratio("Invoice number 4711", [chunk.text]) >= 0.9


def test_ocr_image_reports_pixel_coordinates() -> None:
    data = render_text_image(["Hello offline world"], width_pt=300, fontsize=18, dpi=100)
    width, height = Image.open(io.BytesIO(data)).size

    [line] = ocr_image(data, settings=OCR)

    assert _best_ratio("Hello offline world", [line.text]) >= 0.9
    x0, y0, x1, y1 = line.bbox
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (render_text_image(["x"], fmt="JPEG"), "image/png", "not a PNG: its bytes are a JPEG"),
        (b"just some text, not an image", "image/jpeg", "not a JPEG: its bytes are"),
        (b"", "image/png", "not a PNG"),
        (png_bomb(0, 0), "image/png", "empty image|undecodable"),
    ],
    ids=["jpeg-as-png", "text-as-jpeg", "empty", "0x0"],
)
def test_bad_uploaded_images_are_rejected_with_a_clear_message(data: bytes, content_type: str, message: str) -> None:
    with pytest.raises(DocumentRejected, match=message):
        parse(data, content_type)


def test_a_truncated_uploaded_image_passes_its_header_check_and_reads_as_nothing() -> None:
    [page] = _parsed(make_png(300, 300)[:200], "image/png")  # the header is whole: decoding finds the damage

    [work] = page.ocr
    assert read_image(work.raster, None, None, work.bbox) == []  # no chunk: nothing readable to index


def test_png_bomb_is_rejected_from_its_header_fast_and_without_memory() -> None:
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 200 and sniff_image_format(bomb) == "PNG"
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(DocumentRejected, match="too large: 10,000,000,000 pixels is over the limit"):
        parse(bomb, "image/png")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert elapsed < 1.0 and peak < 5_000_000
    with pytest.raises(ImageRejected, match="too large"):
        probe_image(bomb)


# --------------------------------------------------------------------------- chunks and memory


def test_chunks_fit_the_embedding_model_and_carry_their_heading() -> None:
    text = "Pump Station Manual\n\n" + "\n\n".join(synthetic_pages(3, 1, 40))
    doc = pymupdf.open()
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_text((72, 60), "Pump Station Manual", fontsize=18)
    page.insert_textbox(pymupdf.Rect(72, 80, A4.width - 72, A4.height - 40), text.split("\n\n", 1)[1], fontsize=8)
    tables = pymupdf.open(stream=make_spanning_table_pdf(24, 10), filetype="pdf")
    doc.insert_pdf(tables)
    count = wordpiece_counter()

    chunks: list[ParsedChunk] = [c for page in _parsed(doc.tobytes()) for c in page.chunks]

    assert all(count(c.embed_text) <= MAX_TOKENS for c in chunks)
    text_chunks = [c for c in chunks if c.modality == "text" and c.page == 1]
    assert len(text_chunks) > 1 and all(c.headings == ("Pump Station Manual",) for c in text_chunks)
    table_chunks_ = [c for c in chunks if c.modality == "table"]
    assert {c.table_group_id for c in table_chunks_} == {"p2-t0"} and {c.page for c in table_chunks_} == {2, 3}


def test_pages_are_processed_lazily_with_memory_bounded_by_a_page_not_the_document() -> None:
    def peak_for(pages: int) -> tuple[int, int]:
        doc = pymupdf.open(stream=make_image_pages_pdf(pages), filetype="pdf")
        tracemalloc.start()
        seen = 0
        for content in iter_pages(doc):
            seen += len(content.images)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        doc.close()
        return seen, peak

    small_seen, small = peak_for(4)
    big_seen, big = peak_for(16)

    assert (small_seen, big_seen) == (4, 16)
    assert big < 2 * small + 1_000_000, (small, big)


def test_parse_is_lazy_with_one_page_of_lookahead(monkeypatch: pytest.MonkeyPatch) -> None:
    import documents.layout as layout

    extracted: list[int] = []
    real = layout.extract_page

    def counting(page, **kwargs):
        extracted.append(page.number + 1)
        return real(page, **kwargs)

    monkeypatch.setattr(layout, "extract_page", counting)
    with parse(make_image_pages_pdf(5), "application/pdf") as doc:
        assert doc.page_count == 5 and extracted == []
        pages = iter(doc)

        first = next(pages)

        assert first.page == 1 and [w.kind for w in first.ocr] == ["image"]
        assert extracted == [1, 2]  # page 2 is read to link a table continuing onto it, nothing further
        assert [p.page for p in pages] == [2, 3, 4, 5] and extracted == [1, 2, 3, 4, 5]
