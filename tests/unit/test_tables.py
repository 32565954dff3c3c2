"""Table finding: PyMuPDF's finder runs only on pages whose drawings can form a ruled grid
(``documents.tables.table_regions``), and finds what it finds when it runs on every page."""

from __future__ import annotations

import math

import pymupdf
import pytest

from documents.layout import extract_page
from documents.tables import find_tables, table_regions
from tests.factories import (
    A4,
    TABLE_3X4,
    _draw_table,
    make_spanning_table_pdf,
    make_table_pdf,
    spanning_table_rows,
)


def _draw_plot(page: pymupdf.Page, *, smooth: bool, x0: float = 72, y0: float = 90, width: float = 300,
               height: float = 180) -> None:  # fmt: skip
    """A line plot as a plotting package draws it: a framed axis box, tick marks and labels, a curve (Bezier
    pieces when ``smooth``, else a polyline of short segments), a legend box inside the frame, an axis title."""
    frame = pymupdf.Rect(x0, y0, x0 + width, y0 + height)
    page.draw_rect(frame, color=(0, 0, 0), width=0.6)
    for i in range(7):
        x = x0 + i * width / 6
        page.draw_line((x, frame.y1), (x, frame.y1 - 4), width=0.4)
        page.insert_text((x - 4, frame.y1 + 12), str(i), fontsize=8)
    for i in range(5):
        y = frame.y1 - i * height / 4
        page.draw_line((x0, y), (x0 + 4, y), width=0.4)
        page.insert_text((x0 - 18, y + 3), f"{i * 0.5:.1f}", fontsize=8)
    curve = [(x0 + t * width / 120, frame.y1 - (1 + math.sin(t / 12)) * height / 2.2) for t in range(121)]
    if smooth:
        shape = page.new_shape()
        for a, b, c, d in zip(curve[0::3], curve[1::3], curve[2::3], curve[3::3]):
            shape.draw_bezier(a, b, c, d)
        shape.finish(color=(0.1, 0.2, 0.8), width=1)
        shape.commit()
    else:
        page.draw_polyline(curve, color=(0.1, 0.2, 0.8), width=1)
    legend = pymupdf.Rect(frame.x1 - 80, y0 + 8, frame.x1 - 8, y0 + 26)
    page.draw_rect(legend, color=(0, 0, 0), width=0.4)
    page.draw_line((legend.x0 + 4, legend.y0 + 9), (legend.x0 + 20, legend.y0 + 9), color=(0.1, 0.2, 0.8))
    page.insert_text((legend.x0 + 24, legend.y0 + 12), "sin(t)", fontsize=8)
    page.insert_text((x0 + width / 2 - 20, frame.y1 + 26), "time (s)", fontsize=9)


def _plot_pdf(*, table: bool, smooth: bool = False) -> bytes:
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 70), "Figure 3 shows the response; Table 2 lists the parts.", fontsize=11)
        _draw_plot(page, smooth=smooth)
        if table:
            _draw_table(page, TABLE_3X4, y0=420)
        page.insert_text((72, 700), "The response settles after six seconds.", fontsize=11)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def _both(page: pymupdf.Page) -> tuple[list, list]:
    """(tables found with the pre-check, tables found by the finder on the whole page)."""
    words = page.get_text("words")
    return find_tables(page, words), find_tables(page, words, everywhere=True)


@pytest.mark.parametrize("smooth", [False, True], ids=["polyline", "bezier"])
def test_page_with_a_plot_and_no_table_yields_no_table_and_the_finder_is_not_run(smooth: bool) -> None:
    page = pymupdf.open(stream=_plot_pdf(table=False, smooth=smooth), filetype="pdf")[0]
    assert page.get_cdrawings(), "the plot must be vector drawings"
    assert table_regions(page, page.get_text("words")) == []  # nothing for the finder to look at
    found, everywhere = _both(page)
    assert found == everywhere == []
    assert extract_page(page).tables == ()


def test_ruled_table_on_a_page_with_a_plot_is_found_in_full() -> None:
    page = pymupdf.open(stream=_plot_pdf(table=True, smooth=True), filetype="pdf")[0]
    [region] = table_regions(page, page.get_text("words"))
    assert region.contains(pymupdf.Rect(72, 420, 72 + 4 * 110, 420 + 3 * 24))
    assert not region.intersects(pymupdf.Rect(72, 90, 372, 270))  # the plot is no region
    found, everywhere = _both(page)
    assert found == everywhere
    [table] = extract_page(page).tables
    assert [list(r) for r in table.rows] == TABLE_3X4 and table.col_count == 4
    assert table.bbox == (72.0, 420.0, 512.0, 492.0)


@pytest.mark.parametrize(
    "pdf",
    [make_table_pdf(), make_table_pdf([["a", "b"], ["1", "2"]]), make_spanning_table_pdf(24, 10),
     make_spanning_table_pdf(24, 10, repeat_header=False)],  # fmt: skip
    ids=["3x4", "2x2", "spanning", "spanning-no-repeat"],
)
def test_every_table_fixture_is_found_as_the_finder_finds_it_on_the_whole_page(pdf: bytes) -> None:
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    for page in doc:
        assert table_regions(page, page.get_text("words")), f"page {page.number + 1}: its table has no region"
        found, everywhere = _both(page)
        assert len(found) == 1 and found == everywhere


def test_spanning_fixture_keeps_every_row() -> None:
    doc = pymupdf.open(stream=make_spanning_table_pdf(24, 10, repeat_header=False), filetype="pdf")
    rows = [list(r) for page in doc for t in find_tables(page) for r in t.rows if r[0] != "Code"]
    assert rows == spanning_table_rows(34)


def test_a_grid_without_text_is_no_region() -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=A4.width, height=A4.height)
    _draw_table(page, [["", "", ""], ["", "", ""]], y0=300)
    page.insert_text((72, 100), "An empty form follows.", fontsize=11)
    assert table_regions(page, page.get_text("words")) == []
    assert find_tables(page, everywhere=True) == []  # the finder drops it too


@pytest.mark.parametrize("labels", [1, 2], ids=["one-label", "two-labels"])
def test_a_grid_with_words_in_fewer_than_two_of_its_cells_is_no_region(labels: int) -> None:
    """A plot's grid lines (3 x 3 cells) with one label inside is not a table the finder would keep (a table has
    two filled cells at least): no region, no finder. Two labels in two cells make it a region again."""
    with pymupdf.open() as doc:
        page = doc.new_page(width=A4.width, height=A4.height)
        for k in range(4):
            page.draw_line((100, 200 + 40 * k), (400, 200 + 40 * k), color=(0, 0, 0), width=0.6)
            page.draw_line((100 + 100 * k, 200), (100 + 100 * k, 320), color=(0, 0, 0), width=0.6)
        for n in range(labels):
            page.insert_text((120 + 100 * n, 225), f"label{n}", fontsize=9)
        words = page.get_text("words")
        assert len(words) == labels
        assert bool(table_regions(page, words)) is (labels == 2)
        found, everywhere = _both(page)
        assert found == everywhere  # the finder keeps no one-cell grid either (find_tables drops it)


def test_a_framed_plot_inside_a_framed_example_is_no_region() -> None:
    """pgfplots' manual: a code example's frame holds a plot's axis box, their tops within the snap tolerance. Edge
    positions alone look like a grid with words in its cells; the finder's cells (two nested boxes that share no
    corner) make no table, so the finder is not run (it was, on 66 of 78 such pages, for nothing)."""
    with pymupdf.open() as doc:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.draw_rect(pymupdf.Rect(104, 570, 291, 722), color=(0, 0, 0), width=0.4)  # the example's frame
        page.draw_rect(pymupdf.Rect(130, 572, 284, 699), color=(0, 0, 0), width=0.4)  # the axis box
        for n, label in enumerate(["0", "10", "20"]):
            page.insert_text((135 + 60 * n, 712), label, fontsize=8)  # tick labels under the axis box
        page.insert_text((140, 600), "f(x)", fontsize=8)  # a label inside the plot
        words = page.get_text("words")
        assert table_regions(page, words) == []
        found, everywhere = _both(page)
        assert found == everywhere == []


def test_a_dense_grid_goes_to_the_finder_without_the_cell_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing cells costs what the finder's own pass costs (more than quadratic in the edges): past
    `CELLS_BUDGET` the finder decides alone, so a 60 x 60 plot grid is not paid for twice."""
    import documents.tables as tables

    calls: list[int] = []
    real = tables.intersections_to_cells
    monkeypatch.setattr(tables, "intersections_to_cells", lambda i: calls.append(len(i)) or real(i))
    with pymupdf.open() as doc:
        page = doc.new_page(width=800, height=800)
        for k in range(61):
            page.draw_line((50, 50 + 700 * k / 60), (750, 50 + 700 * k / 60), width=0.3)
            page.draw_line((50 + 700 * k / 60, 50), (50 + 700 * k / 60, 750), width=0.3)
        page.insert_text((60, 62), "a", fontsize=5)
        assert table_regions(page, page.get_text("words")) and calls == []
