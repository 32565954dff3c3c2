"""A change to the PDF page reader, before and after in one run: same output, and how much faster per kind of page.

    .venv/bin/python bench/parse_change.py --before HEAD~1          # the manuals of bench/parse_manuals.py
    .venv/bin/python bench/parse_change.py --before main --pages 40  # a smoke run

``--before REF`` is a git revision of this repository: its ``documents/layout.py``, ``tables.py`` and
``images.py`` (they import only each other) are loaded as a separate package beside the working tree's. Every
page of every manual is read by both, in alternating order (the first reader of a page pays for loading its
fonts), and the two ``PageContent`` values are compared whole: any page that differs is listed. pages/s is
pages over the CPU time of the reader's ``extract_page`` calls, per kind ("plain": no vector drawing; the
rest: with drawings). Results go to stdout and ``bench/results/parse_change.md``. One run on a shared machine:
compare the two columns of the same run only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymupdf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import documents.layout as after  # noqa: E402
from bench import parse_manuals  # noqa: E402
from bench.results import recorded  # noqa: E402

MODULES = ("images", "tables", "layout")  # in import order


def load_before(ref: str, into: Path):  # noqa: ANN201
    """REF's page reader as the package ``documents_before`` (its modules import each other relatively)."""
    package = into / "documents_before"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:documents/{name}.py"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        (package / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location("documents_before", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])  # fmt: skip
    sys.modules["documents_before"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["documents_before"])
    return importlib.import_module("documents_before.layout")


def timed(reader, page: pymupdf.Page) -> tuple[float, str]:  # noqa: ANN001
    begin = time.process_time()
    content = reader.extract_page(page)
    return time.process_time() - begin, repr(content)  # dataclass reprs name no module: comparable across the two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision whose page reader is compared (e.g. HEAD~1)")
    ap.add_argument("--pages", type=int, help="only the first N pages of each manual")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(args.before, Path(tmp))
        seconds = {"plain": [0, 0.0, 0.0], "drawings": [0, 0.0, 0.0]}  # pages, before s, after s
        differing: list[str] = []
        for package, member in parse_manuals.CORPUS:
            path = parse_manuals.fetch(package, member)
            doc = pymupdf.open(path)
            for i in range(min(doc.page_count, args.pages or doc.page_count)):
                page = doc[i]
                if i % 2:
                    t_before, r_before = timed(before, page)
                    t_after, r_after = timed(after, page)
                else:
                    t_after, r_after = timed(after, page)
                    t_before, r_before = timed(before, page)
                row = seconds["drawings" if page.get_cdrawings() else "plain"]
                row[0] += 1
                row[1] += t_before
                row[2] += t_after
                if r_before != r_after:
                    differing.append(f"{path.name} p{i + 1}")
            doc.close()
            print(f"{path.name}: read", flush=True)
    print(f"\npage reader at {args.before} (before) vs the working tree (after), CPU time of extract_page")
    print(f"  {'kind':10} {'pages':>6} {'before p/s':>11} {'after p/s':>10} {'after/before':>13}")
    for kind, (pages, t_before, t_after) in seconds.items():
        if pages:
            print(f"  {kind:10} {pages:6d} {pages / t_before:11.1f} {pages / t_after:10.1f} {t_before / t_after:12.2f}x")
    print(f"pages whose content differs: {len(differing)}" + (f" ({', '.join(differing[:20])})" if differing else ""))


if __name__ == "__main__":
    with recorded("parse_change"):
        main()
