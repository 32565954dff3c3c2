"""EPUB e-books (``application/epub+zip``) -> one page per chapter, in the spine's reading order.

- The archive is checked before anything is read from it: at most ``MAX_ENTRIES`` entries and
  ``MAX_UNCOMPRESSED_BYTES`` uncompressed in all, by the sizes its central directory declares (Python's zipfile
  never inflates an entry past its declared size, so a zip bomb is refused in microseconds); no encrypted
  entry and no DRM (an ``encryption.xml`` naming anything but font obfuscation).
- ebooklib reads the container, the package (OPF) and the table of contents (the EPUB 3 nav document, else
  the NCX). Each XHTML document of the spine is a chapter, read by the HTML reader (its whole body: no site
  chrome to remove; its ``<nav>`` dropped); a document without text (a cover picture) is no chapter.
- Chapter k (1-based, counting the chapters with text) is page k; its chunks' locator is "chapter k <title>"
  (the table of contents' title of the document, else its first heading), then ", section A > B" for the
  headings under that title. A chapter without headings gets its title as the context of its chunks.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
import zipfile

from ..extract import DocumentRejected
from .flow import Heading, to_chunks
from .html import html_blocks

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}
_ALGORITHM = re.compile(rb'Algorithm\s*=\s*["\']([^"\']+)["\']')
_DOCUMENT_TYPES = {"application/xhtml+xml", "text/html", "application/x-dtbook+xml"}


def parse_epub(data: bytes, settings):  # -> ParsedDocument (documents.reader imports this module lazily)
    from ..reader import ParsedDocument, ParsedPage

    check_archive(data)
    pages = []
    for title, blocks in chapters(data):
        number = len(pages) + 1
        if title and not any(isinstance(b, Heading) for b in blocks):
            blocks.insert(0, Heading(0, title))
        name = title or next((b.text for b in blocks if isinstance(b, Heading)), "")
        chapter = f"chapter {number} {name}".rstrip()

        def locator(headings: tuple[str, ...], chapter: str = chapter, name: str = name) -> str:
            rest = headings[1:] if headings and headings[0] == name else headings
            return f"{chapter}, section {' > '.join(rest)}" if rest else chapter

        chunks = to_chunks(blocks, settings.chunk_max_tokens, settings.chunk_max_chars, page=number, locator=locator)
        if chunks:
            pages.append(ParsedPage(number, tuple(chunks)))
    if not pages:
        raise DocumentRejected(
            "EPUB without chapters: no document of its reading order (spine) holds text (an image-only or "
            "fixed-layout book?); convert it to PDF and upload the PDF"
        )
    return ParsedDocument(len(pages), iter(pages))


def check_archive(data: bytes) -> None:
    """Refuse what is not a readable, bounded, DRM-free EPUB archive, before any entry is inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ENTRIES:
                raise DocumentRejected(f"EPUB too large: {len(entries):,} files in the archive is over the limit "
                                       f"of {MAX_ENTRIES:,}; split the book and upload the parts")  # fmt: skip
            total = sum(entry.file_size for entry in entries)
            if total > MAX_UNCOMPRESSED_BYTES:
                raise DocumentRejected(
                    f"EPUB too large: it unpacks to {total:,} bytes, over the limit of {MAX_UNCOMPRESSED_BYTES:,} "
                    "(a zip bomb, or a book of large pictures); convert it to PDF, or split it, and upload that"
                )
            if any(entry.flag_bits & 0x1 for entry in entries):
                raise DocumentRejected("encrypted EPUB: its files are password-protected; upload a copy without "
                                       "the password")  # fmt: skip
            names = {entry.filename for entry in entries}
            if "META-INF/encryption.xml" in names:
                declared = archive.read("META-INF/encryption.xml")
                if any(a.decode(errors="replace") not in _FONT_OBFUSCATION for a in _ALGORITHM.findall(declared)):
                    raise DocumentRejected("DRM-protected EPUB: its chapters are encrypted; upload a copy "
                                           "without DRM (as the publisher or a library sells it DRM-free)")  # fmt: skip
    except zipfile.BadZipFile as err:
        raise DocumentRejected(f"corrupt EPUB: not a readable ZIP archive ({err}); check it opens in an e-book "
                               "reader and upload it again") from err  # fmt: skip


def chapters(data: bytes) -> list[tuple[str, list]]:
    """(title, blocks) of each XHTML document of the spine, in reading order (call :func:`check_archive`
    first); a document without text has no blocks."""
    from ebooklib import epub

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib's notices about its future defaults
            book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})  # the nav document, else the NCX
    except DocumentRejected:
        raise
    except Exception as err:  # ebooklib raises EpubException, KeyError, lxml and zipfile errors alike
        raise DocumentRejected(f"corrupt EPUB: {type(err).__name__}: {err}; check it opens in an e-book reader "
                               "and upload it again") from err  # fmt: skip
    titles = _toc_titles(book.toc)
    found = []
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.media_type not in _DOCUMENT_TYPES or not item.content:
            continue
        blocks = html_blocks(item.content, main_content=False, what="EPUB chapter")
        found.append((titles.get(item.get_name(), ""), blocks))
    return found


def _toc_titles(toc) -> dict[str, str]:
    """File name -> the first title the table of contents gives it."""
    titles: dict[str, str] = {}

    def visit(entries) -> None:
        for entry in entries:
            if isinstance(entry, tuple):
                section, children = entry
                visit([section])
                visit(children)
                continue
            href = getattr(entry, "href", None) or getattr(entry, "file_name", "")
            title = " ".join((getattr(entry, "title", "") or "").split())
            if href and title:
                titles.setdefault(href.split("#", 1)[0], title)

    visit(toc)
    return titles
