"""Parser agent: uploaded documents -> text blocks -> linked chunks."""

from .chunking import batched, chunk_blocks
from .extract import DocumentRejected, TextBlock, extract_pdf, extract_text

__all__ = ["DocumentRejected", "TextBlock", "batched", "chunk_blocks", "extract_pdf", "extract_text"]
