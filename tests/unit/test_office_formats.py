"""Office readers (`documents.formats`) on files made in the test with known ground truth, and bad input of each
format ending in a clear refusal, in bounded time."""

from __future__ import annotations

import io
import re
import struct
import time
import zipfile

import openpyxl
import pytest

from contracts.messages import Chunk
from documents import DocumentRejected, ParsedChunk, ParseSettings, parse
from documents.filetypes import DOCX, PPTX, XLSX, UnsupportedFile, detect_content_type
from documents.formats import ooxml
from edge_api.page_images import NotRenderable, page_text, render_page
from tests.office_files import CSV_ROWS, SHEETS, make_csv, make_docx, make_pptx, make_xlsx, sheet_cell_text

_ROWS = re.compile(r"rows? (\d+)(?:-(\d+))? \(A(\d+):([A-Z]+)(\d+)\)")


def chunks_of(data: bytes, content_type: str) -> tuple[int, list[ParsedChunk], list]:
    with parse(data, content_type) as document:
        pages = list(document)
        return document.page_count, [c for p in pages for c in p.chunks], [w for p in pages for w in p.ocr]


def holder(chunks: list[ParsedChunk], text: str) -> list[ParsedChunk]:
    return [c for c in chunks if text in c.embed_text]


def test_docx_paragraphs_headings_every_table_cell_and_pictures_with_their_section() -> None:
    data, truth = make_docx()
    pages, chunks, pictures = chunks_of(data, DOCX)
    assert pages == truth.pages
    for text, locator in truth.texts.items():
        found = holder(chunks, text)
        assert found, f"{text!r} is in no chunk"
        assert {c.locator for c in found} == {locator}, (text, [c.locator for c in found])
    table = next(c for c in chunks if c.modality == "table")
    assert table.table is not None and table.table.header == ("Fastener", "Torque") and table.page == 2
    assert table.headings == ("Pump Manual", "Installation", "Torque values")  # headings are the context
    assert all(c.bbox is None and c.page == int(c.locator.split(":")[0].split()[1]) for c in chunks)
    (picture,) = pictures  # the picture goes the image path with its section
    assert picture.kind == "image" and picture.page == 3 and picture.mime == "image/png"
    assert picture.locator == "section 3: Pump Manual > Maintenance, picture"
    assert picture.nearby_text == "Replace the quillon seal every 4000 operating hours."


def test_docx_text_inside_a_content_control_is_read_in_its_place() -> None:
    """A cover page or a form keeps its text in content controls (w:sdt), which python-docx's body walk skips."""
    import docx
    from docx.oxml.ns import qn
    from lxml import etree

    d = docx.Document()
    d.add_paragraph("Prepared for the Halvorsen board")
    inside = d.add_paragraph("Cover title Blue Heron Pumps")
    sdt = etree.Element(qn("w:sdt"))
    etree.SubElement(sdt, qn("w:sdtContent")).append(inside._p)  # moves the paragraph into the control
    d.element.body.insert(0, sdt)
    out = io.BytesIO()
    d.save(out)
    _, chunks, _ = chunks_of(out.getvalue(), DOCX)
    assert chunks[0].text == "Cover title Blue Heron Pumps\n\nPrepared for the Halvorsen board"


def test_docx_tracked_insertions_are_read_and_deletions_are_not() -> None:
    import docx
    from docx.oxml.ns import qn
    from lxml import etree

    d = docx.Document()
    paragraph = d.add_paragraph("The pump runs ")
    inserted = etree.SubElement(paragraph._p, qn("w:ins"), {qn("w:id"): "1", qn("w:author"): "A"})
    etree.SubElement(etree.SubElement(inserted, qn("w:r")), qn("w:t")).text = "quietly "
    deleted = etree.SubElement(paragraph._p, qn("w:del"), {qn("w:id"): "2", qn("w:author"): "A"})
    etree.SubElement(etree.SubElement(deleted, qn("w:r")), qn("w:delText")).text = "loudly "
    paragraph.add_run("at night.")
    out = io.BytesIO()
    d.save(out)
    _, (chunk,), _ = chunks_of(out.getvalue(), DOCX)
    assert chunk.text == "The pump runs quietly at night."


def test_pptx_every_slide_title_text_table_cell_and_notes_with_the_slide() -> None:
    data, truth = make_pptx()
    pages, chunks, pictures = chunks_of(data, PPTX)
    assert pages == truth.pages
    for text, locator in truth.texts.items():
        found = holder(chunks, text)
        assert found, f"{text!r} is in no chunk"
        assert locator in {c.locator for c in found}, (text, [c.locator for c in found])
    assert any(c.text == "Questions and answers" for c in chunks)  # a title-only slide: the title is the text
    # The picture goes the image path (OCR, image vector) and knows its slide.
    (picture,) = pictures
    assert picture.kind == "image" and picture.page == 2 and picture.mime == "image/png"
    assert picture.locator == "slide 2: Spare parts, picture" and picture.headings == ("Spare parts",)


def test_xlsx_every_sheet_header_and_cell_in_the_chunk_that_names_its_rows() -> None:
    pages, chunks, _ = chunks_of(make_xlsx(), XLSX)
    assert pages == len(SHEETS)
    for number, (name, rows) in enumerate(SHEETS.items(), 1):
        mine = [c for c in chunks if c.page == number]
        assert mine and all(c.headings == (name,) and c.modality == "table" for c in mine)
        assert all(c.table is not None and c.table.header == rows[0] for c in mine)  # the header on every chunk
        for excel_row, row in enumerate(rows[1:], 2):
            for value in row:
                where = [c for c in mine if _holds_row(c, excel_row)]
                assert len(where) == 1, (name, excel_row)
                assert sheet_cell_text(value) in where[0].text and where[0].locator.startswith(f"{name} row")
    budget = [c for c in chunks if c.page == 1]
    assert len(budget) > 1  # 60 rows do not fit one chunk: cut between rows
    assert _ROWS.search(budget[0].locator).group(1) == "2"


def _holds_row(chunk: ParsedChunk, row: int) -> bool:
    match = _ROWS.search(chunk.locator or "")
    assert match, chunk.locator
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    assert (int(match.group(3)), int(match.group(5))) == (first, last)  # the cell range names the same rows
    return first <= row <= last


def test_a_table_placed_lower_right_in_its_sheet_is_addressed_where_it_is() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Notes"
    sheet["C3"], sheet["D3"], sheet["C4"], sheet["D4"] = "Key", "Meaning", "Paid", "the transfer cleared"
    out = io.BytesIO()
    book.save(out)
    _, (chunk,), _ = chunks_of(out.getvalue(), XLSX)
    assert chunk.table is not None and chunk.table.header == ("Key", "Meaning")
    assert chunk.locator == "Notes row 4 (C4:D4)"


def test_title_lines_above_a_sheet_table_are_its_caption_not_its_header() -> None:
    rows = [("Sales report 2026",), (), ("Region", "Q1", "Q2"), ("North", 10, 12), ("South", 7, 9)]
    _, (chunk,), _ = chunks_of(make_xlsx({"Sales": rows}), XLSX)
    assert chunk.table is not None and chunk.table.header == ("Region", "Q1", "Q2")
    assert chunk.headings == ("Sales", "Sales report 2026") and "Sales report 2026" in chunk.embed_text
    assert chunk.locator == "Sales rows 4-5 (A4:C5)"
    # One column throughout: no row of several cells, so the first row stays the header.
    _, (single,), _ = chunks_of(make_xlsx({"Names": [("Name",), ("Ada",), ("Tove",)]}), XLSX)
    assert single.table.header == ("Name",) and single.headings == ("Names",)


def test_csv_is_a_table_with_its_header_and_row_locators() -> None:
    pages, chunks, _ = chunks_of(make_csv(";"), "text/csv")
    assert pages == 1
    assert all(c.table is not None and c.table.header == CSV_ROWS[0] for c in chunks)
    for row_number, row in enumerate(CSV_ROWS[1:], 2):
        (where,) = [c for c in chunks if _holds_row(c, row_number)]
        assert all(value in where.text for value in row)
        assert f"|{'|'.join(row)}|" in where.text  # one table row, not a line of text


def test_a_locator_stays_within_the_contract_however_long_the_headings() -> None:
    import docx

    d = docx.Document()
    for level in range(1, 10):
        d.add_heading(f"Heading level {level} " + "very long words " * 40, level)
    d.add_paragraph("The body under nine long headings.")
    out = io.BytesIO()
    d.save(out)
    _, chunks, _ = chunks_of(out.getvalue(), DOCX)
    body = next(c for c in chunks if "The body under" in c.text)
    assert body.locator.startswith("section 1: Heading level 1") and len(body.locator) <= 400
    Chunk(chunk_id="d-0", index=0, doc_id="d", tenant="t", filename="a.docx", page=body.page, locator=body.locator,
          text=body.text)  # fmt: skip  # the contract takes it


def test_filetypes_sniff_office_files_by_content_and_name() -> None:
    docx_bytes, _ = make_docx()
    head = docx_bytes[:8192]
    assert detect_content_type("report.docx", None, head) == DOCX
    assert detect_content_type("report", "application/octet-stream", head) == DOCX  # the entries say "word/"
    assert detect_content_type("deck", None, make_pptx()[0][:8192]) == PPTX
    assert detect_content_type("book.xlsx", None, make_xlsx()[:8192]) == XLSX
    assert detect_content_type("cities.csv", "text/csv", make_csv()) == "text/csv"
    with pytest.raises(UnsupportedFile, match="password-protected"):
        detect_content_type("secret.docx", None, ooxml.OLE_MAGIC + b"\0" * 100)
    with pytest.raises(UnsupportedFile, match="unsupported file type for 'photos.zip'"):
        detect_content_type("photos.zip", "application/zip", _zip({"a.txt": b"hello"}))
    with pytest.raises(UnsupportedFile, match="not a DOCX file"):
        detect_content_type("notes.docx", None, b"just some text")
    with pytest.raises(UnsupportedFile, match="named or declared as a PowerPoint deck .* its content is a Word"):
        detect_content_type("deck.pptx", None, head)


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def _declaring(data: bytes, sizes: dict[str, int]) -> bytes:
    """``data`` whose central directory declares the uncompressed ``sizes`` of the named entries."""
    out = bytearray(data)
    for name, declared in sizes.items():
        at = out.index(b"PK\x01\x02")  # the first central directory header, then on to the entry named
        while out[at + 46 : at + 46 + len(name)] != name.encode():
            at = out.index(b"PK\x01\x02", at + 4)
        out[at + 24 : at + 28] = struct.pack("<I", declared)
    return bytes(out)


@pytest.mark.parametrize("content_type", [DOCX, PPTX, XLSX])
def test_bad_ooxml_is_refused_with_what_to_do(content_type: str) -> None:
    kind = {DOCX: "docx", PPTX: "pptx", XLSX: "xlsx"}[content_type]
    good = {DOCX: make_docx()[0], PPTX: make_pptx()[0], XLSX: make_xlsx()}[content_type]
    # Encrypted OOXML is an OLE compound file, not a zip.
    with pytest.raises(DocumentRejected, match="password-protected.*remove the password"):
        parse(ooxml.OLE_MAGIC + b"\0" * 4096, content_type)
    # A truncated package, and one whose bytes are garbage.
    for broken in (good[: len(good) // 2], b"PK\x03\x04" + b"\x01" * 500):
        with pytest.raises(DocumentRejected, match="corrupt file.*upload it again"):
            parse(broken, content_type)
    # The main part of another kind: a mislabelled file.
    other = make_docx()[0] if content_type != DOCX else make_pptx()[0]
    with pytest.raises(DocumentRejected, match=f"no {ooxml.KINDS[kind]}"):
        parse(other, content_type)
    # A well-formed zip whose main part is broken XML.
    with pytest.raises(DocumentRejected, match="corrupt file"):
        parse(_zip({ooxml.KINDS[kind]: b"<not xml", "[Content_Types].xml": b"<Types/>"}), content_type)


def test_zip_bombs_inside_ooxml_are_refused_before_inflating() -> None:
    started = time.monotonic()
    # One part that inflates past the part limit (zeros: ~70 KB compressed).
    bomb = _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": bytes(ooxml.MAX_PART_BYTES + 1)})
    assert len(bomb) < 1_000_000
    with pytest.raises(DocumentRejected, match="inflates to .* over the limit .*zip bomb"):
        parse(bomb, DOCX)
    # Too many entries.
    many = _zip({"word/document.xml": b"<x/>", **{f"word/media/{i}.bin": b"" for i in range(ooxml.MAX_ENTRIES)}})
    with pytest.raises(DocumentRejected, match="parts is over the limit"):
        parse(many, DOCX)
    # Worksheets are streamed, but not without a bound on the whole (sizes as the central directory declares them:
    # zipfile never inflates past them).
    half = ooxml.MAX_TOTAL_BYTES // 2 + 1
    huge = _declaring(_zip({"xl/workbook.xml": b"<x/>", "xl/worksheets/sheet1.xml": b"<a/>",
                            "xl/worksheets/sheet2.xml": b"<b/>"}), {"xl/worksheets/sheet1.xml": half,
                                                                   "xl/worksheets/sheet2.xml": half})  # fmt: skip
    with pytest.raises(DocumentRejected, match=f"inflates to {2 * half + 4:,} bytes, over the limit"):
        parse(huge, XLSX)
    assert time.monotonic() - started < 60  # bounded: refused from the central directory, nothing inflated


_LAUGHS = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
    b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
) + b"]>"  # 10^9 "lol"s once expanded


@pytest.mark.parametrize(
    ("content_type", "part", "body"),
    [
        (DOCX, "word/document.xml", b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/'
         b'main"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>'),
        (XLSX, "xl/worksheets/sheet1.xml", b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/'
         b'main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>&lol9;</t></is></c></row></sheetData>'
         b"</worksheet>"),
    ],
)  # fmt: skip
def test_an_xml_entity_bomb_inside_a_package_is_refused_at_once(content_type: str, part: str, body: bytes) -> None:
    good = make_docx()[0] if content_type == DOCX else make_xlsx()
    with zipfile.ZipFile(io.BytesIO(good)) as src:
        parts = {name: src.read(name) for name in src.namelist()}
    started = time.monotonic()
    with pytest.raises(DocumentRejected, match="corrupt file"):  # entities are never expanded
        parse(_zip({**parts, part: _LAUGHS + body}), content_type)
    assert time.monotonic() - started < 30


def test_a_huge_sheet_is_cut_at_the_cell_limit_and_says_so() -> None:
    rows = [("key", "value")] + [(f"k{i}", f"v{i}") for i in range(1, 400)]
    book = make_xlsx({"Big": rows, "After": [("never", "read")]})
    with parse(book, XLSX, ParseSettings(sheet_max_cells=200)) as document:  # 100 rows of 2 cells
        pages = list(document)
    chunks = [c for p in pages for c in p.chunks]
    assert len(pages) == 2 and all(c.page == 1 for c in chunks)  # the second sheet is past the limit
    assert "k99" in chunks[-1].text and "k100" not in " ".join(c.text for c in chunks)
    assert "cut here" in chunks[-1].locator and "limit of 200 cells" in chunks[-1].locator
    assert all("cut here" not in (c.locator or "") for c in chunks[:-1])
    assert pages[0].warnings == ("sheet 'Big' was cut after row 100: a workbook or CSV is read up to 200 cells "
                                 "(MMRAG_SHEET_MAX_CELLS); split it, or raise the limit, to index the rest",)  # fmt: skip
    with parse(make_csv(), "text/csv", ParseSettings(sheet_max_cells=30)) as document:  # 3 cells a row
        (page,) = list(document)
    assert page.warnings[0].startswith("the CSV was cut after row 10:")


def test_a_sheet_of_a_million_rows_is_read_in_bounded_time() -> None:
    """A worksheet of a million rows, nearly all empty, under a dimension claiming the whole grid: every row read
    counts against the limit, empty or not, so reading stops after MMRAG_SHEET_MAX_CELLS rows whatever the file holds."""
    book = io.BytesIO()
    openpyxl.Workbook().save(book)
    with zipfile.ZipFile(io.BytesIO(book.getvalue())) as src:
        parts = {name: src.read(name) for name in src.namelist()}
    cell = b'<row r="%d"><c r="A%d" t="inlineStr"><is><t>v%d</t></is></c></row>'
    rows = b"".join(cell % (i, i, i) if i % 100 == 1 else b'<row r="%d"/>' % i for i in range(1, 1_000_001))
    parts["xl/worksheets/sheet1.xml"] = (
        b'<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        b'<dimension ref="A1:XFD1048576"/><sheetData>' + rows + b"</sheetData></worksheet>"
    )
    started = time.monotonic()
    _, chunks, _ = chunks_of(_zip(parts), XLSX)
    assert time.monotonic() - started < 120  # generous on a loaded machine: unbounded would be many minutes
    assert "cut here" in chunks[-1].locator
    read = [row[0] for c in chunks for row in c.table.rows]
    assert read[0] == "v101" and len(read) < ParseSettings().sheet_max_cells // 100 + 1  # the header row is v1


def test_bad_csv_is_refused_with_what_to_do() -> None:
    with pytest.raises(DocumentRejected, match="not valid UTF-8"):
        parse(b"a,b\n\xff\xfe,1\n", "text/csv")
    with pytest.raises(DocumentRejected, match="empty document"):
        parse(b",,\n,,\n", "text/csv")
    with pytest.raises(DocumentRejected, match="corrupt file: the CSV"):  # a field over csv's field size limit
        parse(b'a\n"' + b"x" * 200_000 + b'"\n', "text/csv")


def test_office_documents_have_no_page_picture_and_the_route_says_why() -> None:
    with pytest.raises(NotRenderable, match="office document .* no page to show.*locator"):
        render_page(make_pptx()[0], 1, 400)
    with pytest.raises(NotRenderable, match=r"text document \(plain text, Markdown, CSV.* has no page to show"):
        render_page(make_csv(), 1, 400)
    with pytest.raises(NotRenderable, match="office document .* no text layer by page.*locator"):
        page_text(make_docx()[0], 1)  # not "an image has no text layer"
