"""Page pictures never decode what the parser refuses: the image-bomb limit is read from the header first, and a
failed document has no pictures (the edge API rendered a 21 KB PNG of 13,300 x 13,300 pixels: +1-2 GB a render)."""

from __future__ import annotations

import io
import resource

import aiohttp
import pytest
from PIL import Image

from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import DocumentStatus
from contracts.topology import PROGRESS_BUCKET, IndexGeneration
from documents.images import MAX_IMAGE_PIXELS
from edge_api.page_images import NotRenderable, render_image, render_page


def bomb_png(side: int = 13_300) -> bytes:
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG", optimize=True)  # ~22 MB to make, ~20 KB stored
    return out.getvalue()


def test_an_image_over_the_parsers_limit_is_refused_from_its_header() -> None:
    data = bomb_png()
    assert len(data) < 100_000 and 13_300**2 > MAX_IMAGE_PIXELS
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for render in (lambda: render_page(data, 1, 2000), lambda: render_image(data, 2000)):
        with pytest.raises(NotRenderable, match="over the limit"):
            render()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 100_000, f"the refused render still allocated {grown_kib} KiB"


async def test_a_failed_documents_page_is_422_and_never_rendered(nats_server) -> None:
    import nats
    from aiohttp.test_utils import TestServer

    from edge_api import EdgeSettings, create_app

    nc = await nats.connect(nats_server.url)
    try:
        await ensure_topology(nc.jetstream())
        async with TestServer(create_app(EdgeSettings(nats_url=nats_server.url))) as server, aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("file", bomb_png(), filename="bomb.png", content_type="image/png")
            async with http.post(server.make_url("/v1/documents"), data=form) as response:
                assert response.status == 202, await response.text()
                doc_id = (await response.json())["doc_id"]
            store = ProgressStore(await nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
            reason = "image too large: over the limit"  # what the parser records for such a file
            await store.update("default", doc_id, lambda r: store.new("default", doc_id, 1, DocumentStatus.FAILED,
                                                                      filename="bomb.png", error=reason))  # fmt: skip
            async with http.get(server.make_url(f"/v1/documents/{doc_id}/pages/1?width=2000")) as response:
                body = await response.json()
            assert response.status == 422 and body["error"]["code"] == "not_renderable"
            assert "failed to ingest" in body["error"]["message"] and reason in body["error"]["message"]
    finally:
        await nc.close()
