"""Two tenants on one engine, the HTTP/SSE half: with tenant A's API key (an `admin`, the most a tenant key is),
every route of `edge_api/routes` is tried against tenant B's documents, pictures, evaluations and conversations:
read, list, search, ask (in B's conversation too), stream progress, fetch pages and images, delete, re-parse
(re-index), overwrite, evaluate, rename, rate. Every
attempt is refused (404/403, or answered from A's own data only), and B's data is unchanged afterwards.

Table-driven over the routes the edge API's router holds (the declared operations of `edge_api.routes` and
`/mcp`, whose tools call those routes with the caller's key): each route has an attack in `ATTACKS`, or is in
`NO_TENANT_DATA` (open routes that serve no tenant's data: still called with A's key, and B's names must not
appear in what they answer). A new route in neither fails `test_every_route_is_tried`.

The NATS half (A's external-publisher credential against B's subjects, streams and buckets):
tests/security/test_two_tenants_nats.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from edge_api import EdgeSettings, create_app
from tests.engine import TenantEngine, upload_bytes, wait_status
from tests.factories import FIGURE_1, make_figures_pdf, make_png
from tests.security.conftest import new_tenant

SECRET_WORD = "vexmorrow"
SECRET_FACT = "The vexmorrow relay trips at 17 amperes"
SECRET_TEXT = f"{SECRET_FACT}. Only tenant B may ever read that the vexmorrow relay sits behind panel Q9.\n"
TIMEOUT = aiohttp.ClientTimeout(total=120)


@dataclass(frozen=True)
class Victim:
    """Tenant B and what it owns."""

    tenant: TenantEngine
    text_doc: str
    pdf_doc: str
    image_id: str
    evaluation_id: str
    conversation_id: str

    @property
    def doc_ids(self) -> tuple[str, str]:
        return (self.text_doc, self.pdf_doc)

    def names(self) -> tuple[str, ...]:
        """What must never appear in an answer to A: B's tenant, ids and secret."""
        return (self.tenant.tenant, *self.doc_ids, self.image_id, self.evaluation_id, self.conversation_id, SECRET_WORD)


async def _evaluation_done(http: aiohttp.ClientSession, url: str, evaluation_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(f"{url}/v1/evaluations/{evaluation_id}") as resp:
            assert resp.status == 200, await resp.text()
            record = await resp.json()
        if record["state"] in ("done", "failed"):
            return record
        await asyncio.sleep(0.3)
    raise TimeoutError(f"evaluation {evaluation_id} not finished in {timeout_s}s")


async def _make_victim(b: TenantEngine) -> Victim:
    async with aiohttp.ClientSession(headers=b.headers, timeout=TIMEOUT) as http:
        resp = await upload_bytes(http, b.url, SECRET_TEXT.encode(), "relay-secret.txt", "text/plain")
        assert resp.status == 202
        text_doc = (await resp.json())["doc_id"]
        pdf, _ = make_figures_pdf()
        resp = await upload_bytes(http, b.url, pdf, "figures.pdf")
        assert resp.status == 202
        pdf_doc = (await resp.json())["doc_id"]
        for doc_id in (text_doc, pdf_doc):
            await wait_status(http, b.url, doc_id, {"indexed"})
        body = {"query": FIGURE_1, "top_k": 20, "filters": {"doc_ids": [pdf_doc], "modalities": ["image"]}}
        async with http.post(f"{b.url}/v1/search", json=body) as resp:
            hits = (await resp.json())["hits"]
        assert hits, "B's figure is not found by its caption"
        image_id = hits[0]["image"]["object_name"].rsplit("/", 1)[-1]
        question = {"question": f"{SECRET_WORD} relay trip current", "expected": [{"doc": text_doc}],
                    "facts": ["17 amperes"]}  # fmt: skip
        async with http.post(f"{b.url}/v1/evaluations", json={"questions": [question]}) as resp:
            assert resp.status == 202, await resp.text()
            evaluation_id = (await resp.json())["id"]
        report = await _evaluation_done(http, b.url, evaluation_id)
        assert report["runs"][0]["metrics"]["recall"] == 1.0, report
        async with http.post(f"{b.url}/v1/conversations", json={"title": f"{SECRET_WORD} notes"}) as resp:
            conversation_id = (await resp.json())["id"]
        body = {"question": f"At what current does the {SECRET_WORD} relay trip?", "conversation_id": conversation_id}
        async with http.post(f"{b.url}/v1/ask", json=body) as resp:
            assert "event: done" in await resp.text()
        async with http.get(f"{b.url}/v1/conversations/{conversation_id}") as resp:
            assert "17 amperes" in (await resp.json())["turns"][0]["answer"], "B's conversation holds its secret"
        async with http.put(f"{b.url}/v1/conversations/{conversation_id}/turns/1/feedback", json={"rating": "up"}) as resp:
            assert resp.status == 200, await resp.text()  # B's liked answer: what the feedback export holds
        async with http.get(f"{b.url}/v1/feedback/questions") as resp:
            assert [q["id"] for q in (await resp.json())["questions"]] == [f"{conversation_id}-1"]
    return Victim(b, text_doc, pdf_doc, image_id, evaluation_id, conversation_id)


async def _snapshot(v: Victim) -> dict:
    """Everything of B as B sees it: documents, list, pictures, evaluation, and its secret still found."""
    out: dict = {}
    async with aiohttp.ClientSession(headers=v.tenant.headers, timeout=TIMEOUT) as http:
        for doc_id in v.doc_ids:
            async with http.get(f"{v.tenant.url}/v1/documents/{doc_id}") as resp:
                out[doc_id] = (resp.status, await resp.json())
        async with http.get(f"{v.tenant.url}/v1/documents") as resp:
            out["list"] = sorted(d["doc_id"] for d in (await resp.json())["documents"])
        for path in ("pages/1?width=200", f"images/{v.image_id}?width=100"):
            async with http.get(f"{v.tenant.url}/v1/documents/{v.pdf_doc}/{path}") as resp:
                out[path] = (resp.status, hashlib.sha256(await resp.read()).hexdigest())
        async with http.get(f"{v.tenant.url}/v1/evaluations/{v.evaluation_id}") as resp:
            record = await resp.json()
            out["evaluation"] = (resp.status, record["state"], record["questions"], record["runs"])
        async with http.post(f"{v.tenant.url}/v1/search", json={"query": SECRET_FACT}) as resp:
            out["search"] = [h["doc_id"] for h in (await resp.json())["hits"]][:1]
        async with http.get(f"{v.tenant.url}/v1/conversations/{v.conversation_id}") as resp:
            record = await resp.json()
            out["conversation"] = (resp.status, record["title"], record["turns"])
    assert out["search"] == [v.text_doc] and out[v.text_doc][1]["status"] == "indexed", out
    return out


@pytest.fixture(scope="module")
def victim(shared_engine) -> Victim:  # noqa: ANN001
    return asyncio.run(_make_victim(new_tenant(shared_engine, "victim-b", role="admin")))


@pytest.fixture(scope="module")
def before(victim: Victim) -> dict:
    return asyncio.run(_snapshot(victim))


@pytest.fixture
def attacker(shared_engine) -> Callable[[], aiohttp.ClientSession]:  # noqa: ANN001
    """Tenant A's admin key (a new tenant per test): a session factory."""
    a = new_tenant(shared_engine, "attacker-a", role="admin")
    return lambda: aiohttp.ClientSession(headers=a.headers, timeout=TIMEOUT)


# --------------------------------------------------------------------------- the attacks, one per route

Attack = Callable[[aiohttp.ClientSession, str, Victim], Awaitable[None]]
ATTACKS: dict[str, Attack] = {}


def attack(route: str) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        ATTACKS[route] = fn
        return fn

    return register


def _clean(text: str, v: Victim, route: str, sent: str = "") -> None:
    """B's names must not be in `text`, except those A itself sent (`sent`: an error may echo the id asked for)."""
    leaked = [name for name in v.names() if name in text and name not in sent]
    assert not leaked, f"{route} told tenant A of B's {leaked}: {text[:2000]}"


async def _refused(http: aiohttp.ClientSession, method: str, url: str, v: Victim, statuses=(404,), **kw) -> None:  # noqa: ANN001
    async with http.request(method, url, **kw) as resp:
        text = await resp.text()
        assert resp.status in statuses, f"{method} {url}: {resp.status} {text[:500]}"
    _clean(text, v, f"{method} {url}", sent=url + json.dumps(kw.get("json")))


@attack("POST /v1/documents")
async def _upload(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    # Overwrite B's document: name its id and tenant in every way a form can; the upload is A's, with a new id.
    form = aiohttp.FormData()
    for name, value in (("doc_id", v.text_doc), ("tenant", v.tenant.tenant)):
        form.add_field(name, value)
    form.add_field("file", b"overwritten by A", filename=f"../{v.tenant.tenant}/{v.text_doc}", content_type="text/plain")
    async with http.post(f"{url}/v1/documents", data=form, headers={"X-Tenant": v.tenant.tenant}) as resp:
        body = await resp.json()
        assert resp.status == 202, body
    assert body["doc_id"] not in v.doc_ids, body


@attack("GET /v1/documents")
async def _list(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for query in ("?limit=200", f"?tenant={v.tenant.tenant}", f"?q={v.text_doc[:8]}", "?collection=secret",
                  "?sort=name&order=desc", "?status=indexed"):
        async with http.get(f"{url}/v1/documents{query}") as resp:
            text = await resp.text()
            assert resp.status == 200 and json.loads(text)["documents"] == [], text
            assert json.loads(text)["total"] == 0, text
        _clean(text, v, "GET /v1/documents")
    # A made-up cursor is refused as such (it cannot point into another tenant's list).
    await _refused(http, "GET", f"{url}/v1/documents?cursor={'f' * 32}", v, statuses=(400,))


@attack("GET /v1/collections")
async def _collections(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    async with http.get(f"{url}/v1/collections") as resp:
        text = await resp.text()
        assert resp.status == 200 and json.loads(text)["collections"] == [], text
    _clean(text, v, "GET /v1/collections")


@attack("PUT /v1/documents/{doc_id}/collections")
async def _set_collections(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "PUT", f"{url}/v1/documents/{doc_id}/collections", v, json={"collections": ["taken"]})


@attack("GET /v1/documents/{doc_id}/passages")
async def _passages(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "GET", f"{url}/v1/documents/{doc_id}/passages?page=1", v)


@attack("POST /v1/documents/{doc_id}/reparse")
async def _reparse(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "POST", f"{url}/v1/documents/{doc_id}/reparse", v)


@attack("GET /v1/documents/{doc_id}")
async def _status(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "GET", f"{url}/v1/documents/{doc_id}", v)


@attack("DELETE /v1/documents/{doc_id}")
async def _delete(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "DELETE", f"{url}/v1/documents/{doc_id}", v)


@attack("PUT /v1/documents/{doc_id}")
async def _replace(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    # Overwrite B's document by its id (a new revision): A's tenant has no such document.
    for doc_id in v.doc_ids:
        form = aiohttp.FormData()
        form.add_field("file", b"overwritten by A", filename="b.txt", content_type="text/plain")
        await _refused(http, "PUT", f"{url}/v1/documents/{doc_id}", v, data=form)


@attack("PATCH /v1/documents/{doc_id}")
async def _move(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        body = {"source": "a-folder", "source_path": "moved-by-a.txt"}
        await _refused(http, "PATCH", f"{url}/v1/documents/{doc_id}", v, json=body)


@attack("POST /v1/ask")
async def _ask(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for filters in ({}, {"doc_ids": list(v.doc_ids)}):
        body = {"question": f"At what current does the {SECRET_WORD} relay trip?", "filters": filters}
        async with http.post(f"{url}/v1/ask", json=body, headers={"Accept": "text/event-stream"}) as resp:
            text = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/event-stream", text
        assert "event: done" in text, text
        _clean(text, v, "POST /v1/ask", sent=json.dumps(body))  # A's question names the secret word itself,
        assert "17 amperes" not in text and "panel Q9" not in text, text  # but no answer may hold B's text
    async with http.post(f"{url}/v1/ask", json={"question": "relay", "tenant": v.tenant.tenant}) as resp:
        assert resp.status == 400, await resp.text()
    for regenerate in (False, True):  # follow up in B's conversation, or redo its answer: no such conversation
        body = {"question": "And what about it?", "conversation_id": v.conversation_id, "regenerate": regenerate}
        await _refused(http, "POST", f"{url}/v1/ask", v, json=body)


@attack("POST /v1/search")
async def _search(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for filters in ({}, {"doc_ids": list(v.doc_ids)}):
        async with http.post(f"{url}/v1/search", json={"query": SECRET_FACT, "top_k": 50, "filters": filters}) as resp:
            text = await resp.text()
            assert resp.status == 200 and json.loads(text)["hits"] == [], text
        _clean(text, v, "POST /v1/search")
    form = aiohttp.FormData()
    form.add_field("image", make_png(400, 300, (200, 60, 60)), filename="q.png", content_type="image/png")
    form.add_field("filters", json.dumps({"doc_ids": [v.pdf_doc]}))
    async with http.post(f"{url}/v1/search", data=form) as resp:
        text = await resp.text()
        assert resp.status == 200 and json.loads(text)["hits"] == [], text
    _clean(text, v, "POST /v1/search (image)")


@attack("GET /v1/progress")
async def _progress(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    async with http.get(f"{url}/v1/progress", headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        text = await asyncio.wait_for(resp.text(), 30)  # ends with `idle`: nothing of A's is moving
    assert "event: idle" in text, text
    _clean(text, v, "GET /v1/progress")


@attack("GET /v1/documents/{doc_id}/pages/{page}")
async def _page(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "GET", f"{url}/v1/documents/{doc_id}/pages/1?width=200", v)


@attack("GET /v1/documents/{doc_id}/pages/{page}/text")
async def _page_text(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    for doc_id in v.doc_ids:
        await _refused(http, "GET", f"{url}/v1/documents/{doc_id}/pages/1/text", v)


@attack("GET /v1/documents/{doc_id}/images/{image_id}")
async def _image(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/documents/{v.pdf_doc}/images/{v.image_id}?width=100", v)
    await _refused(http, "GET", f"{url}/v1/documents/{v.text_doc}/images/{v.image_id}", v)


# Re-parse: a re-index re-parses every tenant's documents, so it is the operator's (no tenant key has it).
@attack("POST /v1/reindex")
async def _reindex(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "POST", f"{url}/v1/reindex", v, statuses=(403,), json={"mode": "reparse"})


@attack("GET /v1/reindex")
async def _reindexes(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/reindex", v, statuses=(403,))


@attack("GET /v1/reindex/{id}")
async def _reindex_status(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/reindex/1", v, statuses=(403,))


@attack("DELETE /v1/reindex/{id}")
async def _reindex_cancel(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "DELETE", f"{url}/v1/reindex/1", v, statuses=(403,))


@attack("GET /v1/reindex/{id}/events")
async def _reindex_events(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/reindex/1/events", v, statuses=(403,))


@attack("POST /v1/evaluations")
async def _evaluate(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    question = {"question": f"{SECRET_WORD} relay trip current", "expected": [{"doc": v.text_doc},
                {"doc": "relay-secret.txt"}], "facts": ["17 amperes"]}  # fmt: skip
    body = {"questions": [question], "compare_with": v.evaluation_id}
    await _refused(http, "POST", f"{url}/v1/evaluations", v, json=body)
    async with http.post(f"{url}/v1/evaluations", json={"questions": [question]}) as resp:
        assert resp.status == 202, await resp.text()
        evaluation_id = (await resp.json())["id"]
    report = await _evaluation_done(http, url, evaluation_id)
    metrics = report["runs"][0]["metrics"]
    assert report["state"] == "done" and metrics["recall"] == 0.0 and metrics["fact_rate"] == 0.0, report
    results = json.dumps(report["runs"])
    assert v.text_doc not in results and v.pdf_doc not in results and "panel Q9" not in results, results


@attack("GET /v1/evaluations")
async def _evaluations(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    async with http.get(f"{url}/v1/evaluations") as resp:
        text = await resp.text()
        assert resp.status == 200
    _clean(text, v, "GET /v1/evaluations")


@attack("GET /v1/evaluations/{id}")
async def _evaluation(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/evaluations/{v.evaluation_id}", v)


async def _owners_list_none(http: aiohttp.ClientSession, url: str, v: Victim, path: str, field: str) -> None:
    """A list by conversation owner (`owner=` the caller's, `*`, or B's tenant name as a key id) holds nothing of
    B's: A is an admin, so `*` means every key of A's tenant only."""
    for query in ("", "?owner=*", f"?owner={v.tenant.tenant}"):
        async with http.get(f"{url}{path}{query}") as resp:
            text = await resp.text()
            assert resp.status == 200 and json.loads(text)[field] == [], text
        _clean(text, v, f"GET {path}")


@attack("GET /v1/conversations")
async def _conversations(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _owners_list_none(http, url, v, "/v1/conversations", "conversations")


@attack("POST /v1/conversations")
async def _new_conversation(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    body = {"title": "mine", "id": v.conversation_id, "tenant": v.tenant.tenant}
    await _refused(http, "POST", f"{url}/v1/conversations", v, statuses=(400,), json=body)  # no such fields
    async with http.post(f"{url}/v1/conversations", json={"title": v.conversation_id}) as resp:
        created = await resp.json()
        assert resp.status == 201 and created["id"] != v.conversation_id and created["turns"] == [], created


@attack("GET /v1/conversations/{id}")
async def _read_conversation(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "GET", f"{url}/v1/conversations/{v.conversation_id}", v)


@attack("PATCH /v1/conversations/{id}")
async def _rename_conversation(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "PATCH", f"{url}/v1/conversations/{v.conversation_id}", v, json={"title": "taken"})


@attack("DELETE /v1/conversations/{id}")
async def _delete_conversation(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _refused(http, "DELETE", f"{url}/v1/conversations/{v.conversation_id}", v)


@attack("PUT /v1/conversations/{id}/turns/{n}/feedback")
async def _rate_turn(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    path = f"{url}/v1/conversations/{v.conversation_id}/turns/1/feedback"
    await _refused(http, "PUT", path, v, json={"rating": "down", "comment": "spam"})


@attack("GET /v1/feedback")
async def _feedback(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _owners_list_none(http, url, v, "/v1/feedback", "turns")


@attack("GET /v1/feedback/questions")
async def _feedback_questions(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    await _owners_list_none(http, url, v, "/v1/feedback/questions", "questions")


@attack("* /mcp")
async def _mcp(http: aiohttp.ClientSession, url: str, v: Victim) -> None:
    headers = {"Authorization": http.headers["Authorization"]}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as client,
        streamable_http_client(f"{url}/mcp", http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for doc_id in v.doc_ids:
            refused = await session.call_tool("get_page", {"doc_id": doc_id, "page": 1})
            assert refused.is_error and "404" in refused.content[0].text, refused.content
            with pytest.raises(Exception, match="404"):
                await session.read_resource(f"mmrag://documents/{doc_id}")
        texts = []
        for tool, arguments in (("search", {"query": SECRET_FACT, "doc_ids": list(v.doc_ids)}),
                                ("search", {"query": SECRET_FACT, "top_k": 50}), ("list_documents", {}),
                                ("ask", {"question": f"At what current does the {SECRET_WORD} relay trip?"})):  # fmt: skip
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, (tool, result.content)
            texts.append(json.dumps(result.structured_content) + " ".join(getattr(c, "text", "") for c in result.content))
    text = " ".join(texts)
    assert "17 amperes" not in text and "panel Q9" not in text, text
    _clean(text, v, "/mcp", sent=SECRET_WORD)


# Routes that serve no tenant's data (still called with A's key: B's names must not appear in their answers).
NO_TENANT_DATA = {
    "GET /health": "/health",
    "GET /ready": "/ready",
    "GET /metrics": "/metrics",  # counters without tenant labels (docs/operations.md)
    "GET /": "/",
    "GET /ui/{asset}": "/ui/main.js",
    "GET /v1/session": "/v1/session",  # A's own tenant and role
    "GET /v1/openapi.json": "/v1/openapi.json",
    "GET /v1/docs": "/v1/docs",
}


def test_every_route_is_tried() -> None:
    app = create_app(EdgeSettings(nats_url="nats://127.0.0.1:1", auth="on", api_keys=""))  # never started
    declared = {f"{r.method} {r.resource.canonical}" for r in app.router.routes() if r.method != "HEAD"}
    missing = declared - set(ATTACKS) - set(NO_TENANT_DATA)
    assert not missing, f"routes no test tries with another tenant's key: {sorted(missing)}: add an attack here"
    assert not (set(ATTACKS) | set(NO_TENANT_DATA)) - declared, "an attack on a route that no longer exists"
    assert not set(ATTACKS) & set(NO_TENANT_DATA)


@pytest.mark.parametrize("route", sorted(ATTACKS))
async def test_tenant_a_cannot_reach_tenant_b_by(route: str, victim: Victim, before: dict, attacker) -> None:  # noqa: ANN001
    async with attacker() as http:
        await ATTACKS[route](http, victim.tenant.url, victim)
    assert await _snapshot(victim) == before, f"{route}: B's data changed"


@pytest.mark.parametrize("route", sorted(NO_TENANT_DATA))
async def test_open_routes_name_no_other_tenant(route: str, victim: Victim, attacker) -> None:  # noqa: ANN001
    async with attacker() as http, http.get(f"{victim.tenant.url}{NO_TENANT_DATA[route]}") as resp:
        assert resp.status == 200, route
        _clean(await resp.text(), victim, route)
