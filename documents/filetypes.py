"""Deciding what an upload is from its name and its first bytes (never trusting the client's header alone).

The one sniffer of the project: the edge API decides an upload's content type here, and the parser checks the
bytes it reads with the same functions, so the two cannot disagree (BigTIFF, say).
"""

from __future__ import annotations

import codecs
import re
from pathlib import PurePath

TEXT_SUFFIXES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
IMAGE_SUFFIXES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".tif": "image/tiff",
    ".tiff": "image/tiff", ".gif": "image/gif",
}  # fmt: skip
# Formats read by documents/formats/ (parsed through documents.reader.FORMAT_READERS), by name; each is also
# recognised by its content where it has a signature (`_by_content`).
FORMAT_SUFFIXES = {".html": "text/html", ".htm": "text/html", ".xhtml": "text/html", ".epub": "application/epub+zip",
                   ".eml": "message/rfc822"}  # fmt: skip
FORMAT_DECLARED = {"text/html": "text/html", "application/xhtml+xml": "text/html",
                   "application/epub+zip": "application/epub+zip", "message/rfc822": "message/rfc822"}  # fmt: skip
# What the upload's 415 says is accepted: one kind a line.
_ACCEPTED_KINDS = (
    "a PDF",
    "an image (PNG, JPEG, WebP, TIFF, GIF)",
    "a web page (.html)",
    "an EPUB e-book (.epub)",
    "an e-mail (.eml)",
    "a text file (.txt, .md)",
)
ACCEPTED = "upload " + ", ".join(_ACCEPTED_KINDS[:-1]) + " or " + _ACCEPTED_KINDS[-1]
# An e-mail starts with header fields ("Name: value"); one of these is among its first lines.
_MAIL_HEADERS = re.compile(rb"^(from|to|subject|date|message-id|mime-version|received|return-path|delivered-to)[ \t]*:",
                           re.IGNORECASE | re.MULTILINE)  # fmt: skip
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")


# Content types we accept for uploaded images, and the format name PIL reports for each.
IMAGE_CONTENT_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/tiff": "TIFF",
                       "image/gif": "GIF"}  # fmt: skip
_FORMAT_NAMES = {"PNG": "a PNG", "JPEG": "a JPEG", "WEBP": "a WebP", "TIFF": "a TIFF", "GIF": "a GIF", "BMP": "a BMP",
                 "PDF": "a PDF", "ZIP": "a ZIP archive", "TEXT": "text"}  # fmt: skip


def sniff_image_format(data: bytes) -> str | None:
    """The real format of ``data`` from its magic bytes: "PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP", "PDF",
    "ZIP", "TEXT" (printable ASCII/UTF-8 start) or None when unknown."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "TEXT"
    return None


def describe_format(fmt: str | None) -> str:
    return _FORMAT_NAMES.get(fmt or "", "not a recognised image format")


def sniff_image(head: bytes) -> str | None:
    """The content type of an image we ingest (`IMAGE_CONTENT_TYPES`) that the magic bytes say, or None."""
    fmt = sniff_image_format(head)
    return next((ctype for ctype, name in IMAGE_CONTENT_TYPES.items() if name == fmt), None)


class UnsupportedFile(Exception):
    """The upload is not a kind of document mmrag ingests; the message says what is accepted."""


def detect_content_type(filename: str, declared: str | None, head: bytes) -> str:
    """The contract content type of an upload whose first bytes are `head` (at least a few KiB if available).

    Raises `UnsupportedFile` with a message for the user when the bytes are not a PDF, a supported image or
    UTF-8 text.
    """
    suffix = PurePath(filename).suffix.lower()
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if suffix == ".pdf" or declared == "application/pdf":
        raise UnsupportedFile(f"{filename!r} is not a PDF: its content does not start with '%PDF-'")
    named = FORMAT_SUFFIXES.get(suffix) or FORMAT_DECLARED.get((declared or "").split(";")[0].strip().lower())
    if (found := _by_content(head, named)) is not None:
        return found
    if named == "application/epub+zip":
        raise UnsupportedFile(f"{filename!r} is not an EPUB: its content is not a ZIP archive; {ACCEPTED}")
    if named == "message/rfc822":
        raise UnsupportedFile(f"{filename!r} is not an e-mail message: it does not start with header fields "
                              f"(From:, Subject:, ...); save the message from the mail program as .eml")  # fmt: skip
    if (image := sniff_image(head)) is not None:
        return image
    if suffix in IMAGE_SUFFIXES or (declared or "").startswith("image/"):
        raise UnsupportedFile(f"{filename!r} is not a PNG, JPEG, WebP, TIFF or GIF image (by its content, whatever "
                              f"its name says); {ACCEPTED}")  # fmt: skip
    if named == "text/html" or (suffix not in TEXT_SUFFIXES and _looks_like_html(head)):
        if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):  # NULs only in UTF-16 (its BOM)
            raise UnsupportedFile(f"{filename!r} is not an HTML page (it contains NUL bytes)")
        return "text/html"  # any encoding: its BOM or its <meta charset> says which
    text_type = TEXT_SUFFIXES.get(suffix) or (
        "text/markdown"
        if declared == "text/markdown"
        else "text/plain"
        if (declared or "").startswith("text/")
        else None
    )
    if text_type is None:
        raise UnsupportedFile(
            f"unsupported file type for {filename!r} ({declared or 'no content type'}): {ACCEPTED}"
        )
    try:
        # Incremental decoder: a multi-byte character cut at the end of `head` is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise UnsupportedFile(f"{filename!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if b"\x00" in head:
        raise UnsupportedFile(f"{filename!r} is not UTF-8 text (it contains NUL bytes)")
    return text_type


def _by_content(head: bytes, named: str | None) -> str | None:
    """A format of `FORMAT_SUFFIXES` that the bytes say: an EPUB (a ZIP archive whose first entry is its
    "mimetype" file, as the EPUB container format requires, or any ZIP archive named .epub)."""
    if head.startswith(b"PK\x03\x04") and (
        (head[30:38] == b"mimetype" and head[38:58] == b"application/epub+zip") or named == "application/epub+zip"
    ):
        return "application/epub+zip"
    if named == "message/rfc822" and b"\x00" not in head and _FIELD.match(head) and _MAIL_HEADERS.search(head[:8192]):
        return "message/rfc822"
    return None


def _looks_like_html(head: bytes) -> bool:
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html"))
