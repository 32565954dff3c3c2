"""Parser extraction and chunking: pure functions, no NATS."""

from __future__ import annotations

import pymupdf
import pytest

from documents import DocumentRejected, ParsedChunk, ParseSettings, parse
from documents.chunks import Chunker, split_text
from documents.extract import TextBlock, extract_text
from documents.layout import PageBlock, PageContent
from tests.factories import (
    A4,
    FACT,
    FIVE_PAGES,
    corrupt_pdf,
    five_page_pdf_with_fact,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    truncated_pdf,
)


def _inside(bbox: tuple[float, float, float, float] | None, rect: pymupdf.Rect) -> bool:
    assert bbox is not None
    return rect.x0 <= bbox[0] <= bbox[2] <= rect.x1 and rect.y0 <= bbox[1] <= bbox[3] <= rect.y1


def _chunks(data: bytes, content_type: str = "application/pdf", settings: ParseSettings = ParseSettings()) -> list[ParsedChunk]:
    with parse(data, content_type, settings) as doc:
        return [chunk for page in doc for chunk in page.chunks]


# --------------------------------------------------------------------------- PDF extraction


def test_five_page_pdf_fact_is_on_page_3_inside_the_page() -> None:
    pdf, question, phrase = five_page_pdf_with_fact()
    with parse(pdf, "application/pdf") as doc:
        assert doc.page_count == 5
        chunks = [chunk for page in doc for chunk in page.chunks]

    assert {c.page for c in chunks} == {1, 2, 3, 4, 5}
    fact_chunks = [c for c in chunks if phrase in c.text]
    assert len(fact_chunks) == 1
    assert fact_chunks[0].page == 3
    assert FACT in fact_chunks[0].text
    assert _inside(fact_chunks[0].bbox, A4)
    assert "Zorblax-7" in question


def test_blocks_are_in_reading_order_with_normalised_whitespace() -> None:
    [chunk] = _chunks(make_pdf(["First   paragraph\nwraps here.\n\nSecond paragraph."]))

    assert chunk.text == "First paragraph wraps here.\n\nSecond paragraph."


def test_rotated_page_bbox_is_in_displayed_coordinates() -> None:
    doc = pymupdf.open(stream=make_pdf(["Sideways text."]), filetype="pdf")
    doc[0].set_rotation(90)
    data = doc.tobytes()
    doc.close()

    [chunk] = _chunks(data)

    displayed = pymupdf.Rect(0, 0, A4.height, A4.width)
    assert _inside(chunk.bbox, displayed)
    assert chunk.bbox[0] > A4.width / 2  # type: ignore[index]  # text at the top of the unrotated page is on the right once turned


def test_encrypted_pdf_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match="encrypted"):
        parse(make_encrypted_pdf(["secret text"]), "application/pdf")


def test_corrupt_pdf_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match="corrupt"):
        parse(corrupt_pdf(), "application/pdf")


def test_image_only_pdf_is_ocr_work_not_text() -> None:
    with parse(make_image_only_pdf(), "application/pdf") as doc:
        [page] = list(doc)

    assert page.chunks == ()
    [work] = page.ocr
    assert (work.kind, work.page) == ("page", 1) and work.raster[:8] == b"\x89PNG\r\n\x1a\n"
    assert work.bbox == pytest.approx((0, 0, A4.width, A4.height))


@pytest.mark.parametrize("data", [b"", b"   "], ids=["empty", "blank"])
def test_empty_pdf_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected):
        parse(data, "application/pdf")


def test_truncated_pdf_is_rejected_instead_of_silently_losing_pages() -> None:
    """PyMuPDF would repair the cut file (pages 3-5 empty, see ``truncated_pdf``); we refuse it."""
    with pytest.raises(DocumentRejected, match="truncated PDF"):
        parse(truncated_pdf(FIVE_PAGES), "application/pdf")


def test_repaired_but_complete_pdf_is_accepted() -> None:
    """A file MuPDF must repair (broken xref offsets) but that ends with %%EOF is a normal damaged PDF."""
    data = make_pdf(FIVE_PAGES)
    start = data.rindex(b"startxref")
    broken = data[:start] + b"startxref\n999999\n%%EOF\n"
    with parse(broken, "application/pdf") as doc:
        assert doc.page_count == 5
        assert any(FACT in c.text for page in doc for c in page.chunks)


def test_a_page_range_is_parsed_alone() -> None:
    pdf = make_pdf(FIVE_PAGES)
    with parse(pdf, "application/pdf", pages=range(2, 4)) as doc:
        assert doc.page_count == 5
        pages = list(doc)

    assert [p.page for p in pages] == [3, 4] and {c.page for p in pages for c in p.chunks} == {3, 4}
    with pytest.raises(ValueError, match="pages must be a range"):
        parse(pdf, "application/pdf", pages=range(4, 6))


def _manual(pages: int, *, title_per_page: bool = False) -> bytes:
    """A manual of `pages` A4 pages: a running header (chapter title and page number) on top, a footer, and a
    body paragraph naming its page; `title_per_page`: the top line differs on every page (not a running one)."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=A4.width, height=A4.height)
        top = f"Section about topic {'ABCDEFGH'[n - 1]}" if title_per_page else f"Chapter 2: Drawing commands {n + 14}"
        page.insert_text((72, 50), top, fontsize=10)
        page.insert_textbox(pymupdf.Rect(72, 200, 520, 400), f"Body paragraph {n}: the pen draws the outline of page {n}.",
                            fontsize=11)  # fmt: skip
        page.insert_text((72, A4.height - 40), f"GNU Draw 5.2, 2022 September 19    {n + 14}", fontsize=9)
    return doc.tobytes()


def test_running_headers_and_footers_are_removed_and_the_body_kept() -> None:
    chunks = _chunks(_manual(4))
    text = " ".join(c.text for c in chunks)
    assert "Drawing commands" not in text and "GNU Draw" not in text
    assert all(f"Body paragraph {n}:" in text for n in range(1, 5))
    assert all(not c.headings or "Drawing commands" not in " ".join(c.headings) for c in chunks)
    # a page range parsed alone still sees its neighbours inside the range
    with parse(_manual(4), "application/pdf", pages=range(1, 3)) as doc:
        assert "GNU Draw" not in " ".join(c.text for p in doc for c in p.chunks)


def test_a_top_line_that_changes_every_page_and_a_one_page_document_keep_their_margins() -> None:
    assert sum("Section about topic" in c.text for c in _chunks(_manual(4, title_per_page=True))) == 4
    one = " ".join(c.text for c in _chunks(_manual(1)))
    assert "Drawing commands" in one and "GNU Draw" in one


def test_glyphs_without_characters_are_removed_and_notation_is_not_text() -> None:
    """Music drawn with a font whose glyphs map to no character (control codes in the text layer): the notation
    block is dropped, a stray glyph in a sentence is removed, the body stays (found on LilyPond's web manual)."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_text((72, 100), "\x01\x02\x03 \x04\x05 p \x06\x07", fontsize=20)
    page.insert_text((72, 200), "Tempo \x0f marking", fontsize=11)
    page.insert_textbox(pymupdf.Rect(72, 300, 500, 400), "Body text about the score and its engraving.", fontsize=11)
    chunks = _chunks(doc.tobytes())
    text = " ".join(c.text for c in chunks)
    assert "Tempo marking" in text and "Body text about the score" in text
    assert not any(c < " " and c not in "\n\t" for c in text) and " p " not in f" {text} "
    assert all(not c.headings for c in chunks)  # the large notation block did not become a heading


def _ruled_grid(cells: dict[tuple[int, int], str]) -> bytes:
    """A page with a ruled 3 x 3 grid (lines drawn as vectors) holding `cells` ((row, column) -> text)."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4.width, height=A4.height)
    x0, y0, w, h = 72, 300, 120, 30
    for r in range(4):
        page.draw_line((x0, y0 + r * h), (x0 + 3 * w, y0 + r * h))
    for c in range(4):
        page.draw_line((x0 + c * w, y0), (x0 + c * w, y0 + 3 * h))
    for (r, c), text in cells.items():
        page.insert_text((x0 + c * w + 5, y0 + r * h + 20), text, fontsize=11)
    return doc.tobytes()


def test_a_grid_with_one_filled_cell_is_not_a_table_and_its_text_stays() -> None:
    box = _chunks(_ruled_grid({(1, 1): "Remember the pedal"}))
    assert all(c.modality != "table" for c in box)
    assert "Remember the pedal" in " ".join(c.text for c in box)
    table = _chunks(_ruled_grid({(0, 0): "Name", (0, 1): "Width", (1, 0): "pen", (1, 1): "0.5pt"}))
    assert [c.modality for c in table].count("table") == 1


# --------------------------------------------------------------------------- text extraction


def test_plain_text_is_split_into_paragraphs_on_blank_lines() -> None:
    data = "\ufeffFirst line\nsame paragraph.\n\n  \n\nSecond   paragraph.\r\n".encode()

    blocks = extract_text(data)

    assert blocks == [
        TextBlock(page=1, bbox=None, text="First line\nsame paragraph."),
        TextBlock(page=1, bbox=None, text="Second paragraph."),
    ]


@pytest.mark.parametrize("data", [b"\xff\xfeh\x00i\x00", b"caf\xe9", "hi".encode("utf-16-le")])
def test_non_utf8_text_is_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected, match="not valid UTF-8"):
        extract_text(data)


@pytest.mark.parametrize("data", [b"", b" \n\n\t \n", b"\xef\xbb\xbf"])
def test_empty_text_is_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected, match="empty"):
        extract_text(data)


# --------------------------------------------------------------------------- chunking


def _page(page: int, *blocks: tuple[str, tuple[float, float, float, float]]) -> PageContent:
    return PageContent(page=page, width=A4.width, height=A4.height, tables=(), images=(), skipped_images=(),
                       needs_ocr=False, blocks=tuple(PageBlock(page, bbox, text) for text, bbox in blocks))  # fmt: skip


def _chars(text: str) -> int:
    """A word-piece count of one per character, so limits below read in characters."""
    return len(text)


def test_chunks_never_cross_pages_and_come_in_reading_order() -> None:
    chunks = _chunks(five_page_pdf_with_fact()[0])

    assert len(chunks) == 5  # everything on a page fits in one chunk, and no chunk crosses a page
    assert [c.page for c in chunks] == [1, 2, 3, 4, 5]
    assert all(c.modality == "text" and c.headings == () for c in chunks)


def test_merged_chunk_bbox_is_the_union_of_its_blocks() -> None:
    chunker = Chunker(count=_chars)

    [first] = chunker.feed(_page(1, ("aaa", (10, 20, 100, 30)), ("bbb", (5, 40, 90, 50))))
    [second] = chunker.feed(_page(2, ("ccc", (0, 0, 10, 10))))

    assert [(c.page, c.text) for c in (first, second)] == [(1, "aaa\n\nbbb"), (2, "ccc")]
    assert first.bbox == (5, 20, 100, 50)


def test_blocks_are_merged_only_while_the_text_fits() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    page = _page(1, ("a" * 40, box), ("b" * 40, box), ("c" * 40, box))

    by_tokens = Chunker(max_tokens=90, count=_chars).feed(page)
    by_chars = Chunker(max_tokens=254, max_chars=90, count=lambda text: 1).feed(page)

    assert [c.text for c in by_tokens] == [c.text for c in by_chars] == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]


def test_long_block_is_split_on_sentences_under_the_limit_keeping_its_bbox() -> None:
    sentences = [f"Sentence number {i} says something fairly ordinary." for i in range(40)]
    bbox = (72.0, 100.0, 500.0, 700.0)
    page = _page(1, ("short intro", (72, 60, 200, 70)), (" ".join(sentences), bbox), ("short outro", (72, 710, 200, 720)))

    chunks = Chunker(max_tokens=200, count=_chars).feed(page)

    middle = chunks[1:-1]
    assert len(middle) > 1
    assert all(len(c.text) <= 200 for c in chunks)
    assert all(c.bbox == bbox for c in middle)
    assert all(c.text.endswith(".") for c in middle)  # cut between sentences, not inside one
    assert " ".join(c.text for c in middle) == " ".join(sentences)


def test_sentence_longer_than_max_chars_falls_back_to_whitespace_then_hard_cuts() -> None:
    text = "word " * 30 + "x" * 25

    pieces = split_text(text, 20)

    assert all(len(p) <= 20 for p in pieces)
    assert "".join(p.replace(" ", "") for p in pieces) == text.replace(" ", "")


def test_plain_text_chunks_have_no_bbox() -> None:
    with parse(b"one\n\ntwo", "text/plain") as doc:
        assert doc.page_count == 1
        [page] = list(doc)

    assert [(c.page, c.bbox, c.text) for c in page.chunks] == [(1, None, "one\n\ntwo")]
    assert page.ocr == ()


@pytest.mark.parametrize("max_chars", [100, 300, 1000])
def test_no_chunk_is_longer_than_mmrag_chunk_max_chars(max_chars: int) -> None:
    """MMRAG_CHUNK_MAX_CHARS bounds every chunk the parser makes (the embedder sizes its messages by it)."""
    prose = " ".join(f"Sentence {i} of the long paragraph about pumps and valves." for i in range(60))
    word = "x" * 1500  # no sentence or word boundary helps here
    settings = ParseSettings(chunk_max_chars=max_chars)

    chunks = _chunks(make_pdf([prose, word], fontsize=6), settings=settings)
    chunks += _chunks(f"{prose}\n\n{word}".encode(), "text/plain", settings)

    assert chunks and max(len(c.text) for c in chunks) <= max_chars
    assert max(len(c.text) for c in chunks) > max_chars * 0.6  # the limit, not something smaller, cut them


def _inline_scan_pdf(text: str = "") -> bytes:
    """One A4 page whose only picture is a 64x64 grey *inline* image (BI ... ID ... EI in the content stream, no
    image XObject) drawn over the whole page, with `text` above it."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4.width, height=A4.height)
    if text:
        page.insert_text((72, 72), text)
    stream = (f"q {A4.width} 0 0 {A4.height} 0 0 cm BI /W 64 /H 64 /CS /G /BPC 8 ID ".encode()
              + b"\x80" * 64 * 64 + b" EI Q\n")  # fmt: skip
    xref = doc.get_new_xref()
    doc.update_object(xref, "<<>>")
    doc.update_stream(xref, stream)
    contents = page.get_contents()
    page.set_contents(xref) if not contents else doc.update_stream(contents[0], stream + doc.xref_stream(contents[0]))
    return doc.tobytes()


def test_a_scan_drawn_as_an_inline_image_is_still_ocr_work() -> None:
    """No image XObject and no text: the placements are read anyway (the scan may be inline)."""
    with parse(_inline_scan_pdf(), "application/pdf") as doc:
        [page] = list(doc)
    assert page.chunks == () and [w.kind for w in page.ocr] == ["page"]


def test_a_text_page_without_image_objects_is_not_searched_for_placements(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_image_info runs the page's whole content stream (a quarter of a plain page's parse time): a page with
    text and no image XObject can only hold inline images, which are never extracted, so it is not called."""
    calls: list[int] = []
    real = pymupdf.Page.get_image_info
    monkeypatch.setattr(pymupdf.Page, "get_image_info", lambda self, *a, **k: calls.append(self.number) or real(self, *a, **k))
    with parse(_inline_scan_pdf(FACT), "application/pdf") as doc:
        [page] = list(doc)
    assert FACT.split()[0] in " ".join(c.text for c in page.chunks) and page.ocr == ()
    assert calls == []
    with pymupdf.open() as pdf:  # the same text with an image XObject: its placements are read
        page = pdf.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 72), FACT)
        page.insert_image(pymupdf.Rect(72, 100, 272, 300), pixmap=pymupdf.Pixmap(pymupdf.csGRAY, pymupdf.IRect(0, 0, 64, 64)))
        with parse(pdf.tobytes(), "application/pdf") as doc:
            [page] = list(doc)
    assert calls == [0] and [w.kind for w in page.ocr] == ["image"]
