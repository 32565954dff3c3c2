"""Tables of born-digital PDF pages: PyMuPDF's table finder -> cells, markdown, cross-page links.

- Cells come from ``page.find_tables()``'s cell rectangles, filled with the page's *words* whose centre lies
  in the cell (``Table.extract()`` of PyMuPDF 2.0 scrambles some cells, e.g. "1.50" -> "150\\n.").
- ``header`` is the first row (PyMuPDF's header detection; an "external" header above the grid is used when
  PyMuPDF finds one). A continuation part whose first row repeats the previous part's header drops nothing:
  its rows keep the repeat, its ``header`` is that row.
- Continuation rule (:func:`link_continuation`): table B continues table A when A is the last table of page p,
  B the first table of page p+1, they have the same column count, and either B's first row equals A's header
  or their column edges line up within 3 pt; and no body text lies between them (text below A other than a
  footer band, or above B other than a running-header band, each 10% of the page height).
  B then carries ``continues`` = A's id, A ``continued_by`` = B's id, and both the ``group_id`` of the group
  (the first part's id).
- :func:`table_chunks` cuts a table into pieces under a size limit *between* rows, repeating the header row
  at the top of each piece, so every piece is a self-contained markdown table; a single row larger than the
  limit becomes a piece of its own (a row is never split between pieces). Under a character limit, a row too
  long for it continues on further rows of the same piece, each cell's text cut at word boundaries.
- Cells stay data (:class:`TableCells`) from the finder to the chunk: markdown is rendered from them (``|``
  escaped), never parsed back, so a cell holding a ``|`` stays one cell.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import pymupdf

BBox = tuple[float, float, float, float]
_EDGE_TOLERANCE = 3.0
_BAND = 0.10  # running header/footer band, fraction of the page height


@dataclass(frozen=True)
class Table:
    """One table (or one page's part of a table that spans pages). ``page`` is 1-based; ``bbox`` in displayed
    page points. ``rows`` are all rows including the header row; ``markdown`` renders them (header first,
    then the separator); for a continuation part without a repeated header the markdown starts with the
    group's header so that it reads on its own."""

    page: int
    bbox: BBox
    table_id: str
    rows: tuple[tuple[str, ...], ...]
    header: tuple[str, ...] | None
    markdown: str
    col_count: int
    col_edges: tuple[float, ...]  # x of each column's left edge, then the right edge of the last column
    continues: str | None = None  # table_id of the previous part (on the previous page)
    continued_by: str | None = None  # table_id of the next part (on the next page)
    group_id: str | None = None  # table_id of the first part, on every part; None for a one-page table
    caption: str | None = None  # a "Table N: ..." text block next to it
    group_header: tuple[str, ...] | None = None  # the header a part without one shows: its group's

    def cells(self) -> TableCells:
        """The table as its markdown shows it: the header row, then the body rows."""
        if self.header is None and self.group_header is not None:
            return TableCells(self.group_header, self.rows)
        return TableCells(self.rows[0], self.rows[1:])


@dataclass(frozen=True)
class TableCells:
    """Rows of a table (or of a piece of one) as data, under their header row; ``markdown`` renders them."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @cached_property
    def markdown(self) -> str:
        return to_markdown(self.rows, header=self.header)


def find_tables(page: pymupdf.Page, words: list[tuple] | None = None) -> list[Table]:
    """Tables of one page in reading order (top to bottom, then left to right); empty tables are dropped."""
    try:
        # use_layout=False: with pymupdf-layout installed, PyMuPDF 2 would first run its layout GNN on every
        # page (~0.5 s a page on 2 cores) to gate the finder; ruled tables are found from the lines alone.
        found = page.find_tables(use_layout=False)
    except TypeError:  # PyMuPDF < 2 has no use_layout
        found = page.find_tables()
    except Exception:  # the finder works on drawings; a malformed content stream must not lose the page
        return []
    if words is None:
        words = page.get_text("words", sort=True)
    tables: list[Table] = []
    number = page.number + 1
    for index, tab in enumerate(sorted(found.tables, key=lambda t: (round(t.bbox[1]), t.bbox[0]))):
        rows = _cells_text(tab, words)
        if not rows or not any(any(cell for cell in row) for row in rows):
            continue
        header: tuple[str, ...] | None = rows[0]
        if tab.header.external and tab.header.names and any(tab.header.names):
            header = tuple(_clean(n) for n in tab.header.names)
            rows = [header, *rows]
        rect = pymupdf.Rect(tab.bbox) * page.rotation_matrix
        tables.append(
            Table(
                page=number,
                bbox=(rect.x0, rect.y0, rect.x1, rect.y1),
                table_id=f"p{number}-t{index}",
                rows=tuple(rows),
                header=header,
                markdown=to_markdown(rows),
                col_count=tab.col_count,
                col_edges=_col_edges(tab),
            )
        )
    return tables


def _cells_text(tab, words: list[tuple]) -> list[tuple[str, ...]]:
    out = []
    for row in tab.rows:
        cells = []
        for cell in row.cells:
            if cell is None:  # merged into its neighbour
                cells.append("")
                continue
            x0, y0, x1, y1 = cell
            inside = [w for w in words if x0 <= (w[0] + w[2]) / 2 <= x1 and y0 <= (w[1] + w[3]) / 2 <= y1]
            inside.sort(key=lambda w: (w[5], w[6], w[7]))  # block, line, word number: the text's own order
            cells.append(" ".join(w[4] for w in inside))
        out.append(tuple(cells))
    return out


def _col_edges(tab) -> tuple[float, ...]:
    first = next((row for row in tab.rows if all(c is not None for c in row.cells)), None)
    if first is None:
        return ()
    return tuple(round(c[0], 1) for c in first.cells) + (round(first.cells[-1][2], 1),)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(rows: list[tuple[str, ...]] | tuple[tuple[str, ...], ...], *, header: tuple[str, ...] | None = None) -> str:
    """GitHub markdown: ``header`` (or the first row) as the header row, then the rows, one line per row."""
    rows = list(rows)
    if header is None:
        if not rows:
            return ""
        header, rows = rows[0], rows[1:]
    lines = [_md_row(header), "|" + "|".join("---" for _ in header) + "|"]
    lines.extend(_md_row(r) for r in rows)
    return "\n".join(lines)


def _md_row(row: tuple[str, ...]) -> str:
    return "|" + "|".join(_md_cell(c) for c in row) + "|"


def link_continuation(previous: Table | None, previous_body_below: bool, table: Table, body_above: bool) -> Table:
    """``table`` linked to ``previous`` when it continues it (see the module docstring), else unchanged.

    ``previous_body_below``: body text (outside the footer band) lies below ``previous`` on its page;
    ``body_above``: body text (outside the running-header band) lies above ``table`` on its page.
    """
    if previous is None or previous.page != table.page - 1 or previous_body_below or body_above:
        return table
    if previous.col_count != table.col_count:
        return table
    same_header = previous.header is not None and table.rows and table.rows[0] == previous.header
    aligned = len(previous.col_edges) == len(table.col_edges) and all(
        abs(a - b) <= _EDGE_TOLERANCE for a, b in zip(previous.col_edges, table.col_edges)
    )
    if not (same_header or aligned):
        return table
    group = previous.group_id or previous.table_id
    if same_header:
        return replace(table, continues=previous.table_id, group_id=group)
    # The first row is data: the part has no header of its own; its markdown borrows the group's header.
    header = previous.header or previous.group_header
    markdown = to_markdown(table.rows, header=header) if header else table.markdown
    return replace(table, continues=previous.table_id, group_id=group, header=None, markdown=markdown,
                   group_header=header)  # fmt: skip


def mark_continued(table: Table, next_part: Table) -> Table:
    """``table`` once ``next_part`` was found to continue it: the forward link, and its group id."""
    return replace(table, continued_by=next_part.table_id, group_id=table.group_id or table.table_id)


def table_chunks(table: Table, max_size: int, size: Callable[[str], int] = len, *,
                 max_chars: int | None = None) -> list[TableCells]:  # fmt: skip
    """Pieces of ``table``, each <= ``max_size`` by ``size`` of its markdown unless one row alone is larger; cut
    only between rows, each piece under the header row. With ``max_chars``, a row whose markdown under the
    header is longer continues on further rows (see the module docstring)."""
    whole = table.cells()
    header = whole.header
    rows: list[tuple[str, ...]] = []
    for row in whole.rows:
        rows += _continued(header, row, max_chars) if max_chars else [row]
    if not rows:
        return [TableCells(header, ())]
    pieces: list[list[tuple[str, ...]]] = []
    for row in rows:
        candidate = TableCells(header, (*pieces[-1], row)).markdown if pieces else ""
        if pieces and size(candidate) <= max_size and (max_chars is None or len(candidate) <= max_chars):
            pieces[-1].append(row)
        else:
            pieces.append([row])
    return [TableCells(header, tuple(piece)) for piece in pieces]


def _continued(header: tuple[str, ...], row: tuple[str, ...], max_chars: int) -> list[tuple[str, ...]]:
    """``row``, or rows continuing it, each short enough that header + row renders in ``max_chars``."""
    if len(TableCells(header, (row,)).markdown) <= max_chars or not row:
        return [row]
    from .chunks import split_text  # chunks imports this module

    room = max_chars - len(TableCells(header, ()).markdown) - 1 - (len(row) + 1)
    per_cell = max(8, room // len(row))
    while True:
        parts = [split_text(cell, per_cell) if cell else [""] for cell in row]
        lines = [tuple(p[i] if i < len(p) else "" for p in parts) for i in range(max(map(len, parts)))]
        if per_cell <= 8 or all(len(TableCells(header, (line,)).markdown) <= max_chars for line in lines):
            return lines
        per_cell = max(8, int(per_cell * 0.8))


def body_band(page_height: float) -> tuple[float, float]:
    """(top, bottom) of the body area: the page minus the running-header and footer bands."""
    return page_height * _BAND, page_height * (1 - _BAND)
