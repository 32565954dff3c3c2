"""The generator answers several questions at once (`MMRAG_GENERATOR_QUESTIONS_IN_FLIGHT`), against a real
nats-server and a local OpenAI-compatible LLM.

One at a time, a slow or hanging provider made every later question wait its turn: the k-th waited k read
timeouts and, past the edge API's query timeout, was lost (found by bench/reliability.py). The LLM here answers
only once it holds three requests at once: a generator that takes them one by one never gets an LLM answer (each
request times out and falls back to the extractive answerer).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats
import pytest

from agents.runtime.host import run_agents
from agents.settings import AgentSettings
from contracts.messages import DoneEvent, GenerateRequest, Hit, QueryRequest, answer_event_adapter
from contracts.topology import Subjects
from mmrag.registry import agent_types
from tests.doubles import send_openai_stream
from tests.engine import NatsServer

QUESTIONS = 3
BARRIER_S = 4.0  # how long the LLM waits for the three to be open together; under the generator's read timeout


class ThreeAtOnce(BaseHTTPRequestHandler):
    """Streams an answer once `QUESTIONS` requests are open together (a barrier); a request that waited
    `BARRIER_S` in vain breaks the barrier, and from then on every request is closed unanswered."""

    barrier = threading.Barrier(QUESTIONS)

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            self.barrier.wait(timeout=BARRIER_S)
        except threading.BrokenBarrierError:  # not three at once (the barrier stays broken): close, never answer
            return
        send_openai_stream(self, "Three at once [1].")


@pytest.fixture
def llm_url() -> Iterator[str]:
    ThreeAtOnce.barrier = threading.Barrier(QUESTIONS)
    server = ThreadingHTTPServer(("127.0.0.1", 0), ThreeAtOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    ThreeAtOnce.barrier.abort()
    server.shutdown()
    server.server_close()


async def answerers(nats_server: NatsServer, tmp_path: Path, llm_url: str, in_flight: int) -> list[str]:
    """Which answerer finished each of `QUESTIONS` questions sent at once to a generator with `in_flight`."""
    providers = [{"name": "local-llm", "base_url": llm_url, "model": "m"}]
    settings = AgentSettings(
        nats_url=nats_server.url, data_dir=tmp_path / "data", metrics_port=0, llm_providers=providers,
        llm_read_timeout_s=BARRIER_S + 2, generator_questions_in_flight=in_flight,
    )  # fmt: skip
    started, stop = asyncio.Event(), asyncio.Event()
    host = asyncio.create_task(run_agents(agent_types(("generator",)), settings, stop, started=started))
    nc = await nats.connect(nats_server.url)
    try:
        async with asyncio.timeout(60):
            await asyncio.wait([host, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
        assert started.is_set(), host.exception() if host.done() else "the generator did not start"
        done: list[DoneEvent] = []
        sub = await nc.subscribe(Subjects.answer("t", "*"))
        hit = Hit(chunk_id="d-0", doc_id="d", filename="f.pdf", page=1, text="The otter counts 12 fish.", score=0.9)
        js = nc.jetstream()
        for _ in range(QUESTIONS):
            request = QueryRequest(request_id=uuid.uuid4().hex, tenant="t", query="How many fish?")
            message = GenerateRequest(request=request, hits=[hit], abstain=False)
            await js.publish(Subjects.query(Subjects.QUERY_GENERATE, "t"), message.model_dump_json().encode())
        async with asyncio.timeout(60):
            while len(done) < QUESTIONS:
                event = answer_event_adapter.validate_json((await sub.next_msg(timeout=60)).data)
                if isinstance(event, DoneEvent):
                    done.append(event)
        return sorted(e.answerer for e in done)
    finally:
        await nc.close()
        stop.set()
        await asyncio.wait_for(host, 60)


async def test_questions_are_answered_at_once_not_one_after_another(
    nats_server: NatsServer, tmp_path: Path, llm_url: str
) -> None:
    assert await answerers(nats_server, tmp_path, llm_url, in_flight=QUESTIONS) == ["local-llm"] * QUESTIONS


async def test_one_at_a_time_the_llm_never_holds_them_together(
    nats_server: NatsServer, tmp_path: Path, llm_url: str
) -> None:
    """The setting is what makes the difference: at 1, each question times out alone and falls back."""
    assert await answerers(nats_server, tmp_path, llm_url, in_flight=1) == ["extractive"] * QUESTIONS
