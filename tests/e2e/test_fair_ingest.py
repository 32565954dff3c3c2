"""Fair ingest on a real `mmrag up`: a small upload overtakes a big one, searches answer while the big one is
parsed, and nothing is parsed twice.

The big upload is a long text without a single newline (the kind that once froze the agents' loop for a minute,
long enough for its message to be redelivered and parsed twice). With the fairness switched off
(`MMRAG_PARSER_DOCUMENTS_IN_FLIGHT=1`: one document at a time, in arrival order) the same race is lost: the
small upload waits until the big one is parsed, which the last test shows, so the first one can fail.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from contracts.topology import DOCS_STREAM, IndexGeneration, ingest_consumers
from tests.engine import Engine, upload_bytes, wait_status

pytestmark = pytest.mark.e2e

WORDS = "pump valve pressure reading gasket flange torque seal bearing shaft housing motor".split()
SMALL = (
    "# Relief valve\n\nThe relief valve of the feed pump opens at 42 bar.\n\n"
    "# Gasket\n\nReplace the flange gasket every 2,000 hours.\n\n# Torque\n\nTighten the housing bolts to 35 Nm.\n"
).encode()


def one_long_line(megabytes: float) -> bytes:
    rng = random.Random(15)
    return " ".join(rng.choice(WORDS) for _ in range(int(megabytes * 1e6 / 7))).encode()


def _engine(root: Path, **env: str) -> Iterator[Engine]:
    eng = Engine(root / "data", root / "engine.log", env=env).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


# One engine per test, stopped before the next starts (two engines embedding at once starve each other).
@pytest.fixture
def fair_engine(tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(tmp_path)


@pytest.fixture
def unfair_engine(tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(tmp_path, MMRAG_PARSER_DOCUMENTS_IN_FLIGHT="1")


async def _doc(http: aiohttp.ClientSession, engine: Engine, doc_id: str) -> dict:
    async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
        return await resp.json() if resp.status == 200 else {}


async def _upload(http: aiohttp.ClientSession, engine: Engine, data: bytes, name: str, ctype: str) -> str:
    resp = await upload_bytes(http, engine.url, data, name, ctype)
    assert resp.status == 202, await resp.text()
    return (await resp.json())["doc_id"]


async def _race(engine: Engine, http: aiohttp.ClientSession) -> tuple[str, dict, list[tuple[int, float]]]:
    """Upload the big text, then the small one; search every 0.3 s while the big one is being parsed. Returns the
    big document's view when the small one was indexed, and each search's (status, seconds)."""
    big = await _upload(http, engine, one_long_line(8), "big.txt", "text/plain")
    small = await _upload(http, engine, SMALL, "small.md", "text/markdown")
    searches: list[tuple[int, float]] = []

    async def search() -> None:
        t0 = time.monotonic()
        try:
            async with http.post(f"{engine.url}/v1/search", json={"query": "relief valve pressure"},
                                 timeout=aiohttp.ClientTimeout(total=30)) as resp:  # fmt: skip
                await resp.read()
                searches.append((resp.status, time.monotonic() - t0))
        except TimeoutError:
            searches.append((0, time.monotonic() - t0))

    async def keep_searching() -> None:
        pending: list[asyncio.Task[None]] = []
        while (await _doc(http, engine, big)).get("status") in (None, "queued", "parsing"):
            pending.append(asyncio.create_task(search()))
            await asyncio.sleep(0.3)
        await asyncio.gather(*pending)

    searching = asyncio.create_task(keep_searching())
    await wait_status(http, engine.url, small, {"indexed"}, timeout_s=300)
    big_then = await _doc(http, engine, big)
    await asyncio.wait_for(searching, 300)
    async with http.delete(f"{engine.url}/v1/documents/{big}") as resp:  # its embedding is not what we test
        assert resp.status in (200, 202, 204), await resp.text()
    return big, big_then, searches


async def _parser_deliveries(engine: Engine) -> int:
    """How many times the parser's consumer delivered a docs.ingest message (redeliveries included)."""
    nc = await nats.connect(engine.nats_url)
    try:
        durable = ingest_consumers(IndexGeneration(1))["parser"].durable
        info = await nc.jetstream().consumer_info(DOCS_STREAM.name, durable)
        return info.delivered.consumer_seq
    finally:
        await nc.close()


async def test_a_small_upload_overtakes_a_big_one_and_searches_answer_meanwhile(fair_engine: Engine) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        big, big_then, searches = await _race(fair_engine, http)
    assert big_then["status"] == "parsing", f"the small upload was indexed only after the big one was parsed: {big_then}"
    # The big text is parsed in a worker process: the agents' loop serves every search meanwhile.
    assert len(searches) >= 3, searches
    assert all(status == 200 for status, _ in searches), searches
    assert await _parser_deliveries(fair_engine) == 2, "a docs.ingest message was delivered to the parser twice"
    assert fair_engine.log_path.read_text().count(f"parser: {big} -> ") == 1, "the big text was parsed twice"


async def test_without_the_fairness_the_small_upload_waits_for_the_big_one(unfair_engine: Engine) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        _, big_then, _ = await _race(unfair_engine, http)
    assert big_then["status"] != "parsing", big_then
