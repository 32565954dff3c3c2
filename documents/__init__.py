"""Reading documents: bytes in, chunks and OCR work out. PDFs page by page (`layout`: text blocks, headings,
`tables`, `images`, scanned pages), image files, plain text (`extract`), Markdown, web pages, EPUB, GIF and e-mail
(`formats/`), OCR (`ocr`), chunking sized for
the embedding model (`chunks`), and the entry points of `reader`: `parse` (a document -> its pages' chunks and OCR
work), `read_page` / `read_image` (OCR work -> chunks). Pure and synchronous: no NATS, no I/O beyond the bytes
handed in.

The public names below are loaded on first use, so that `documents.filetypes` (the edge API's sniffer) does not
import PyMuPDF and the chunker into the edge API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_PUBLIC = {
    "DocumentRejected": "extract",
    "NO_TEXT": "reader",
    "OcrWork": "reader",
    "ParseSettings": "reader",
    "ParsedChunk": "chunks",
    "ParsedDocument": "reader",
    "ParsedPage": "reader",
    "TableCells": "tables",
    "page_raster": "reader",
    "parse": "reader",
    "OcrRead": "reader",
    "read_image": "reader",
    "read_image_checked": "reader",
    "read_page": "reader",
    "read_page_checked": "reader",
}
__all__ = [
    "NO_TEXT",
    "DocumentRejected",
    "OcrWork",
    "ParseSettings",
    "ParsedChunk",
    "ParsedDocument",
    "ParsedPage",
    "TableCells",
    "page_raster",
    "parse",
    "OcrRead",
    "read_image",
    "read_image_checked",
    "read_page",
    "read_page_checked",
]

if TYPE_CHECKING:
    from .chunks import ParsedChunk
    from .extract import DocumentRejected
    from .reader import (
        NO_TEXT,
        OcrRead,
        OcrWork,
        ParsedDocument,
        ParsedPage,
        ParseSettings,
        page_raster,
        parse,
        read_image,
        read_image_checked,
        read_page,
        read_page_checked,
    )
    from .tables import TableCells


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'documents' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
