"""A search that waited too long in the reranker's queue is ranked by the lexical scorer
(`MMRAG_RERANK_SEARCH_QUEUE_BUDGET_S`, decision 86), against a real nats-server and the real text model.

Behind a backlog (the ingest bench: two searches a second while a big ingest takes the cores), ranking each search
with the sentence scorer's embedding call made every later one wait, until they timed out. An overdue search is
ranked in milliseconds instead; a fresh search and any ask keep the configured scorer.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest

from agents.runtime.host import run_agents
from agents.settings import AgentSettings
from contracts.messages import (
    Hit,
    QueryMode,
    QueryRequest,
    RerankRequest,
    ResultsEvent,
    RetrievalEvent,
    answer_event_adapter,
)
from contracts.topology import Subjects
from mmrag.registry import agent_types
from search.rerank import LexicalScorer
from prometheus_client import REGISTRY
from tests.engine import NatsServer

BUDGET_S = 0.3
QUESTION = "how wide is the pen that draws the outline"
CANDIDATES = [
    Hit(chunk_id=f"d-{i}", doc_id="d", filename="m.pdf", page=i + 1, text=text, score=0.5, dense_score=cosine)
    for i, (text, cosine) in enumerate([
        ("The outline is stroked with a pen of 0.5 points. Thicker pens are set with linewidth.", 0.55),
        ("Colours are given as RGB triples. The default colour is black.", 0.30),
        ("A path joins points with straight or curved segments.", 0.35),
    ])
]  # fmt: skip


def _published(mode: QueryMode) -> tuple[str, bytes]:
    request = QueryRequest(request_id=uuid.uuid4().hex, tenant="t", query=QUESTION, top_k=3, mode=mode)
    return request.request_id, RerankRequest(request=request, candidates=CANDIDATES).model_dump_json().encode()


async def _ranked(nc: nats.NATS, request_id: str) -> list[float]:
    """The scores of the hits the reranker sent for `request_id` (its results, or an ask's retrieval event)."""
    sub = await nc.subscribe(Subjects.answer("t", request_id))
    try:
        async with asyncio.timeout(60):
            while True:
                event = answer_event_adapter.validate_json((await sub.next_msg(timeout=60)).data)
                if isinstance(event, ResultsEvent | RetrievalEvent):
                    return [h.score for h in event.hits]
    finally:
        await sub.unsubscribe()


def _shed() -> float:
    return REGISTRY.get_sample_value("mmrag_rerank_shed_total") or 0.0


@pytest.fixture
async def nc(nats_server: NatsServer):
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def test_an_overdue_search_is_ranked_lexically_and_a_fresh_one_and_an_ask_are_not(
    nats_server: NatsServer, nc: nats.NATS, tmp_path: Path
) -> None:
    lexical = sorted(LexicalScorer().scores(QUESTION, CANDIDATES), reverse=True)
    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path / "data", metrics_port=0,
                             rerank_search_queue_budget_s=BUDGET_S)  # fmt: skip
    js = nc.jetstream()
    # A first run creates the streams and the reranker's consumer; the two requests then wait in its queue,
    # past the budget, until the reranker runs again.
    stop, started = asyncio.Event(), asyncio.Event()
    host = asyncio.create_task(run_agents(agent_types(("reranker",)), settings, stop, started=started))
    try:
        async with asyncio.timeout(120):
            await started.wait()
        stop.set()
        await asyncio.wait_for(host, 60)
        overdue_search, overdue_ask = _published(QueryMode.SEARCH), _published(QueryMode.ASK)
        waiting = {rid: asyncio.create_task(_ranked(nc, rid)) for rid, _ in (overdue_search, overdue_ask)}
        await asyncio.sleep(0.1)  # the subscriptions are in place before anything can be answered
        for rid, data in (overdue_search, overdue_ask):
            await js.publish(Subjects.query(Subjects.QUERY_RERANK, "t"), data)
        await asyncio.sleep(BUDGET_S * 3)
        shed_before = _shed()
        stop, started = asyncio.Event(), asyncio.Event()
        host = asyncio.create_task(run_agents(agent_types(("reranker",)), settings, stop, started=started))
        assert await waiting[overdue_search[0]] == pytest.approx(lexical)
        assert await waiting[overdue_ask[0]] != pytest.approx(lexical)  # an ask keeps the sentence scorer
        assert _shed() == shed_before + 1

        fresh = _published(QueryMode.SEARCH)
        pending = asyncio.create_task(_ranked(nc, fresh[0]))
        await asyncio.sleep(0.1)
        await js.publish(Subjects.query(Subjects.QUERY_RERANK, "t"), fresh[1])
        assert await pending != pytest.approx(lexical)
        assert _shed() == shed_before + 1
    finally:
        stop.set()
        await asyncio.wait_for(host, 60)
