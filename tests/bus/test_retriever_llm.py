"""With an LLM configured the retriever asks it for a search query before it searches an ask (decision 90); a
slow provider must hold that ask only. Against a real nats-server and a local OpenAI-compatible LLM that takes
`LLM_DELAY_S` to answer: a search sent right after the ask is searched (its rerank request published) while the
ask still waits, and the ask then goes on with the LLM's query beside it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats
import pytest

from agents.runtime.host import run_agents
from agents.settings import AgentSettings
from contracts.messages import QueryMode, QueryRequest, RerankRequest
from contracts.topology import Subjects
from mmrag.registry import agent_types
from tests.doubles import send_openai_stream
from tests.engine import NatsServer

LLM_DELAY_S = 4.0
SEARCH_QUERY = "descale the heating element with citric acid"


class SlowLLM(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(LLM_DELAY_S)
        send_openai_stream(self, SEARCH_QUERY)


@pytest.fixture
def llm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def test_a_search_is_not_held_behind_an_asks_llm_call(nats_server: NatsServer, tmp_path: Path, llm_url: str) -> None:
    settings = AgentSettings(
        nats_url=nats_server.url, data_dir=tmp_path / "data", metrics_port=0,
        llm_providers=[{"name": "slow-llm", "base_url": llm_url, "model": "m"}], llm_read_timeout_s=LLM_DELAY_S + 4,
    )  # fmt: skip
    started, stop = asyncio.Event(), asyncio.Event()
    host = asyncio.create_task(run_agents(agent_types(("retriever",)), settings, stop, started=started))
    nc = await nats.connect(nats_server.url)
    try:
        async with asyncio.timeout(120):
            await asyncio.wait([host, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
        assert started.is_set(), host.exception() if host.done() else "the retriever did not start"
        reranks = await nc.subscribe(Subjects.query(Subjects.QUERY_RERANK, "t"))
        js = nc.jetstream()
        ask = QueryRequest(request_id=uuid.uuid4().hex, tenant="t", query="How do I get the chalk off?",
                           mode=QueryMode.ASK)  # fmt: skip
        search = QueryRequest(request_id=uuid.uuid4().hex, tenant="t", query="filter cartridge", mode=QueryMode.SEARCH)
        sent = time.monotonic()
        for request in (ask, search):
            await js.publish(Subjects.query(Subjects.QUERY_RETRIEVE, "t"), request.model_dump_json().encode())
        arrived: list[RerankRequest] = []
        async with asyncio.timeout(60):
            while len(arrived) < 2:
                arrived.append(RerankRequest.model_validate_json((await reranks.next_msg(timeout=60)).data))
        waited = time.monotonic() - sent
        searched, asked = arrived  # the search first: it did not wait for the ask's LLM call
        assert (searched.request.request_id, asked.request.request_id) == (search.request_id, ask.request_id)
        assert asked.rewrites == [SEARCH_QUERY] and searched.rewrites == []  # no LLM call for a search
        assert waited >= LLM_DELAY_S  # the ask went on once its search query came back
    finally:
        await nc.close()
        stop.set()
        await asyncio.wait_for(host, 60)
