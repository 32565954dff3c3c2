"""Opening an Office Open XML package (DOCX, PPTX, XLSX) within bounds, before any library reads it.

An OOXML file is a zip. What is refused, each with a message that says what to do (:class:`DocumentRejected`):
- an OLE compound file: what Office writes for a password-protected (encrypted) DOCX/PPTX/XLSX, and the legacy
  binary .doc/.ppt/.xls formats;
- a file that is not a zip, or a broken one (truncated, bad central directory);
- a zip bomb: more than `MAX_ENTRIES` entries, an entry that inflates to more than `MAX_PART_BYTES` (except the
  worksheets, which `sheets` streams row by row under its own cell limit), or more than `MAX_TOTAL_BYTES` in all.
  The sizes are the central directory's; Python's `zipfile` never inflates an entry past its declared size (a
  lying entry ends in a CRC error, reported as a broken file), so these checks bound the memory of every reader;
- a package of another kind than its type says (a PPTX named .docx): its main part must be there.
"""

from __future__ import annotations

import io
import re
import zipfile

from ..extract import DocumentRejected
from ..filetypes import OLE_MAGIC
MAX_ENTRIES = 10_000
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
_STREAMED = re.compile(r"^xl/worksheets/[^/]+\.xml$")  # read row by row (openpyxl read-only), cells bounded

# The kinds, by the main part a package of that kind has.
KINDS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}
NAMES = {"docx": "a Word document (DOCX)", "pptx": "a PowerPoint deck (PPTX)", "xlsx": "an Excel workbook (XLSX)"}


def encrypted_or_legacy(kind: str) -> DocumentRejected:
    return DocumentRejected(
        f"not readable as {NAMES[kind]}: the file is an OLE container, which is what Office saves for a "
        "password-protected document (and for the old binary .doc/.ppt/.xls formats); remove the password "
        f"(or save it as .{kind}) and upload it again"
    )


def check_package(data: bytes, kind: str) -> None:
    """Check that ``data`` is an OOXML package of ``kind`` ("docx", "pptx" or "xlsx") within bounds (the module
    docstring); DocumentRejected otherwise. The readers then open it with their library."""
    if not data:
        raise DocumentRejected("empty file: the upload has 0 bytes; upload the document again")
    if data.startswith(OLE_MAGIC):
        raise encrypted_or_legacy(kind)
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        entries = package.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise DocumentRejected(
            f"corrupt file: {NAMES[kind]} is a zip package, and this one cannot be opened ({err}); check that it "
            "opens in an office application and upload it again"
        ) from None
    try:
        _check_bounds(entries, kind)
        names = {info.filename for info in entries}
        if KINDS[kind] not in names:
            other = next((k for k, part in KINDS.items() if part in names), None)
            what = NAMES[other] if other else "not an Office document"
            raise DocumentRejected(
                f"not {NAMES[kind]}: the package has no {KINDS[kind]} ({what}); upload it with the right extension"
            )
    finally:
        package.close()


def _check_bounds(entries: list[zipfile.ZipInfo], kind: str) -> None:
    if len(entries) > MAX_ENTRIES:
        raise DocumentRejected(
            f"refused: {NAMES[kind]} with {len(entries):,} parts is over the limit of {MAX_ENTRIES:,} (a zip bomb?); "
            "split the document and upload the parts"
        )
    total = 0
    for info in entries:
        total += info.file_size
        if info.file_size > MAX_PART_BYTES and not _STREAMED.match(info.filename):
            raise DocumentRejected(
                f"refused: part {info.filename[:100]!r} of {NAMES[kind]} inflates to {info.file_size:,} bytes, over "
                f"the limit of {MAX_PART_BYTES:,} (a zip bomb?); split the document and upload the parts"
            )
    if total > MAX_TOTAL_BYTES:
        raise DocumentRejected(
            f"refused: {NAMES[kind]} inflates to {total:,} bytes, over the limit of {MAX_TOTAL_BYTES:,} (a zip "
            "bomb?); split the document and upload the parts"
        )
