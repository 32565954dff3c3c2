"""Document management through a real `mmrag up --auth` (a tenant of the shared engine) and a real browser
(Debian's Chromium driven by Playwright, as in tests/e2e/test_webui.py):

- 300 documents (tiny text files uploaded concurrently) are listed 20 at a time, found by name, sorted and paged
  with Next/Previous; the question box stays the first thing on a phone (no scrolling past the documents) and
  has the focus on a laptop (no Tab press needed).
- An office file counts its slides (sheets, sections, chapters), not pages, and asks for no page picture.
- A collection scopes a question: a fact only in a document of collection A is found when asking within A and
  not when asking within B; moved to B on its document page (PATCH: a new revision), it is found within B only.
  The vector store's side of the filter: tests/unit/test_vectorstore.py; the API's: tests/bus/test_document_list.py.

Every test fails on a console error, an uncaught page error, a failed request or an unexpected non-2xx answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.e2e.test_webui import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, open_page, shot
from tests.engine import TenantEngine, sse_events, wait_status

N_DOCS = 300
PAGE_SIZE = 20  # the UI's page of the list (documents.js)
UPLOADS_AT_ONCE = 16
INVOICE_EVERY = 10  # every 10th document's name says "invoice": 30 of them


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make install` as root installs it (apt-get install -y chromium)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


def name_of(i: int) -> str:
    return f"note-{i:03d}{'-invoice' if i % INVOICE_EVERY == 7 else ''}.txt"


async def upload(http: aiohttp.ClientSession, url: str, name: str, text: str, collections: str = "") -> dict:
    form = aiohttp.FormData()
    form.add_field("file", text.encode(), filename=name, content_type="text/plain")
    query = f"?collections={collections}" if collections else ""
    async with http.post(f"{url}/v1/documents{query}", data=form) as resp:
        body = await resp.json()
        assert resp.status == 202, body
        return body


async def upload_many(http: aiohttp.ClientSession, url: str, n: int) -> list[str]:
    gate = asyncio.Semaphore(UPLOADS_AT_ONCE)

    async def one(i: int) -> str:
        async with gate:
            return (await upload(http, url, name_of(i), f"Note {i}: the shelf {i} holds box {i * 7}.\n"))["doc_id"]

    return await asyncio.gather(*(one(i) for i in range(n)))


async def sign_in(page: Page, key: str) -> None:
    await page.fill("#api-key", key)
    await page.keyboard.press("Enter")
    await expect(page.locator("#app")).to_be_visible()


def rows(page: Page):  # noqa: ANN201 - a Locator
    return page.locator("#doc-list li.doc")


async def names_shown(page: Page) -> list[str]:
    return await page.locator("#doc-list .doc-name").all_text_contents()


async def test_300_documents_listed_searched_sorted_and_paged(engine: TenantEngine, browser: Browser, http) -> None:
    await upload_many(http, engine.url, N_DOCS)
    async with open_page(browser, engine.url, viewport=DESKTOP) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await sign_in(page, engine.key)
        # A laptop: the question box has the focus at once (no Tab press), and it comes before the documents.
        assert await page.evaluate("document.activeElement.id") == "question"
        # From the top of the page: the skip link, Sign out, the Ask tab, then the question (it was 21 presses).
        await page.mouse.click(2, 2)  # the header, top left: Tab starts from the top of the page
        presses = 0
        while await page.evaluate("document.activeElement.id") != "question":
            presses += 1
            assert presses <= 4, f"the question box is more than 4 Tab presses away: at {await page.evaluate('document.activeElement.outerHTML')}"
            await page.keyboard.press("Tab")
        await expect(page.locator("#docs-count")).to_have_text(f"({N_DOCS})")
        await expect(rows(page)).to_have_count(PAGE_SIZE)
        await expect(page.locator("#doc-range")).to_have_text(f"1–{PAGE_SIZE} of {N_DOCS}")
        newest = [await row.get_attribute("data-doc-id") for row in await rows(page).all()]
        assert newest == sorted(newest, reverse=True), "newest upload first (ids start with their submission time)"

        # Sorted by name, then paged to the end and back: every document once, in order.
        await page.select_option("#doc-sort", "name:asc")
        await expect(page.locator("#doc-list .doc-name").first).to_have_text(name_of(0))
        seen = await names_shown(page)
        for n in range(2, N_DOCS // PAGE_SIZE + 1):
            await page.click("#doc-next")
            await expect(page.locator("#doc-range")).to_have_text(f"{(n - 1) * PAGE_SIZE + 1}–{n * PAGE_SIZE} of {N_DOCS}")
            seen += await names_shown(page)
        assert seen == sorted(name_of(i) for i in range(N_DOCS))
        await expect(page.locator("#doc-next")).to_be_disabled()
        await page.click("#doc-prev")
        await expect(page.locator("#doc-range")).to_have_text(f"{N_DOCS - 2 * PAGE_SIZE + 1}–{N_DOCS - PAGE_SIZE} of {N_DOCS}")
        await shot(page, "library-paged")

        # Found by name (case-insensitive): 30 invoices, two pages; the search starts again from the first page.
        await page.fill("#doc-search", "INVOICE")
        await expect(page.locator("#doc-range")).to_have_text(f"1–{PAGE_SIZE} of {N_DOCS // INVOICE_EVERY}")
        first = await names_shown(page)
        await page.click("#doc-next")
        await expect(page.locator("#doc-range")).to_have_text(f"{PAGE_SIZE + 1}–{N_DOCS // INVOICE_EVERY} of {N_DOCS // INVOICE_EVERY}")
        found = first + await names_shown(page)
        assert found == sorted(name_of(i) for i in range(N_DOCS) if i % INVOICE_EVERY == 7)
        await page.select_option("#doc-sort", "name:desc")
        await expect(page.locator("#doc-list .doc-name").first).to_have_text(name_of(297))
        await page.fill("#doc-search", "note-123")
        await expect(rows(page)).to_have_count(1)
        await page.fill("#doc-search", "no-such-note")
        await expect(page.locator("#docs-empty")).to_have_text("No document matches.")
        await shot(page, "library-search")

    # A phone: the question box is on the first screen, above the 300 documents, with no scrolling.
    async with open_page(browser, engine.url, viewport=PHONE) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await sign_in(page, engine.key)
        await expect(rows(page)).to_have_count(PAGE_SIZE)
        for control in ("#question", "#ask-button"):
            box = await page.locator(control).bounding_box()
            assert box is not None and box["y"] + box["height"] <= PHONE["height"], (control, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (control, box)
        docs_top = (await page.locator("#documents").bounding_box())["y"]  # type: ignore[index]
        assert docs_top > (await page.locator("#question").bounding_box())["y"], "the documents come after the question"  # type: ignore[index]
        assert await page.evaluate("window.scrollY") == 0
        overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        await shot(page, "library-phone")


FACT = "The Falcon vault opens with the passphrase amber-lantern-42."
QUESTION = "What is the passphrase of the Falcon vault?"
OTHER = "Tomato plants need six hours of sun a day and water at the roots in the morning."


async def ask_within(http: aiohttp.ClientSession, url: str, collections: list[str]) -> str:
    events = await sse_events(http, url, {"question": QUESTION, "filters": {"collections": collections}})
    return "".join(body.get("text", "") for name, body in events if name == "token")


async def ui_answer(page: Page, within: str) -> str:
    for box in await page.locator('.collection-choices[data-for="ask"] input').all():
        await box.set_checked(await box.get_attribute("value") == within)
    await page.fill("#question", QUESTION)
    await page.click("#ask-button")
    await expect(page.locator("#answer-status")).not_to_have_text(re.compile("Searching|Writing"), timeout=60_000)
    await expect(page.locator("#ask-button")).to_be_enabled(timeout=60_000)
    return await page.locator("#answer").inner_text()


async def test_a_collection_scopes_a_question_and_moves_with_a_patch(engine: TenantEngine, browser: Browser, http) -> None:
    fact = await upload(http, engine.url, "falcon.txt", f"{FACT}\n", collections="alpha")
    other = await upload(http, engine.url, "garden.txt", f"{OTHER}\n", collections="beta")
    for doc in (fact, other):
        await wait_status(http, engine.url, doc["doc_id"], {"indexed"})
    assert "amber-lantern-42" in await ask_within(http, engine.url, ["alpha"])
    assert "amber-lantern-42" not in await ask_within(http, engine.url, ["beta"])
    async with http.get(f"{engine.url}/v1/documents/{fact['doc_id']}/passages?page=1") as resp:
        body = await resp.json()
        assert resp.status == 200 and [p["text"] for p in body["passages"]] == [FACT], body
    async with http.get(f"{engine.url}/v1/documents/{fact['doc_id']}/passages?page=2") as resp:
        assert (resp.status, (await resp.json())["passages"]) == (200, [])

    async with open_page(browser, engine.url, viewport=DESKTOP) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await sign_in(page, engine.key)
        await expect(page.locator('.collection-choices[data-for="ask"] input')).to_have_count(2)
        assert "amber-lantern-42" in await ui_answer(page, "alpha")
        assert "amber-lantern-42" not in await ui_answer(page, "beta")
        await shot(page, "collection-scoped")

        # The document page: its status and size; moved from alpha to beta (a new revision, indexed again).
        await page.locator("#doc-list .doc-name", has_text="falcon.txt").click()
        await expect(page.locator("#doc-page-title")).to_have_text("falcon.txt")
        await expect(page.locator("#doc-page-status")).to_have_text("indexed")
        await expect(page.locator("#doc-page-meta")).to_contain_text(f"{len(FACT) + 1} bytes")
        await expect(page.locator("#doc-collections")).to_have_value("alpha")
        await expect(page.locator("#doc-passages li").first).to_contain_text("amber-lantern-42")  # page 1's passages
        await page.fill("#doc-passages-query", "passphrase vault")
        await page.click("#doc-passages-form button")
        await expect(page.locator("#doc-passages li").first).to_contain_text("amber-lantern-42")
        await page.fill("#doc-collections", "beta")
        await page.click("#doc-collections-save")
        await expect(page.locator("#doc-page-message")).to_contain_text("indexed again")
        await wait_status(http, engine.url, fact["doc_id"], {"indexed"})
        await expect(page.locator("#doc-page-status")).to_have_text("indexed")  # the page followed the new revision
        await shot(page, "document-page")
        await page.click("#doc-back")
        await expect(page.locator("#question")).to_be_visible()

    assert "amber-lantern-42" in await ask_within(http, engine.url, ["beta"])
    assert "amber-lantern-42" not in await ask_within(http, engine.url, ["alpha"])
    async with http.get(f"{engine.url}/v1/collections") as resp:
        assert (await resp.json())["collections"] == [{"name": "beta", "documents": 2}]


async def test_a_pdfs_document_page_shows_its_pages_passages_and_tables(engine: TenantEngine, browser: Browser, http) -> None:
    from tests.factories import FACT_PHRASE, TABLE_3X4, five_page_pdf_with_fact, make_table_pdf

    pdf, _, _ = five_page_pdf_with_fact()
    uploaded = []
    for name, data in (("five.pdf", pdf), ("parts.pdf", make_table_pdf())):
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type="application/pdf")
        async with http.post(f"{engine.url}/v1/documents", data=form) as resp:
            assert resp.status == 202
            uploaded.append((await resp.json())["doc_id"])
    for doc_id in uploaded:
        await wait_status(http, engine.url, doc_id, {"indexed"})
    async with open_page(browser, engine.url, viewport=DESKTOP) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await sign_in(page, engine.key)
        await page.locator("#doc-list .doc-name", has_text="five.pdf").click()
        await expect(page.locator("#doc-pages .thumb")).to_have_count(5)
        await expect(page.locator("#doc-pages .thumb img")).to_have_count(5)  # the pictures came
        await expect(page.locator("#doc-passages-range")).to_have_text("page 1 of 5")
        await expect(page.locator("#doc-passages li").first).to_be_visible()
        assert FACT_PHRASE not in await page.locator("#doc-passages").inner_text()
        for n in (2, 3):
            await page.click("#doc-passages-next")
            await expect(page.locator("#doc-passages-range")).to_have_text(f"page {n} of 5")
        await expect(page.locator("#doc-passages")).to_contain_text(FACT_PHRASE)
        assert set(await page.locator("#doc-passages li .hit-text p.muted").all_text_contents()) == {"Page 3 · text"}
        await page.locator("#doc-pages .thumb").nth(2).click()
        await expect(page.locator("#viewer-title")).to_have_text("five.pdf — page 3")
        await page.click("#viewer-close")
        await shot(page, "document-page-pdf")

        await page.click("#doc-back")
        await page.locator("#doc-list .doc-name", has_text="parts.pdf").click()
        table = page.locator('#doc-passages li[data-modality="table"] pre')
        await expect(table).to_have_count(1)
        for cell in TABLE_3X4[1]:
            await expect(table).to_contain_text(cell)


async def test_an_office_file_counts_its_slides_not_pages_and_has_no_pictures(engine: TenantEngine, browser: Browser, http) -> None:
    from tests.office_files import make_pptx

    deck, truth = make_pptx()
    form = aiohttp.FormData()
    form.add_field("file", deck, filename="results.pptx",
                   content_type="application/vnd.openxmlformats-officedocument.presentationml.presentation")  # fmt: skip
    async with http.post(f"{engine.url}/v1/documents", data=form) as resp:
        assert resp.status == 202
        doc_id = (await resp.json())["doc_id"]
    assert (await wait_status(http, engine.url, doc_id, {"indexed"}))["pages"] == truth.pages == 3
    async with open_page(browser, engine.url, viewport=DESKTOP) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await sign_in(page, engine.key)
        row = rows(page).filter(has_text="results.pptx")
        await expect(row).to_contain_text("3 slides")
        assert "page" not in await row.inner_text()
        await row.locator(".doc-name").click()
        await expect(page.locator("#doc-page-meta")).to_contain_text("3 slides")
        assert "page" not in await page.locator("#doc-page-meta").inner_text()
        await expect(page.locator("#doc-pages")).to_contain_text("No page pictures")
        await expect(page.locator("#doc-pages .thumb")).to_have_count(0)  # no picture requested (a 422 would fail)
