"""Work units that run in a worker process (`agents.runtime.work_pool`): module-level, picklable in and out.

Kept apart from the agent modules so that a worker process imports the document library only (not NATS, the
embedding model or the vector store).
"""

from __future__ import annotations

import itertools
import os

from documents import ParsedPage, ParseSettings, parse
from documents.chunks import wordpiece_counter


def parse_unit(data: bytes, content_type: str, settings: ParseSettings, start: int, size: int,
               page_count: int | None) -> tuple[int, list[ParsedPage]]:  # fmt: skip
    """A document's page count and the pages of one unit: PDF pages ``[start, start + size)`` (the first unit
    before the page count is known: ``start`` 0 and ``page_count`` None); a text or image file is one unit.
    Raises `documents.DocumentRejected` like `documents.parse`."""
    pdf = content_type == "application/pdf"
    pages = range(start, min(start + size, page_count)) if pdf and page_count is not None else None
    with parse(data, content_type, settings, pages=pages) as document:
        taken = itertools.islice(document, size) if pdf and pages is None else document
        return document.page_count, list(taken)


def warm() -> int:
    """Load what every parse needs (PyMuPDF, the tokenizer) in a fresh worker process; its pid."""
    wordpiece_counter()
    return os.getpid()
