"""Query latency at scale: /v1/search and /v1/ask (time to first token) over 100k indexed chunks, beside the same
retrieval called in-process.

    .venv/bin/python bench/latency.py                      # 100k chunks (about 5 minutes on 2 cores)
    .venv/bin/python bench/latency.py --chunks 10000 --queries 100

1. A fresh `mmrag up` ingests the fixed quality set's documents (`bench/quality/corpus.py`): the engine creates
   its own collection and alias, and the questions have real answers. It is stopped.
2. The same embedded store is filled up to `--chunks` points with generated filler (random unit 384-d text
   vectors, BM25 sparse vectors of generated sentences, tenant `default`), and the HNSW index is built
   (`EdgeShardStore.maintain`, what the indexer runs when writes go idle).
3. In-process: per question, the embedding model, the dense and the sparse search, RRF and the reranker, each
   timed: the floor any transport adds to.
4. `mmrag up` again on that data: `/v1/search` and the first `token` event of `/v1/ask` at 1 client and at
   `--clients` concurrent clients (each client sends its next request when the previous one is answered).

Prints p50 / p99 per path and the ratio engine / in-process. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.indexer import POINT_NAMESPACE  # noqa: E402
from search.rerank import rerank  # noqa: E402
from search.hybrid import rrf, to_hit  # noqa: E402
from agents.settings import AgentSettings  # noqa: E402
from models.sparse import SparseEncoder  # noqa: E402
from search.vectorstore import SPARSE, TEXT_DENSE, PointPayload, SearchFilter, SparseVector, VectorPoint  # noqa: E402
from bench.quality.corpus import build  # noqa: E402
from tests.engine import Engine, upload_bytes, wait_status  # noqa: E402

FILLER_WORDS = (
    "pump valve pressure seal bearing motor flow sensor relay fuse cable housing impeller filter vent gauge "
    "controller firmware error code reset alarm supply voltage temperature schedule inspection torque bolt flange "
    "pipe circuit boiler radiator manual service bulletin report ledger entry crate archive harbor river meadow"
).split()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fmt(name: str, seconds: list[float], extra: str = "") -> str:
    ms = [s * 1000 for s in seconds]
    return f"{name:<34} p50 {statistics.median(ms):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms   n={len(ms)}{extra}"


# --------------------------------------------------------------------------- 1. the engine ingests the real set


async def ingest_real(engine: Engine) -> int:
    docs, _, _ = build()
    async with aiohttp.ClientSession() as http:
        ids = []
        for d in docs:
            resp = await upload_bytes(http, engine.url, d.pdf, f"{d.doc_id}.pdf")
            ids.append((await resp.json())["doc_id"])
        total = 0
        for doc_id in ids:
            status = await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=600)
            total += status.get("chunks_indexed") or 0
        return total


# --------------------------------------------------------------------------- 2. filler and the HNSW build


def fill(edge_root: Path, alias: str, total: int, have: int, dim: int) -> tuple[str, float, float]:
    """Add generated points until the collection behind `alias` holds `total`; returns (collection, upsert s,
    HNSW build s)."""
    from search.vectorstore import EdgeShardStore, OptimizePolicy

    store = EdgeShardStore(edge_root, OptimizePolicy(min_points=1, idle_seconds=0))
    try:
        collection = store.resolve(alias)
        assert collection is not None, "the engine created no collection"
        rng = np.random.default_rng(7)
        words = random.Random(7)
        sparse = SparseEncoder()
        t0 = time.perf_counter()
        batch = 2000
        for start in range(have, total, batch):
            n = min(batch, total - start)
            vectors = rng.standard_normal((n, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            texts = [" ".join(words.choice(FILLER_WORDS) for _ in range(24)).capitalize() + "." for _ in range(n)]
            terms = sparse.encode_documents(texts)
            points = []
            for i, (vector, text, s) in enumerate(zip(vectors, texts, terms, strict=True)):
                k = start + i
                payload = PointPayload(tenant="default", doc_id=f"filler-{k // 100}", revision=1, chunk_id=f"f-{k}",
                                       index=k % 100, page=k % 100 // 5 + 1, modality="text", text=text,
                                       filename=f"filler-{k // 100}.pdf")  # fmt: skip
                points.append(VectorPoint(id=str(uuid.uuid5(POINT_NAMESPACE, f"filler/{k}")), payload=payload,
                                          text=vector.tolist(),
                                          sparse=SparseVector(tuple(s.indices), tuple(s.values)) if s else None))  # fmt: skip
            store.upsert(collection, points)
        upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        built = store.maintain()
        build_s = time.perf_counter() - t0
        assert collection in built, f"no HNSW build ran ({built})"
        return collection, upsert_s, build_s
    finally:
        store.close()


# --------------------------------------------------------------------------- 3. in-process


def in_process(edge_root: Path, alias: str, questions: list[str], limit: int) -> dict[str, list[float]]:
    """The retriever + reranker path without NATS or HTTP, each stage timed per question."""
    from agents.runtime.resources import text_embedder
    from search.vectorstore import EdgeShardStore

    settings = AgentSettings()
    embedder = text_embedder(settings)
    encoder = SparseEncoder()
    store = EdgeShardStore(edge_root)
    where = SearchFilter(tenant="default")
    stages: dict[str, list[float]] = {k: [] for k in ("embed", "dense search", "sparse search", "fuse + rerank", "total")}
    try:
        for q in questions[:5]:  # warm-up: model, store pages
            embedder.embed([q])
            store.search(alias, embedder.embed([q])[0], using=TEXT_DENSE, filter=where, limit=limit)
        for q in questions:
            t0 = time.perf_counter()
            vector = embedder.embed([q])[0]
            terms = encoder.encode_query(q)
            t1 = time.perf_counter()
            dense = store.search(alias, vector, using=TEXT_DENSE, filter=where, limit=limit)
            t2 = time.perf_counter()
            rankings = [dense]
            if terms is not None:
                query = SparseVector(tuple(terms.indices), tuple(terms.values))
                rankings.append(store.search(alias, query, using=SPARSE, filter=where, limit=limit))
            t3 = time.perf_counter()
            cosine = {h.id: h.score for h in dense}
            fused = rrf(rankings, k=settings.rrf_k, limit=limit)
            hits = [to_hit(h).model_copy(update={"dense_score": cosine.get(h.id)}) for h in fused]
            rerank(q, hits, 5)
            t4 = time.perf_counter()
            for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                stages[name].append(value)
    finally:
        store.close()
    return stages


# --------------------------------------------------------------------------- 4. through the engine


async def _search(http: aiohttp.ClientSession, url: str, q: str) -> float:
    t0 = time.perf_counter()
    async with http.post(f"{url}/v1/search", json={"query": q, "top_k": 5}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
    return time.perf_counter() - t0


async def _first_token(http: aiohttp.ClientSession, url: str, q: str) -> float:
    t0 = time.perf_counter()
    first = None
    async with http.post(f"{url}/v1/ask", json={"question": q, "top_k": 5}) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if first is None and line.startswith(b"event: token"):
                first = time.perf_counter() - t0
    assert first is not None, "no token event"
    return first


async def load(url: str, fn, questions: list[str], clients: int, per_client: int) -> tuple[list[float], float]:
    """`clients` concurrent loops of `per_client` requests; (latencies, requests per second)."""
    connector = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        for q in questions[:3]:
            await fn(http, url, q)  # warm-up
        out: list[float] = []

        async def client(c: int) -> None:
            for i in range(per_client):
                out.append(await fn(http, url, questions[(c * 7 + i) % len(questions)]))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return out, len(out) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000, help="points in the collection (real + filler)")
    parser.add_argument("--queries", type=int, default=200, help="requests at 1 client, per path")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=8, help="requests per client at --clients")
    parser.add_argument("--data-dir", type=Path, help="keep the engine's data (ingested + filled + HNSW) here; a "
                        "rerun with the same --chunks skips steps 1 and 2")  # fmt: skip
    args = parser.parse_args()
    _, qs, _ = build()
    questions = [q.question for q in qs]
    questions = (questions * (args.queries // len(questions) + 1))[: args.queries]
    settings = AgentSettings()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or Path(tmp) / "data"
        log = Path(tmp) / "engine.log"
        ready = data / f"latency-ready-{args.chunks}.txt"
        env = {"MMRAG_AUTH": "off"}
        edge_root = data / "qdrant"
        if ready.exists():
            print(f"reusing {data}: {ready.read_text()}")
        else:
            engine = Engine(data, log, env=env).start()
            try:
                real = asyncio.run(ingest_real(engine))
            finally:
                engine.stop()
            collection, upsert_s, build_s = fill(edge_root, settings.collection, args.chunks, real, 384)
            summary = (f"collection {collection}: {real} real chunks + {args.chunks - real} filler = {args.chunks} "
                       f"points; filler upserted in {upsert_s:.0f} s, HNSW built in {build_s:.0f} s")  # fmt: skip
            print(summary)
            if args.data_dir:
                ready.write_text(summary)

        stages = in_process(edge_root, settings.collection, questions, settings.retrieve_candidates)
        print("\nin-process (embed -> dense + sparse search -> RRF -> rerank), 1 caller:")
        for name, values in stages.items():
            print("  " + fmt(name, values))

        engine = Engine(data, log, env=env).start()
        try:
            s1, _ = asyncio.run(load(engine.url, _search, questions, 1, args.queries))
            a1, _ = asyncio.run(load(engine.url, _first_token, questions, 1, max(args.queries // 2, 1)))
            sn, s_rps = asyncio.run(load(engine.url, _search, questions, args.clients, args.per_client))
            an, a_rps = asyncio.run(load(engine.url, _first_token, questions, args.clients, args.per_client))
        finally:
            engine.stop()
        base = statistics.median(stages["total"])
        print("\nthrough mmrag up (HTTP -> edge API -> NATS -> retriever -> reranker [-> generator] -> SSE/JSON):")
        print("  " + fmt("/v1/search, 1 client", s1, f"   engine/in-process p50 {statistics.median(s1) / base:.2f}x"))
        print("  " + fmt("/v1/ask first token, 1 client", a1))
        print("  " + fmt(f"/v1/search, {args.clients} clients", sn, f"   {s_rps:.0f} req/s"))
        print("  " + fmt(f"/v1/ask first token, {args.clients} clients", an, f"   {a_rps:.0f} req/s"))
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the machine is shared: "
              "compare figures within one run)")  # fmt: skip
        print("targets (2 cores): /v1/search p50 <= 30 ms and p99 <= 100 ms at 1 client; engine / in-process <= 1.5x")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("latency"):
        main()
