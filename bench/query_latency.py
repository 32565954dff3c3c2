"""Query latency through the running engine: /v1/search and /v1/ask (first token and complete answer).

    .venv/bin/python bench/query_latency.py --docs 20 --queries 50

Ingests a generated corpus into a fresh `mmrag up`, then asks about random pages one at a time and prints
p50 / p95 / max. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine import Engine, upload_bytes, wait_status  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name}: p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"


async def measure(engine: Engine, docs: int, pages: int, queries: int) -> None:
    async with aiohttp.ClientSession() as http:
        ids = []
        for n in range(docs):
            resp = await upload_bytes(http, engine.url, synthetic_pdf(n, pages), f"q{n}.pdf")
            ids.append((await resp.json())["doc_id"])
        for doc_id in ids:
            await wait_status(http, engine.url, doc_id, {"indexed"}, timeout_s=600)

        rng = random.Random(7)
        search, first_token, whole = [], [], []
        for _ in range(queries):
            question = f"Ledger entry D{rng.randrange(docs)}P{rng.randrange(1, pages + 1)} records how many crates?"
            t0 = time.perf_counter()
            async with http.post(f"{engine.url}/v1/search", json={"query": question, "top_k": 5}) as resp:
                await resp.json()
            search.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            got_token = False
            async with http.post(f"{engine.url}/v1/ask", json={"question": question, "top_k": 5}) as resp:
                async for line in resp.content:
                    if not got_token and line.startswith(b"event: token"):
                        first_token.append(time.perf_counter() - t0)
                        got_token = True
            whole.append(time.perf_counter() - t0)
    print(f"corpus: {docs} PDFs x {pages} pages")
    print(summary("search", search))
    print(summary("ask, first token", first_token))
    print(summary("ask, complete", whole))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp) / "data", Path(tmp) / "engine.log").start()
        try:
            asyncio.run(measure(engine, args.docs, args.pages, args.queries))
        finally:
            engine.stop()


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("query_latency"):
        main()
