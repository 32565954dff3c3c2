"""CORS: only the origins of MMRAG_ALLOWED_ORIGINS may read responses or pass a preflight."""

from __future__ import annotations

import tests.bus.test_edge_api as edge_api_tests
from tests.bus.test_edge_api import Edge, StartEdge

start_edge = edge_api_tests.start_edge  # the edge API fixture of test_edge_api, used here by its name

APP = "https://app.example.com"


async def test_an_allowed_origin_gets_cors_headers_and_its_preflight(start_edge: StartEdge) -> None:
    edge: Edge = await start_edge(allowed_origins=APP)
    async with edge.http.options(f"{edge.base}/v1/search", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
    }) as resp:  # fmt: skip
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    async with edge.http.get(f"{edge.base}/v1/documents", headers={"Origin": APP}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == APP and "Origin" in resp.headers["Vary"]
        assert "X-Request-Id" in resp.headers["Access-Control-Expose-Headers"]


async def test_another_origin_gets_no_cors_headers_and_a_refused_preflight(start_edge: StartEdge) -> None:
    edge: Edge = await start_edge(allowed_origins=APP)
    evil = "https://evil.example"
    async with edge.http.options(f"{edge.base}/v1/search", headers={
        "Origin": evil, "Access-Control-Request-Method": "POST",
    }) as resp:  # fmt: skip
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden_origin"
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with edge.http.get(f"{edge.base}/v1/documents", headers={"Origin": evil}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers  # the browser hides the body from evil's script
    async with edge.http.options(f"{edge.base}/no/such/path", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
    }) as resp:  # fmt: skip
        assert resp.status == 404


async def test_metrics_is_scrapeable_by_pod_address(start_edge: StartEdge) -> None:
    edge: Edge = await start_edge()
    async with edge.http.get(f"{edge.base}/metrics", headers={"Host": "10.1.2.3:8080"}) as resp:
        assert resp.status == 200 and "mmrag_http_requests_total" in await resp.text()
    async with edge.http.get(f"{edge.base}/v1/documents", headers={"Host": "10.1.2.3:8080"}) as resp:
        assert resp.status == 421
