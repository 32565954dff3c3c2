"""Conversations over real HTTP on the shared `mmrag up --auth` (a tenant and key per test): follow-ups answered
from the right document, isolation between keys and tenants, the bounds, feedback. The follow-up rules
themselves: tests/unit/test_followup.py; the LLM rewrite: tests/unit/test_followup_llm.py.
"""

from __future__ import annotations

import os
import re
import subprocess

import aiohttp
import nats
from nats.js.errors import NotFoundError

from contracts.conversations import meta_key, turns_key
from contracts.topology import CONVERSATIONS_BUCKET
from edge_api.keys import create_key
from tests.e2e.conftest import new_tenant
from tests.engine import BIN, TenantEngine, sse_events, upload_bytes, wait_status

TURN_CAP = 4  # the shared engine's MMRAG_CONVERSATION_MAX_TURNS (tests/e2e/conftest.py)

# The Osprey sheet is worded like the follow-ups themselves: asked alone, they find it, not the Falcon manual.
FALCON = (
    "Falcon X survey drone, field manual.\n\n"
    "The Falcon X carries a maximum payload of 2.5 kg.\n\n"
    "The Falcon X weighs 1.2 kg without its camera.\n\n"
    "The Falcon X battery lasts 40 minutes in calm air.\n"
)
OSPREY = (
    "Osprey 2 cargo drone, weight and balance sheet.\n\n"
    "How much does it weigh? The Osprey 2 weighs 3.1 kg empty; weigh it with its battery before every flight.\n\n"
    "The Osprey 2 carries a maximum payload of 4 kg.\n\n"
    "How long does its battery last? The Osprey 2 battery lasts 25 minutes.\n"
)


def other_key(engine: TenantEngine, role: str) -> TenantEngine:
    """Another API key of the same tenant."""
    _, key = create_key(engine.shared.data_dir / "api-keys.json", engine.tenant, role)
    return TenantEngine(engine.shared, engine.tenant, key)


async def create(http: aiohttp.ClientSession, engine: TenantEngine, headers: dict | None = None, **body) -> dict:
    async with http.post(f"{engine.url}/v1/conversations", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Location"].endswith(f"/v1/conversations/{(created := await resp.json())['id']}")
        return created


async def get(http: aiohttp.ClientSession, engine: TenantEngine, cid: str, headers: dict | None = None) -> dict:
    async with http.get(f"{engine.url}/v1/conversations/{cid}", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def answer_of(events: list[tuple[str, dict]]) -> tuple[str, list[dict], dict]:
    """(answer text, citations, retrieval data) of an ask's events; fails on an error event."""
    assert events and events[-1][0] == "done", events[-3:]
    text = "".join(d["text"] for e, d in events if e == "token")
    return text, [d for e, d in events if e == "citation"], next(d for e, d in events if e == "retrieval")


async def ingest(http: aiohttp.ClientSession, engine: TenantEngine) -> dict[str, str]:
    ids = {}
    for name, text in (("falcon", FALCON), ("osprey", OSPREY)):
        resp = await upload_bytes(http, engine.url, text.encode(), f"{name}.txt", "text/plain")
        assert resp.status == 202, await resp.text()
        ids[name] = (await resp.json())["doc_id"]
    for doc_id in ids.values():
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=180))["status"] == "indexed"
    return ids


async def test_three_turns_follow_ups_answered_from_the_right_document(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    ids = await ingest(http, engine)
    conversation = await create(http, engine)
    cid = conversation["id"]
    assert conversation["turns"] == [] and conversation["turn_count"] == 0

    turns = [
        ("What is the maximum payload of the Falcon X?", "2.5 kg"),
        ("And how much does it weigh?", "1.2 kg"),
        ("And how long does its battery last?", "40 minutes"),
    ]
    for n, (question, fact) in enumerate(turns, start=1):
        events = await sse_events(http, engine.url, {"question": question, "top_k": 1, "conversation_id": cid})
        assert events[0] == ("conversation", {"conversation_id": cid, "turn": n})
        text, citations, retrieval = answer_of(events)
        assert fact in text, (question, retrieval["searched"], text)
        assert {c["doc_id"] for c in citations} == {ids["falcon"]}, (question, citations)
        if n > 1:  # resolved: the searched question names the Falcon X
            assert "Falcon X" in retrieval["searched"] and retrieval["searched"] != question
        # The same follow-up alone finds the other document (or nothing): the conversation is what answers it.
        if n > 1:
            alone = await sse_events(http, engine.url, {"question": question, "top_k": 1})
            alone_text, alone_citations, alone_retrieval = answer_of(alone)
            assert alone_retrieval["searched"] == question
            assert fact not in alone_text and ids["falcon"] not in {c["doc_id"] for c in alone_citations}

    stored = await get(http, engine, cid)
    assert stored["turn_count"] == 3 and [t["n"] for t in stored["turns"]] == [1, 2, 3]
    assert stored["title"] == turns[0][0]  # named after its first question
    second = stored["turns"][1]
    assert second["question"] == turns[1][0] and "Falcon X" in second["searched"]
    assert "1.2 kg" in second["answer"] and second["answerer"] == "extractive" and not second["abstained"]
    assert second["citations"][0]["doc_id"] == ids["falcon"] and second["citations"][0]["filename"] == "falcon.txt"

    # Regenerate the last answer: it replaces turn 3 (asked against turns 1-2), no fourth turn.
    again = await sse_events(http, engine.url, {"question": turns[2][0], "top_k": 1, "conversation_id": cid,
                                                "regenerate": True})  # fmt: skip
    assert again[0] == ("conversation", {"conversation_id": cid, "turn": 3})
    assert "40 minutes" in answer_of(again)[0]
    assert (await get(http, engine, cid))["turn_count"] == 3

    # "The second one" when the last answer cited one document: nothing it could mean, so it is declined.
    unresolved = await sse_events(http, engine.url, {"question": "What about the second one?", "top_k": 1,
                                                     "conversation_id": cid})  # fmt: skip
    _, citations, retrieval = answer_of(unresolved)
    assert retrieval == {"hits": [], "searched": "What about the second one?"} and citations == []
    assert unresolved[-1][1] == {"answerer": "abstention", "abstained": True}


async def test_feedback_is_stored_with_the_turn(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    cid = (await create(http, engine, title="feedback"))["id"]
    answer_of(await sse_events(http, engine.url, {"question": "What is the boiling point of water?", "conversation_id": cid}))
    url = f"{engine.url}/v1/conversations/{cid}/turns/1/feedback"
    async with http.put(url, json={"rating": "down", "comment": "not in my documents"}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["feedback"]["rating"] == "down"
    async with http.put(url, json={"rating": "up"}) as resp:  # the latest verdict replaces the earlier one
        assert resp.status == 200
    feedback = (await get(http, engine, cid))["turns"][0]["feedback"]
    assert feedback["rating"] == "up" and feedback["comment"] is None and feedback["at"]
    async with http.put(url, json={"rating": "meh"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_body"
    async with http.put(url.replace("/turns/1/", "/turns/2/"), json={"rating": "up"}) as resp:
        assert resp.status == 404


async def test_a_conversation_is_its_key_s_unless_read_by_the_tenant_admin(
    engine: TenantEngine, http: aiohttp.ClientSession, shared_engine
) -> None:
    cid = (await create(http, engine, title="private"))["id"]
    answer_of(await sse_events(http, engine.url, {"question": "Where is the warehouse?", "conversation_id": cid}))
    colleague, admin = other_key(engine, "writer"), other_key(engine, "admin")
    stranger = new_tenant(shared_engine, "stranger", "admin")
    for who in (colleague, stranger):  # another key of the tenant, another tenant's admin: it does not exist
        async with http.get(f"{engine.url}/v1/conversations/{cid}", headers=who.headers) as resp:
            assert resp.status == 404, await resp.text()
        async with http.get(f"{engine.url}/v1/conversations", headers=who.headers) as resp:
            assert cid not in {c["id"] for c in (await resp.json())["conversations"]}
        for method, path, body in (("PATCH", "", {"title": "mine"}), ("DELETE", "", None),
                                   ("PUT", "/turns/1/feedback", {"rating": "down"})):  # fmt: skip
            async with http.request(method, f"{engine.url}/v1/conversations/{cid}{path}", json=body,
                                    headers=who.headers) as resp:  # fmt: skip
                assert resp.status == 404, (method, await resp.text())
        async with http.post(f"{engine.url}/v1/ask", json={"question": "And where is it?", "conversation_id": cid},
                             headers=who.headers) as resp:  # fmt: skip
            assert resp.status == 404, await resp.text()
    async with http.get(f"{engine.url}/v1/conversations?owner=*", headers=colleague.headers) as resp:
        assert resp.status == 403
    # The tenant's admin reads it (and lists every key's), but does not change it.
    assert (await get(http, engine, cid, headers=admin.headers))["turns"][0]["question"] == "Where is the warehouse?"
    async with http.get(f"{engine.url}/v1/conversations?owner=*", headers=admin.headers) as resp:
        assert cid in {c["id"] for c in (await resp.json())["conversations"]}
    async with http.delete(f"{engine.url}/v1/conversations/{cid}", headers=admin.headers) as resp:
        assert resp.status == 404
    assert (await get(http, engine, cid))["title"] == "private"


async def test_bounds_turn_cap_rename_and_delete_removes_the_bytes(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    conversation = await create(http, engine)
    cid = conversation["id"]
    for n in range(TURN_CAP):
        answer_of(await sse_events(http, engine.url, {"question": f"Question number {n} about pumps?", "conversation_id": cid}))
    async with http.post(f"{engine.url}/v1/ask", json={"question": "One more about pumps?", "conversation_id": cid}) as resp:
        assert resp.status == 409, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "conversation_full" and "POST /v1/conversations" in error["message"]

    async with http.patch(f"{engine.url}/v1/conversations/{cid}", json={"title": "Pumps"}) as resp:
        assert resp.status == 200 and (await resp.json())["title"] == "Pumps"
    async with http.get(f"{engine.url}/v1/conversations") as resp:
        listed = (await resp.json())["conversations"]
        assert [(c["id"], c["title"], c["turn_count"]) for c in listed] == [(cid, "Pumps", TURN_CAP)]

    owner = listed[0]["owner"]
    async with http.delete(f"{engine.url}/v1/conversations/{cid}") as resp:
        assert resp.status == 204
    async with http.get(f"{engine.url}/v1/conversations/{cid}") as resp:
        assert resp.status == 404
    async with http.get(f"{engine.url}/v1/conversations") as resp:
        assert (await resp.json())["conversations"] == []
    # Purged: no value of either key is left in the bucket, not even an old revision.
    async with await nats.connect(engine.nats_url) as nc:
        js = nc.jetstream()
        for key in (meta_key(engine.tenant, owner, cid), turns_key(engine.tenant, owner, cid)):
            try:
                last = await js.get_last_msg(f"KV_{CONVERSATIONS_BUCKET}", f"$KV.{CONVERSATIONS_BUCKET}.{key}")
            except NotFoundError:
                continue
            assert not last.data and last.headers and last.headers.get("KV-Operation") == "PURGE", last
    async with http.delete(f"{engine.url}/v1/conversations/{cid}") as resp:
        assert resp.status == 404
    async with http.post(f"{engine.url}/v1/ask", json={"question": "Pumps?", "conversation_id": cid}) as resp:
        assert resp.status == 404


def mmrag_chat(engine: TenantEngine, lines: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`mmrag chat` with `lines` piped to its stdin."""
    return subprocess.run(
        [str(BIN / "mmrag"), "chat", "--url", engine.url, "--top-k", "1", *args], input=lines, capture_output=True,
        text=True, timeout=120, env={**os.environ, **engine.client_env},
    )  # fmt: skip


async def test_mmrag_chat_piped_follows_up_and_continues(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    ids = await ingest(http, engine)
    first = mmrag_chat(engine, "What is the maximum payload of the Falcon X?\n\nAnd how much does it weigh?\n")
    assert first.returncode == 0, first.stderr
    cid = re.search(r"conversation ([0-9a-f]{32})", first.stderr).group(1)  # type: ignore[union-attr]
    assert "(searched: How much does the Falcon X weigh?)" in first.stderr
    assert "2.5 kg" in first.stdout and "1.2 kg" in first.stdout
    assert f"[1] falcon.txt page 1 (doc {ids['falcon']})" in first.stdout

    more = mmrag_chat(engine, "And how long does its battery last?\n/quit\nnever asked\n", "--conversation", cid)
    assert more.returncode == 0, more.stderr
    assert "40 minutes" in more.stdout and "(3 turns)" not in more.stderr and "(2 turns)" in more.stderr
    stored = await get(http, engine, cid)
    assert [t["question"] for t in stored["turns"]] == [
        "What is the maximum payload of the Falcon X?", "And how much does it weigh?",
        "And how long does its battery last?",
    ]  # fmt: skip

    unknown = mmrag_chat(engine, "hello?\n", "--conversation", "0" * 32)
    assert unknown.returncode == 1 and "404" in unknown.stderr and "Traceback" not in unknown.stderr


async def test_feedback_is_exported_and_the_liked_answers_become_evaluation_questions(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    resp = await upload_bytes(http, engine.url, b"Pump P-7 service sheet.\n\nThe pump P-7 runs at 3 bar.\n", "pump.txt",
                              "text/plain")  # fmt: skip
    doc_id = (await resp.json())["doc_id"]
    assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=180))["status"] == "indexed"
    cid = (await create(http, engine, title="pump"))["id"]
    for question in ("At what pressure does the pump P-7 run?", "Who painted the Mona Lisa?"):
        answer_of(await sse_events(http, engine.url, {"question": question, "top_k": 1, "conversation_id": cid}))
    for n, rating in ((1, "up"), (2, "down")):
        async with http.put(f"{engine.url}/v1/conversations/{cid}/turns/{n}/feedback", json={"rating": rating}) as resp:
            assert resp.status == 200, await resp.text()

    async with http.get(f"{engine.url}/v1/feedback") as resp:
        assert resp.status == 200, await resp.text()
        exported = await resp.json()
    mine = [(t["turn"]["n"], t["turn"]["feedback"]["rating"]) for t in exported["turns"] if t["conversation_id"] == cid]
    assert mine == [(1, "up"), (2, "down")] and exported["truncated"] is False

    async with http.get(f"{engine.url}/v1/feedback/questions") as resp:
        questions = [q for q in (await resp.json())["questions"] if q["id"].startswith(cid)]
    assert questions == [{"id": f"{cid}-1", "question": "At what pressure does the pump P-7 run?",
                          "expected": [{"doc": doc_id, "page": 1}], "facts": []}]  # fmt: skip

    # Another key of the tenant sees none of it; the tenant's admin reads every key's and runs them as an evaluation.
    colleague, admin = other_key(engine, "writer"), other_key(engine, "admin")
    async with http.get(f"{engine.url}/v1/feedback", headers=colleague.headers) as resp:
        assert cid not in {t["conversation_id"] for t in (await resp.json())["turns"]}
    async with http.get(f"{engine.url}/v1/feedback/questions?owner=*", headers=colleague.headers) as resp:
        assert resp.status == 403
    async with http.get(f"{engine.url}/v1/feedback/questions?owner=*", headers=admin.headers) as resp:
        body = await resp.json()
    assert f"{cid}-1" in {q["id"] for q in body["questions"]}
    async with http.post(f"{engine.url}/v1/evaluations", json={"name": "liked answers", "questions": body["questions"]},
                         headers=admin.headers) as resp:  # fmt: skip
        assert resp.status == 202, await resp.text()
