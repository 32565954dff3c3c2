"""Page pictures of the web UI: render time per width, and what the in-process LRU saves.

    python bench/page_render.py [--rounds 20]

Renders page 3 of the five-page test PDF (an A4 text page) and a 1600 x 1200 photo-like PNG with
`edge_api.page_images` at the widths the UI asks for (thumbnails ~300 px, the viewer ~800-1600 px), then reads
the same key from a `ByteLRU`. The machine is shared: compare the ratios within one run, not absolute numbers
across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_api.page_images import ByteLRU, render_page  # noqa: E402
from tests.factories import five_page_pdf_with_fact, make_png  # noqa: E402

WIDTHS = (300, 800, 1600)


def median_ms(fn, rounds: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    pdf, _, _ = five_page_pdf_with_fact()
    png = make_png(1600, 1200)
    lru = ByteLRU(64 * 1024 * 1024)
    print(f"{'source':<10} {'width':>6} {'render ms':>10} {'PNG KiB':>8} {'LRU hit ms':>11} {'render/hit':>11}")
    for name, source, page in (("pdf page", pdf, 3), ("png image", png, 1)):
        for width in WIDTHS:
            rendered = render_page(source, page, width)
            render = median_ms(lambda: render_page(source, page, width), rounds)  # noqa: B023
            lru.put((name, width), rendered)
            hit = median_ms(lambda: lru.get((name, width)), rounds * 50)  # noqa: B023
            print(f"{name:<10} {width:>6} {render:>10.2f} {len(rendered.png) / 1024:>8.1f} {hit:>11.4f} "
                  f"{render / hit:>10.0f}x")  # fmt: skip


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("page_render"):
        main()
