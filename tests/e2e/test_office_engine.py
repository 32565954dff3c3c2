"""Office files on the shared `mmrag up` (one tenant for the module): DOCX, PPTX, XLSX and CSV uploaded over HTTP
are indexed; search finds a slide's notes, a sheet's cell, a CSV row and a picture's words, each hit saying
where it is (`locator`); an answer's citation carries the locator; a page picture is a 422 that says why;
an encrypted file is a 415 at upload and a broken one fails with a message saying what to do."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from documents.filetypes import DOCX, PPTX, XLSX
from documents.formats.ooxml import OLE_MAGIC
from tests.engine import TenantEngine, sse_events, upload_bytes, wait_status
from tests.office_files import make_csv, make_docx, make_pptx, make_xlsx


@pytest.fixture(scope="module")
def engine(module_tenant: TenantEngine) -> TenantEngine:
    return module_tenant


@pytest.fixture(scope="module")
def corpus(engine: TenantEngine) -> dict[str, str]:
    """The four files, uploaded once and indexed: name -> doc_id."""
    files = {
        "manual.docx": (make_docx()[0], DOCX),
        "results.pptx": (make_pptx()[0], PPTX),
        "budget.xlsx": (make_xlsx(), XLSX),
        "towns.csv": (make_csv(), "text/csv"),
    }

    async def upload_all() -> dict[str, str]:
        ids = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
            for name, (data, ctype) in files.items():
                resp = await upload_bytes(http, engine.url, data, name, "application/octet-stream")
                assert resp.status == 202, await resp.text()
                body = await resp.json()
                assert body["content_type"] == ctype  # decided by the bytes and the name, not the client's header
                ids[name] = body["doc_id"]
            for name, doc_id in ids.items():
                status = await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=240)
                assert status["status"] == "indexed", (name, status)
        return ids

    return asyncio.run(upload_all())


async def search(http: aiohttp.ClientSession, engine: TenantEngine, query: str, **filters) -> list[dict]:
    body: dict = {"query": query, "top_k": 10, **({"filters": filters} if filters else {})}
    async with http.post(f"{engine.url}/v1/search", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["hits"]


@pytest.mark.parametrize(
    ("query", "name", "text", "locator"),
    [
        ("Okapi contract signed in March", "results.pptx", "Okapi", "slide 1: Quarterly results, notes"),
        ("Gasket kit stock", "results.pptx", "Gasket kit", "slide 2: Spare parts, table 1"),
        ("Tove Jansson designer Turku office", "budget.xlsx", "Tove Jansson", "Staff rows 2-3 (A2:C3)"),
        ("Town17 River17", "towns.csv", "Town17", None),
        ("quillon seal replacement hours", "manual.docx", "quillon", "section 3: Pump Manual > Maintenance"),
        ("Valve diagram V-12", "manual.docx", "Valve", "section 3: Pump Manual > Maintenance, picture"),
    ],
)
async def test_search_finds_the_passage_and_says_where_it_is(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict, query: str, name: str, text: str,
    locator: str | None,
) -> None:  # fmt: skip
    hits = [h for h in await search(http, engine, query, doc_ids=[corpus[name]]) if text in h["text"]]
    assert hits, f"{text!r} not found in {name}"
    best = hits[0]
    assert best["bbox"] is None or best["modality"] == "image"  # a picture's bbox is where it lies, in its pixels
    if locator is not None:
        assert best["locator"] == locator
    else:  # the CSV row: the chunk names a row range that holds row 18 (Town17 under the header)
        first, last = map(int, best["locator"].split(" (")[0].removeprefix("rows ").split("-"))
        assert first <= 18 <= last


async def test_a_slide_picture_is_read_and_found_with_its_slide(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict
) -> None:
    hits = await search(http, engine, "Warehouse Lisbon", doc_ids=[corpus["results.pptx"]])
    image = next(h for h in hits if h["modality"] == "image")
    assert "Lisbon" in image["text"] and image["page"] == 2 and image["locator"] == "slide 2: Spare parts, picture"
    async with http.get(f"{engine.url}/v1/documents/{corpus['results.pptx']}/images/"
                        f"{image['image']['object_name'].rsplit('/', 1)[1]}") as resp:  # fmt: skip
        assert resp.status == 200 and resp.content_type == "image/png"


async def test_an_answer_cites_the_table_of_the_section_with_its_locator(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict
) -> None:
    events = await sse_events(http, engine.url, {"question": "What torque does the M10 flange bolt need?"})
    citations = [data for kind, data in events if kind == "citation"]
    assert citations, events
    cited = next(c for c in citations if c["doc_id"] == corpus["manual.docx"])
    assert cited["locator"] == "section 2: Pump Manual > Installation > Torque values, table 1"
    assert "45 Nm" in cited["text"]


async def test_an_office_document_has_no_page_picture_and_the_422_says_so(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict
) -> None:
    async with http.get(f"{engine.url}/v1/documents/{corpus['budget.xlsx']}/pages/1") as resp:
        assert resp.status == 422
        error = (await resp.json())["error"]
    assert error["code"] == "not_renderable" and "no page to show" in error["message"]
    assert "locator" in error["message"]


async def test_the_document_counts_slides_and_sheets_as_its_pages(
    engine: TenantEngine, http: aiohttp.ClientSession, corpus: dict
) -> None:
    for name, pages in (("results.pptx", 3), ("budget.xlsx", 2), ("manual.docx", 3), ("towns.csv", 1)):
        async with http.get(f"{engine.url}/v1/documents/{corpus[name]}") as resp:
            assert (await resp.json())["pages"] == pages, name


async def test_encrypted_and_broken_office_files_end_clearly(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    resp = await upload_bytes(http, engine.url, OLE_MAGIC + bytes(4096), "secret.xlsx", XLSX)
    assert resp.status == 415
    assert "password" in (await resp.json())["error"]["message"]
    good = make_docx()[0]
    resp = await upload_bytes(http, engine.url, good[: len(good) // 2], "cut.docx", DOCX)
    assert resp.status == 202, await resp.text()  # a zip by its first bytes: the parser finds it broken
    status = await wait_status(http, engine.url, (await resp.json())["doc_id"], {"indexed", "failed"})
    assert status["status"] == "failed" and "corrupt file" in status["error"] and "upload it again" in status["error"]
