"""The web UI in a real browser: Debian's Chromium driven by Playwright, against a real `mmrag up`.

- Upload by drag and drop (several files at once: a PDF, a text file, two files the API rejects, each
  rejection shown with the API's own message), the document reaches `indexed` in the list; ask, the answer
  streams in, its citation [1] opens the cited page (page 3) with the highlight where the cited chunk's bbox is;
  delete removes the document.
- Search: results grouped by document with page thumbnails and highlights; filters by document and kind of
  content; search by image; the keyboard moves between tabs and Enter asks.
- Sign-in with auth on: the form, a wrong key's message, a reader's view (no uploads), an answer that is
  "not found in your documents", sign-out. A phone-sized viewport has no horizontal scrolling.

Every test fails on a console error, an uncaught page error, a failed request or a non-2xx answer that the
test did not expect. Screenshots go to ``test-artifacts/webui/`` (git-ignored).
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright, expect

from edge_api.app import create_app
from edge_api.keys import create_key
from edge_api.settings import EdgeSettings
from tests.engine import Engine, upload_bytes, wait_status
from tests.factories import (
    FACT_PHRASE,
    QUESTION,
    five_page_pdf_with_fact,
    make_figures_pdf,
    make_png,
    make_scanned_text_pdf,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webui"
INGEST_TIMEOUT_MS = 120_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


@dataclass
class Watch:
    """What went wrong in the page; `expect(method, path, status)` allows one known non-2xx answer."""

    problems: list[str] = field(default_factory=list)
    expected: set[tuple[str, str, int]] = field(default_factory=set)
    seen_expected: set[tuple[str, str, int]] = field(default_factory=set)
    requested: list[str] = field(default_factory=list)  # "METHOD /path" of every request, in order
    _failed_loads: list[str] = field(default_factory=list)

    def allow(self, method: str, path: str, status: int) -> None:
        self.expected.add((method, path, status))

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        # Chromium logs every non-2xx fetch as "Failed to load resource"; those are judged by on_response.
        if msg.text.startswith("Failed to load resource: the server responded with a status of"):
            self._failed_loads.append(msg.location.get("url", ""))
            return
        self.problems.append(f"console error: {msg.text} at {msg.location}")

    def on_response(self, response: Response) -> None:
        if response.status < 400:
            return
        key = (response.request.method, urlsplit(response.url).path, response.status)
        if key in self.expected:
            self.seen_expected.add(key)
        else:
            self.problems.append(f"unexpected answer {response.status} to {key[0]} {response.url}")

    def on_failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")


@pytest.fixture(scope="module")
def engine(private_engine: Engine) -> Engine:
    """The web UI in local mode (no key, no sign-in) needs an engine with auth off: a private one."""
    return private_engine


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make install` as root installs it (apt-get install -y chromium)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def open_page(browser: Browser, url: str, viewport: dict = DESKTOP) -> AsyncIterator[tuple[Page, Watch]]:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch()
    page.on("console", watch.on_console)
    page.on("pageerror", lambda err: watch.problems.append(f"uncaught error in the page: {err}"))
    page.on("requestfailed", watch.on_failed)
    page.on("response", watch.on_response)
    page.on("request", lambda r: watch.requested.append(f"{r.method} {urlsplit(r.url).path}"))
    await page.goto(url)
    try:
        yield page, watch
        problems = list(watch.problems)  # (closing the page aborts what is still open: that is no problem)
    finally:
        await context.close()
    assert not problems, "\n".join(problems)


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def drop_files(page: Page, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files on an element as a user's drag and drop does (a `drop` event with a DataTransfer)."""
    payload = [{"name": n, "b64": base64.b64encode(data).decode(), "type": t} for n, data, t in files]
    await page.eval_on_selector(
        selector,
        """(target, files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, { type: f.type }));
            }
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        payload,
    )


def doc_row(page: Page, filename: str):  # noqa: ANN201 - a Locator
    return page.locator("li.doc").filter(has=page.locator(".doc-name", has_text=re.compile(f"^{re.escape(filename)}$")))


async def rejection(http: aiohttp.ClientSession, url: str, data: bytes, name: str, ctype: str) -> tuple[int, str]:
    """What the API answers to this upload when it is rejected (status and message): what the UI must show."""
    resp = await upload_bytes(http, url, data, name, ctype)
    assert resp.status >= 400, "the file must be one the API rejects"
    return resp.status, (await resp.json())["error"]["message"]


async def fact_hit(http: aiohttp.ClientSession, url: str, doc_id: str) -> dict:
    async with http.post(f"{url}/v1/search", json={"query": QUESTION, "top_k": 10}) as resp:
        hits = (await resp.json())["hits"]
    return next(h for h in hits if h["doc_id"] == doc_id and FACT_PHRASE in h["text"])


# --------------------------------------------------------------------------- documents, ask, citation, delete


async def test_upload_ask_open_citation_and_delete(engine: Engine, browser: Browser, http) -> None:
    pdf, _, _ = five_page_pdf_with_fact()
    notes = b"# Kettle\n\nThe office kettle is descaled every Friday.\n"
    bad_pdf = b"this is not a pdf at all"
    exe = bytes(range(256)) * 4
    bad_pdf_status, bad_pdf_message = await rejection(http, engine.url, bad_pdf, "broken.pdf", "application/pdf")
    exe_status, exe_message = await rejection(http, engine.url, exe, "tool.exe", "application/octet-stream")

    async with open_page(browser, engine.url) as (page, watch):
        watch.allow("POST", "/v1/documents", bad_pdf_status)
        watch.allow("POST", "/v1/documents", exe_status)
        await expect(page.locator("#who")).to_have_text(re.compile("Local mode"))
        await expect(page.locator("#sign-in")).to_be_hidden()
        await drop_files(page, "#drop", [
            ("facts.pdf", pdf, "application/pdf"), ("notes.md", notes, "text/markdown"),
            ("broken.pdf", bad_pdf, "application/pdf"), ("tool.exe", exe, "application/octet-stream"),
        ])  # fmt: skip
        messages = page.locator("#upload-messages")
        await expect(messages).to_contain_text(f"broken.pdf was rejected: {bad_pdf_message}")
        await expect(messages).to_contain_text(f"tool.exe was rejected: {exe_message}")
        await expect(messages).to_contain_text("facts.pdf: accepted")
        await expect(doc_row(page, "facts.pdf")).to_have_attribute("data-status", "indexed", timeout=INGEST_TIMEOUT_MS)
        await expect(doc_row(page, "notes.md")).to_have_attribute("data-status", "indexed", timeout=INGEST_TIMEOUT_MS)
        await expect(doc_row(page, "facts.pdf")).to_contain_text("5 pages")
        assert "GET /v1/progress" in watch.requested, "the list followed the ingest as an event stream"
        await expect(doc_row(page, "broken.pdf")).to_have_count(0)

        await page.fill("#question", QUESTION)
        await page.click("#ask-button")
        await expect(page.locator("#answer-status")).to_have_text(re.compile("Answered by"), timeout=60_000)
        await expect(page.locator("#answer")).to_contain_text(FACT_PHRASE)
        await expect(page.locator("#sources li")).to_contain_text(["facts.pdf, page 3"])
        await shot(page, "answer")

        await page.locator("#answer button.cite[data-cite='1']").first.click()
        viewer = page.locator("#viewer")
        await expect(viewer).to_be_visible()
        await expect(page.locator("#viewer-title")).to_have_text("facts.pdf — page 3")
        figure = page.locator("#viewer figure.page")
        await expect(figure).to_have_attribute("data-page", "3")
        highlight = figure.locator(".highlight")
        await expect(highlight).to_be_visible()
        image = figure.locator("img")
        assert await image.evaluate("img => img.complete && img.naturalWidth > 0"), "the page picture loaded"
        # The highlight is the cited chunk's bbox (PDF points) scaled to the picture as displayed.
        doc_id = await doc_row(page, "facts.pdf").get_attribute("data-doc-id")
        hit = await fact_hit(http, engine.url, doc_id)
        img_box, mark_box = await image.bounding_box(), await highlight.bounding_box()
        scale = img_box["width"] / 595.0  # A4 width in points
        x0, y0, x1, y1 = hit["bbox"]
        assert mark_box["x"] - img_box["x"] == pytest.approx(x0 * scale, abs=2)
        assert mark_box["y"] - img_box["y"] == pytest.approx(y0 * scale, abs=2)
        assert mark_box["width"] == pytest.approx((x1 - x0) * scale, abs=2)
        assert mark_box["height"] == pytest.approx((y1 - y0) * scale, abs=2)
        await shot(page, "citation")
        await page.keyboard.press("Escape")
        await expect(viewer).to_be_hidden()

        delete = doc_row(page, "facts.pdf").get_by_role("button", name="Delete facts.pdf")
        await delete.click()
        await expect(delete).to_have_text("Really delete?")
        await delete.click()
        await expect(messages).to_contain_text("Deleted facts.pdf.")
        await expect(doc_row(page, "facts.pdf")).to_have_count(0)
        await expect(doc_row(page, "notes.md")).to_have_count(1)
    async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
        assert resp.status == 404, "deleted in the API too"


# --------------------------------------------------------------------------- search


async def test_document_list_shows_a_document_s_warnings(engine: Engine, browser: Browser, http) -> None:
    """A scanned page OCR cannot read (Cyrillic) ends with a warning on its document: the list says so."""
    resp = await upload_bytes(http, engine.url, make_scanned_text_pdf(), "notice-scan.pdf")
    assert resp.status == 202, await resp.text()
    record = await wait_status(http, engine.url, (await resp.json())["doc_id"], {"indexed", "failed"})
    assert record["warnings"], record
    async with open_page(browser, engine.url) as (page, _):
        warning = doc_row(page, "notice-scan.pdf").locator("p.warning")
        await expect(warning).to_have_text(f"Warning: {record['warnings'][0]}")
        await expect(warning).to_be_visible()


async def _indexed(http: aiohttp.ClientSession, url: str, data: bytes, name: str, ctype: str) -> str:
    resp = await upload_bytes(http, url, data, name, ctype)
    assert resp.status == 202, await resp.text()
    doc_id = (await resp.json())["doc_id"]
    await wait_status(http, url, doc_id, {"indexed"})
    return doc_id


async def _server_takes(http: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, str]:
    """Whether this server accepts a search request of this shape (filters and image search are newer)."""
    async with http.post(f"{url}/v1/search", **kwargs) as resp:
        body = await resp.json()
        return resp.status, "" if resp.status == 200 else body["error"]["message"]


async def test_search_groups_by_document_with_highlights_filters_and_image(engine: Engine, browser: Browser, http) -> None:
    pdf, _, _ = five_page_pdf_with_fact()
    figures, _ = make_figures_pdf()
    facts_id = await _indexed(http, engine.url, pdf, "reactor.pdf", "application/pdf")
    figures_id = await _indexed(http, engine.url, figures, "pumps.pdf", "application/pdf")

    async with open_page(browser, engine.url) as (page, watch):
        # Keyboard: the tabs follow the arrow keys.
        await page.focus("#tab-ask")
        await page.keyboard.press("ArrowRight")
        await expect(page.locator("#tab-search")).to_have_attribute("aria-selected", "true")
        await expect(page.locator("#tab-search")).to_be_focused()
        await expect(page.locator("#search")).to_be_visible()

        await page.fill("#query", "pressure gauge on the inlet valve and the reactor core")
        await page.keyboard.press("Enter")
        groups = page.locator("#results .doc-group")
        await expect(groups.first).to_be_visible()
        titles = await groups.locator("h3").all_inner_texts()
        assert {"reactor.pdf", "pumps.pdf"} <= set(titles) and len(titles) == len(set(titles)), titles
        pumps = groups.filter(has=page.locator("h3", has_text="pumps.pdf"))
        await expect(pumps.locator(".hit .thumb figure.page img").first).to_be_visible()
        await expect(pumps.locator(".hit .thumb .highlight").first).to_be_visible()
        await shot(page, "search")

        # A thumbnail opens its page in the viewer.
        await pumps.locator(".hit .thumb").first.click()
        await expect(page.locator("#viewer-title")).to_have_text("pumps.pdf — page 1")
        await expect(page.locator("#viewer .highlight")).to_be_visible()
        await page.click("#viewer-close")

        # Filters: only images, only one document. Sent as `filters` only now that the user set them.
        status, message = await _server_takes(
            http, engine.url, json={"query": "pressure gauge", "filters": {"modalities": ["image"]}}
        )
        await page.uncheck("input[name=modality][value=text]")
        await page.uncheck("input[name=modality][value=table]")
        await page.select_option("#filter-doc", label="pumps.pdf")
        if status == 200:
            await page.click("#search-button")
            await expect(page.locator("#search-status")).to_have_text(re.compile("match"))
            modalities = await page.locator("#results .hit").evaluate_all("els => els.map(e => e.dataset.modality)")
            assert modalities and set(modalities) == {"image"}, modalities
            assert await groups.locator("h3").all_inner_texts() == ["pumps.pdf"]
            # A page range: only page 3 of reactor.pdf (where the fact is).
            await page.check("input[name=modality][value=text]")
            await page.select_option("#filter-doc", label="reactor.pdf")
            await page.fill("#page-from", "3")
            await page.fill("#page-to", "3")
            await page.click("#search-button")
            await expect(page.locator("#results .hit").first).to_contain_text(FACT_PHRASE)
            pages = await page.locator("#results .hit").evaluate_all("els => els.map(e => e.dataset.page)")
            assert set(pages) == {"3"}, pages
        else:  # a server without filters: the UI says what the API answered
            watch.allow("POST", "/v1/search", status)
            await page.click("#search-button")
            await expect(page.locator("#search-status")).to_contain_text(message[:60])
        # An empty page range is refused before anything is sent.
        await page.fill("#page-from", "4")
        await page.fill("#page-to", "2")
        await page.click("#search-button")
        await expect(page.locator("#search-status")).to_have_text("the page range 4–2 is empty")
        await page.fill("#page-from", "")
        await page.fill("#page-to", "")
        await page.check("input[name=modality][value=text]")
        await page.check("input[name=modality][value=table]")
        await page.select_option("#filter-doc", label="All documents")

        # Search by image: the red figure of pumps.pdf, dropped on the image zone.
        probe = make_png(400, 300, (200, 60, 60))
        form = aiohttp.FormData()
        form.add_field("image", probe, filename="probe.png", content_type="image/png")
        status, message = await _server_takes(http, engine.url, data=form)
        if status != 200:
            watch.allow("POST", "/v1/search", status)
        await drop_files(page, "#image-drop", [("probe.png", probe, "image/png")])
        await expect(page.locator("#image-drop-text")).to_have_text("Search by image: probe.png")
        await expect(page.locator("#image-preview")).to_be_visible()
        if status == 200:
            await expect(page.locator("#search-status")).to_have_text(re.compile("match"))
            await expect(groups.first.locator("h3")).to_have_text("pumps.pdf")
            await shot(page, "image-search")
        else:
            await expect(page.locator("#search-status")).to_contain_text(message[:60])

        # Ask about a figure: the images on the cited page show as thumbnails beside the answer.
        await page.click("#tab-ask")
        await page.fill("#question", "What does Figure 1 show about the pressure gauge on the inlet valve?")
        await page.click("#ask-button")
        await expect(page.locator("#answer-status")).to_have_text(re.compile("Answered by"), timeout=60_000)
        await expect(page.locator("#sources li").first).to_contain_text("pumps.pdf, page 1")
        thumbs = page.locator("#answer-images .thumb.image-hit img")
        await expect(thumbs.first).to_be_visible()
        assert await thumbs.first.evaluate("img => img.naturalWidth > 0")
        await shot(page, "answer-images")
    assert facts_id != figures_id


# --------------------------------------------------------------------------- sign-in, phone


@pytest.fixture
async def auth_edge(engine: Engine, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An edge API with auth on, on the engine's NATS; tenant `empty` has no documents."""
    keys_file = tmp_path / "keys.json"
    keys = {
        "reader": create_key(keys_file, "empty", "reader")[1],
        "writer": create_key(keys_file, "default", "writer")[1],
    }
    settings = EdgeSettings(nats_url=engine.nats_url, auth="on", api_keys_file=str(keys_file), api_keys="")
    async with TestServer(create_app(settings), host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), keys


async def test_office_hits_say_where_they_are_and_open_without_a_page_picture(
    engine: Engine, browser: Browser, http
) -> None:
    """A slide's notes and a slide's picture: the hit shows its locator where a PDF hit shows its page, and the
    viewer opens on the passage (and the picture) without asking for a page picture (the watch fails on a 422)."""
    from tests.office_files import make_pptx

    await _indexed(http, engine.url, make_pptx()[0], "results.pptx", "application/octet-stream")
    async with open_page(browser, engine.url) as (page, _watch):
        await page.click("#tab-search")
        await page.fill("#query", "Okapi contract signed in March")
        await page.keyboard.press("Enter")
        hit = page.locator("#results .hit").filter(has_text="Okapi").first
        await expect(hit.locator(".thumb")).to_have_text("slide 1: Quarterly results, notes")
        await expect(hit.locator(".hit-text p").first).to_contain_text("Slide 1: Quarterly results, notes · ")
        await hit.locator(".thumb").click()
        await expect(page.locator("#viewer-title")).to_have_text("results.pptx — slide 1: Quarterly results, notes")
        await expect(page.locator("#viewer-quote")).to_contain_text("Okapi contract")
        await expect(page.locator("#viewer figure.page")).to_have_count(0)
        await page.click("#viewer-close")

        await page.fill("#query", "Warehouse Lisbon")
        await page.keyboard.press("Enter")
        picture = page.locator("#results .hit[data-modality=image]").first
        await expect(picture.locator(".thumb")).to_have_text("slide 2: Spare parts, picture")
        await picture.locator(".thumb").click()
        await expect(page.locator("#viewer-title")).to_have_text("results.pptx — slide 2: Spare parts, picture")
        await expect(page.locator("#viewer figure.page img")).to_be_visible()  # the picture itself, no page
        await shot(page, "office-picture")
        await page.click("#viewer-close")

        # An answer's source names the slide, and its citation opens on the passage.
        await page.click("#tab-ask")
        await page.fill("#question", "Which contract should be mentioned with the quarterly results?")
        await page.click("#ask-button")
        await expect(page.locator("#answer-status")).to_have_text(re.compile("Answered by"), timeout=60_000)
        await expect(page.locator("#sources li").first).to_contain_text("results.pptx, slide 1: Quarterly results, notes")
        await page.locator("#answer button.cite[data-cite='1']").first.click()
        await expect(page.locator("#viewer-title")).to_have_text("results.pptx — slide 1: Quarterly results, notes")
        await expect(page.locator("#viewer-quote")).to_contain_text("Okapi contract")
        await page.click("#viewer-close")


async def test_sign_in_reader_view_not_found_and_sign_out(auth_edge, browser: Browser) -> None:
    url, keys = auth_edge
    async with open_page(browser, url) as (page, watch):
        watch.allow("GET", "/v1/session", 401)  # how the page learns that it needs a key
        await expect(page.locator("#sign-in")).to_be_visible()
        await expect(page.locator("#api-key")).to_be_focused()
        await expect(page.locator("#app")).to_be_hidden()

        await page.fill("#api-key", "mmrag_not-a-real-key")
        await page.keyboard.press("Enter")
        await expect(page.locator("#sign-in-error")).to_have_text("the API key is not valid (unknown or revoked)")

        await page.fill("#api-key", keys["reader"])
        await page.click("#sign-in-form button[type=submit]")
        await expect(page.locator("#who")).to_have_text("Tenant empty · reader")
        await expect(page.locator("#drop")).to_be_hidden()  # a reader cannot upload
        await expect(page.locator("#docs-empty")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('mmrag.apiKey')") == keys["reader"]

        await page.fill("#question", "What temperature does the reactor core operate at?")
        await page.keyboard.press("Enter")  # Enter asks
        await expect(page.locator("#answer")).to_have_text("Not found in your documents.", timeout=60_000)
        await expect(page.locator("#sources li")).to_have_count(0)

        await page.click("#sign-out")
        await expect(page.locator("#sign-in")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('mmrag.apiKey')") is None
        await expect(page.locator("#answer")).to_be_empty()  # nothing of that tenant stays in the page

        # Another key, another tenant and role: the writer may upload.
        await page.fill("#api-key", keys["writer"])
        await page.keyboard.press("Enter")
        await expect(page.locator("#who")).to_have_text("Tenant default · writer")
        await expect(page.locator("#drop")).to_be_visible()


async def test_phone_viewport_fits_and_works(auth_edge, browser: Browser, tmp_path: Path) -> None:
    """On a phone, with auth on: upload with the file picker, ask, open the citation (pictures fetched with the key)."""
    url, keys = auth_edge
    pdf, _, _ = five_page_pdf_with_fact()
    upload = tmp_path / "phone-facts.pdf"
    upload.write_bytes(pdf)
    async with open_page(browser, url, viewport=PHONE) as (page, watch):
        watch.allow("GET", "/v1/session", 401)
        await page.fill("#api-key", keys["writer"])
        await page.keyboard.press("Enter")
        await expect(page.locator("#who")).to_have_text("Tenant default · writer")
        await expect(page.locator("#drop")).to_be_visible()
        await page.set_input_files("#files", str(upload))
        row = doc_row(page, "phone-facts.pdf")
        await expect(row).to_have_attribute("data-status", "indexed", timeout=INGEST_TIMEOUT_MS)
        await page.fill("#question", QUESTION)
        await page.click("#ask-button")
        await expect(page.locator("#answer")).to_contain_text(FACT_PHRASE, timeout=60_000)
        # (Other tests of this module may have left copies of the same PDF under other names: any copy will do.)
        cited = page.locator("#sources button.link", has_text=re.compile(r"\.pdf, page 3$"))
        await cited.first.click()
        await expect(page.locator("#viewer-title")).to_have_text(re.compile(r"\.pdf — page 3$"))
        await expect(page.locator("#viewer .highlight")).to_be_visible()
        box = await page.locator("#viewer figure.page").bounding_box()
        assert box is not None and box["width"] <= PHONE["width"], box
        await shot(page, "phone-citation")
        await page.click("#viewer-close")
        for control in ("Choose files", "Ask"):
            box = await page.get_by_text(control, exact=True).first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (control, box)
        overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        path = await shot(page, "phone")
    assert path.stat().st_size > 0



async def test_page_and_assets_are_served_self_contained(engine: Engine, http) -> None:
    """The page and every asset come from this server with their types; nothing refers to another origin."""
    from edge_api.routes.ui import PAGE_CSP, assets

    async with http.get(f"{engine.url}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == PAGE_CSP
        page = await resp.text()
    names = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', page))
    assert {"main.js", "app.css", "icon.svg"} <= names
    for name, (_, content_type, _) in assets().items():
        async with http.get(f"{engine.url}/ui/{name}") as resp:
            assert resp.status == 200 and resp.content_type == content_type, name
            text = await resp.text()
            etag = resp.headers["ETag"]
        for external in ("http://", "https://", "//cdn", "fonts.googleapis", "@import"):
            assert external not in text.replace("http://www.w3.org/2000/svg", ""), (name, external)
        async with http.get(f"{engine.url}/ui/{name}", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304, name
    for missing in ("nope.js", "..%2Fapp.py", "%2E%2E%2Fauth.py", "index.html.bak"):
        async with http.get(f"{engine.url}/ui/{missing}") as resp:
            assert resp.status == 404, missing
            assert (await resp.json())["error"]["code"] == "not_found"


MARKDOWN_CASES = r"""async () => {
    const { renderMarkdown } = await import("/ui/markdown.js");
    const out = {};
    const cases = {
        hostile: '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> **bold** and *it* [2]',
        blocks: "# Title\n- a\n- b\n\n1. x\n2. y\n```\n<b>code</b> **x**\n```\nafter",
        code: "use `**not bold** <i>` here [1, 3]",
    };
    for (const [name, text] of Object.entries(cases)) {
        const div = document.createElement("div");
        div.innerHTML = renderMarkdown(text);
        document.body.append(div);
        out[name] = {
            html: div.innerHTML,
            text: div.textContent,
            tags: [...div.querySelectorAll("*")].map((e) => e.tagName.toLowerCase()),
            attrs: [...div.querySelectorAll("*")].flatMap((e) => e.getAttributeNames()),
            cites: [...div.querySelectorAll("button.cite")].map((b) => b.dataset.cite),
        };
        div.remove();
    }
    out.pwned = window.pwned ?? null;
    return out;
}"""

SSE_CASE = r"""async () => {
    const { readEvents } = await import("/ui/sse.js");
    // Chunk boundaries in awkward places: inside a CRLF, inside a field name, a comment, a multi-line data.
    const chunks = ['event: token\r', '\ndata: {"text": "a"}\r\n\r\n: ping\r\n\r\nevent: done\r\nda',
                    'ta: line1\r\ndata:line2\r\nid: 7\r\n\r\n', 'data: no blank line at the end'];
    const body = new ReadableStream({
        start(controller) {
            for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
            controller.close();
        },
    });
    const events = [];
    for await (const e of readEvents(new Response(body))) events.push(e);
    return events;
}"""


async def test_markdown_is_safe_and_the_sse_reader_follows_the_format(engine: Engine, browser: Browser) -> None:
    """The page's own modules, run in the browser: the Markdown renderer escapes before it formats, and the
    event-stream reader copes with any chunking."""
    async with open_page(browser, engine.url) as (page, _):
        out = await page.evaluate(MARKDOWN_CASES)
        hostile = out["hostile"]
        assert out["pwned"] is None, "nothing in an answer runs"
        assert set(hostile["tags"]) == {"p", "strong", "em", "button"}, hostile
        assert set(hostile["attrs"]) <= {"type", "class", "data-cite", "aria-label"}, hostile
        assert '<img src=x onerror="window.pwned=1">' in hostile["text"], "shown as text"
        assert "<strong>bold</strong>" in hostile["html"] and "<em>it</em>" in hostile["html"]
        assert hostile["cites"] == ["2"]
        blocks = out["blocks"]
        assert blocks["tags"] == ["h4", "ul", "li", "li", "ol", "li", "li", "pre", "code", "p"], blocks
        assert "<b>code</b> **x**" in blocks["text"], "a code block is verbatim"
        code = out["code"]
        assert code["tags"] == ["p", "code", "button", "button"], code
        assert "**not bold** <i>" in code["text"] and code["cites"] == ["1", "3"]

        events = await page.evaluate(SSE_CASE)
        assert events == [
            {"event": "token", "data": '{"text": "a"}', "id": None},
            {"event": "done", "data": "line1\nline2", "id": "7"},
        ], events


async def test_evaluations_tab_runs_a_questions_file_and_shows_the_report(
    engine: Engine, browser: Browser, http, tmp_path: Path
) -> None:
    text = b"The plimsoll gauge reads the tank level. The plimsoll gauge is calibrated every 6 months."
    await _indexed(http, engine.url, text, "gauge.txt", "text/plain")
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "gauge", "question": "plimsoll gauge calibration", '
                         '"expected": [{"doc": "gauge.txt"}], "facts": ["calibrated every 6 months"]}\n')  # fmt: skip
    async with open_page(browser, engine.url) as (page, _):
        await expect(page.locator("#app")).to_be_visible(timeout=30_000)
        tab = page.locator("#tab-evaluations")
        await expect(tab).to_be_visible()  # local mode: the one user is the operator
        await tab.click()
        await page.set_input_files("#eval-file", str(questions))
        await page.locator("#eval-button").click()
        report = page.locator("#eval-report")
        await expect(report).to_contain_text("done", timeout=120_000)
        # recall@k, nDCG@10, MRR and the fact rate of the one question: all found.
        await expect(report.locator("table").first).to_contain_text("g1")
        assert (await report.locator("table").first.locator("td").nth(1).inner_text()) == "1.000"
        await expect(page.locator("#eval-list")).to_contain_text("recall 1.000")
        await shot(page, "evaluations")


async def test_the_answers_rated_up_are_evaluated_from_the_evaluations_tab(engine: Engine, browser: Browser, http) -> None:
    doc_id = await _indexed(http, engine.url, b"The bilge pump B-4 starts at a water level of 12 cm.", "bilge.txt",
                            "text/plain")  # fmt: skip
    async with http.post(f"{engine.url}/v1/conversations", json={"title": "bilge"}) as resp:
        cid = (await resp.json())["id"]
    body = {"question": "At what water level does the bilge pump B-4 start?", "top_k": 1, "conversation_id": cid}
    async with http.post(f"{engine.url}/v1/ask", json=body) as resp:
        assert "event: done" in await resp.text()
    async with http.put(f"{engine.url}/v1/conversations/{cid}/turns/1/feedback", json={"rating": "up"}) as resp:
        assert resp.status == 200, await resp.text()
    async with open_page(browser, engine.url) as (page, _):
        await expect(page.locator("#app")).to_be_visible(timeout=30_000)
        await page.locator("#tab-evaluations").click()
        await page.locator("#eval-liked").click()
        report = page.locator("#eval-report")
        await expect(report).to_contain_text("done", timeout=120_000)
        # The rated turn is the question; its cited page is where the answer must be found: recall 1.000.
        await expect(report).to_contain_text("At what water level does the bilge pump B-4 start?1.000")
        await expect(page.locator("#eval-list")).to_contain_text("answers rated up")
    async with http.get(f"{engine.url}/v1/feedback/questions") as resp:
        liked = {q["id"]: q for q in (await resp.json())["questions"]}
    assert liked[f"{cid}-1"]["expected"] == [{"doc": doc_id, "page": 1}]
