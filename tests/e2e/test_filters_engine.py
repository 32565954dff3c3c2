"""Search filters on the shared `mmrag up` (one tenant for the module): `/v1/search`, `/v1/ask` and the CLI only ever
return what the filters allow. The contract: tests/unit/test_filters.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import aiohttp
import pytest

from tests.engine import BIN, TenantEngine, sse_events, upload_bytes, wait_status
from tests.factories import make_table_pdf, synthetic_pdf

# --------------------------------------------------------------------------- a real engine


@pytest.fixture(scope="module")
def engine(module_tenant: TenantEngine) -> TenantEngine:
    """One tenant for the module: its tests read the corpus a module fixture uploads once."""
    return module_tenant


async def ingest_all(engine: TenantEngine, docs: dict[str, bytes]) -> dict[str, str]:
    """Upload every document (name -> PDF bytes) and wait until each is indexed; name -> doc_id."""
    ids: dict[str, str] = {}
    url = engine.url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
        for name, data in docs.items():
            resp = await upload_bytes(http, url, data, f"{name}.pdf")
            assert resp.status == 202, await resp.text()
            ids[name] = (await resp.json())["doc_id"]
        for doc_id in ids.values():
            status = await wait_status(http, url, doc_id, {"indexed", "failed"}, timeout_s=180)
            assert status["status"] == "indexed", status
    return ids


@pytest.fixture(scope="module")
def corpus(engine: TenantEngine) -> dict[str, str]:
    """Three indexed documents: two six-page ledgers (text) and one page with a parts table."""
    docs = {"ledger1": synthetic_pdf(1, pages=6), "ledger2": synthetic_pdf(2, pages=6), "parts": make_table_pdf()}
    return asyncio.run(ingest_all(engine, docs))


async def search(http: aiohttp.ClientSession, engine: TenantEngine, query: str, top_k: int = 20, **where) -> list[dict]:
    body: dict = {"query": query, "top_k": top_k}
    if where:
        body["filters"] = where
    async with http.post(f"{engine.url}/v1/search", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["hits"]


async def test_search_filters_by_document(engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict) -> None:
    query = "Ledger entry records crates"
    unfiltered = {h["doc_id"] for h in await search(http, engine, query)}
    assert {corpus["ledger1"], corpus["ledger2"]} <= unfiltered  # both ledgers match without a filter

    only2 = await search(http, engine, query, doc_ids=[corpus["ledger2"]])
    assert only2 and {h["doc_id"] for h in only2} == {corpus["ledger2"]}
    both = await search(http, engine, query, doc_ids=[corpus["ledger2"], corpus["parts"]])
    assert both and {h["doc_id"] for h in both} <= {corpus["ledger2"], corpus["parts"]}
    assert await search(http, engine, query, doc_ids=["0" * 32]) == []  # a well-formed id nobody has


async def test_search_filters_by_modality(engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict) -> None:
    query = "Flange steel gasket rubber supplier weight"
    tables = await search(http, engine, query, modalities=["table"])
    assert tables and {(h["doc_id"], h["modality"]) for h in tables} == {(corpus["parts"], "table")}
    assert "Flange" in tables[0]["text"]
    texts = await search(http, engine, query, modalities=["text"])
    assert texts and {h["modality"] for h in texts} == {"text"}
    assert not [h for h in await search(http, engine, query, modalities=["image"])]


async def test_search_filters_by_page_range(engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict) -> None:
    # The fact sits on page 4 of ledger 1; restricted to pages 1-3 it cannot be found, 3-5 finds it first.
    query = "Ledger entry D1P4 records crates"
    in_range = await search(http, engine, query, doc_ids=[corpus["ledger1"]], page_from=3, page_to=5)
    assert in_range and {h["page"] for h in in_range} <= {3, 4, 5}
    assert in_range[0]["page"] == 4 and "D1P4" in in_range[0]["text"]
    before = await search(http, engine, query, doc_ids=[corpus["ledger1"]], page_to=3)
    assert before and {h["page"] for h in before} <= {1, 2, 3}
    assert not any("D1P4" in h["text"] for h in before)
    after = await search(http, engine, query, page_from=5)
    assert after and all(h["page"] >= 5 for h in after)


async def test_ask_retrieves_and_cites_only_what_the_filters_allow(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict
) -> None:
    from mmrag.client import ask_events, client

    where = {"doc_ids": [corpus["ledger2"]], "page_from": 2, "page_to": 3}
    async with client(engine.url, api_key=engine.key) as h:
        events = [e async for e in ask_events(h, "How many crates does the ledger entry record?", 5, where)]
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done", kinds
    retrieved = events[0][1]["hits"]
    assert retrieved and {(h["doc_id"], h["page"] in (2, 3)) for h in retrieved} == {(corpus["ledger2"], True)}
    for kind, data in events:
        if kind == "citation":
            assert data["doc_id"] == corpus["ledger2"] and data["page"] in (2, 3)


@pytest.mark.parametrize(
    ("filters_", "field"),
    [
        ({"page_from": 5, "page_to": 3}, "filters"),
        ({"doc_ids": []}, "filters.doc_ids"),
        ({"doc_ids": ["../etc"]}, "filters.doc_ids.0"),
        ({"modalities": ["audio"]}, "filters.modalities.0"),
        ({"page_from": "3"}, "filters.page_from"),
        ({"tenant": "someone-else"}, "filters.tenant"),
        ("all", "filters"),
    ],
)
async def test_invalid_filters_are_400_naming_the_field(
    engine: TenantEngine, http: aiohttp.ClientSession, filters_: object, field: str
) -> None:
    for path, key in (("/v1/search", "query"), ("/v1/ask", "question")):
        async with http.post(f"{engine.url}{path}", json={key: "crates", "filters": filters_}) as resp:
            assert resp.status == 400, (path, await resp.text())
            error = (await resp.json())["error"]
        assert error["code"] == "invalid_body"
        assert field in [d["field"] for d in error["details"]], error


async def test_the_tenant_never_comes_from_the_body(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{engine.url}/v1/search", json={"query": "crates", "tenant": "other"}) as resp:
        assert resp.status == 400
        assert [d["field"] for d in (await resp.json())["error"]["details"]] == ["tenant"]


async def test_ask_without_filters_still_sees_everything(engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict) -> None:
    events = await sse_events(http, engine.url, {"question": "Flange gasket supplier table", "top_k": 10})
    assert events[0][0] == "retrieval"
    assert len({h["doc_id"] for h in events[0][1]["hits"]}) >= 2


def mmrag(engine: TenantEngine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **engine.client_env}
    return subprocess.run([str(BIN / "mmrag"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_search_and_ask_pass_the_filters(engine: TenantEngine, corpus: dict) -> None:
    found = mmrag(engine, "search", "Ledger entry D1P4 records crates", "--url", engine.url, "--doc", corpus["ledger1"],
                  "--modality", "text", "--pages", "3-5")  # fmt: skip
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines and "ledger1.pdf  page 4" in lines[0]
    assert all("ledger1.pdf" in line and any(f"page {p} " in line for p in (3, 4, 5)) for line in lines)

    asked = mmrag(engine, "ask", "How many crates?", "--url", engine.url, "--doc", corpus["ledger2"], "--pages", "2")
    assert asked.returncode == 0, asked.stderr
    cited = [line for line in asked.stdout.splitlines() if line.startswith("[")]
    assert cited and all("ledger2.pdf page 2 " in line for line in cited)

    bad = mmrag(engine, "search", "crates", "--url", engine.url, "--pages", "5-3")
    assert bad.returncode == 1 and "filters" in bad.stderr and "page_from (5) must be <= page_to (3)" in bad.stderr
    malformed = mmrag(engine, "search", "crates", "--url", engine.url, "--pages", "three")
    assert malformed.returncode == 1 and "--pages" in malformed.stderr
