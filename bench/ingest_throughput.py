"""Ingest throughput: the running engine (HTTP -> JetStream -> agents) vs the same work in-process.

    make bench                     # 50 PDFs x 10 pages (default)
    .venv/bin/python bench/ingest_throughput.py --docs 10 --pages 5

Prints pages/s and upload-to-indexed latencies for the engine, pages/s for parse + embed + index called
directly (no NATS, no HTTP), and their ratio from this one run. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.embedding import TextEmbedder  # noqa: E402
from agents.indexer import to_point  # noqa: E402
from agents.parser import chunk_blocks, extract_pdf  # noqa: E402
from agents.vectorstore import CollectionSchema, EdgeShardStore  # noqa: E402
from contracts.messages import EmbeddedChunk  # noqa: E402
from tests.engine import Engine, upload_bytes  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402


def in_process(pdfs: list[bytes], workdir: Path, *, batch: int = 64) -> float:
    """Seconds to parse, chunk, embed and durably index every PDF in this process."""
    embedder = TextEmbedder()  # loaded before the clock starts, as the engine's is
    store = EdgeShardStore(workdir / "inproc")
    store.create_collection("bench", CollectionSchema(text_dim=embedder.dim))
    start = time.perf_counter()
    for n, pdf in enumerate(pdfs):
        _, blocks = extract_pdf(pdf)
        chunks = chunk_blocks(blocks, doc_id=f"d{n}", tenant="default", filename=f"d{n}.pdf")
        for i in range(0, len(chunks), batch):
            part = chunks[i : i + batch]
            vectors = embedder.embed([c.text for c in part])
            points = [to_point("bench", 1, EmbeddedChunk(**c.model_dump(), vector=v)) for c, v in zip(part, vectors, strict=True)]
            store.upsert("bench", points)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


async def through_engine(engine: Engine, pdfs: list[bytes]) -> tuple[float, list[float]]:
    """Seconds from the first upload to the last `indexed`, and each document's upload-to-indexed time."""
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        uploaded: dict[str, float] = {}
        for n, pdf in enumerate(pdfs):
            resp = await upload_bytes(http, engine.url, pdf, f"bench{n}.pdf")
            uploaded[(await resp.json())["doc_id"]] = time.perf_counter()
        latencies: dict[str, float] = {}
        while len(latencies) < len(uploaded):
            for doc_id, t0 in uploaded.items():
                if doc_id in latencies:
                    continue
                async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
                    status = (await resp.json())["status"]
                if status == "failed":
                    raise RuntimeError(f"{doc_id} failed")
                if status == "indexed":
                    latencies[doc_id] = time.perf_counter() - t0
            await asyncio.sleep(0.05)
        return time.perf_counter() - start, list(latencies.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args()
    pdfs = [synthetic_pdf(n, pages=args.pages) for n in range(args.docs)]
    pages = args.docs * args.pages

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine = Engine(work / "data", work / "engine.log").start()
        try:
            wall, latencies = asyncio.run(through_engine(engine, pdfs))
        finally:
            engine.stop()
        direct = in_process(pdfs, work)

    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    print(f"corpus: {args.docs} PDFs x {args.pages} pages = {pages} pages")
    print(f"engine (HTTP + JetStream + agents): {wall:.2f} s, {pages / wall:.1f} pages/s")
    print(f"  upload -> indexed per document: median {statistics.median(latencies):.2f} s, p95 {q[18]:.2f} s, max {max(latencies):.2f} s")
    print(f"in-process (parse + embed + index, no NATS): {direct:.2f} s, {pages / direct:.1f} pages/s")
    print(f"ratio engine / in-process throughput: {direct / wall:.2f}")


if __name__ == "__main__":
    main()
