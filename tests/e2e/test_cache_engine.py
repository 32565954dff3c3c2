"""The answer cache through the real agents: a private `mmrag up` with Redis (`MMRAG_REDIS_URL`), whose Redis the
test stops and starts again. The cache's parts against a nats-server and Redis: tests/bus/test_cache.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bus.test_cache import WAIT_S, sse_names
from tests.bus.test_ratelimit import RedisServer
from tests.engine import Engine, upload_bytes, wait_status
from tests.factories import make_pdf


def metric(text: str, route: str, result: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mmrag_answer_cache_total" and s.labels == {"route": route, "result": result}:
                return s.value
    return 0.0


@pytest.fixture(scope="module")
def cached_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, RedisServer]]:
    root = tmp_path_factory.mktemp("cached-engine")
    redis_server = RedisServer(root / "redis").start()
    # A test machine running two workers can answer slower than the 0.25 s default: a lookup that timed out counts
    # as "unavailable", not as the hit the test expects.
    env = {"MMRAG_REDIS_URL": redis_server.url, "MMRAG_REDIS_TIMEOUT_S": "2"}
    engine = Engine(root / "data", root / "engine.log", env=env).start()
    yield engine, redis_server
    code = engine.stop()
    redis_server.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{engine.log_tail()}"


async def test_engine_caches_then_ingest_delete_and_a_redis_outage(
    cached_engine: tuple[Engine, RedisServer], http: aiohttp.ClientSession
) -> None:
    engine, redis_server = cached_engine

    async def counts() -> dict[str, float]:
        async with http.get(f"{engine.url}/metrics") as resp:
            text = await resp.text()
        return {f"{r} {x}": metric(text, f"/v1/{r}", x) for r in ("search", "ask") for x in ("hit", "miss", "unavailable")}

    async def ingest(name: str, pages: list[str]) -> str:
        resp = await upload_bytes(http, engine.url, make_pdf(pages), name)
        assert resp.status == 202
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
        return doc_id

    async def search() -> list[dict]:
        async with http.post(f"{engine.url}/v1/search", json={"query": "walrus colony count", "top_k": 5}) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["hits"]

    async def ask() -> bytes:
        async with http.post(f"{engine.url}/v1/ask", json={"question": "How many walruses are in the colony?"}) as r:
            assert r.status == 200
            return await r.read()

    first_doc = await ingest("walrus.pdf", ["The walrus colony on the north shore counts 318 walruses."])
    before = await counts()
    hits = await search()
    assert hits and {h["doc_id"] for h in hits} == {first_doc}
    assert await search() == hits
    answer = await ask()
    assert "318" in answer.decode() and sse_names(answer)[-1] == "done"
    assert await ask() == answer  # the same stream again
    after = await counts()
    assert after["search hit"] == before["search hit"] + 1 and after["search miss"] == before["search miss"] + 1
    assert after["ask hit"] == before["ask hit"] + 1 and after["ask miss"] == before["ask miss"] + 1

    second_doc = await ingest("census.pdf", ["The walrus colony census of the south shore counts 127 walruses."])
    assert second_doc in {h["doc_id"] for h in await search()}  # the indexer retired the old entry

    async with http.delete(f"{engine.url}/v1/documents/{second_doc}") as resp:
        assert resp.status == 202
    deadline = time.monotonic() + 60
    while second_doc in {h["doc_id"] for h in await search()}:  # until the indexer applied the delete
        assert time.monotonic() < deadline, "the deleted document stayed in (cached) results"
        await asyncio.sleep(0.2)
    assert {h["doc_id"] for h in await search()} == {first_doc}

    redis_server.stop()
    try:
        outage = await counts()
        for _ in range(3):
            assert {h["doc_id"] for h in await search()} == {first_doc}
            assert "318" in (await ask()).decode()
        during = await counts()
        assert during["search unavailable"] >= outage["search unavailable"] + 1
        assert during["search hit"] == outage["search hit"]
    finally:
        redis_server.start()
    deadline = time.monotonic() + WAIT_S
    while (await counts())["search hit"] == during["search hit"]:
        await search()
        assert time.monotonic() < deadline, "the cache did not come back with Redis"
        await asyncio.sleep(0.1)
