"""XLSX (openpyxl, read-only: rows streamed) and CSV: per sheet, one table under its header row.

- A chunk's ``page`` is its sheet (1-based, in the workbook's order; a CSV is one sheet); its context
  (``headings``) is the sheet's name, then the title lines above the table (up to 3 rows of one filled cell
  before a row of several); every chunk is a table chunk: the header row (the first row after them) then whole
  body rows, cut between rows to the chunk size (a row longer than a chunk continues on further
  rows of a piece of its own, as a PDF table's do). Empty rows are skipped, and the empty columns before the
  first value and after the last.
- Its locator names the sheet rows it holds and their cells as a spreadsheet addresses them:
  "Budget rows 2-40 (A2:F40)"; a CSV's rows are numbered as a spreadsheet opening it shows them (the header is
  row 1): "rows 2-40 (A2:F40)".
- Cells are the values Excel last computed (a formula's cached result; none when the file was never opened in a
  spreadsheet application); numbers without a trailing ".0", dates in ISO 8601.
- Bounded: at most ``ParseSettings.sheet_max_cells`` cells (MMRAG_SHEET_MAX_CELLS; every cell of a row read,
  empty ones too) are read from a workbook or a CSV, all sheets together. What is past the limit is cut and
  said so in the locator of the last chunk read ("...; cut here: ...") and in a warning of the page
  (``ParsedPage.warnings``), which the parser records on the document's progress.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator

from openpyxl.utils import get_column_letter

from ..chunks import ParsedChunk, _with_context, wordpiece_counter
from ..extract import DocumentRejected, _decode_utf8
from ..reader import ParsedDocument, ParsedPage, ParseSettings
from ..tables import row_pieces
from .common import bounded, clean, read_with
from .ooxml import check_package

def _cut(limit: int) -> str:
    return f"cut here: the limit of {limit:,} cells a workbook was reached, nothing after this row was read"


def _warning(limit: int, sheet: str | None, row: int) -> str:
    where = f"sheet {sheet!r}" if sheet is not None else "the CSV"
    return (f"{where} was cut after row {row:,}: a workbook or CSV is read up to {limit:,} cells "
            "(MMRAG_SHEET_MAX_CELLS); split it, or raise the limit, to index the rest")  # fmt: skip


class _Budget:
    """Cells left to read in the document; ``cut`` once a row was left unread."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit
        self.cut = False

    def rows(self, rows: Iterable[tuple]) -> Iterator[tuple[int, tuple[str, ...]]]:
        """(1-based row number, cells as text without trailing empty ones) of the non-empty rows, within budget."""
        for number, row in enumerate(rows, 1):
            if self.left <= 0:
                self.cut = True
                return
            self.left -= max(1, len(row))
            cells = [_text(value) for value in row]
            while cells and not cells[-1]:
                cells.pop()
            if cells:
                yield number, tuple(cells)


def parse_xlsx(data: bytes, settings: ParseSettings) -> ParsedDocument:
    check_package(data, "xlsx")
    import openpyxl

    book = read_with("the XLSX", lambda: openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True))
    try:
        budget, pages = _Budget(settings.sheet_max_cells), []
        for number, sheet in enumerate(book.worksheets, 1):
            sheet.reset_dimensions()  # the file's own dimension may claim a million empty rows: read what is there
            rows = read_with("the XLSX", lambda s=sheet: list(budget.rows(s.iter_rows(values_only=True))))
            chunks = _sheet_chunks(number, sheet.title, rows, budget, settings)
            warnings = (_warning(budget.limit, sheet.title, rows[-1][0] if rows else 0),) if budget.cut else ()
            pages.append(ParsedPage(number, chunks, warnings=warnings))
            if budget.cut:
                pages += [ParsedPage(n, ()) for n in range(number + 1, len(book.worksheets) + 1)]
                break
    finally:
        book.close()
    if not any(page.chunks for page in pages):
        raise DocumentRejected("empty workbook: the XLSX has no cell with a value; upload a workbook with content")
    return ParsedDocument(len(pages), iter(pages))


def parse_csv(data: bytes, settings: ParseSettings) -> ParsedDocument:
    text = _decode_utf8(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:  # one column, or no consistent delimiter
        dialect = csv.excel
    budget = _Budget(settings.sheet_max_cells)
    rows = read_with("the CSV", lambda: list(budget.rows(csv.reader(io.StringIO(text), dialect))))
    chunks = _sheet_chunks(1, None, rows, budget, settings)
    if not chunks:
        raise DocumentRejected("empty document: the CSV has no value in any cell; upload a file with content")
    warnings = (_warning(budget.limit, None, rows[-1][0]),) if budget.cut else ()
    return ParsedDocument(1, iter([ParsedPage(1, chunks, warnings=warnings)]))


def _sheet_chunks(number: int, title: str | None, rows: list[tuple[int, tuple[str, ...]]], cells_read: _Budget,
                  settings: ParseSettings) -> tuple[ParsedChunk, ...]:  # fmt: skip
    if not rows:
        return ()
    # Title lines above the table (one filled cell each, at most 3, then a row of several) are its caption.
    captions: list[str] = []
    while len(captions) < 3 and _filled(rows[0][1]) == 1 and any(_filled(cells) > 1 for _, cells in rows[1:4]):
        captions.append(next(cell for cell in rows[0][1] if cell))
        rows = rows[1:]
    skip = min(next(i for i, cell in enumerate(cells) if cell) for _, cells in rows)  # empty leading columns
    width = max(len(cells) for _, cells in rows)
    padded = [cells[skip:] + ("",) * (width - len(cells)) for _, cells in rows]
    numbers = [n for n, _ in rows]
    header, body = padded[0], tuple(padded[1:])
    context = ((title,) if title else ()) + tuple(captions)
    count = wordpiece_counter()
    budget = settings.chunk_max_tokens - (count(_with_context(context, "")) if context else 0)
    first_column, last_column = get_column_letter(skip + 1), get_column_letter(width)
    chunks: list[ParsedChunk] = []
    for cells, held in row_pieces(header, body, budget, count, max_chars=settings.chunk_max_chars):
        first, last = (numbers[held.start + 1], numbers[held.stop]) if held else (numbers[0], numbers[0])
        where = f"{title} " if title else ""
        where += f"row {first}" if first == last else f"rows {first}-{last}"
        where += f" ({first_column}{first}:{last_column}{last})"
        chunks.append(ParsedChunk(number, None, cells.markdown, "table", context, f"s{number}", None, cells,
                                  bounded(where)))  # fmt: skip
    if cells_read.cut:
        last_chunk = chunks[-1]
        chunks[-1] = ParsedChunk(last_chunk.page, None, last_chunk.text, "table", context, last_chunk.table_id, None,
                                 last_chunk.table, bounded(f"{last_chunk.locator}; {_cut(cells_read.limit)}"))  # fmt: skip
    return tuple(chunks)


def _filled(cells: tuple[str, ...]) -> int:
    return sum(1 for cell in cells if cell)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime.datetime) and value.time() == datetime.time(0):
        return value.date().isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return clean(str(value))
