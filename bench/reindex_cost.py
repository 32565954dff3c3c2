"""What a re-index (a replay of the ingest stream into a new generation) costs, measured through `mmrag up`.

    .venv/bin/python bench/reindex_cost.py --docs 10 --pages 10

Ingests a generated corpus of text PDFs (`tests.factories.synthetic_pdf`), times the first ingest until every
document is indexed, then starts a re-index (`POST /v1/reindex`, chunk size 128 word pieces) and times it until
the alias flipped, while a client keeps searching (one query at a time) to show what serving costs meanwhile.
Prints pages per second of both, seconds per 1,000 pages, the replay/ingest ratio, the search latency before
and during the replay, and the disk both collections took at the flip. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmrag.client import client, reindex, reindex_status, search  # noqa: E402
from tests.engine import Engine  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402


def disk_mb(path: Path) -> float:
    """Blocks actually used (the engine's files are sparse: their sizes overstate the disk by far)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) / 1e6 if path.exists() else 0.0


async def searches(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with client(url, timeout=120) as http:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            await search(http, f"ledger entry {n % 50} quarterly figures", top_k=5)
            latencies.append(time.perf_counter() - started)


async def main(docs: int, pages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = Engine(root / "data", root / "engine.log", env={"MMRAG_REINDEX_GRACE_S": "3600"}).start()
        try:
            async with client(engine.url, timeout=120) as http:
                started = time.perf_counter()
                ids = []
                for i in range(docs):
                    resp = await http.post("/v1/documents", files={"file": (f"d{i}.pdf", synthetic_pdf(i, pages))})
                    resp.raise_for_status()
                    ids.append(resp.json()["doc_id"])
                for doc_id in ids:
                    while (await http.get(f"/v1/documents/{doc_id}")).json()["status"] not in ("indexed", "failed"):
                        await asyncio.sleep(0.2)
                ingest_s = time.perf_counter() - started

                idle: list[float] = []
                stop = asyncio.Event()
                task = asyncio.create_task(searches(engine.url, stop, idle))
                await asyncio.sleep(10)
                stop.set()
                await task

                during: list[float] = []
                stop = asyncio.Event()
                task = asyncio.create_task(searches(engine.url, stop, during))
                started = time.perf_counter()
                gen = await reindex(http, {"chunk_max_tokens": 128})
                while (view := await reindex_status(http, gen["id"]))["state"] == "building":
                    await asyncio.sleep(0.2)
                replay_s = time.perf_counter() - started
                stop.set()
                await task
            qdrant = engine.data_dir / "qdrant"
            old_mb, new_mb = disk_mb(qdrant / "mmrag-g1"), disk_mb(qdrant / f"mmrag-{gen['id']}")
        finally:
            engine.stop()
    total = docs * pages
    print(f"corpus: {docs} documents x {pages} pages = {total} pages (generated text PDFs)")
    print(
        f"first ingest: {ingest_s:.1f} s = {total / ingest_s:.2f} pages/s = {1000 * ingest_s / total:.0f} s per 1,000 pages"
    )
    print(f"re-index (re-parse, chunk 128): {replay_s:.1f} s = {total / replay_s:.2f} pages/s = "
          f"{1000 * replay_s / total:.0f} s per 1,000 pages; replay/ingest {replay_s / ingest_s:.2f}x; "
          f"flipped with {view['progress']['documents_done']}/{view['progress']['documents_total']} documents")  # fmt: skip
    print(f"search p50 while idle {1000 * statistics.median(idle):.0f} ms (n={len(idle)}), during the replay "
          f"{1000 * statistics.median(during):.0f} ms (n={len(during)}), 0 failed")  # fmt: skip
    print(f"disk at the flip: old collection {old_mb:.1f} MB, new {new_mb:.1f} MB (both kept for the grace period)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args()
    from bench.results import recorded

    with recorded("reindex_cost"):
        asyncio.run(main(args.docs, args.pages))
