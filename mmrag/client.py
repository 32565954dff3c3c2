"""HTTP client of a running engine, used by `mmrag ingest` and `mmrag ask`."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp


class EngineError(Exception):
    """The engine answered with an error status; the message is the engine's own."""


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        try:
            body = await resp.json()
            message = body["error"]["message"]
        except Exception:  # noqa: BLE001 - fall back to the raw text
            message = await resp.text()
        raise EngineError(f"HTTP {resp.status}: {message}")


async def upload(session: aiohttp.ClientSession, base_url: str, path: Path) -> dict[str, Any]:
    form = aiohttp.FormData()
    with path.open("rb") as f:
        form.add_field("file", f, filename=path.name, content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        async with session.post(f"{base_url}/v1/documents", data=form) as resp:
            await _raise_for(resp)
            return await resp.json()


async def status(session: aiohttp.ClientSession, base_url: str, doc_id: str) -> dict[str, Any]:
    async with session.get(f"{base_url}/v1/documents/{doc_id}") as resp:
        await _raise_for(resp)
        return await resp.json()


async def ask_events(
    session: aiohttp.ClientSession, base_url: str, question: str, top_k: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (event, data) pairs of the `/v1/ask` Server-Sent Events stream."""
    async with session.post(f"{base_url}/v1/ask", json={"question": question, "top_k": top_k}) as resp:
        await _raise_for(resp)
        event, data = "message", []
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if data:
                    yield event, json.loads("\n".join(data))
                event, data = "message", []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
