"""The MCP server (edge_api/mcp.py) driven by the `mcp` SDK's own clients against the shared `mmrag up --auth`.

Two tenants of the shared engine, each with a writer key, and a reader key of the first: over Streamable HTTP
at `/mcp` a key lists the tools, ingests, searches, asks (progress notifications, citations with document, page
and region) and sees a page, only ever of its own tenant; a reader may search but not ingest; no key is a 401.
`mmrag mcp` serves the same tools over stdio, driven by the SDK's stdio client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from edge_api.keys import create_key
from tests.e2e.conftest import new_tenant
from tests.engine import BIN, Engine, TenantEngine, wait_status
from tests.factories import make_pdf

FACT_A = "The Kestrel pump model K-41 must be primed with 3.5 litres of glycol before its first start."
FACT_B = "The Osprey valve series V-9 is rated for a maximum pressure of 16 bar at 120 degrees."
TOOLS = {"search", "ask", "list_documents", "get_page", "ingest"}


@contextlib.asynccontextmanager
async def mcp_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def structured(result) -> dict:  # noqa: ANN001 - a CallToolResult
    assert not result.is_error, result.content
    return result.structured_content if result.structured_content is not None else json.loads(result.content[0].text)


def error_text(result) -> str:  # noqa: ANN001
    assert result.is_error, result.content
    return " ".join(c.text for c in result.content if c.type == "text")


@pytest.fixture(scope="module")
def tenants(shared_engine: Engine) -> tuple[TenantEngine, TenantEngine, str]:
    """Tenant A and B (writer keys), and a reader key of A."""
    a, b = new_tenant(shared_engine, "mcp-a"), new_tenant(shared_engine, "mcp-b")
    _, reader = create_key(shared_engine.data_dir / "api-keys.json", a.tenant, "reader")
    return a, b, reader


@pytest.fixture(scope="module")
def corpus(tenants: tuple[TenantEngine, TenantEngine, str]) -> dict[str, str]:
    """A's document ingested through MCP, B's through the HTTP API; both indexed. tenant -> doc_id."""
    return asyncio.run(_ingest(*tenants[:2]))


async def _ingest(a: TenantEngine, b: TenantEngine) -> dict[str, str]:
    pdf_a = make_pdf([FACT_A + "\n\nMaintenance is due every 400 hours."])
    async with mcp_session(a.url, a.key) as session:
        accepted = structured(await session.call_tool(
            "ingest", {"filename": "kestrel.pdf", "content_base64": base64.b64encode(pdf_a).decode()}
        ))  # fmt: skip
    assert accepted["status"] == "queued" and accepted["content_type"] == "application/pdf"
    form = aiohttp.FormData()
    form.add_field("file", make_pdf([FACT_B]), filename="osprey.pdf", content_type="application/pdf")
    docs = {a.tenant: accepted["doc_id"]}
    async with aiohttp.ClientSession(headers=b.headers) as http:
        async with http.post(f"{b.url}/v1/documents", data=form) as resp:
            assert resp.status == 202, await resp.text()
            docs[b.tenant] = (await resp.json())["doc_id"]
        await wait_status(http, b.url, docs[b.tenant], {"indexed"})
    async with aiohttp.ClientSession(headers=a.headers) as http:
        await wait_status(http, a.url, docs[a.tenant], {"indexed"})
    return docs


async def test_tools_search_and_ask_with_citations(tenants, corpus) -> None:  # noqa: ANN001
    a, _, _ = tenants
    doc_a = corpus[a.tenant]
    async with mcp_session(a.url, a.key) as session:
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["mmrag://documents/{doc_id}"]

        hits = structured(await session.call_tool("search", {"query": "How much glycol does the K-41 pump need?",
                                                            "top_k": 3}))["hits"]  # fmt: skip
        assert hits and hits[0]["doc_id"] == doc_a and hits[0]["page"] == 1 and "3.5 litres" in hits[0]["text"]
        assert hits[0]["bbox"] is not None

        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        answer = structured(await session.call_tool(
            "ask", {"question": "How much glycol must the Kestrel K-41 pump be primed with?"},
            progress_callback=on_progress,
        ))  # fmt: skip
        assert "3.5 litres" in answer["answer"] and answer["abstained"] is False
        cited = answer["citations"][0]
        assert cited["doc_id"] == doc_a and cited["filename"] == "kestrel.pdf" and cited["page"] == 1
        x0, y0, x1, y1 = cited["bbox"]  # the region on the page, in PDF points
        assert 0 <= x0 < x1 and 0 <= y0 < y1
        assert progress and progress[0][1].startswith("retrieved")
        tokens = "".join(m for _, m in progress[1:] if m and not m.startswith("("))
        assert "3.5 litres" in tokens  # the answer arrived piece by piece while it streamed
        assert [v for v, _ in progress] == sorted(v for v, _ in progress)

        listing = structured(await session.call_tool("list_documents", {}))
        assert [d["doc_id"] for d in listing["documents"]] == [doc_a]

        page = await session.call_tool("get_page", {"doc_id": doc_a, "page": 1, "width": 200})
        assert not page.is_error and page.content[0].type == "image" and page.content[0].mime_type == "image/png"
        assert base64.b64decode(page.content[0].data).startswith(b"\x89PNG")
        text = structured(await session.call_tool("get_page", {"doc_id": doc_a, "page": 1, "as_text": True}))
        assert FACT_A.split(" must")[0] in text["text"] and "400 hours" in text["text"]
        assert (text["page"], text["pages"]) == (1, 1)
        assert "404" in error_text(await session.call_tool("get_page", {"doc_id": doc_a, "page": 2, "as_text": True}))

        resource = await session.read_resource(f"mmrag://documents/{doc_a}")
        assert json.loads(resource.contents[0].text)["status"] == "indexed"


async def test_a_key_never_sees_another_tenants_documents(tenants, corpus) -> None:  # noqa: ANN001
    a, b, _ = tenants
    doc_a, doc_b = corpus[a.tenant], corpus[b.tenant]
    async with mcp_session(b.url, b.key) as session:
        hits = structured(await session.call_tool("search", {"query": "Osprey valve V-9 pressure", "top_k": 10}))
        assert hits["hits"] and {h["doc_id"] for h in hits["hits"]} == {doc_b}
        hits = structured(await session.call_tool("search", {"query": "Kestrel pump K-41 glycol", "top_k": 10}))
        assert doc_a not in {h["doc_id"] for h in hits["hits"]}
        answer = structured(await session.call_tool("ask", {"question": "How much glycol does the Kestrel K-41 need?"}))
        assert "3.5" not in answer["answer"] and all(c["doc_id"] == doc_b for c in answer["citations"])
        listing = structured(await session.call_tool("list_documents", {}))
        assert [d["doc_id"] for d in listing["documents"]] == [doc_b]
        assert "404" in error_text(await session.call_tool("get_page", {"doc_id": doc_a, "page": 1}))
        with pytest.raises(Exception, match="404"):
            await session.read_resource(f"mmrag://documents/{doc_a}")
        filtered = await session.call_tool("search", {"query": "glycol", "doc_ids": [doc_a]})
        assert structured(filtered)["hits"] == []


async def test_a_reader_searches_but_cannot_ingest(tenants, corpus) -> None:  # noqa: ANN001
    a, _, reader = tenants
    async with mcp_session(a.url, reader) as session:
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS - {"ingest"}  # not offered to a reader
        hits = structured(await session.call_tool("search", {"query": "Kestrel K-41 glycol", "top_k": 1}))["hits"]
        assert hits[0]["doc_id"] == corpus[a.tenant]
        refused = await session.call_tool(
            "ingest", {"filename": "x.txt", "content_base64": base64.b64encode(b"some text here").decode()}
        )
        assert "HTTP 403 forbidden" in error_text(refused) and "needs 'writer'" in error_text(refused)
    async with mcp_session(a.url, a.key) as session:
        listing = structured(await session.call_tool("list_documents", {}))
        assert [d["filename"] for d in listing["documents"]] == ["kestrel.pdf"]  # nothing was added


async def test_mcp_needs_a_valid_key(tenants) -> None:  # noqa: ANN001
    a, _, _ = tenants
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/mcp", json=init, headers=accept) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(f"{a.url}/mcp", json=init, headers={**accept, "Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with http.get(f"{a.url}/mcp", headers={**a.headers, "Accept": "text/event-stream"}) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST, DELETE"  # no idle standalone stream
        big = {**a.headers, **accept, "Content-Type": "application/json"}
        async with http.post(f"{a.url}/mcp", data=b" " * (17 * 1024 * 1024), headers=big) as resp:
            assert resp.status == 413


async def test_mmrag_mcp_over_stdio(tenants, corpus) -> None:  # noqa: ANN001
    a, b, _ = tenants
    params = StdioServerParameters(
        command=str(BIN / "mmrag"), args=["mcp", "--url", a.url],
        env={**os.environ, "MMRAG_API_KEY": a.key, "MMRAG_LOG_FORMAT": "json"},
    )  # fmt: skip
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        hits = structured(await session.call_tool("search", {"query": "glycol for the K-41 pump", "top_k": 3}))["hits"]
        assert hits[0]["doc_id"] == corpus[a.tenant]
        assert {h["doc_id"] for h in hits} <= {corpus[a.tenant]}
    bad = StdioServerParameters(command=str(BIN / "mmrag"), args=["mcp", "--url", a.url, "--api-key", "wrong"],
                                env=dict(os.environ))  # fmt: skip
    async with stdio_client(bad) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        refused = await session.call_tool("list_documents", {})
        assert "HTTP 401 unauthorized" in error_text(refused)
