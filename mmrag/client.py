"""HTTP client of a running engine (httpx, async), used by the `mmrag` commands and the tests.

Every failure is an `EngineError` whose message is one line fit for a terminal: `EngineUnreachable` when
nothing answers at the URL, otherwise the engine's own `error.message` plus its `details` fields.
`/v1/ask` is read with `httpx_sse` (an SSE client library: the stream is never parsed by hand here).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)


class EngineError(Exception):
    """The engine answered with an error, or could not be reached; `str(e)` is one line for humans."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: list | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or []

    @property
    def transient(self) -> bool:
        """Worth retrying: nothing answered, or the engine said it is temporarily unable (503, 502, 504)."""
        return self.status is None or self.status in (502, 503, 504)


class EngineUnreachable(EngineError):
    """No HTTP answer at all: connection refused, timed out, or dropped."""


def client(
    base_url: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, api_key: str | None = None
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for the engine at `base_url` (use it with `async with`).

    `api_key` (the CLI's `--api-key` / `MMRAG_API_KEY`) goes on every request as ``Authorization: Bearer``.
    `trust_env=False`, like the aiohttp client it replaces: an HTTP(S)_PROXY of the shell must not send
    requests for a local engine through a proxy (nor a ~/.netrc replace the key).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, trust_env=False, headers=headers)


def _details(details: object) -> str:
    """`[{"field": "question", "problem": "..."}]` -> `question: ...; top_k: ...`."""
    if not isinstance(details, list):
        return ""
    parts = []
    for d in details:
        if isinstance(d, dict) and "field" in d:
            problem = d.get("problem") or d.get("message")
            parts.append(f"{d['field']}: {problem}" if problem else str(d["field"]))
        else:
            parts.append(d if isinstance(d, str) else json.dumps(d))
    return "; ".join(parts)


def error_from_body(status: int, body: bytes, fallback: str = "") -> EngineError:
    """An `EngineError` from an error answer `{"error": {"code", "message", "details"?, "field"?}}`, else its text.

    The message is the engine's own, with its `details` in place of "see details", or after it.
    """
    try:
        err = json.loads(body)["error"]
        message, code, details = str(err["message"]), err.get("code"), err.get("details")
    except (ValueError, KeyError, TypeError):
        text = " ".join(body.decode(errors="replace").split())[:300] or fallback
        return EngineError(f"HTTP {status}: {text}", status=status)
    more = _details(details) or (f"field: {err['field']}" if err.get("field") else "")
    if more:
        head, sep, _ = message.rpartition(": see details")
        message = f"{head}: {more}" if sep else f"{message} ({more})"
    return EngineError(
        f"HTTP {status}: {message}",
        status=status,
        code=code,
        details=details if isinstance(details, list) else None,
    )


@contextmanager
def _transport_errors(http: httpx.AsyncClient) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as e:  # refused, reset, timed out, DNS...
        url = str(http.base_url).rstrip("/")
        reason = str(e) or type(e).__name__
        raise EngineUnreachable(f"cannot reach the engine at {url}: is `mmrag up` running? ({reason})") from None


async def _request(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    with _transport_errors(http):
        resp = await http.request(method, path, **kwargs)
    if resp.status_code >= 400:
        raise error_from_body(resp.status_code, resp.content, resp.reason_phrase)
    try:
        return resp.json()
    except ValueError:
        raise EngineError(f"HTTP {resp.status_code}: the engine answered something that is not JSON") from None


async def upload(http: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    """POST /v1/documents: `{"doc_id", "status": "queued", ...}`."""
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with path.open("rb") as f:
        return await _request(http, "POST", "/v1/documents", files={"file": (path.name, f, ctype)})


async def status(http: httpx.AsyncClient, doc_id: str) -> dict[str, Any]:
    """GET /v1/documents/{doc_id}: the document's progress."""
    return await _request(http, "GET", f"/v1/documents/{doc_id}")


def parse_pages(text: str) -> tuple[int | None, int | None]:
    """`"3-5"` -> (3, 5), `"4"` -> (4, 4), `"3-"` -> (3, None), `"-5"` -> (None, 5); `ValueError` otherwise.

    Only the shape is checked here (the engine validates the numbers and says which one is wrong)."""
    first, sep, last = text.strip().partition("-")
    try:
        if not sep:
            return int(first), int(first)
        if not first.strip() and not last.strip():
            raise ValueError
        return (int(first) if first.strip() else None), (int(last) if last.strip() else None)
    except ValueError:
        raise ValueError(f"pages must look like 3-5, 4, 3- or -5, not {text!r}") from None


def filters(
    *, doc_ids: list[str] | None = None, modalities: list[str] | None = None, pages: str | None = None,
    collections: list[str] | None = None,
) -> dict[str, Any]:
    """The `filters` object of a search or ask body; only what is given (an empty dict restricts nothing)."""
    out: dict[str, Any] = {}
    if doc_ids:
        out["doc_ids"] = list(doc_ids)
    if collections:
        out["collections"] = list(collections)
    if modalities:
        out["modalities"] = list(modalities)
    if pages:
        first, last = parse_pages(pages)
        if first is not None:
            out["page_from"] = first
        if last is not None:
            out["page_to"] = last
    return out


def _query_body(key: str, text: str, top_k: int, where: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {key: text, "top_k": top_k}
    if where:
        body["filters"] = where
    return body


async def search(
    http: httpx.AsyncClient, query: str, top_k: int = 10, where: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """POST /v1/search: the ranked hits (`where`: a `filters` object, see `filters()`)."""
    return (await _request(http, "POST", "/v1/search", json=_query_body("query", query, top_k, where)))["hits"]


async def search_image(
    http: httpx.AsyncClient, image: Path, query: str | None = None, top_k: int = 10, where: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """POST /v1/search as multipart/form-data: the hits for an image (and optional text)."""
    data: dict[str, str] = {"top_k": str(top_k)}
    if query:
        data["query"] = query
    if where:
        data["filters"] = json.dumps(where)
    ctype = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    with image.open("rb") as f:
        return (await _request(http, "POST", "/v1/search", data=data, files={"image": (image.name, f, ctype)}))["hits"]


async def documents(
    http: httpx.AsyncClient, *, limit: int = 100, **query: str
) -> AsyncIterator[dict[str, Any]]:
    """GET /v1/documents, following `next_cursor` to the end; `query`: its other parameters (`q`, `sort`, `order`,
    `status`, `collection`)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **query}
        if cursor:
            params["cursor"] = cursor
        page = await _request(http, "GET", "/v1/documents", params=params)
        for doc in page["documents"]:
            yield doc
        cursor = page.get("next_cursor")
        if not cursor:
            return


async def collections(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """GET /v1/collections: `[{"name", "documents"}]`, by name."""
    return (await _request(http, "GET", "/v1/collections"))["collections"]


async def set_collections(http: httpx.AsyncClient, doc_id: str, names: list[str]) -> dict[str, Any]:
    """PATCH /v1/documents/{doc_id}: the document's collections from now on (a new revision unless unchanged)."""
    return await _request(http, "PATCH", f"/v1/documents/{doc_id}", json={"collections": names})


async def delete(http: httpx.AsyncClient, doc_id: str) -> dict[str, Any]:
    """DELETE /v1/documents/{doc_id}: 202 `{"doc_id", "status": "deleted"}`; 404 raises `EngineError`."""
    return await _request(http, "DELETE", f"/v1/documents/{doc_id}")


@asynccontextmanager
async def _sse(http: httpx.AsyncClient, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    async with aconnect_sse(http, "POST", "/v1/ask", json=body) as source:
        resp = source.response
        if resp.status_code >= 400:
            raise error_from_body(resp.status_code, await resp.aread(), resp.reason_phrase)
        yield source


async def ask_events(
    http: httpx.AsyncClient, question: str, top_k: int = 5, where: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Yield (event, data) pairs of the `/v1/ask` Server-Sent Events stream, until it ends."""
    with _transport_errors(http):
        async with _sse(http, _query_body("question", question, top_k, where)) as source:
            try:
                async for sse in source.aiter_sse():
                    yield sse.event, sse.json()
            except SSEError as e:  # not an event stream
                raise EngineError(f"the engine did not answer with an event stream: {e}") from None


async def reindex(
    http: httpx.AsyncClient, settings: dict[str, Any] | None = None, gate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST /v1/reindex (operator): the new generation's view (`id`, `state`, `settings`, `progress`...); with a
    `gate` (`{"tenant", "questions", "metric", "tolerance"}`) it flips only if not worse on those questions.

    409 `reindex_running` (another generation is building) raises `EngineError`."""
    body: dict[str, Any] = {"mode": "reparse", "settings": settings or {}}
    if gate is not None:
        body["gate"] = gate
    return await _request(http, "POST", "/v1/reindex", json=body)


async def reindex_status(http: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    """GET /v1/reindex/{id}: one generation's view."""
    return await _request(http, "GET", f"/v1/reindex/{generation_id}")


async def reindex_events(http: httpx.AsyncClient, generation_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, view) pairs of GET /v1/reindex/{id}/events: `progress` as it changes, then `done`."""
    with _transport_errors(http):
        async with aconnect_sse(http, "GET", f"/v1/reindex/{generation_id}/events") as source:
            resp = source.response
            if resp.status_code >= 400:
                raise error_from_body(resp.status_code, await resp.aread(), resp.reason_phrase)
            try:
                async for sse in source.aiter_sse():
                    yield sse.event, sse.json()
            except SSEError as e:
                raise EngineError(f"the engine did not answer with an event stream: {e}") from None


async def cancel_reindex(http: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    """DELETE /v1/reindex/{id}: cancel a building generation; 409 `not_cancellable` raises `EngineError`."""
    return await _request(http, "DELETE", f"/v1/reindex/{generation_id}")


async def evaluate(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/evaluations (admin): the queued evaluation's record (`id`, `state`, `progress`...).

    409 `evaluation_running` (one at a time per tenant) raises `EngineError`."""
    return await _request(http, "POST", "/v1/evaluations", json=body)


async def evaluation(http: httpx.AsyncClient, evaluation_id: str) -> dict[str, Any]:
    """GET /v1/evaluations/{id}: its state and progress, and once `done` its runs and changes."""
    return await _request(http, "GET", f"/v1/evaluations/{evaluation_id}")


async def evaluations(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """GET /v1/evaluations: the tenant's evaluations (summaries), newest first."""
    return (await _request(http, "GET", "/v1/evaluations"))["evaluations"]
