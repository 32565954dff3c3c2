"""Deciding what an upload is from its name and its first bytes (never trusting the client's header alone)."""

from __future__ import annotations

import codecs
from pathlib import PurePath

TEXT_SUFFIXES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}


class UnsupportedFile(Exception):
    """The upload is not a kind of document mmrag ingests; the message says what is accepted."""


def detect_content_type(filename: str, declared: str | None, head: bytes) -> str:
    """The contract content type of an upload whose first bytes are `head` (at least a few KiB if available).

    Raises `UnsupportedFile` with a message for the user when the bytes are not a PDF or UTF-8 text.
    """
    suffix = PurePath(filename).suffix.lower()
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if suffix == ".pdf" or declared == "application/pdf":
        raise UnsupportedFile(f"{filename!r} is not a PDF: its content does not start with '%PDF-'")
    text_type = TEXT_SUFFIXES.get(suffix) or (
        "text/markdown"
        if declared == "text/markdown"
        else "text/plain"
        if (declared or "").startswith("text/")
        else None
    )
    if text_type is None:
        raise UnsupportedFile(
            f"unsupported file type for {filename!r} ({declared or 'no content type'}): "
            "upload a PDF, a .txt or a .md file"
        )
    try:
        # Incremental decoder: a multi-byte character cut at the end of `head` is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise UnsupportedFile(f"{filename!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if b"\x00" in head:
        raise UnsupportedFile(f"{filename!r} is not UTF-8 text (it contains NUL bytes)")
    return text_type
