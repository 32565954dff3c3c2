"""The LLM rewrite of a follow-up (`search.followup.rewrite_with_llm`) against a real OpenAI-compatible streaming
server on loopback (aiohttp, as in tests/unit/test_llm.py): what is asked, what is searched, and the fallback to
the offline rules when the provider fails or answers nothing usable."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.settings import LLMProvider
from contracts.messages import PriorTurn
from models.llm import ProviderChain
from search.followup import REWRITE_PROMPT, SEARCH_QUERY_PROMPT, rewrite_with_llm, search_query_with_llm

HISTORY = [PriorTurn(question="What is the maximum payload of the Falcon X?", answer="2.5 kg [1].", doc_ids=["f"])]
REWRITE = "How much does the Falcon X weigh?"


def chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n".encode()


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        self.requests.append(await request.json())
        if mode == "fail500":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = {"good": ["Standalone question: How much does the ", "Falcon X weigh?\n"], "blank": ["  \n"],
                  "terms": ["Search query: descale heating element ", "citric acid\n"],
                  "echo": ["How do I get the chalk off the heater?"]}[mode]  # fmt: skip
        for text in pieces:
            await response.write(chunk(text))
        await response.write(chunk(None, finish="stop") + b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def llm() -> AsyncIterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()
    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


async def rewrite(base: str, *modes: str, question: str = "And how much does it weigh?"):  # noqa: ANN201
    providers = [LLMProvider(name=m, base_url=f"{base}/{m}/v1", model="m") for m in modes]
    chain = ProviderChain(providers, connect_timeout_s=1.0, read_timeout_s=2.0, max_tokens=64)
    try:
        return await rewrite_with_llm(chain, question, HISTORY)
    finally:
        await chain.aclose()


async def test_the_llm_rewrites_the_follow_up_from_the_turns(llm) -> None:
    fake, base = llm
    resolution = await rewrite(base, "good")
    assert (resolution.question, resolution.method) == (REWRITE, "llm")
    (body,) = fake.requests
    system, user = body["messages"]
    assert system == {"role": "system", "content": REWRITE_PROMPT}
    assert "Q1: What is the maximum payload of the Falcon X?\nA1: 2.5 kg [1]." in user["content"]
    assert "Last question: And how much does it weigh?" in user["content"]


async def test_a_failed_provider_hands_over_to_the_next_then_to_the_offline_rules(llm) -> None:
    fake, base = llm
    assert (await rewrite(base, "fail500", "good")).method == "llm"
    offline = await rewrite(base, "fail500", "blank")  # one fails, the other says nothing usable
    assert (offline.question, offline.method) == ("How much does the Falcon X weigh?", "carried")
    assert len(fake.requests) == 4


async def test_no_history_asks_no_llm(llm) -> None:
    fake, base = llm
    chain = ProviderChain([LLMProvider(name="good", base_url=f"{base}/good/v1", model="m")],
                          connect_timeout_s=1.0, read_timeout_s=2.0, max_tokens=64)  # fmt: skip
    try:
        assert (await rewrite_with_llm(chain, "What is it?", [])).method == "standalone"
    finally:
        await chain.aclose()
    assert fake.requests == []


async def search_query(base: str, *modes: str, question: str = "How do I get the chalk off the heater?"):  # noqa: ANN201
    providers = [LLMProvider(name=m, base_url=f"{base}/{m}/v1", model="m") for m in modes]
    chain = ProviderChain(providers, connect_timeout_s=1.0, read_timeout_s=2.0, max_tokens=64)
    try:
        return await search_query_with_llm(chain, question)
    finally:
        await chain.aclose()


async def test_the_llm_writes_a_search_query_in_the_documents_words(llm) -> None:
    fake, base = llm
    assert await search_query(base, "fail500", "terms") == "descale heating element citric acid"
    system, user = fake.requests[-1]["messages"]
    assert system == {"role": "system", "content": SEARCH_QUERY_PROMPT}
    assert user["content"] == "Question: How do I get the chalk off the heater?\n\nSearch query:"


@pytest.mark.parametrize("modes", [("fail500",), ("blank",), ("echo",)])
async def test_no_search_query_when_the_llm_fails_says_nothing_or_repeats_the_question(llm, modes) -> None:
    _fake, base = llm
    assert await search_query(base, *modes) is None
