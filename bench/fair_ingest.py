"""Fair ingest on a real `mmrag up`: a small upload's time to `indexed` behind a big PDF, and `/v1/search`
latency idle vs during that ingest.

    .venv/bin/python bench/fair_ingest.py [--pages 300] [--env MMRAG_PARSER_DOCUMENTS_IN_FLIGHT=1]

1. starts `mmrag up` (the `mmrag` next to this Python: run it with another checkout's venv Python to measure
   that checkout), indexes a 3-page seed document;
2. idle: `--searches` searches one after the other;
3. uploads a `--pages`-page PDF whose every page has a plot drawn as vector graphics beside its text (the pages
   that make the table finder work), then, 1 s later, a 3-page Markdown upload;
4. searches every 0.5 s until the big PDF is indexed; prints one JSON line: the small upload's seconds to
   `indexed`, the big one's, search p50/p95/max idle and during ingest, searches that failed or timed out (30 s),
   and how many times the parser's consumer delivered a docs.ingest message again.

A small synthetic corpus on a shared machine: compare runs made in the same hour, never with another day's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
import pymupdf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.topology import DOCS_STREAM, IndexGeneration, ingest_consumers  # noqa: E402
from tests.engine import Engine, upload_bytes  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402

SEED = b"# Pump\n\nThe relief valve of the feed pump opens at 42 bar.\n\n# Seals\n\nReplace the gasket yearly.\n"
SMALL = b"# Card\n\nThe coolant loop holds 12 litres.\n\n# Filters\n\nChange the oil filter every 500 hours.\n"
QUERY = {"query": "relief valve pressure", "top_k": 5}


def with_plots(pdf: bytes) -> bytes:
    """Every page gets a framed plot (grid lines and a curve) drawn as vector graphics."""
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    try:
        for page in doc:
            x0, y0, w, h = 72, page.rect.height - 260, page.rect.width - 144, 180
            shape = page.new_shape()
            shape.draw_rect(pymupdf.Rect(x0, y0, x0 + w, y0 + h))
            for k in range(1, 10):
                shape.draw_line((x0, y0 + k * h / 10), (x0 + w, y0 + k * h / 10))
            shape.draw_polyline([(x0 + i * w / 200, y0 + h / 2 + math.sin(i / 12) * h / 3) for i in range(201)])
            shape.finish(color=(0, 0, 0), width=0.5)
            shape.commit()
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


async def upload(http: aiohttp.ClientSession, engine: Engine, data: bytes, name: str, ctype: str) -> str:
    resp = await upload_bytes(http, engine.url, data, name, ctype)
    if resp.status != 202:
        raise RuntimeError(f"upload of {name}: HTTP {resp.status}")
    return (await resp.json())["doc_id"]


async def status(http: aiohttp.ClientSession, engine: Engine, doc_id: str) -> str:
    async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
        body = await resp.json()
    if body.get("status") == "failed":
        raise RuntimeError(f"{doc_id} failed: {body.get('error')}")
    return body.get("status", "")


async def wait_indexed(http: aiohttp.ClientSession, engine: Engine, doc_id: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while await status(http, engine, doc_id) != "indexed":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{doc_id} not indexed in {timeout_s}s")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def search(http: aiohttp.ClientSession, engine: Engine, out: list[float], failed: list[str]) -> None:
    t0 = time.monotonic()
    try:
        async with http.post(f"{engine.url}/v1/search", json=QUERY, timeout=aiohttp.ClientTimeout(total=30)) as r:
            await r.read()
            if r.status == 200:
                out.append(time.monotonic() - t0)
            else:
                failed.append(f"HTTP {r.status}")
    except TimeoutError:
        failed.append("timeout")


async def measure(engine: Engine, pages: int, searches: int, timeout_s: float) -> dict:
    big_pdf = with_plots(synthetic_pdf(7, pages=pages))
    async with aiohttp.ClientSession() as http:
        await wait_indexed(http, engine, await upload(http, engine, SEED, "seed.md", "text/markdown"), 120)
        idle: list[float] = []
        idle_failed: list[str] = []
        for _ in range(searches):
            await search(http, engine, idle, idle_failed)
            await asyncio.sleep(0.25)
        t_big = time.monotonic()
        big = await upload(http, engine, big_pdf, "big.pdf", "application/pdf")
        await asyncio.sleep(1.0)
        t_small = time.monotonic()
        small = await upload(http, engine, SMALL, "small.md", "text/markdown")
        during: list[float] = []
        during_failed: list[str] = []
        small_done = asyncio.create_task(wait_indexed(http, engine, small, timeout_s))
        big_done = asyncio.create_task(wait_indexed(http, engine, big, timeout_s))
        pending: list[asyncio.Task[None]] = []
        while not big_done.done():
            pending.append(asyncio.create_task(search(http, engine, during, during_failed)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*pending)
        t_small_done, t_big_done = await small_done, await big_done
    nc = await nats.connect(engine.nats_url)
    try:
        info = await nc.jetstream().consumer_info(DOCS_STREAM.name, ingest_consumers(IndexGeneration(1))["parser"].durable)
    finally:
        await nc.close()
    return {
        "big_pages": pages,
        "small_to_indexed_s": round(t_small_done - t_small, 2),
        "big_to_indexed_s": round(t_big_done - t_big, 2),
        "search_idle_p50_s": pct(idle, 50), "search_idle_p95_s": pct(idle, 95),
        "search_during_p50_s": pct(during, 50), "search_during_p95_s": pct(during, 95),
        "search_during_max_s": round(max(during), 3) if during else None,
        "searches_during": len(during) + len(during_failed), "search_failures": idle_failed + during_failed,
        "parser_redeliveries": info.delivered.consumer_seq - 3,  # deliveries beyond the 3 docs.ingest messages
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--searches", type=int, default=40, help="idle searches")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the big PDF")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for `mmrag up` (repeatable)")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    with tempfile.TemporaryDirectory(prefix="fair-ingest-") as tmp:
        engine = Engine(Path(tmp) / "data", Path(tmp) / "engine.log", env=env).start(timeout_s=180)
        try:
            result = asyncio.run(measure(engine, args.pages, args.searches, args.timeout))
        finally:
            engine.stop()
    print(json.dumps({"mmrag": str(Path(sys.executable).parent / "mmrag"), "env": env, **result}))


if __name__ == "__main__":
    main()
