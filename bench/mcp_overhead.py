"""What the MCP server adds to a call of the HTTP API (edge_api/mcp.py: a tool is the same request, made over
loopback with the caller's key), measured against a running engine.

    .venv/bin/mmrag up --auth --port 18431 ...            # prints an operator key
    .venv/bin/python bench/mcp_overhead.py --url http://127.0.0.1:18431 --api-key mmrag_... --n 30

Uploads one small document, then interleaves N calls of each: `search` (agents behind it) and the document list
(the edge alone), once through `mmrag.client` and once as an MCP tool through the SDK's Streamable HTTP client
(one `initialize`, then a POST per call). Prints the median milliseconds of each. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from mmrag.client import AsyncClient  # noqa: E402


async def main(url: str, key: str | None, n: int) -> None:
    async with AsyncClient(url, key) as engine:
        doc = await engine.upload(b"# Pumps\n\nThe pump K-41 is primed with 3.5 litres of glycol.\n", filename="k41.md")
        await engine.wait(doc.doc_id)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            times: dict[str, list[float]] = {"http search": [], "mcp search": [], "http list": [], "mcp list": []}

            async def timed(name: str, call) -> None:  # noqa: ANN001
                started = time.perf_counter()
                await call
                times[name].append(time.perf_counter() - started)

            for i in range(n):
                query = f"glycol K-41 {i}"  # a new query each time: no answer cache hit
                await timed("http search", engine.search(query, top_k=3))
                await timed("mcp search", session.call_tool("search", {"query": query, "top_k": 3}))
                await timed("http list", engine.http.get("/v1/documents"))
                await timed("mcp list", session.call_tool("list_documents", {}))
        await engine.delete(doc.doc_id)
    for name, values in times.items():
        print(f"{name:12s} median {statistics.median(values) * 1000:7.1f} ms  (n={len(values)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.api_key, args.n))
