"""Parser speed by kind of page: text, tables, image-heavy, scanned (OCR), with OCR settings compared.

    .venv/bin/python bench/parse_speed.py                 # default sizes (~2-4 minutes on 2 busy cores)
    .venv/bin/python bench/parse_speed.py --quick         # smaller, for a smoke run
    .venv/bin/python bench/parse_speed.py --ocr-only      # only the OCR settings comparison

Every case runs ``documents.parse`` (page by page, as the parser agent does) on a generated PDF, and in the OCR
cases reads its OCR work with ``documents.read_page`` / ``read_image`` (as the OCR agent does); pages/s is pages
divided by wall time after one warm-up page (the OCR engine's model load is not counted). "peak py MB" is the
tracemalloc peak of Python allocations in a second, traced pass (page content, image bytes, rendered pages,
numpy buffers; OCR cases: its first 2 pages); the
process's max RSS (ONNX Runtime arenas included) is printed at the end. Figures from one run on a shared
machine: compare runs interleaved on the same machine, not with numbers from elsewhere.
"""

from __future__ import annotations

import argparse
import resource
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from documents import ParseSettings, page_raster, parse, read_image, read_page  # noqa: E402
from documents.ocr import OcrSettings  # noqa: E402
from tests.factories import (  # noqa: E402
    A4,
    make_image_pages_pdf,
    make_scanned_pdf,
    make_spanning_table_pdf,
    synthetic_pages,
    synthetic_pdf,
)

# rapidocr 3's own defaults (det: shorter side scaled to >= 736; 0/180 classifier on; 6 lines per batch).
RAPIDOCR_DEFAULTS = OcrSettings(dpi=150, det_limit_side_len=736, det_limit_type="min", use_cls=True, rec_batch_num=6)


def dense_scan_lines(chars: int = 3000) -> list[str]:
    """~``chars`` characters of prose wrapped at 95 characters: a dense manual page."""
    prose = " ".join(synthetic_pages(7, 3, 20))[:chars]
    return textwrap.wrap(prose, 95)


def dense_scanned_pdf(pages: int) -> bytes:
    lines = dense_scan_lines()
    return make_scanned_pdf(lines, pages=pages, fontsize=8.5)


def _walk(pdf: bytes, ocr: OcrSettings | None) -> tuple[int, int, int, int]:
    """(pages, images, tables, OCR characters) of one pass; OCR work is read only when ``ocr`` is given."""
    pages = images = tables = ocr_chars = 0
    settings = ParseSettings(ocr=ocr) if ocr is not None else ParseSettings()
    with parse(pdf, "application/pdf", settings) as doc:
        for page in doc:
            pages += 1
            images += sum(work.kind == "image" for work in page.ocr)
            tables += len({chunk.table_id for chunk in page.chunks if chunk.table_id})
            if ocr is None:
                continue
            for work in page.ocr:
                read = (read_page(work.raster, work.bbox, settings) if work.kind == "page"
                        else read_image(work.raster, work.caption, work.nearby_text, work.bbox, settings))  # fmt: skip
                ocr_chars += sum(len(chunk.text) for chunk in read)
    return pages, images, tables, ocr_chars


def run_case(name: str, pdf: bytes, *, ocr: OcrSettings | None = None) -> dict:
    """Timed pass (no tracing), then a traced pass for the memory peak (OCR cases: first 2 pages only, the
    peak is per page)."""
    _walk(_first_page(pymupdf.open(stream=pdf)), ocr)  # warm-up (model load)
    start = time.perf_counter()
    pages, images, tables, ocr_chars = _walk(pdf, ocr)
    elapsed = time.perf_counter() - start
    traced = pdf if ocr is None else _first_page(pymupdf.open(stream=pdf), 2)
    tracemalloc.start()
    _walk(traced, ocr)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"case": name, "pages": pages, "seconds": elapsed, "pages/s": pages / elapsed, "images": images,
            "tables": tables, "ocr chars": ocr_chars, "peak py MB": peak / 1e6}  # fmt: skip


def _first_page(doc: pymupdf.Document, pages: int = 1) -> bytes:
    one = pymupdf.open()
    one.insert_pdf(doc, from_page=0, to_page=min(pages, doc.page_count) - 1)
    return one.tobytes()


def ocr_settings_sweep(pages: int) -> list[dict]:
    """Seconds per dense scanned page (~3,000 characters) for OCR settings, and word recall vs the truth; a page
    is rendered and read as the parser and OCR agents do (`page_raster`, then `read_page`)."""
    lines = dense_scan_lines()
    truth = set(" ".join(lines).split())
    doc = pymupdf.open(stream=dense_scanned_pdf(pages), filetype="pdf")
    variants = [
        ("rapidocr defaults (150 dpi, det min 736, cls, batch 6)", RAPIDOCR_DEFAULTS),
        ("ours: 150 dpi, det max 960, no cls, batch 6", OcrSettings()),
        ("150 dpi, det max 1280, no cls, batch 6", OcrSettings(det_limit_side_len=1280)),
        ("100 dpi, det max 960, no cls, batch 6", OcrSettings(dpi=100)),
        ("150 dpi, det max 960, no cls, batch 16", OcrSettings(rec_batch_num=16)),
        ("ours + 2 intra-op threads", OcrSettings(threads=2)),
        ("ours + 1 intra-op thread", OcrSettings(threads=1)),
    ]
    rows = []
    for name, settings in variants:

        def words(page: pymupdf.Page, settings: OcrSettings = settings) -> set[str]:
            raster, bbox = page_raster(page, settings)
            return {w for chunk in read_page(raster, bbox, ParseSettings(ocr=settings)) for w in chunk.text.split()}

        words(doc[0])  # warm-up: model load
        start = time.perf_counter()
        found: set[str] = set()
        for page in doc:
            found |= words(page)
        elapsed = (time.perf_counter() - start) / doc.page_count
        rows.append({"OCR settings": name, "s/page": elapsed, "pages/s": 1 / elapsed,
                     "word recall": len(truth & found) / len(truth)})  # fmt: skip
        print(f"  {name}: {elapsed:.2f} s/page", file=sys.stderr, flush=True)
    doc.close()
    return rows


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
    print()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--ocr-only", action="store_true", help="only the OCR settings sweep")
    args = parser.parse_args()
    text_pages, image_pages, scan_pages = (10, 6, 2) if args.quick else (100, 40, 4)

    if not args.ocr_only:
        text_pdf = synthetic_pdf(1, text_pages)
        rows = [
            run_case("text pages", text_pdf),
            run_case("ruled tables spanning pages", make_spanning_table_pdf(24, 24)),
            run_case("image pages (1 photo/page), no OCR", make_image_pages_pdf(image_pages)),
            run_case("image pages, OCR of images", make_image_pages_pdf(max(2, image_pages // 4)), ocr=OcrSettings()),
            run_case("sparse scans (4 lines/page), OCR", make_scanned_pdf(pages=scan_pages * 2), ocr=OcrSettings()),
            run_case("dense scans (~3,000 chars/page), OCR", dense_scanned_pdf(scan_pages), ocr=OcrSettings()),
        ]
        print_table(rows)
    print_table(ocr_settings_sweep(1 if args.quick else 2))
    print(f"max RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB;"
          f" A4 page at 150 dpi grey = {A4.width * A4.height * (150 / 72) ** 2 / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("parse_speed"):
        main()
