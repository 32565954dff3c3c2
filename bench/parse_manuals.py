"""Parser speed on real PDF manuals, PyMuPDF's table finder on every page with drawings (before) vs only where
the drawings can form a ruled grid (after, ``documents.tables.table_regions``), in one run.

    .venv/bin/python bench/parse_manuals.py                  # the whole corpus (~2-4 minutes on 2 busy cores)
    .venv/bin/python bench/parse_manuals.py --pages 40       # the first 40 pages of each manual, a smoke run

The corpus is public manuals shipped by Debian documentation packages (see CORPUS: package and file). Missing
ones are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into ``$MMRAG_BENCH_CACHE``
(default ``~/.cache/mmrag-bench/debian``), outside the repository. Each manual is parsed page by page with
``documents.layout.iter_pages`` (no OCR), after then before. pages/s is pages over the process's CPU time (the
parser is single-threaded; CPU time leaves out waiting for other jobs on a shared machine), wall pages/s too,
per manual and per kind of page ("plain": no vector drawing; "drawings": drawings, no table found before;
"tables": a table found before; each page's CPU time in extract_page). Every page's
tables (their rows) before and after are compared; each difference is listed. Results go to stdout and to
``--out`` (markdown). Figures from one run on a shared machine: compare before and after of the same run.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import documents.layout as layout  # noqa: E402
from bench import debian  # noqa: E402
from documents import tables  # noqa: E402

# (Debian package, file inside it): long manuals with ruled tables, plots, diagrams, screenshots and music
# notation (a stress case: staff lines and stems are ruled grids to the finder).
CORPUS = [
    ("asymptote-doc", "usr/share/doc/asymptote/asymptote.pdf"),
    ("texlive-metapost-doc", "usr/share/doc/texlive-doc/metapost/base/mpman.pdf"),
    ("texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/beamer/beameruserguide.pdf"),
    ("lilypond-doc-pdf", "usr/share/doc/lilypond/html/Documentation/learning.pdf"),
    ("texlive-pictures-doc", "usr/share/doc/texlive-doc/latex/pgfplots/pgfplots.pdf"),  # plots on most pages
]
KINDS = ("plain", "drawings", "tables")


def fetch(package: str, path: str) -> Path:
    """The manual's path, downloading and unpacking its package first when missing (`bench.debian`)."""
    return debian.member(package, path)


def parse(path: Path, pages: int | None, *, everywhere: bool) -> tuple[float, float, list[float], list[list[tuple]]]:
    """(wall seconds, CPU seconds, CPU seconds of each page's extract_page, each page's tables as row tuples) of
    one pass of iter_pages (which yields a page only once the next one is extracted: each page is timed inside)."""
    finder = functools.partial(tables.find_tables, everywhere=everywhere)
    extract, per_page = layout.extract_page, []

    def timed(*a, **kw):
        begin = time.process_time()
        try:
            return extract(*a, **kw)
        finally:
            per_page.append(time.process_time() - begin)

    layout.find_tables, layout.extract_page = finder, timed
    doc = pymupdf.open(path)
    try:
        if pages is not None and pages < doc.page_count:
            doc.select(list(range(pages)))
        found = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for content in layout.iter_pages(doc):
            found.append([t.rows for t in content.tables])
        return time.perf_counter() - start, time.process_time() - cpu_start, per_page, found
    finally:
        doc.close()
        layout.find_tables, layout.extract_page = tables.find_tables, extract


def kinds_of(path: Path, pages: int | None, before: list[list[tuple]]) -> list[str]:
    doc = pymupdf.open(path)
    try:
        n = min(doc.page_count, pages or doc.page_count)
        return [("tables" if before[i] else "drawings") if doc[i].get_cdrawings() else "plain" for i in range(n)]
    finally:
        doc.close()


STAGES = {  # what extract_page does on a page, by the calls it makes (private helpers: a bench may look inside)
    "text page": lambda page, textpage, words, paths: page.get_textpage(flags=layout._PDF_TEXT_FLAGS),
    "words": lambda page, textpage, words, paths: page.get_text("words", textpage=textpage),
    "drawings": lambda page, textpage, words, paths: page.get_cdrawings(),
    "table pre-check": lambda page, textpage, words, paths: tables.table_regions(page, words, paths) if paths else [],
    "text blocks": lambda page, textpage, words, paths: layout._text_blocks(page, textpage, []),
    "image placements": lambda page, textpage, words, paths: layout._image_placements(
        page, sparse_text=sum(len(w[4]) for w in words) < layout.NEEDS_OCR_MAX_CHARS
    ),
}


def stage_costs(path: Path, kinds: list[str], kind: str, limit: int = 60) -> dict[str, float]:
    """Mean CPU ms of each stage on up to ``limit`` pages of ``kind``."""
    doc = pymupdf.open(path)
    try:
        pages = [doc[i] for i, k in enumerate(kinds) if k == kind][:limit]
        textpages = [page.get_textpage(flags=layout._PDF_TEXT_FLAGS) for page in pages]
        inputs = [(p, tp, p.get_text("words", textpage=tp), p.get_cdrawings()) for p, tp in zip(pages, textpages)]
        out = {}
        for name, stage in STAGES.items():
            begin = time.process_time()
            for page, textpage, words, paths in inputs:
                stage(page, textpage, words, paths)
            out[name] = 1e3 * (time.process_time() - begin) / max(1, len(pages))
        return out
    finally:
        doc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, help="only the first N pages of each manual")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "parse_manuals.md"))
    args = ap.parse_args()
    lines = ["# Parser on real manuals: table finder everywhere (before) vs where a grid can be (after)\n",
             f"`{' '.join(['.venv/bin/python bench/parse_manuals.py', *sys.argv[1:]])}`, "
             f"PyMuPDF {pymupdf.VersionBind}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
             "pages/s = pages / CPU seconds of this process (the parser is single-threaded; CPU time does not count "
             "waiting for the other jobs of a shared machine); wall pages/s for reference.\n",
             "| manual (package) | pages | before pages/s | after pages/s | speed-up | before wall pages/s | "
             "after wall pages/s | tables before | tables after |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    totals = {"pages": 0, "before": 0.0, "after": 0.0, "wall before": 0.0, "wall after": 0.0, "tb": 0, "ta": 0}
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # pages, before s, after s
    stages: dict[str, list[dict[str, float]]] = defaultdict(list)
    diffs: list[str] = []
    for package, member in CORPUS:
        path = fetch(package, member)
        parse(path, 2, everywhere=False)  # warm-up: imports, fonts
        # After first: whatever a second pass over the same file gains from warm caches goes to "before".
        t_after, c_after, pp_after, after = parse(path, args.pages, everywhere=False)
        t_before, c_before, pp_before, before = parse(path, args.pages, everywhere=True)
        n = len(before)
        tb, ta = sum(map(len, before)), sum(map(len, after))
        kinds = kinds_of(path, args.pages, before)
        for kind in ("plain", "drawings"):
            if kind in kinds:
                stages[kind].append(stage_costs(path, kinds, kind))
        for i, kind in enumerate(kinds):
            by_kind[kind][0] += 1
            by_kind[kind][1] += pp_before[i]
            by_kind[kind][2] += pp_after[i]
        for i, (b, a) in enumerate(zip(before, after)):
            if b != a:
                lost = [t[0] for t in b if t not in a]
                new = [t[0] for t in a if t not in b]
                diffs.append(f"- {path.name} p{i + 1}: before {len(b)} tables, after {len(a)}; only before (first "
                             f"rows): {lost}; only after: {new}")  # fmt: skip
        name = f"{path.name} ({package})"
        lines.append(f"| {name} | {n} | {n / c_before:.1f} | {n / c_after:.1f} | {c_before / c_after:.1f}x | "
                     f"{n / t_before:.1f} | {n / t_after:.1f} | {tb} | {ta} |")  # fmt: skip
        totals["pages"] += n
        totals["before"] += c_before
        totals["after"] += c_after
        totals["wall before"] += t_before
        totals["wall after"] += t_after
        totals["tb"] += tb
        totals["ta"] += ta
        print(lines[-1], flush=True)
    n = totals["pages"]
    lines.append(f"| **all** | {n} | {n / totals['before']:.1f} | {n / totals['after']:.1f} | "
                 f"{totals['before'] / totals['after']:.1f}x | {n / totals['wall before']:.1f} | "
                 f"{n / totals['wall after']:.1f} | {totals['tb']} | {totals['ta']} |")  # fmt: skip
    lines += ["", "By kind of page (CPU time of each page's extract_page):", "",
              "| kind | pages | before pages/s | after pages/s |", "|---|---|---|---|"]  # fmt: skip
    for kind in KINDS:
        pages, sb, sa = by_kind[kind]
        if pages:
            lines.append(f"| {kind} | {pages} | {pages / sb:.1f} | {pages / sa:.1f} |")
    lines += ["", "Where a page's time goes (mean CPU ms of each call of extract_page, up to 60 pages of the kind per "
              "manual, averaged over the manuals; the pre-check runs only on pages with drawings):",
              "", "| kind | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]  # fmt: skip
    for kind, rows in stages.items():
        lines.append(f"| {kind} | " + " | ".join(f"{sum(r[n] for r in rows) / len(rows):.2f}" for n in STAGES) + " |")
    lines += ["", f"Pages whose tables differ before/after: {len(diffs)}", *diffs]
    text = "\n".join(lines) + "\n"
    print("\n".join(lines[-(len(KINDS) + len(stages) + len(diffs) + 11):]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
