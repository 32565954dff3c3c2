"""Parser speed on office files made here (documents/formats), and table pieces sized row by row (after) vs the
piece re-rendered and re-counted for every row added (before), in one run, with the pieces compared.

    .venv/bin/python bench/parse_office.py             # about a minute on 2 busy cores
    .venv/bin/python bench/parse_office.py --cells 20000   # a smaller workbook, a smoke run

Files: a workbook of one sheet at the cell limit in one column (the most rows, so the most pieces) and in ten
columns, a DOCX of 400 sections of 5 paragraphs and a table, a PPTX of 200 slides with a table and notes each.
Times are the process's CPU time (the parser is single-threaded; CPU time leaves out waiting for other jobs on a
shared machine). Written to bench/results/parse_office.md. Compare before and after of the same run only.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docx  # noqa: E402
import openpyxl  # noqa: E402
import pptx  # noqa: E402
from pptx.util import Inches  # noqa: E402

from bench.results import recorded  # noqa: E402
from documents import ParseSettings, parse  # noqa: E402
from documents.chunks import wordpiece_counter  # noqa: E402
from documents.filetypes import DOCX, PPTX, XLSX  # noqa: E402
from documents.tables import TableCells, row_pieces  # noqa: E402


def before(header: tuple[str, ...], body: list[tuple[str, ...]], max_size: int, size) -> list[TableCells]:  # noqa: ANN001
    """The pieces as `table_chunks` cut them until decision 74: the whole piece rendered and counted per row."""
    pieces: list[list[tuple[str, ...]]] = []
    for row in body:
        candidate = TableCells(header, (*pieces[-1], row)).markdown if pieces else ""
        if pieces and size(candidate) <= max_size:
            pieces[-1].append(row)
        else:
            pieces.append([row])
    return [TableCells(header, tuple(p)) for p in pieces]


def workbook(cells: int, columns: int) -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Data")
    sheet.append([f"column {c}" for c in range(columns)])
    for r in range(cells // columns):
        sheet.append([f"value {r}-{c}" for c in range(columns)])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def document() -> bytes:
    d = docx.Document()
    for s in range(400):
        d.add_heading(f"Section {s}", 1)
        for p in range(5):
            d.add_paragraph(f"Paragraph {p} of section {s} says something about pumps, seals and valves. " * 3)
        t = d.add_table(rows=4, cols=3)
        for i in range(4):
            for j in range(3):
                t.cell(i, j).text = f"cell {s}.{i}.{j}"
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def deck() -> bytes:
    p = pptx.Presentation()
    for s in range(200):
        slide = p.slides.add_slide(p.slide_layouts[5])
        slide.shapes.title.text = f"Slide {s}"
        t = slide.shapes.add_table(4, 3, Inches(1), Inches(2), Inches(6), Inches(2)).table
        for i in range(4):
            for j in range(3):
                t.cell(i, j).text = f"cell {s}.{i}.{j}"
        slide.notes_slide.notes_text_frame.text = f"Notes of slide {s}: mention the budget."
    out = io.BytesIO()
    p.save(out)
    return out.getvalue()


def timed_parse(data: bytes, content_type: str) -> tuple[float, int, int]:
    started = time.process_time()
    with parse(data, content_type) as parsed:
        pages = list(parsed)
    return time.process_time() - started, parsed.page_count, sum(len(p.chunks) for p in pages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=ParseSettings().sheet_max_cells, help="cells of each workbook")
    args = parser.parse_args()
    count = wordpiece_counter()
    print("| file | bytes | pages | chunks | CPU s |\n|---|---|---|---|---|")
    for name, (data, ctype) in {
        f"xlsx, {args.cells:,} cells in 1 column": (workbook(args.cells, 1), XLSX),
        f"xlsx, {args.cells:,} cells in 10 columns": (workbook(args.cells, 10), XLSX),
        "docx, 400 sections": (document(), DOCX),
        "pptx, 200 slides": (deck(), PPTX),
    }.items():
        seconds, pages, chunks = timed_parse(data, ctype)
        print(f"| {name} | {len(data):,} | {pages} | {chunks:,} | {seconds:.1f} |")
    rows = min(args.cells, 20_000)
    header, body = ("column 0",), [(f"value {r}-0",) for r in range(rows)]
    started = time.process_time()
    old = before(header, body, 240, count)
    old_s = time.process_time() - started
    started = time.process_time()
    new = [cells for cells, _ in row_pieces(header, tuple(body), 240, count)]
    new_s = time.process_time() - started
    print(f"\nTable pieces of {rows:,} one-column rows (240 word pieces a piece): before {old_s:.1f} s CPU, "
          f"after {new_s:.1f} s CPU, {old_s / new_s:.1f}x; {len(new):,} pieces, the same: {old == new}")


if __name__ == "__main__":
    with recorded("parse_office"):
        main()
