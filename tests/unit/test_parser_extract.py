"""Parser extraction and chunking: pure functions, no NATS."""

from __future__ import annotations

import pymupdf
import pytest

from documents.chunking import batched, chunk_blocks
from documents.extract import DocumentRejected, TextBlock, extract_pdf, extract_text
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

CHUNK_KW = {"doc_id": "doc1", "tenant": "t1", "filename": "f.pdf"}


def _inside(bbox: tuple[float, float, float, float], rect: pymupdf.Rect) -> bool:
    return rect.x0 <= bbox[0] <= bbox[2] <= rect.x1 and rect.y0 <= bbox[1] <= bbox[3] <= rect.y1


# --------------------------------------------------------------------------- PDF extraction


def test_five_page_pdf_fact_is_on_page_3_inside_the_page() -> None:
    pdf, question, phrase = five_page_pdf_with_fact()
    pages, blocks = extract_pdf(pdf)

    assert pages == 5
    assert {b.page for b in blocks} == {1, 2, 3, 4, 5}
    fact_blocks = [b for b in blocks if phrase in b.text]
    assert len(fact_blocks) == 1
    assert fact_blocks[0].page == 3
    assert FACT in fact_blocks[0].text
    assert fact_blocks[0].bbox is not None and _inside(fact_blocks[0].bbox, A4)
    assert "Zorblax-7" in question


def test_blocks_are_in_reading_order_with_normalised_whitespace() -> None:
    _, blocks = extract_pdf(make_pdf(["First   paragraph\nwraps here.\n\nSecond paragraph."]))

    assert [b.text for b in blocks] == ["First paragraph wraps here.", "Second paragraph."]
    assert blocks[0].bbox[1] < blocks[1].bbox[1]  # type: ignore[index]


def test_rotated_page_bbox_is_in_displayed_coordinates() -> None:
    doc = pymupdf.open(stream=make_pdf(["Sideways text."]), filetype="pdf")
    doc[0].set_rotation(90)
    data = doc.tobytes()
    doc.close()

    _, blocks = extract_pdf(data)

    displayed = pymupdf.Rect(0, 0, A4.height, A4.width)
    assert blocks[0].bbox is not None and _inside(blocks[0].bbox, displayed)
    assert blocks[0].bbox[0] > A4.width / 2  # text at the top of the unrotated page is on the right once turned


def test_encrypted_pdf_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match="encrypted"):
        extract_pdf(make_encrypted_pdf(["secret text"]))


def test_corrupt_pdf_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match="corrupt"):
        extract_pdf(corrupt_pdf())


def test_image_only_pdf_is_rejected_as_having_no_text() -> None:
    with pytest.raises(DocumentRejected, match="no extractable text") as info:
        extract_pdf(make_image_only_pdf())
    assert "OCR" in str(info.value)


@pytest.mark.parametrize("data", [b"", b"   "], ids=["empty", "blank"])
def test_empty_pdf_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected):
        extract_pdf(data)


def test_truncated_pdf_is_rejected_instead_of_silently_losing_pages() -> None:
    """PyMuPDF would repair the cut file (pages 3-5 empty, see ``truncated_pdf``); we refuse it."""
    with pytest.raises(DocumentRejected, match="truncated PDF"):
        extract_pdf(truncated_pdf(FIVE_PAGES))


def test_repaired_but_complete_pdf_is_accepted() -> None:
    """A file MuPDF must repair (broken xref offsets) but that ends with %%EOF is a normal damaged PDF."""
    data = make_pdf(FIVE_PAGES)
    start = data.rindex(b"startxref")
    broken = data[:start] + b"startxref\n999999\n%%EOF\n"
    pages, blocks = extract_pdf(broken)
    assert pages == 5 and any(FACT in b.text for b in blocks)


# --------------------------------------------------------------------------- text extraction


def test_plain_text_is_split_into_paragraphs_on_blank_lines() -> None:
    data = "\ufeffFirst line\nsame paragraph.\n\n  \n\nSecond   paragraph.\r\n".encode()

    pages, blocks = extract_text(data, markdown=False)

    assert pages == 1
    assert blocks == [
        TextBlock(page=1, bbox=None, text="First line\nsame paragraph."),
        TextBlock(page=1, bbox=None, text="Second paragraph."),
    ]


def test_markdown_headings_stay_with_the_following_paragraph() -> None:
    data = b"# Title\n\n## Section\n\nBody of the section.\n\nAnother paragraph.\n\n## Trailing heading\n"

    _, blocks = extract_text(data, markdown=True)

    assert [b.text for b in blocks] == [
        "# Title\n## Section\nBody of the section.",
        "Another paragraph.",
        "## Trailing heading",
    ]


def test_markdown_fenced_code_is_not_split_on_blank_lines() -> None:
    data = b"Intro.\n\n```\nline one\n\nline two\n```\n\nOutro."

    _, blocks = extract_text(data, markdown=True)

    assert [b.text for b in blocks] == ["Intro.", "```\nline one\nline two\n```", "Outro."]


@pytest.mark.parametrize("data", [b"\xff\xfeh\x00i\x00", b"caf\xe9", "hi".encode("utf-16-le")])
def test_non_utf8_text_is_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected, match="not valid UTF-8"):
        extract_text(data, markdown=False)


@pytest.mark.parametrize("data", [b"", b" \n\n\t \n", b"\xef\xbb\xbf"])
def test_empty_text_is_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected, match="empty"):
        extract_text(data, markdown=True)


# --------------------------------------------------------------------------- chunking


def _block(page: int, text: str, bbox: tuple[float, float, float, float] | None = (0, 0, 10, 10)) -> TextBlock:
    return TextBlock(page=page, bbox=bbox, text=text)


def test_chunks_never_cross_pages_and_are_linked_in_order() -> None:
    _, blocks = extract_pdf(five_page_pdf_with_fact()[0])

    chunks = chunk_blocks(blocks, **CHUNK_KW, max_chars=10_000)

    assert len(chunks) == 5  # everything on a page fits in one chunk, and no chunk crosses a page
    assert [c.page for c in chunks] == [1, 2, 3, 4, 5]
    assert [c.index for c in chunks] == list(range(5))
    assert [c.chunk_id for c in chunks] == [f"doc1-{i}" for i in range(5)]
    assert [c.prev_chunk_id for c in chunks] == [None, "doc1-0", "doc1-1", "doc1-2", "doc1-3"]
    assert [c.next_chunk_id for c in chunks] == ["doc1-1", "doc1-2", "doc1-3", "doc1-4", None]
    assert all(c.tenant == "t1" and c.filename == "f.pdf" and c.modality == "text" for c in chunks)


def test_merged_chunk_bbox_is_the_union_of_its_blocks() -> None:
    blocks = [_block(1, "aaa", (10, 20, 100, 30)), _block(1, "bbb", (5, 40, 90, 50)), _block(2, "ccc")]

    chunks = chunk_blocks(blocks, **CHUNK_KW)

    assert [(c.page, c.text) for c in chunks] == [(1, "aaa\n\nbbb"), (2, "ccc")]
    assert chunks[0].bbox == (5, 20, 100, 50)


def test_blocks_are_merged_only_while_the_text_fits() -> None:
    blocks = [_block(1, "a" * 40), _block(1, "b" * 40), _block(1, "c" * 40)]

    chunks = chunk_blocks(blocks, **CHUNK_KW, max_chars=90)

    assert [c.text for c in chunks] == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]


def test_long_block_is_split_on_sentences_under_max_chars_keeping_its_bbox() -> None:
    sentences = [f"Sentence number {i} says something fairly ordinary." for i in range(40)]
    bbox = (72.0, 100.0, 500.0, 700.0)
    blocks = [_block(1, "short intro"), _block(1, " ".join(sentences), bbox), _block(1, "short outro")]

    chunks = chunk_blocks(blocks, **CHUNK_KW, max_chars=200)

    middle = chunks[1:-1]
    assert len(middle) > 1
    assert all(len(c.text) <= 200 for c in chunks)
    assert all(c.bbox == bbox for c in middle)
    assert all(c.text.endswith(".") for c in middle)  # cut between sentences, not inside one
    assert " ".join(c.text for c in middle) == " ".join(sentences)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_sentence_longer_than_max_chars_falls_back_to_whitespace_then_hard_cuts() -> None:
    text = "word " * 30 + "x" * 25

    chunks = chunk_blocks([_block(1, text)], **CHUNK_KW, max_chars=20)

    assert all(len(c.text) <= 20 for c in chunks)
    assert "".join(c.text.replace(" ", "") for c in chunks) == text.replace(" ", "")


def test_plain_text_chunks_have_no_bbox() -> None:
    _, blocks = extract_text(b"one\n\ntwo", markdown=False)

    chunks = chunk_blocks(blocks, **CHUNK_KW)

    assert [(c.page, c.bbox, c.text) for c in chunks] == [(1, None, "one\n\ntwo")]


def test_no_blocks_give_no_chunks() -> None:
    assert chunk_blocks([], **CHUNK_KW) == []


def test_batched_keeps_order_and_sizes() -> None:
    assert batched(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batched([], 3) == []
