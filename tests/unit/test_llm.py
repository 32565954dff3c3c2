"""The LLM provider chain against a real OpenAI-compatible streaming server on loopback.

The server (aiohttp) serves `POST /<mode>/v1/chat/completions` as an SSE stream; each mode is one provider's
behaviour: a normal answer, HTTP 500 before the first token, a connection dropped mid-answer, a hang. The
generator's `answer` is driven with a real `AnswerEmitter` whose events are recorded and put through the edge
API's `AnswerSequencer`, i.e. what a client would see.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.generator import answer, provider_chain
from agents.settings import AgentSettings, LLMProvider
from bus.answers import AnswerEmitter, AnswerSequencer
from contracts.messages import AnswerEvent, Hit, ImageRef, RetrievalEvent
from models.extractive import extractive_answer
from models.llm import FALLBACKS, breaker
from models.llm import CitationTracker, Picture, ProviderChain, build_messages, format_source
from tests.doubles import RecordingNats

API_KEY = "sk-test-Zq81secretKEYvalue"
READ_TIMEOUT_S = 0.5
QUESTION = "At what temperature does the Zorblax-7 reactor core operate?"
HITS = [
    Hit(chunk_id="d-0", doc_id="d", filename="reactor.pdf", page=3, bbox=(1, 2, 3, 4), headings=["Core", "Heat"],
        text="The Zorblax-7 reactor core operates at 4127 degrees Kelvin.", score=0.9),
    Hit(chunk_id="d-1", doc_id="d", filename="reactor.pdf", page=4, bbox=(5, 6, 7, 8), modality="image",
        text="Cooling loop diagram, pump P-3.", score=0.7,
        image=ImageRef(object_name="t/d/img-1.png", mime="image/png", width=10, height=10, caption="Cooling loop")),
]  # fmt: skip
# Markers split across chunks on purpose; [9] is a source the model invented.
NORMAL_CHUNKS = ["The core runs at 4127 K [", "1]. The loop has a ", "pump [2", "]; it was made in 1999 [9", "]."]
NORMAL_TEXT = "".join(NORMAL_CHUNKS)
DROPPER_CHUNKS = ["Partial answer from the dropper. ", "It continues, and "]


def sse(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    return sse({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


class FakeLLM:
    """Records each request; `release` ends hanging handlers at teardown."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, str | None]] = []
        self.release = asyncio.Event()
        self.flaky_hangs = True  # mode "flaky": hangs while True, answers like "good" once False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        self.requests.append((mode, await request.json(), request.headers.get("Authorization")))
        if mode == "fail500":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        if mode == "hang" or (mode == "flaky" and self.flaky_hangs):  # no byte until the client gives up
            await asyncio.wait_for(self.release.wait(), 30)
            return web.Response(status=204)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk(None) if mode != "good" else sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
        if mode == "drop":
            for text in DROPPER_CHUNKS:
                await response.write(chunk(text))
            assert request.transport is not None
            request.transport.abort()  # mid-chunked-body: the client sees an incomplete stream
            return response
        if mode == "truncated":  # a clean end of the body, but the answer never said it was finished
            for text in DROPPER_CHUNKS:
                await response.write(chunk(text))
            await response.write_eof()
            return response
        chunks = NORMAL_CHUNKS if mode == "normal" else GOOD_CHUNKS
        for text in chunks:
            await response.write(chunk(text))
        await response.write(chunk(None, finish="stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


GOOD_CHUNKS = ["Good: the reactor core ", "operates at 4127 degrees Kelvin [1]. ", "Nothing else is known."]
GOOD_TEXT = "".join(GOOD_CHUNKS)


@pytest.fixture
async def llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    fake.release.set()
    await server.close()


def provider(base: str, mode: str, name: str | None = None) -> LLMProvider:
    return LLMProvider(name=name or mode, base_url=f"{base}/{mode}/v1", api_key=API_KEY, model="test-model")


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(providers: list[LLMProvider]) -> tuple[str, list[AnswerEvent]]:
    chain = ProviderChain(providers, connect_timeout_s=1.0, read_timeout_s=READ_TIMEOUT_S, max_tokens=256)
    try:
        return await ask(chain)
    finally:
        await chain.aclose()


async def ask(chain: ProviderChain) -> tuple[str, list[AnswerEvent]]:
    """One question answered through `chain` by the generator's `answer`: the answerer and what a client sees."""
    nats = RecordingNats()
    answerer = await answer(QUESTION, HITS, AnswerEmitter(nats, tenant="t", request_id="r1"), chain)  # type: ignore[arg-type]
    sequencer = AnswerSequencer()  # the edge API's: it has delivered the retrieval event (seq 0) already
    assert sequencer.push(RetrievalEvent(request_id="r1", seq=0, hits=HITS))
    seen = [e for event in nats.events for e in sequencer.push(event)]
    assert seen == nats.events and sequencer.finished, "events must be numbered 1, 2, ... and end with done"
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    return answerer, seen


def client_text(events: list[AnswerEvent]) -> str:
    """What a client shows: the token text after the last reset."""
    text = ""
    for e in events:
        if e.event == "reset":
            text = ""
        elif e.event == "token":
            text += e.text
    return text


def kinds(events: list[AnswerEvent]) -> list[str]:
    return [e.event for e in events]


async def test_normal_stream_maps_citations_and_drops_invented_ones(llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake, base = llm
    answerer, events = await run([provider(base, "normal", name="cerebras")])
    assert answerer == "cerebras" and events[-1].event == "done" and events[-1].answerer == "cerebras"
    tokens = [e.text for e in events if e.event == "token"]
    assert "".join(tokens) == NORMAL_TEXT and len(tokens) >= 2  # clause-sized pieces, not one blob
    assert "reset" not in kinds(events)
    citations = [e for e in events if e.event == "citation"]
    assert [c.n for c in citations] == [1, 2]  # [9] is not a source: dropped
    assert (citations[0].doc_id, citations[0].page, citations[0].bbox) == ("d", 3, (1, 2, 3, 4))
    assert citations[0].image is None and citations[1].image == HITS[1].image
    assert kinds(events).index("citation") > max(i for i, k in enumerate(kinds(events)) if k == "token")
    # The request: streaming, the key as a Bearer token, the numbered sources in the prompt.
    (mode, body, auth), = fake.requests
    assert body["stream"] is True and body["model"] == "test-model" and body["max_tokens"] == 256
    assert auth == f"Bearer {API_KEY}"
    prompt = body["messages"][1]["content"]
    assert "[1] reactor.pdf, page 3 (Core > Heat): The Zorblax-7" in prompt
    assert "[2] reactor.pdf, page 4: Image caption/OCR text: Cooling loop" in prompt and QUESTION in prompt
    assert API_KEY not in caplog.text


async def test_failure_before_the_first_token_hands_over_silently(llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, base = llm
    from prometheus_client import REGISTRY

    labels = {"provider": "bad", "stage": "before_first_token"}
    exported_before = REGISTRY.get_sample_value("mmrag_llm_fallbacks_total", labels) or 0.0
    before = FALLBACKS[("bad", "before_first_token")]
    answerer, events = await run([provider(base, "fail500", name="bad"), provider(base, "good")])
    assert answerer == "good" and events[-1].answerer == "good"
    assert "reset" not in kinds(events)
    assert "".join(e.text for e in events if e.event == "token") == GOOD_TEXT
    assert [e.n for e in events if e.event == "citation"] == [1]
    assert FALLBACKS[("bad", "before_first_token")] == before + 1
    assert REGISTRY.get_sample_value("mmrag_llm_fallbacks_total", labels) == exported_before + 1  # on /metrics too
    assert "'bad' failed before first token (HTTP 500)" in caplog.text
    assert API_KEY not in caplog.text


async def test_mid_stream_drop_resets_and_the_client_never_sees_duplicated_text(llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, base = llm
    before = FALLBACKS[("dropper", "mid_stream")]
    answerer, events = await run([provider(base, "drop", name="dropper"), provider(base, "good")])
    assert answerer == "good"
    k = kinds(events)
    assert k.count("reset") == 1
    cut = k.index("reset")
    assert k[:cut] and set(k[:cut]) == {"token"}  # the dropper's text went out before it failed
    assert "".join(e.text for e in events[:cut]) == DROPPER_CHUNKS[0]
    assert "dropper" in events[cut].reason
    assert set(k[cut + 1 : -1]) == {"token", "citation"} and k[-1] == "done"
    assert client_text(events) == GOOD_TEXT  # exactly good's answer, nothing of the dropper's
    assert FALLBACKS[("dropper", "mid_stream")] == before + 1
    assert API_KEY not in caplog.text


async def test_a_stream_that_ends_without_finishing_is_a_mid_stream_failure(llm) -> None:
    _, base = llm
    answerer, events = await run([provider(base, "truncated"), provider(base, "good")])
    assert answerer == "good" and kinds(events).count("reset") == 1 and client_text(events) == GOOD_TEXT


async def test_a_hanging_provider_times_out_and_the_next_link_answers(llm) -> None:
    _, base = llm
    started = time.monotonic()
    answerer, events = await run([provider(base, "hang"), provider(base, "good")])
    elapsed = time.monotonic() - started
    assert answerer == "good" and client_text(events) == GOOD_TEXT and "reset" not in kinds(events)
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 2.0


async def test_all_providers_down_falls_back_to_the_extractive_answer(llm, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, base = llm
    refused = LLMProvider(name="local", base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", api_key=API_KEY)
    answerer, events = await run([provider(base, "fail500"), refused, provider(base, "hang")])
    expected = extractive_answer(QUESTION, HITS)
    assert answerer == "extractive" and events[-1].answerer == "extractive"
    assert "reset" not in kinds(events) and client_text(events) == expected.text
    assert [e.doc_id for e in events if e.event == "citation"] == [h.doc_id for h in expected.cited]
    assert API_KEY not in caplog.text


async def test_mid_stream_failure_of_the_last_provider_resets_to_the_extractive_answer(llm) -> None:
    _, base = llm
    answerer, events = await run([provider(base, "drop")])
    assert answerer == "extractive" and kinds(events).count("reset") == 1
    assert client_text(events) == extractive_answer(QUESTION, HITS).text


async def test_no_providers_is_the_extractive_answer() -> None:
    answerer, events = await run([])
    assert answerer == "extractive" and client_text(events) == extractive_answer(QUESTION, HITS).text


async def test_a_hanging_provider_opens_its_circuit_then_one_trial_request_closes_it(llm, monkeypatch, caplog) -> None:
    """MMRAG_LLM_CIRCUIT_FAILURES hanging answers in a row open the provider's circuit: the next questions are
    answered by the offline answerer at once (the provider gets no request); after MMRAG_LLM_CIRCUIT_COOLDOWN_S one
    trial request goes through: its failure opens the circuit again, its success closes it."""
    from prometheus_client import REGISTRY

    caplog.set_level(logging.INFO)
    fake, base = llm
    clock = [1000.0]
    monkeypatch.setattr(breaker, "_now", lambda: clock[0])
    monkeypatch.setenv("MMRAG_LLM_PROVIDERS", json.dumps([provider(base, "flaky").model_dump(mode="json")]))
    monkeypatch.setenv("MMRAG_LLM_READ_TIMEOUT_S", str(READ_TIMEOUT_S))
    monkeypatch.setenv("MMRAG_LLM_CIRCUIT_FAILURES", "2")
    monkeypatch.setenv("MMRAG_LLM_CIRCUIT_COOLDOWN_S", "30")
    chain = provider_chain(AgentSettings())

    def circuit_open() -> float | None:
        return REGISTRY.get_sample_value("mmrag_llm_circuit_open", {"provider": "flaky"})

    def calls() -> int:
        return sum(1 for mode, _, _ in fake.requests if mode == "flaky")

    extractive = extractive_answer(QUESTION, HITS).text
    try:
        assert circuit_open() == 0
        for n in (1, 2):  # each waits out the read timeout, then the offline answer
            answerer, events = await ask(chain)
            assert answerer == "extractive" and events[-1].answerer == "extractive" and calls() == n
        assert circuit_open() == 1 and "'flaky': circuit open after 2 failures in a row" in caplog.text
        for _ in range(3):  # open: not called at all, the offline answer says it wrote the answer
            answerer, events = await ask(chain)
            assert answerer == events[-1].answerer == "extractive" and client_text(events) == extractive
        assert calls() == 2

        clock[0] += 31  # the cool-down is over: one trial, which hangs again and opens the circuit again
        assert (await ask(chain))[0] == "extractive" and calls() == 3
        assert circuit_open() == 1 and "'flaky': circuit open after its trial request failed" in caplog.text
        assert (await ask(chain))[0] == "extractive" and calls() == 3  # skipped at once again

        clock[0] += 31
        fake.flaky_hangs = False  # the provider is back: the trial succeeds and closes the circuit
        answerer, events = await ask(chain)
        assert answerer == events[-1].answerer == "flaky" and client_text(events) == GOOD_TEXT and calls() == 4
        assert circuit_open() == 0 and "'flaky' answered again: circuit closed" in caplog.text
        assert (await ask(chain))[0] == "flaky" and calls() == 5
    finally:
        await chain.aclose()


def test_a_half_open_circuit_lets_one_trial_through_at_a_time_and_zero_failures_turns_it_off(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(breaker, "_now", lambda: clock[0])
    circuit = breaker.CircuitBreaker("p", failure_threshold=1, cooldown_s=10)
    assert circuit.allow() is breaker.CircuitState.CLOSED
    circuit.failure()
    assert circuit.state is breaker.CircuitState.OPEN and circuit.allow() is None
    clock[0] = 10
    assert circuit.allow() is breaker.CircuitState.HALF_OPEN
    assert circuit.allow() is None  # a trial is running: the others skip the provider
    circuit.abandon(trial=True)  # its question was cancelled: the next one tries
    assert circuit.allow() is breaker.CircuitState.HALF_OPEN
    circuit.success(trial=True)
    assert circuit.state is breaker.CircuitState.CLOSED and circuit.allow() is breaker.CircuitState.CLOSED

    never = breaker.CircuitBreaker("q", failure_threshold=0, cooldown_s=10)
    for _ in range(100):
        never.failure()
    assert never.allow() is breaker.CircuitState.CLOSED


def test_citation_markers_split_anywhere_are_read_once_in_order() -> None:
    text = "A [2] b [1, 3] c [2] d [7] e [1"
    for size in (1, 2, 3, 5):
        tracker = CitationTracker(3)
        for i in range(0, len(text), size):
            tracker.feed(text[i : i + size])
        assert tracker.numbers == [2, 1, 3] and tracker.invented == [7]


def test_sources_are_numbered_and_labelled() -> None:
    table = Hit(chunk_id="x", doc_id="d", filename="t.pdf", page=2, modality="table", text="| a |\n|---|\n| 1 |", score=1)
    assert format_source(3, table) == "[3] t.pdf, page 2: Table:\n| a |\n|---|\n| 1 |"
    messages = build_messages("q?", HITS)
    assert messages[0]["role"] == "system" and "[n]" in messages[0]["content"]
    assert "do not contain the answer" in messages[0]["content"]


def test_providers_come_from_the_environment_and_the_key_stays_secret(monkeypatch) -> None:
    monkeypatch.setenv("MMRAG_LLM_PROVIDERS", json.dumps([
        {"name": "cerebras", "base_url": "https://api.cerebras.ai/v1", "api_key": API_KEY, "model": "llama-3.3-70b"},
        {"name": "ollama", "base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5"},
    ]))  # fmt: skip
    monkeypatch.setenv("MMRAG_LLM_READ_TIMEOUT_S", "7")
    settings = AgentSettings()
    chain = provider_chain(settings)
    assert [p.name for p in chain.providers] == ["cerebras", "ollama"] and chain.timeout.read == 7
    assert settings.llm_providers[1].api_key is None
    assert API_KEY not in repr(settings) and API_KEY not in str(settings.llm_providers)


async def test_a_malformed_stream_counts_as_a_failure_before_the_first_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=b"data: {not json\n\n")

    chain = ProviderChain([provider("http://x", "m")], connect_timeout_s=1, read_timeout_s=1, max_tokens=16,
                          client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))  # fmt: skip
    items = [item async for item in chain.stream([{"role": "user", "content": "q"}])]
    assert len(items) == 1 and items[0].mid_stream is False and "malformed" in items[0].reason


def test_a_source_from_an_office_file_is_named_by_its_locator_not_a_page() -> None:
    hit = Hit(chunk_id="d-1", doc_id="d", filename="orders.xlsx", page=1, locator="Orders rows 2-9 (A2:E9)",
              modality="table", text="|Order|Paid|\n|---|---|\n|ORD-1|TRUE|", score=1.0, headings=["Orders"])  # fmt: skip
    assert format_source(2, hit).startswith("[2] orders.xlsx, Orders rows 2-9 (A2:E9): Table:\n|Order|Paid|")


async def test_a_vision_provider_gets_the_image_hits_pictures_and_a_text_provider_only_their_text(llm) -> None:
    fake, base = llm
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    pictures = {2: Picture("image/png", png)}
    looking = provider(base, "fail500", name="looking").model_copy(update={"vision": True})
    reading = provider(base, "normal", name="reading")
    chain = ProviderChain([looking, reading], connect_timeout_s=1.0, read_timeout_s=READ_TIMEOUT_S, max_tokens=256)
    try:
        answerer = await answer(QUESTION, HITS, AnswerEmitter(RecordingNats(), tenant="t", request_id="r1"), chain,
                                pictures=pictures)  # type: ignore[arg-type]  # fmt: skip
    finally:
        await chain.aclose()
    assert answerer == "reading"
    (_, to_looking, _), (_, to_reading, _) = fake.requests
    text, label, image = to_looking["messages"][1]["content"]
    assert text["type"] == "text" and "[2] reactor.pdf, page 4: Image caption/OCR text: Cooling loop" in text["text"]
    assert label == {"type": "text", "text": "Picture of source [2]:"}
    assert image == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    assert to_reading["messages"][1]["content"] == text["text"]  # the same prompt, as plain text
