"""A conversation on an engine with an OpenAI-compatible LLM configured (a fake one on loopback, answering over
SSE as the real APIs do): the retriever asks the LLM to rewrite the follow-up, and what it wrote is what is searched,
shown and kept; a first question is also searched in the words the LLM says the documents use; a conversation
survives a restart of the engine. A private engine (other settings), in local mode (auth off: the one local user owns the conversation).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import pytest

from tests.e2e.test_conversations import FALCON, OSPREY, answer_of
from tests.engine import Engine, sse_events, upload_bytes, wait_status
from tests.factories import render_text_image

# Distinct from what the offline rules would make ("How much does the Falcon X weigh?").
LLM_REWRITE = "What is the weight of the Falcon X drone?"
# A kettle manual of seven sections (one chunk each): six about its filter, one about limescale, in words the user
# does not use ("chalk"); ranked by the user's words alone the six filter sections fill a top 3.
KETTLE = "\n\n".join(
    [f"# Filter of model {n}\n\nReplace the filter cartridge of model {n} every six months; the cartridge of model "
     f"{n} is sold in packs of three." for n in range(6)]
    + ["# Limescale\n\nDescale the heating element with citric acid once a year."]
)  # fmt: skip
KETTLE_QUERY = "descale the heating element with citric acid"


class FakeOpenAI(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(body)
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        user = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)  # parts with pictures
        if system.startswith("You rewrite"):
            text = LLM_REWRITE
        elif system.startswith("You turn a user's question"):  # a search query: only the kettle's is known here
            text = KETTLE_QUERY if "chalk" in user else user.removeprefix("Question: ").split("\n")[0]
        else:
            text = "From the manual: see the cited passage [1]."
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in (text[:10], text[10:]):
            delta = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, llm_url: str) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("llm-engine")
    # `vision`: the model reads images, so the pictures of image hits are sent to it.
    providers = json.dumps([{"name": "fake-llm", "base_url": llm_url, "api_key": "sk-test", "model": "m",
                             "vision": True}])  # fmt: skip
    eng = Engine(root / "data", root / "engine.log", env={"MMRAG_LLM_PROVIDERS": providers}).start()
    yield eng
    assert eng.stop() == 0, eng.log_tail()


async def test_the_llm_rewrites_the_follow_up_that_is_searched(engine: Engine) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        ids = {}
        for name, text in (("falcon", FALCON), ("osprey", OSPREY)):
            resp = await upload_bytes(http, engine.url, text.encode(), f"{name}.txt", "text/plain")
            ids[name] = (await resp.json())["doc_id"]
        for doc_id in ids.values():
            assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, 180))["status"] == "indexed"
        async with http.post(f"{engine.url}/v1/conversations", json={}) as resp:
            created = await resp.json()
            assert resp.status == 201 and created["owner"] == "local"
        cid = created["id"]

        first = await sse_events(None, engine.url, {"question": "What is the maximum payload of the Falcon X?",
                                                    "top_k": 1, "conversation_id": cid})  # fmt: skip
        assert answer_of(first)[2]["searched"] == "What is the maximum payload of the Falcon X?"
        FakeOpenAI.requests.clear()
        follow = await sse_events(None, engine.url, {"question": "And how much does it weigh?", "top_k": 1,
                                                     "conversation_id": cid})  # fmt: skip
        text, citations, retrieval = answer_of(follow)
        assert retrieval["searched"] == LLM_REWRITE
        assert [c["doc_id"] for c in citations] == [ids["falcon"]] and follow[-1][1]["answerer"] == "fake-llm"
        rewrite = next(r for r in FakeOpenAI.requests if r["messages"][0]["content"].startswith("You rewrite"))
        assert "Q1: What is the maximum payload of the Falcon X?" in rewrite["messages"][1]["content"]
        assert "Last question: And how much does it weigh?" in rewrite["messages"][1]["content"]
        # The generator answered the rewritten question, and the turn keeps both wordings.
        answered = next(r for r in FakeOpenAI.requests if not r["messages"][0]["content"].startswith("You rewrite"))
        assert LLM_REWRITE in answered["messages"][-1]["content"]
        async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
            turn = (await resp.json())["turns"][1]
        assert (turn["question"], turn["searched"], turn["answerer"]) == (
            "And how much does it weigh?", LLM_REWRITE, "fake-llm")


async def test_a_conversation_survives_a_restart(engine: Engine) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.post(f"{engine.url}/v1/conversations", json={"title": "kept"}) as resp:
            cid = (await resp.json())["id"]
        answer_of(await sse_events(None, engine.url, {"question": "What does the Osprey 2 weigh?", "conversation_id": cid}))
        async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
            before = await resp.json()
        assert before["turn_count"] == 1
        assert engine.stop() == 0, engine.log_tail()
        engine.start()
        async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
            assert resp.status == 200 and await resp.json() == before


async def test_a_first_question_is_also_searched_in_the_documents_words(engine: Engine) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        resp = await upload_bytes(http, engine.url, KETTLE.encode(), "kettle.md", "text/markdown")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, 180))["status"] == "indexed"
        FakeOpenAI.requests.clear()
        events = await sse_events(None, engine.url, {"question": "How do I get the chalk off?", "top_k": 3})
        text, citations, retrieval = answer_of(events)
        asked = [r for r in FakeOpenAI.requests if r["messages"][0]["content"].startswith("You turn a user's question")]
        assert [r["messages"][-1]["content"] for r in asked] == ["Question: How do I get the chalk off?\n\nSearch query:"]
        assert retrieval["searched"] == "How do I get the chalk off?"  # the user's question is what is shown and answered
        assert "Descale the heating element" in citations[0]["text"] and citations[0]["doc_id"] == doc_id
        assert events[-1][1]["answerer"] == "fake-llm" and not events[-1][1]["abstained"]


async def test_a_vision_provider_is_sent_the_picture_of_an_image_hit(engine: Engine) -> None:
    png = render_text_image(["Account settings", "Incoming server: imap.example.org", "Port: 993"], fontsize=16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        resp = await upload_bytes(http, engine.url, png, "settings.png", "image/png")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, 180))["status"] == "indexed"
        FakeOpenAI.requests.clear()
        events = await sse_events(None, engine.url, {"question": "Which port does the incoming mail server use?",
                                                     "top_k": 3})  # fmt: skip
        _text, _citations, retrieval = answer_of(events)
        image_at = next(n for n, h in enumerate(retrieval["hits"], start=1) if h["doc_id"] == doc_id)
        answered = next(r for r in FakeOpenAI.requests if r["messages"][0]["content"].startswith("You answer"))
        parts = answered["messages"][1]["content"]
        assert parts[0]["type"] == "text" and "Port: 993" in parts[0]["text"]  # the OCR text, as before
        label, picture = parts[parts.index({"type": "text", "text": f"Picture of source [{image_at}]:"}) :][:2]
        assert picture["type"] == "image_url" and picture["image_url"]["url"].startswith("data:image/png;base64,")
        assert base64.b64decode(picture["image_url"]["url"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
