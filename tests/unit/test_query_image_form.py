"""The image-search form (`edge_api.query_image_upload.read_image_search`) over real HTTP: hostile fields are a 400."""

from __future__ import annotations

import io

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from edge_api.errors import ApiError
from edge_api.query_image_upload import read_image_search


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


async def post_form(filters: str) -> tuple[int, dict]:
    async def handler(request: web.Request) -> web.Response:
        try:
            search = await read_image_search(request, max_bytes=1 << 20)
        except ApiError as err:
            return web.json_response({"code": err.code, "details": err.extra.get("details")}, status=err.status)
        return web.json_response({"filters": search.filters.model_dump(mode="json") if search.filters else None})

    app = web.Application()
    app.router.add_post("/search", handler)
    async with TestClient(TestServer(app)) as client:
        form = aiohttp.FormData()
        form.add_field("image", png(), filename="q.png", content_type="image/png")
        form.add_field("filters", filters)
        response = await client.post("/search", data=form)
        return response.status, await response.json()


async def test_filters_nested_a_thousand_deep_are_a_400_not_a_server_error() -> None:
    status, body = await post_form('{"doc_ids":' + "[" * 1000 + "]" * 1000 + "}")
    assert status == 400 and body["code"] == "invalid_body"
    assert body["details"][0]["field"] == "filters"


async def test_valid_filters_still_pass() -> None:
    status, body = await post_form('{"doc_ids": ["d1"]}')
    assert status == 200 and body["filters"]["doc_ids"] == ["d1"]
