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

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import pymupdf
from pymupdf.table import edges_to_intersections, intersections_to_cells

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


def find_tables(
    page: pymupdf.Page, words: list[tuple] | None = None, *, drawings: list[dict] | None = None,
    everywhere: bool = False,
) -> list[Table]:  # fmt: skip
    """Tables of one page in reading order (top to bottom, then left to right); grids with fewer than two filled
    cells are not tables and are dropped (their text stays in the page's text blocks).

    PyMuPDF's finder runs (on the whole page) only when the page has :func:`table_regions` (``everywhere``:
    always, as before the pre-check; kept for ``bench/parse_manuals.py``). ``drawings``: the page's
    ``get_cdrawings()`` when the caller has them; ``words``: its ``get_text("words")`` in any order.
    """
    if words is None:
        words = page.get_text("words")
    # A rotated page (rare) goes to the finder as it is: the finder works on it unrotated.
    found = _finder(page) if everywhere or page.rotation or table_regions(page, words, drawings) else []
    tables: list[Table] = []
    number = page.number + 1
    for index, tab in enumerate(sorted(found, key=lambda t: (round(t.bbox[1]), t.bbox[0]))):
        rows = _cells_text(tab, words)
        if sum(bool(cell) for row in rows for cell in row) < 2:
            continue  # a grid with at most one filled cell is a box (a note, a staff of music): its text stays text
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


def _finder(page: pymupdf.Page) -> list:
    """PyMuPDF's tables of ``page``; none when its finder fails on the page's drawings."""
    try:
        # use_layout=False: with pymupdf-layout installed, PyMuPDF 2 would first run its layout GNN on every
        # page (~0.5 s a page on 2 cores) to gate the finder; ruled tables are found from the lines alone.
        found = page.find_tables(use_layout=False)
    except TypeError:  # PyMuPDF < 2 has no use_layout
        found = page.find_tables()
    except Exception:  # the finder works on drawings; a malformed content stream must not lose the page
        return []
    return list(found.tables) if found is not None else []  # PyMuPDF 2 returns None when it fails inside


# --------------------------------------------------------------------------- where a table can be
# PyMuPDF's finder builds a Python object per character of the page before it looks at a single line (~0.1 s a
# page of a manual); most pages with drawings (plots, boxes, diagrams) hold no ruled grid at all. The pre-check
# applies the finder's own rules for lines to the page's drawings, on plain tuples, to find where a table can be.

_TOLERANCE = 3.0  # PyMuPDF's snap, join and intersection tolerances and its minimum edge length (its defaults)
_MARGIN = 3.0  # a region reaches this far past its lines: the finder's snapping may move a line that far
GROUPING_BUDGET = 3_000_000  # box comparisons; a page needing more (its grouping is quadratic): no pre-check
# Horizontal x vertical edges of a group past which its cells are not computed (the finder's cell search grows
# faster than quadratically: 1.4 s for a 100 x 100 grid, the same again in the finder): the finder decides.
CELLS_BUDGET = 2_500

HEdge = tuple[float, float, float]  # y, x0, x1
VEdge = tuple[float, float, float]  # x, top, bottom


def table_regions(page: pymupdf.Page, words: list[tuple], drawings: list[dict] | None = None) -> list[pymupdf.Rect]:
    """Where on ``page`` (unrotated coordinates) PyMuPDF's ruled-table finder can find a table.

    A superset of where its "lines" strategy finds one, from the same rules: edges are the axis-parallel
    lines, rectangle sides and thin filled rectangles of the drawings, plus the border of every group of
    touching drawings that may hold text as the finder tests it (:func:`_text_test`); edges on one line within
    3 pt are snapped together and joined across gaps of up to 3 pt, and edges under 3 pt are dropped. A
    table needs cells, and an edge of a cell meets at least two edges across it (within 3 pt), so edges that
    meet fewer are removed until none is left to remove; what remains falls into groups of meeting edges. A
    group is a region when it has at least 2 horizontal and 3 vertical positions and its edges make a table by
    the finder's own geometry (`_makes_a_table`: cells sharing corners over 2 x positions each side, words in
    two of them); each region is returned with a margin of 3 pt.
    """
    if drawings is None:
        drawings = page.get_cdrawings()
    if not drawings:
        return []
    try:
        h_raw, v_raw = _edges(drawings, page.rect, _text_test(page, words))
    except _OverBudget:  # e.g. tens of thousands of scattered marks: the finder takes the page, as before
        return [pymupdf.Rect(page.rect)]
    h, v = _merge(h_raw), _merge(v_raw)
    regions = []
    for hs, vs in _grids(h, v):
        if len({e[0] for e in hs}) < 2 or len({e[0] for e in vs}) < 3:
            continue
        x0 = min(min(e[1] for e in hs), min(e[0] for e in vs)) - _MARGIN
        x1 = max(max(e[2] for e in hs), max(e[0] for e in vs)) + _MARGIN
        y0 = min(min(e[0] for e in hs), min(e[1] for e in vs)) - _MARGIN
        y1 = max(max(e[0] for e in hs), max(e[2] for e in vs)) + _MARGIN
        if _makes_a_table(hs, vs, words):
            regions.append((x0, y0, x1, y1))
    return [pymupdf.Rect(r) for r in regions]


def _makes_a_table(hs: list[HEdge], vs: list[VEdge], words: list[tuple]) -> bool:
    """Whether a group's edges make what the finder keeps, by the finder's own geometry: its
    `edges_to_intersections` and `intersections_to_cells` on the group's edges, the cells grouped by shared
    corners as its `cells_to_tables` does, a group with two left and two right x positions (else it drops the
    group), and words in two of its cells (else `find_tables` drops the table). A framed plot inside a framed code
    example is two nested cells that share no corner: no table, no finder (pgfplots' manual, decision 60)."""
    if len(hs) * len(vs) > CELLS_BUDGET:  # as costly as the finder's own pass: let the finder decide, as before
        return True
    edges = [{"orientation": "h", "x0": x0, "x1": x1, "top": y, "bottom": y} for y, x0, x1 in hs]
    edges += [{"orientation": "v", "x0": x, "x1": x, "top": top, "bottom": bottom} for x, top, bottom in vs]
    cells = intersections_to_cells(edges_to_intersections(edges, _TOLERANCE, _TOLERANCE))
    centres = [((w[0] + w[2]) / 2, (w[1] + w[3]) / 2) for w in words]
    for group in _corner_groups(cells):
        if len({c[0] for c in group}) < 2 or len({c[2] for c in group}) < 2:
            continue
        filled = 0
        for x0, y0, x1, y1 in group:
            filled += any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)
            if filled >= 2:
                return True
    return False


def _corner_groups(cells: list[tuple[float, float, float, float]]) -> list[list[tuple[float, float, float, float]]]:
    """Cells in groups that touch at a corner, transitively: PyMuPDF's `cells_to_tables` grouping."""
    def corners(c: tuple[float, float, float, float]) -> set[tuple[float, float]]:
        return {(c[0], c[1]), (c[0], c[3]), (c[2], c[1]), (c[2], c[3])}

    groups: list[list[tuple[float, float, float, float]]] = []
    remaining = list(cells)
    while remaining:
        group = [remaining.pop(0)]
        touched = corners(group[0])
        grown = True
        while grown:
            grown = False
            for cell in list(remaining):
                if corners(cell) & touched:
                    group.append(cell)
                    touched |= corners(cell)
                    remaining.remove(cell)
                    grown = True
        groups.append(group)
    return groups


def _edges(drawings: list[dict], page_rect: pymupdf.Rect, holds_text) -> tuple[list[HEdge], list[VEdge]]:
    """The finder's edges (``make_edges``): lines within 3 pt of axis-parallel, cut to the page, as it keeps
    them (an edge is horizontal only when exactly so, else vertical at its left x), and the borders of
    touching groups that may hold text (``holds_text``)."""
    h: list[HEdge] = []
    v: list[VEdge] = []
    left, top, right, bottom = page_rect

    def line(a, b) -> None:
        ax, ay = a
        bx, by = b
        if abs(ax - bx) > _TOLERANCE and abs(ay - by) > _TOLERANCE:
            return
        x0, x1 = (ax, bx) if ax <= bx else (bx, ax)
        y0, y1 = (ay, by) if ay <= by else (by, ay)
        if x0 > right or x1 < left or y0 > bottom or y1 < top:
            return
        x0, x1, y0, y1 = max(x0, left), min(x1, right), max(y0, top), min(y1, bottom)
        if y0 == y1:
            if x0 != x1:
                h.append((y0, x0, x1))
        else:
            v.append((x0, y0, y1))

    rects = []
    for path in drawings:
        rects.append(path["rect"])
        items = path["items"]
        if path.get("closePath") and items and items[0][0] == "l" and items[-1][0] == "l":
            items = [*items, ("l", items[-1][2], items[0][1])]
        for item in items:
            kind = item[0]
            if kind == "l":
                line(item[1], item[2])
            elif kind == "re":
                ax, ay, bx, by = item[1]
                x0, x1 = min(ax, bx), max(ax, bx)
                y0, y1 = min(ay, by), max(ay, by)
                width, height = x1 - x0, y1 - y0
                if width <= _TOLERANCE and width < height:  # a filled rectangle standing for a vertical line
                    line(((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1))
                elif height <= _TOLERANCE and height < width:  # ... for a horizontal line
                    line((x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2))
                else:
                    _box(line, (x0, y0, x1, y1))
            elif kind == "qu":
                ul, ur, ll, lr = item[1]
                line(ul, ll), line(ll, lr), line(lr, ur), line(ur, ul)
    for box in _touching_groups(rects):
        if holds_text(box):
            _box(line, box)
    return h, v


def _text_test(page: pymupdf.Page, words: list[tuple]):
    """Whether a group's box may "hold text" as the finder tests it (``chars_in_rect``): a character inside
    the box in x, and inside it in y *in PDF space* (bottom-up; the finder compares those y with the box's
    top-down y, so the text it finds lies at the box's mirror image). Tested on words, 1 pt looser: a word
    reaching into the box in x, and in PDF-space y (a word's box holds its characters' boxes). Without the
    page's usual matrix (flip, shift), every box may."""
    a, b, c, d, e, f = page.transformation_matrix
    if b or c:
        return lambda box: True
    spans = sorted(
        (min(d * w[1] + f, d * w[3] + f), max(d * w[1] + f, d * w[3] + f), w[0], w[2]) for w in words
    )
    starts = [s[0] for s in spans]

    def holds_text(box) -> bool:
        x0, y0, x1, y1 = box
        for k in range(bisect_right(starts, y1 + 1)):
            py0, py1, wx0, wx1 = spans[k]
            if py1 >= y0 - 1 and wx1 >= x0 - 1 and wx0 <= x1 + 1:
                return True
        return False

    return holds_text


class _OverBudget(Exception):
    pass


def _box(line, box) -> None:
    x0, y0, x1, y1 = box
    line((x0, y0), (x0, y1)), line((x0, y1), (x1, y1)), line((x1, y1), (x1, y0)), line((x1, y0), (x0, y0))


def _touching_groups(rects: list) -> list[tuple[float, float, float, float]]:
    """Bounding boxes of groups of drawings, grown as the finder grows them (``clean_graphics``): the first
    box in (bottom, left) order absorbs every box whose corner coordinates come within 3 pt of its own, until
    none does."""
    pending = sorted(set(map(tuple, rects)), key=lambda r: (r[3], r[0]))
    out = []
    t = _TOLERANCE
    budget = GROUPING_BUDGET
    while pending:
        x0, y0, x1, y1 = pending[0]
        grown = True
        while grown:
            grown = False
            budget -= len(pending)
            if budget < 0:
                raise _OverBudget
            for i in range(len(pending) - 1, 0, -1):
                a0, b0, a1, b1 = pending[i]
                if (
                    (x0 - t <= a0 <= x1 + t or x0 - t <= a1 <= x1 + t) and (y0 - t <= b0 <= y1 + t or y0 - t <= b1 <= y1 + t)
                ) or (
                    (a0 - t <= x0 <= a1 + t or a0 - t <= x1 <= a1 + t) and (b0 - t <= y0 <= b1 + t or b0 - t <= y1 <= b1 + t)
                ):
                    x0, x1 = min(x0, a0, a1), max(x1, a0, a1)
                    y0, y1 = min(y0, b0, b1), max(y1, b0, b1)
                    del pending[i]
                    grown = True
        out.append((x0, y0, x1, y1))
        del pending[0]
    return out


def _merge(edges: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """The finder's ``merge_edges`` on (position, start, end) edges of one orientation, from those of at least
    1 pt: positions within 3 pt of the next (chained) snap to their group's mean; edges at one position join across gaps of <= 3 pt; then
    edges shorter than 3 pt are dropped."""
    edges = sorted(e for e in edges if e[2] - e[1] >= 1)  # the finder takes edges of at least 1 pt
    if not edges:
        return []
    snapped: list[tuple[float, float, float]] = []
    group = [edges[0]]
    for e in edges[1:]:
        if e[0] <= group[-1][0] + _TOLERANCE:
            group.append(e)
        else:
            snapped.extend(_snap(group))
            group = [e]
    snapped.extend(_snap(group))
    snapped.sort()
    out: list[tuple[float, float, float]] = []
    for pos, start, end in snapped:
        if out and out[-1][0] == pos and start <= out[-1][2] + _TOLERANCE:
            if end > out[-1][2]:
                out[-1] = (pos, out[-1][1], end)
        else:
            out.append((pos, start, end))
    return [e for e in out if e[2] - e[1] >= _TOLERANCE]


def _snap(group: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    mean = sum(e[0] for e in group) / len(group)
    return [(mean, start, end) for _pos, start, end in group]


def _grids(h: list[HEdge], v: list[VEdge]) -> list[tuple[list[HEdge], list[VEdge]]]:
    """Groups of edges that can hold cells: each edge meets at least 2 edges across it (within 3 pt), edges
    of a group meet each other (transitively)."""
    h = sorted(h)
    ys = [e[0] for e in h]
    t = _TOLERANCE
    meets_v: list[list[int]] = [[] for _ in v]
    meets_h: list[list[int]] = [[] for _ in h]
    for j, (x, top, bottom) in enumerate(v):
        for i in range(bisect_left(ys, top - t), bisect_right(ys, bottom + t)):
            if h[i][1] - t <= x <= h[i][2] + t:
                meets_v[j].append(i)
                meets_h[i].append(j)
    alive_h = [len(m) >= 2 for m in meets_h]
    alive_v = [len(m) >= 2 for m in meets_v]
    changed = True
    while changed:  # an edge left meeting fewer than 2 live edges cannot be a side of a cell
        changed = False
        for i, m in enumerate(meets_h):
            if alive_h[i] and sum(alive_v[j] for j in m) < 2:
                alive_h[i], changed = False, True
        for j, m in enumerate(meets_v):
            if alive_v[j] and sum(alive_h[i] for i in m) < 2:
                alive_v[j], changed = False, True
    parent = list(range(len(h) + len(v)))  # union-find: h edges first, then v edges

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for j, m in enumerate(meets_v):
        if alive_v[j]:
            for i in m:
                if alive_h[i]:
                    parent[root(len(h) + j)] = root(i)
    groups: dict[int, tuple[list[HEdge], list[VEdge]]] = {}
    for i, e in enumerate(h):
        if alive_h[i]:
            groups.setdefault(root(i), ([], []))[0].append(e)
    for j, e in enumerate(v):
        if alive_v[j]:
            groups.setdefault(root(len(h) + j), ([], []))[1].append(e)
    return list(groups.values())


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
    return [cells for cells, _rows in row_pieces(whole.header, whole.rows, max_size, size, max_chars=max_chars)]


def row_pieces(header: tuple[str, ...], body: tuple[tuple[str, ...], ...], max_size: int,
               size: Callable[[str], int] = len, *, max_chars: int | None = None,
               ) -> list[tuple[TableCells, range]]:  # fmt: skip
    """:func:`table_chunks` of a header and body rows, each piece with the indices of the body rows it holds
    (a row continued over several pieces is in each of them).

    A piece's size is summed row by row (linear in the rows, not quadratic): ``size`` must add up over lines,
    as ``len`` does and word-piece counts do (the tokenizer splits at whitespace before it counts)."""
    rows: list[tuple[tuple[str, ...], int]] = []
    for i, row in enumerate(body):
        rows += [(line, i) for line in (_continued(header, row, max_chars) if max_chars else [row])]
    if not rows:
        return [(TableCells(header, ()), range(0))]
    head = TableCells(header, ()).markdown
    head_size = size(head)
    pieces: list[list[tuple[tuple[str, ...], int]]] = []
    used = chars = 0  # the current piece's size and length, header included
    for row, i in rows:
        line = _md_row(row)
        grow = size(f"{head}\n{line}") - head_size
        if pieces and used + grow <= max_size and (max_chars is None or chars + 1 + len(line) <= max_chars):
            pieces[-1].append((row, i))
        else:
            pieces.append([(row, i)])
            used, chars = head_size, len(head)
        used, chars = used + grow, chars + 1 + len(line)
    return [(TableCells(header, tuple(r for r, _ in piece)), range(piece[0][1], piece[-1][1] + 1)) for piece in pieces]


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
