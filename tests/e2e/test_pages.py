"""Page pictures and hit images over real HTTP against a real `mmrag up` (`edge_api.routes.pages`).

- A PDF page is rendered at the asked width; the bbox of the chunk that holds a fact, scaled by
  ``width / X-Page-Width``, lands on ink, and the page's margin stays white.
- Width is clamped (64..2000) and a bad one is a 400; a page out of range, an unknown document and an
  unknown image are 404s that say what is missing; a text document is a 422.
- ETag and Cache-Control are set, and ``If-None-Match`` is a 304.
- An uploaded image is its own page 1 (bbox units are its pixels); an image hit's picture is served.
- Tenant check: an edge API with keys of its own, on the engine's NATS: another tenant's key gets 404 for the
  same document and image, the owner's key gets the picture.
- `ByteLRU` keeps at most its byte budget, least recently used out first.

On the shared engine, in one tenant for the module (tests/e2e/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from PIL import Image

from edge_api.app import create_app
from edge_api.keys import create_key
from edge_api.page_images import ByteLRU
from edge_api.routes.documents import PUBLIC_FIELDS
from edge_api.settings import EdgeSettings
from tests.engine import TenantEngine, upload_bytes, wait_status
from tests.factories import FACT_PHRASE, five_page_pdf_with_fact, make_figures_pdf, render_text_image

IMAGE_LINES = ["Invoice total is 512 euros", "Payment due in thirty days"]


@pytest.fixture(scope="module")
def engine(module_tenant: TenantEngine) -> TenantEngine:
    """One tenant for the module: its tests read the corpus a module fixture uploads once."""
    return module_tenant


async def _upload(http: aiohttp.ClientSession, url: str, data: bytes, name: str, ctype: str) -> str:
    resp = await upload_bytes(http, url, data, name, ctype)
    assert resp.status == 202, await resp.text()
    doc_id = (await resp.json())["doc_id"]
    await wait_status(http, url, doc_id, {"indexed"})
    return doc_id


@pytest.fixture(scope="module")
def docs(engine: TenantEngine) -> dict[str, str]:
    """The module's documents, uploaded once: name -> doc_id."""
    import asyncio

    async def upload_all() -> dict[str, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
            pdf, _, _ = five_page_pdf_with_fact()
            figures, _ = make_figures_pdf()
            png = render_text_image(IMAGE_LINES, fontsize=20)
            return {
                "facts": await _upload(http, engine.url, pdf, "facts.pdf", "application/pdf"),
                "figures": await _upload(http, engine.url, figures, "figures.pdf", "application/pdf"),
                "image": await _upload(http, engine.url, png, "invoice.png", "image/png"),
                "text": await _upload(http, engine.url, b"# Notes\n\nThe kettle boils at noon.\n", "n.md", "text/markdown"),
            }

    return asyncio.run(upload_all())


async def _get(http: aiohttp.ClientSession, url: str, **kwargs) -> tuple[int, CIMultiDict, bytes]:
    async with http.get(url, **kwargs) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def _hit(http: aiohttp.ClientSession, url: str, query: str, **match) -> dict:
    async with http.post(f"{url}/v1/search", json={"query": query, "top_k": 20}) as resp:
        assert resp.status == 200, await resp.text()
        hits = (await resp.json())["hits"]
    found = [h for h in hits if all(h[k] == v for k, v in match.items())]
    assert found, hits
    return found[0]


async def test_page_is_rendered_at_the_width_and_the_bbox_lands_on_its_text(engine, docs, http) -> None:
    hit = await _hit(http, engine.url, "Zorblax-7 reactor core temperature", doc_id=docs["facts"])
    assert hit["page"] == 3 and FACT_PHRASE in hit["text"]
    status, headers, body = await _get(http, f"{engine.url}/v1/documents/{docs['facts']}/pages/3?width=600")
    assert status == 200, body
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Page-Count"] == "5"
    page_w, page_h = float(headers["X-Page-Width"]), float(headers["X-Page-Height"])
    assert (page_w, page_h) == pytest.approx((595, 842), abs=1)
    image = Image.open(io.BytesIO(body)).convert("L")
    assert image.width == 600
    assert image.height == pytest.approx(600 * page_h / page_w, abs=2)
    scale = image.width / page_w
    x0, y0, x1, y1 = (round(v * scale) for v in hit["bbox"])
    region = image.crop((x0, y0, x1, y1))
    assert region.getextrema()[0] < 100, "the cited region holds the page's text (dark pixels)"
    margin = image.crop((0, 0, image.width, max(1, y0 - 4)))
    assert margin.getextrema()[0] > 240, "above the text block the page is blank"
    # Another page is another picture.
    status, _, other = await _get(http, f"{engine.url}/v1/documents/{docs['facts']}/pages/1?width=600")
    assert status == 200 and other != body


async def test_width_is_clamped_and_a_bad_width_is_400(engine, docs, http) -> None:
    base = f"{engine.url}/v1/documents/{docs['facts']}/pages/1"
    for asked, served in (("5000", 2000), ("10", 64), ("250", 250)):
        status, _, body = await _get(http, f"{base}?width={asked}")
        assert status == 200
        assert Image.open(io.BytesIO(body)).width == served
    status, _, body = await _get(http, base)
    assert status == 200 and Image.open(io.BytesIO(body)).width == 800, "the default width"
    for bad in ("abc", "0", "-5", "1.5", ""):
        async with http.get(base, params={"width": bad}) as resp:
            assert resp.status == 400, bad
            error = (await resp.json())["error"]
            assert error["code"] == "invalid_query" and error["field"] == "width"


async def test_missing_pages_documents_and_images_are_404_with_a_reason(engine, docs, http) -> None:
    doc = docs["facts"]
    cases = {
        f"/v1/documents/{doc}/pages/6": "the document has 5 pages",
        f"/v1/documents/{doc}/pages/0": "pages are numbered from 1",
        f"/v1/documents/{doc}/pages/first": "pages are numbered from 1",
        "/v1/documents/0123456789abcdef0123456789abcdef/pages/1": "no document",
        f"/v1/documents/{doc}/images/0123456789abcdef": "no image",
        "/v1/documents/0123456789abcdef0123456789abcdef/images/abc": "no document",
    }
    for path, reason in cases.items():
        async with http.get(f"{engine.url}{path}") as resp:
            assert resp.status == 404, path
            error = (await resp.json())["error"]
            assert error["code"] == "not_found" and reason in error["message"], (path, error)


async def test_a_text_document_has_no_page_picture(engine, docs, http) -> None:
    async with http.get(f"{engine.url}/v1/documents/{docs['text']}/pages/1") as resp:
        assert resp.status == 422
        error = (await resp.json())["error"]
        assert error["code"] == "not_renderable" and "no page to show" in error["message"]


async def test_pictures_are_cacheable_and_revalidate_with_304(engine, docs, http) -> None:
    url = f"{engine.url}/v1/documents/{docs['facts']}/pages/2?width=300"
    status, headers, body = await _get(http, url)
    assert status == 200
    assert headers["Cache-Control"].startswith("private, max-age=")
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, again, _ = await _get(http, url, headers={"If-None-Match": etag})
    assert status == 304 and again["ETag"] == etag
    status, _, second = await _get(http, url, headers={"If-None-Match": '"something-else"'})
    assert status == 200 and second == body
    _, other, _ = await _get(http, f"{engine.url}/v1/documents/{docs['facts']}/pages/2?width=400")
    assert other["ETag"] != etag, "each width is its own picture"


async def test_an_uploaded_image_is_its_own_page(engine, docs, http) -> None:
    original = Image.open(io.BytesIO(render_text_image(IMAGE_LINES, fontsize=20)))
    status, headers, body = await _get(http, f"{engine.url}/v1/documents/{docs['image']}/pages/1?width=2000")
    assert status == 200
    assert (float(headers["X-Page-Width"]), float(headers["X-Page-Height"])) == original.size
    assert Image.open(io.BytesIO(body)).size == original.size, "an image is never enlarged"
    status, _, body = await _get(http, f"{engine.url}/v1/documents/{docs['image']}/pages/1?width=200")
    assert Image.open(io.BytesIO(body)).width == 200
    async with http.get(f"{engine.url}/v1/documents/{docs['image']}/pages/2") as resp:
        assert resp.status == 404 and "has 1 page" in (await resp.json())["error"]["message"]


async def test_an_image_hit_is_served_as_a_png(engine, docs, http) -> None:
    hit = await _hit(http, engine.url, "pressure gauge on the inlet valve", doc_id=docs["figures"], modality="image")
    image_id = hit["image"]["object_name"].rsplit("/", 1)[-1]
    status, _, body = await _get(http, f"{engine.url}/v1/documents/{docs['figures']}/images/{image_id}?width=100")
    assert status == 200
    picture = Image.open(io.BytesIO(body))
    assert picture.format == "PNG" and picture.width == 100
    assert picture.height == pytest.approx(100 * hit["image"]["height"] / hit["image"]["width"], abs=1)
    # Another document's id with this image's id: the image is not found under it.
    async with http.get(f"{engine.url}/v1/documents/{docs['facts']}/images/{image_id}") as resp:
        assert resp.status == 404


@pytest.fixture
async def auth_edge(engine: TenantEngine, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An edge API with keys of its own, on the engine's NATS: `owner` reads the module's tenant, `other` another."""
    keys_file = tmp_path / "keys.json"
    keys = {name: create_key(keys_file, tenant, "reader")[1] for name, tenant in (("owner", engine.tenant), ("other", "other"))}
    settings = EdgeSettings(nats_url=engine.nats_url, auth="on", api_keys_file=str(keys_file), api_keys="")
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(TestServer(create_app(settings)))
        yield str(server.make_url("")).rstrip("/"), keys


async def test_another_tenant_gets_404_for_pages_and_images(engine, docs, http, auth_edge) -> None:
    base, keys = auth_edge
    hit = await _hit(http, engine.url, "pressure gauge on the inlet valve", doc_id=docs["figures"], modality="image")
    image_id = hit["image"]["object_name"].rsplit("/", 1)[-1]
    paths = [f"/v1/documents/{docs['facts']}/pages/1", f"/v1/documents/{docs['figures']}/images/{image_id}"]
    async with aiohttp.ClientSession() as bare:  # no default key: each request below says which key it sends
        for path in paths:
            async with bare.get(f"{base}{path}") as resp:
                assert resp.status == 401, "no key"
            async with bare.get(f"{base}{path}", headers={"Authorization": f"Bearer {keys['other']}"}) as resp:
                assert resp.status == 404, path
                assert "no document" in (await resp.json())["error"]["message"]
            async with bare.get(f"{base}{path}", headers={"Authorization": f"Bearer {keys['owner']}"}) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"] == "image/png"
        async with bare.get(f"{base}/v1/session", headers={"Authorization": f"Bearer {keys['other']}"}) as resp:
            assert await resp.json() == {"auth": "on", "tenant": "other", "role": "reader"}


async def test_a_deleted_documents_pictures_are_gone(engine, http) -> None:
    pdf, _, _ = five_page_pdf_with_fact()
    doc_id = await _upload(http, engine.url, pdf, "gone.pdf", "application/pdf")
    url = f"{engine.url}/v1/documents/{doc_id}/pages/1"
    assert (await _get(http, url))[0] == 200  # rendered, so now in the cache
    async with http.delete(f"{engine.url}/v1/documents/{doc_id}") as resp:
        assert resp.status == 202
    assert (await _get(http, url))[0] == 404


def test_byte_lru_keeps_its_budget_and_evicts_the_least_recently_used() -> None:
    lru = ByteLRU(100)
    lru.put("a", b"x" * 20)
    lru.put("b", b"x" * 20)
    lru.put("c", b"x" * 20)
    assert lru.get("a") is not None  # a is now the most recently used; b the least
    lru.put("d", b"x" * 25)
    lru.put("e", b"x" * 25)
    assert lru.size <= 100
    assert lru.get("b") is None and lru.get("a") is not None and lru.get("e") is not None
    lru.put("big", b"x" * 26)  # over a quarter of the budget: not kept, nothing evicted for it
    assert lru.get("big") is None and len(lru) == 4
    lru.put("a", b"y" * 5)  # replacing a value charges its new size only
    assert lru.get("a") == b"y" * 5 and lru.size == 5 + 20 + 25 + 25


async def _progress_events(engine: TenantEngine) -> list[tuple[str, dict]]:
    """Every event of one `GET /v1/progress` of the module's tenant, read by an independent SSE client (httpx-sse)."""
    import httpx
    from httpx_sse import aconnect_sse

    async with (
        httpx.AsyncClient(timeout=60, headers=engine.headers) as client,
        aconnect_sse(client, "GET", f"{engine.url}/v1/progress") as source,
    ):
        assert source.response.status_code == 200
        return [(e.event, json.loads(e.data)) async for e in source.aiter_sse()]


async def test_progress_stream_follows_an_ingest_and_ends_idle(engine, docs, http) -> None:
    assert await _progress_events(engine) == [("idle", {})], "nothing in progress: it ends at once"
    pdf, _, _ = five_page_pdf_with_fact()
    resp = await upload_bytes(http, engine.url, pdf, "followed.pdf", "application/pdf")
    doc_id = (await resp.json())["doc_id"]
    events = await _progress_events(engine)
    assert events[-1] == ("idle", {}), events
    mine = [data for event, data in events if event == "document" and data["doc_id"] == doc_id]
    if not mine:  # indexed before the stream started: then it must say so, and be idle at once
        assert events == [("idle", {})]
        assert (await wait_status(http, engine.url, doc_id, {"indexed"}))["status"] == "indexed"
        return
    assert mine[-1]["status"] == "indexed" and mine[-1]["chunks_indexed"] == mine[-1]["chunks_total"] > 0, mine
    assert all(view["status"] != "indexed" for view in mine[:-1]), "indexed is the last word"
    parsed = [view["pages_parsed"] for view in mine]
    assert parsed == sorted(parsed), parsed
    assert set(mine[0]) == set(PUBLIC_FIELDS), "each event is the document view of the status endpoint"
