"""Checked PDFs (:func:`open_checked_pdf`) and the text blocks of plain text files (Markdown has its reader,
``documents/formats/markdown.py``). Pure and synchronous.

Every failure a user can fix is raised as :class:`DocumentRejected` whose message says what is wrong and
what to do; the agent records it as the document's error verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pymupdf

from contracts.messages import BBox

_BLANK_LINES = re.compile(r"\n[ \t]*\n")


class DocumentRejected(Exception):
    """The document cannot be ingested; ``str(exc)`` is a message meant for the person who uploaded it."""


@dataclass(frozen=True)
class TextBlock:
    """A paragraph-like run of text. ``page`` is 1-based; ``bbox`` is (x0, y0, x1, y1) in PDF points with a
    top-left origin on the page as displayed (rotation applied), or None for plain text."""

    page: int
    bbox: BBox | None
    text: str


# Every complete PDF ends with "%%EOF" (followed at most by some whitespace or junk).
_TRAILER = b"%%EOF"
_TRAILER_WINDOW = 1024


def open_checked_pdf(data: bytes) -> pymupdf.Document:
    """Open a PDF the user can be told about: DocumentRejected for unopenable, truncated, encrypted or
    page-less files. The caller closes the document."""
    doc = _open_pdf(data)
    try:
        if doc.is_repaired and _TRAILER not in data[-_TRAILER_WINDOW:]:
            raise DocumentRejected(
                "truncated PDF: the file ends before its end-of-file marker (an interrupted transfer?); "
                "upload the complete file again"
            )
        if doc.needs_pass:
            raise DocumentRejected(
                "encrypted PDF: password-protected documents are not supported; "
                "remove the password and upload it again"
            )
        if doc.page_count == 0:
            raise DocumentRejected("empty PDF: the document has no pages; upload a PDF with content")
    except BaseException:
        doc.close()
        raise
    return doc


def extract_text(data: bytes) -> list[TextBlock]:
    """The paragraphs of a UTF-8 text file (a leading BOM is ignored), separated by blank lines.

    Raises DocumentRejected for non-UTF-8 or binary data and for files without any text.
    """
    paragraphs = _BLANK_LINES.split(_decode_utf8(data))
    blocks = [TextBlock(page=1, bbox=None, text=p) for p in map(_normalise_lines, paragraphs) if p]
    if not blocks:
        raise DocumentRejected("empty document: the file contains no text; upload a file with content")
    return blocks


def _open_pdf(data: bytes) -> pymupdf.Document:
    if not data:
        raise DocumentRejected("empty file: the upload has 0 bytes; upload the document again")
    try:
        return pymupdf.open(stream=data, filetype="pdf")
    except (RuntimeError, ValueError) as exc:  # pymupdf.FileDataError / EmptyFileError are RuntimeErrors
        raise DocumentRejected(
            f"corrupt PDF: cannot be opened ({exc}); check the file opens in a PDF viewer and upload it again"
        ) from exc


def _decode_utf8(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentRejected(
            f"not valid UTF-8 text: invalid byte at offset {exc.start}; save the file as UTF-8 and upload it again"
        ) from exc
    if "\x00" in text:
        raise DocumentRejected(
            "not valid UTF-8 text: the file contains NUL bytes (binary or UTF-16?); "
            "save it as UTF-8 text and upload it again"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _normalise_lines(paragraph: str) -> str:
    """Collapse runs of spaces/tabs, strip each line, drop empty lines; line breaks are kept."""
    lines = (" ".join(line.split()) for line in paragraph.splitlines())
    return "\n".join(line for line in lines if line)
