"""The Python client of a running engine: `AsyncClient` and `Client` (blocking), the public API; the CLI uses it.

    from mmrag.client import Client

    with Client("http://127.0.0.1:8080", api_key="mmrag_...") as engine:   # or Client(): MMRAG_URL, MMRAG_API_KEY
        doc = engine.upload("manual.pdf")
        engine.wait(doc.doc_id)                       # follows it to `indexed` (or raises DocumentFailed)
        for hit in engine.search("torque of the M8 bolts", top_k=3):
            print(hit.score, hit.filename, hit.page, hit.text)
        for event in engine.ask("What torque for the M8 bolts?"):
            ...                                       # AskEvent("token", TokenData(text=...)), citations, done

Two layers, one HTTP path: the module's functions (`search(http, ...)`, `upload(http, path)`...) are the wire
level (an `httpx.AsyncClient` in, the API's JSON out), and each method of `AsyncClient` calls one of them and
returns typed answers (`DocumentView`, `Hit`, `CitationData`... named and shaped like the OpenAPI document's
schemas; `tests/unit/test_client.py` checks the models and each method's route against the document). `Client` runs the
same methods on a private event loop thread: every method of `AsyncClient`, blocking; async iterators become
plain iterators.

Every failure is an `EngineError` whose message is one line fit for a terminal, with the API's `status`, `code`
and `details`: `EngineUnreachable` when nothing answers at the URL, otherwise one subclass per status
(`InvalidRequest` 400, `Unauthorized` 401, `Forbidden` 403, `NotFound` 404, `Conflict` 409, `TooLarge` 413,
`UnsupportedMedia` 415, `NotRenderable` 422, `TooManyRequests` 429, `Unavailable` 502/503/504) carrying the
engine's own `error.message` plus its `details` fields. `/v1/ask` is read with `httpx_sse` (an SSE client
library: the stream is never parsed by hand here).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import mimetypes
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel, ConfigDict

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)


class EngineError(Exception):
    """The engine answered with an error, or could not be reached; `str(e)` is one line for humans."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: list | None = None,
        doc_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or []
        self.doc_id = doc_id  # the document an error names (`duplicate`, `submission_unconfirmed`)

    @property
    def transient(self) -> bool:
        """Worth retrying: nothing answered, or the engine said it is temporarily unable (503, 502, 504)."""
        return self.status is None or self.status in (502, 503, 504)


class EngineUnreachable(EngineError):
    """No HTTP answer at all: connection refused, timed out, or dropped."""


class InvalidRequest(EngineError):
    """400: a body, field or query the API refuses; `details` names each field and its problem."""


class Unauthorized(EngineError):
    """401: no API key, or one that is unknown or revoked."""


class Forbidden(EngineError):
    """403: the key's role may not do this (e.g. a `reader` uploading), or a browser origin not allowed."""


class NotFound(EngineError):
    """404: no such document (or page, image, generation) for this key's tenant."""


class Conflict(EngineError):
    """409: e.g. a re-index is already running."""


class TooLarge(EngineError):
    """413: over the upload limit or the tenant's quota (`code` says which)."""


class UnsupportedMedia(EngineError):
    """415: a file type the engine does not read."""


class NotRenderable(EngineError):
    """422: a document without page pictures (a text file), or one that failed to ingest."""


class TooManyRequests(EngineError):
    """429: the key's rate limit or its open streams; retry after a while."""


class Unavailable(EngineError):
    """502/503/504: the engine could not do it now (NATS away, agents failing, a timeout); worth a retry."""


class DocumentFailed(EngineError):
    """`wait` saw the document fail (the message ends with its `error`: why)."""

    @property
    def transient(self) -> bool:
        return False


_BY_STATUS: dict[int, type[EngineError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    415: UnsupportedMedia, 422: NotRenderable, 429: TooManyRequests, 502: Unavailable, 503: Unavailable,
    504: Unavailable,
}  # fmt: skip


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
        return _BY_STATUS.get(status, EngineError)(f"HTTP {status}: {text}", status=status)
    more = _details(details) or (f"field: {err['field']}" if err.get("field") else "")
    if more:
        head, sep, _ = message.rpartition(": see details")
        message = f"{head}: {more}" if sep else f"{message} ({more})"
    return _BY_STATUS.get(status, EngineError)(
        f"HTTP {status}: {message}",
        status=status,
        code=code,
        details=details if isinstance(details, list) else None,
        doc_id=err.get("doc_id") if isinstance(err.get("doc_id"), str) else None,
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


def _origin(source: str | None, source_path: str | None) -> dict[str, str]:
    return {"source": source, "path": source_path} if source is not None and source_path is not None else {}


Progress = Callable[[int, int | None], object]  # (bytes sent, total bytes or None)


class _Reading(io.RawIOBase):
    """A file as httpx's multipart encoder reads it (in chunks), telling `progress(sent, total)` after each."""

    def __init__(self, f: BinaryIO, total: int, progress: Progress) -> None:
        super().__init__()
        self._f, self._total, self._progress, self._sent = f, total, progress, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        if chunk:
            self._sent += len(chunk)
            self._progress(self._sent, self._total)
        return chunk

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._f.seek(offset, whence)
        self._sent = position
        return position

    def tell(self) -> int:
        return self._f.tell()


async def upload(
    http: httpx.AsyncClient, path: Path | None, progress: Progress | None = None, *,
    data: bytes | None = None, filename: str | None = None, source: str | None = None,
    source_path: str | None = None, allow_duplicates: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """POST /v1/documents of a file (`path`) or of bytes (`data` with a `filename`): `{"doc_id", "status":
    "queued", "sha256", ...}`. `progress(sent, total)` is called as the bytes go out.

    `source` + `source_path`: the file's place in a synced source (`mmrag sync`). The same bytes as a document
    the tenant has are a 409 `Conflict` with `code == "duplicate"` (`duplicate_of(e)` names that document),
    unless `allow_duplicates`."""
    params = _origin(source, source_path)
    if allow_duplicates:
        params["duplicates"] = "allow"
    name = filename or (path.name if path is not None else "upload")
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    with contextlib.ExitStack() as stack:
        f: BinaryIO = io.BytesIO(data or b"") if path is None else stack.enter_context(path.open("rb"))
        total = len(data or b"") if path is None else os.fstat(f.fileno()).st_size
        body: BinaryIO = _Reading(f, total, progress) if progress is not None else f  # type: ignore[assignment]
        return await _request(http, "POST", "/v1/documents", params=params, files={"file": (name, body, ctype)})


async def replace(
    http: httpx.AsyncClient, doc_id: str, path: Path, *, source: str | None = None, source_path: str | None = None
) -> dict[str, Any]:
    """PUT /v1/documents/{doc_id}: a new revision of the document (`status` `queued`), or `unchanged` when it
    already has these bytes (and this source and path, when given)."""
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with path.open("rb") as f:
        return await _request(http, "PUT", f"/v1/documents/{doc_id}", params=_origin(source, source_path),
                              files={"file": (path.name, f, ctype)})  # fmt: skip


async def move(http: httpx.AsyncClient, doc_id: str, source: str, source_path: str) -> dict[str, Any]:
    """PATCH /v1/documents/{doc_id}: a new place in a synced source, nothing indexed again; the document."""
    body = {"source": source, "source_path": source_path}
    return await _request(http, "PATCH", f"/v1/documents/{doc_id}", json=body)


def duplicate_of(error: EngineError) -> str | None:
    """The existing document's id when `error` is the engine's 409 `duplicate`, else None."""
    return error.doc_id if error.code == "duplicate" else None


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
    http: httpx.AsyncClient, *, limit: int = 100, source: str | None = None, **query: str
) -> AsyncIterator[dict[str, Any]]:
    """GET /v1/documents, following `next_cursor` to the end (`source`: only that synced source's documents;
    `query`: the list's other parameters, `q`, `sort`, `order`, `status`, `collection`)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **query}
        if source is not None:
            params["source"] = source
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
    """PUT /v1/documents/{doc_id}/collections: the document's collections from now on (a new revision unless
    unchanged)."""
    return await _request(http, "PUT", f"/v1/documents/{doc_id}/collections", json={"collections": names})


async def delete(http: httpx.AsyncClient, doc_id: str) -> dict[str, Any]:
    """DELETE /v1/documents/{doc_id}: 202 `{"doc_id", "status": "deleted"}`; 404 raises `EngineError`."""
    return await _request(http, "DELETE", f"/v1/documents/{doc_id}")


async def page_image(http: httpx.AsyncClient, doc_id: str, page: int, width: int = 800) -> bytes:
    """GET /v1/documents/{doc_id}/pages/{page}: the page as a PNG `width` pixels wide."""
    with _transport_errors(http):
        resp = await http.get(f"/v1/documents/{doc_id}/pages/{page}", params={"width": width})
    if resp.status_code >= 400:
        raise error_from_body(resp.status_code, resp.content, resp.reason_phrase)
    return resp.content


@asynccontextmanager
async def _sse(http: httpx.AsyncClient, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    async with aconnect_sse(http, "POST", "/v1/ask", json=body) as source:
        resp = source.response
        if resp.status_code >= 400:
            raise error_from_body(resp.status_code, await resp.aread(), resp.reason_phrase)
        yield source


async def ask_events(
    http: httpx.AsyncClient, question: str, top_k: int = 5, where: dict[str, Any] | None = None,
    conversation_id: str | None = None, regenerate: bool = False,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Yield (event, data) pairs of the `/v1/ask` Server-Sent Events stream, until it ends. With `conversation_id`
    the question may follow up on the conversation's turns, and the answer becomes its next turn."""
    body = _query_body("question", question, top_k, where)
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    if regenerate:
        body["regenerate"] = True
    with _transport_errors(http):
        async with _sse(http, body) as source:
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


async def create_conversation(http: httpx.AsyncClient, title: str | None = None) -> dict[str, Any]:
    """POST /v1/conversations: the new conversation (`id`, `title`, `turns`: [])."""
    return await _request(http, "POST", "/v1/conversations", json={} if title is None else {"title": title})


async def conversation(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    """GET /v1/conversations/{id}: the conversation with its turns; 404 raises `EngineError`."""
    return await _request(http, "GET", f"/v1/conversations/{conversation_id}")


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


# =========================================================================== the public API: typed clients

# The API's answers. Each model is named like the OpenAPI document's schema it reads, with the same fields
# (tests/unit/test_client.py compares them), and ignores fields it does not know: an engine newer than the
# client may add some. They are declared here rather than imported from edge_api, so that importing the
# client (and starting the CLI) does not load the server (aiohttp routes, PyMuPDF, the MCP SDK).

BBox = tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF points (pixels for an image file), top-left origin


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UploadAccepted(_Model):
    doc_id: str
    status: str  # queued; or unchanged (a `replace` with the bytes the document has)
    filename: str
    content_type: str
    size: int
    sha256: str | None = None
    source: str | None = None
    source_path: str | None = None
    collections: list[str] = []


class DocumentView(_Model):
    doc_id: str
    tenant: str
    filename: str | None
    status: str  # queued, parsing, embedding, indexing, indexed, failed
    pages: int | None
    pages_parsed: int
    chunks_total: int | None
    chunks_indexed: int
    error: str | None
    warnings: list[str] = []  # what indexing could not do well (an engine before them sends none)
    updated_at: datetime
    source: str | None = None  # the synced source (`mmrag sync`) and the path in it
    source_path: str | None = None
    sha256: str | None = None
    collections: list[str] = []
    size: int | None = None
    content_type: str | None = None


class DeleteAccepted(_Model):
    doc_id: str
    status: str


class PageTextView(_Model):
    doc_id: str
    page: int
    pages: int
    text: str


class ImageRef(_Model):
    object_name: str
    mime: str
    width: int
    height: int
    caption: str | None = None


class Hit(_Model):
    chunk_id: str
    doc_id: str
    filename: str
    page: int
    bbox: BBox | None = None
    locator: str | None = None  # where it is, in words, in a document without page pictures ("slide 3: Results")
    modality: str = "text"
    text: str
    score: float
    headings: list[str] = []
    image: ImageRef | None = None
    dense_score: float | None = None


class ConversationData(_Model):
    conversation_id: str
    turn: int


class RetrievalData(_Model):
    hits: list[Hit]
    searched: str | None = None


class TokenData(_Model):
    text: str


class CitationData(_Model):
    n: int
    doc_id: str
    filename: str
    page: int
    bbox: BBox | None
    locator: str | None = None
    text: str
    image: ImageRef | None = None


class ResetData(_Model):
    reason: str


class DoneData(_Model):
    answerer: str
    abstained: bool = False


class ErrorData(_Model):
    code: str
    message: str


ASK_EVENTS: dict[str, type[_Model]] = {
    "conversation": ConversationData, "retrieval": RetrievalData, "token": TokenData, "citation": CitationData, "reset": ResetData, "done": DoneData,
    "error": ErrorData,
}  # fmt: skip
AskData = ConversationData | RetrievalData | TokenData | CitationData | ResetData | DoneData | ErrorData

DEFAULT_URL = "http://127.0.0.1:8080"


def route(method: str, path: str) -> Callable[[Callable], Callable]:
    """Marks a client method with the API operation it calls (`tests/unit/test_client.py` checks each one
    against the OpenAPI document)."""

    def mark(fn: Callable) -> Callable:
        fn.route = (method, path)  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class AskEvent:
    """One event of an answer's stream: `event` is `conversation` (asked in one), `retrieval`, `token`, `citation`,
    `reset`, `done` or `error`;
    `data` its model (`TokenData.text`, `CitationData.doc_id/filename/page/bbox/text`, `DoneData.abstained`...)."""

    event: str
    data: AskData


@dataclass
class Answer:
    """A whole answer (`AsyncClient.answer`): its text (after the last `reset`), citations, and how it ended."""

    text: str = ""
    citations: list[CitationData] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    abstained: bool = False
    answerer: str | None = None


def _collect(out: Answer, ev: AskEvent) -> Answer:
    """`out` with one more event of its stream (`AsyncClient.answer`)."""
    if ev.event == "retrieval":
        out.hits = list(ev.data.hits)
    elif ev.event == "token":
        out.text += ev.data.text
    elif ev.event == "reset":  # the text so far is void: a new answer follows
        out.text, out.citations = "", []
    elif ev.event == "citation":
        out.citations.append(ev.data)
    elif ev.event == "done":
        out.abstained, out.answerer = ev.data.abstained, ev.data.answerer
    elif ev.event == "error":
        raise Unavailable(f"{ev.data.code}: {ev.data.message}", code=ev.data.code)
    return out


class AsyncClient:
    """The engine at `url` (default `MMRAG_URL`, else http://127.0.0.1:8080), with `api_key` (default
    `MMRAG_API_KEY`; none for an engine in local mode), as the CLI. Use it with `async with`.

    One method per API operation; each returns the API's models and raises an `EngineError` subclass."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT
    ) -> None:
        self.url = (url or os.environ.get("MMRAG_URL") or DEFAULT_URL).rstrip("/")
        self.http = client(self.url, timeout=timeout, api_key=api_key or os.environ.get("MMRAG_API_KEY") or None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------- documents

    @route("POST", "/v1/documents")
    async def upload(
        self, file: str | Path | bytes, filename: str | None = None, *, progress: Progress | None = None,
        source: str | None = None, source_path: str | None = None, allow_duplicates: bool = False,
    ) -> UploadAccepted:  # fmt: skip
        """Upload a file (a path, or bytes with a `filename`); `progress(sent, total)` as the bytes go out.
        Answers at once (`status` queued): `wait` follows it to `indexed`. The same bytes as a document of the
        tenant are a `Conflict` (`duplicate_of(e)`: its id) unless `allow_duplicates`; `source` + `source_path`
        place it in a synced source."""
        origin = {"source": source, "source_path": source_path, "allow_duplicates": allow_duplicates}
        if isinstance(file, bytes):
            got = await upload(self.http, None, progress, data=file, filename=filename, **origin)
        else:
            got = await upload(self.http, Path(file), progress, filename=filename, **origin)
        return UploadAccepted.model_validate(got)

    @route("PUT", "/v1/documents/{doc_id}")
    async def replace(
        self, doc_id: str, file: str | Path, *, source: str | None = None, source_path: str | None = None
    ) -> UploadAccepted:
        """A new revision of the document from this file (`status` queued), or `unchanged` if it has these bytes."""
        return UploadAccepted.model_validate(
            await replace(self.http, doc_id, Path(file), source=source, source_path=source_path)
        )

    @route("PATCH", "/v1/documents/{doc_id}")
    async def move(self, doc_id: str, source: str, source_path: str) -> DocumentView:
        """Give the document a new path in a synced source (a renamed file: nothing indexed again)."""
        return DocumentView.model_validate(await move(self.http, doc_id, source, source_path))

    @route("GET", "/v1/documents/{doc_id}")
    async def document(self, doc_id: str) -> DocumentView:
        """A document's status and counts."""
        return DocumentView.model_validate(await status(self.http, doc_id))

    @route("GET", "/v1/documents/{doc_id}")
    async def wait(
        self, doc_id: str, *, timeout: float = 600, poll: float = 0.5,
        on_change: Callable[[DocumentView], object] | None = None,
    ) -> DocumentView:  # fmt: skip
        """Follow a document until it is `indexed` (returned); `DocumentFailed` if it fails, `TimeoutError` after
        `timeout` seconds. `on_change(view)` sees each new state (pages parsed, chunks indexed)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            view = await self.document(doc_id)
            if on_change is not None and view != last:
                on_change(view)
            last = view
            if view.status == "indexed":
                return view
            if view.status == "failed":
                raise DocumentFailed(f"document {doc_id} failed: {view.error}", code="failed")
            if time.monotonic() + poll > deadline:
                raise TimeoutError(f"document {doc_id} is still {view.status} after {timeout}s")
            await asyncio.sleep(poll)

    @route("GET", "/v1/documents")
    async def documents(
        self, *, limit: int = 100, source: str | None = None, **query: str
    ) -> AsyncIterator[DocumentView]:
        """Every document of the tenant (`source`: of that synced source), newest first (the pages of `limit` are
        followed to the end); `query`: the list's other parameters (`q`, `sort`, `order`, `status`, `collection`)."""
        async with contextlib.aclosing(documents(self.http, limit=limit, source=source, **query)) as docs:
            async for doc in docs:
                yield DocumentView.model_validate(doc)

    @route("GET", "/v1/collections")
    async def collections(self) -> list[dict[str, Any]]:
        """The tenant's collections, `[{"name", "documents"}]`, by name."""
        return await collections(self.http)

    @route("PUT", "/v1/documents/{doc_id}/collections")
    async def set_collections(self, doc_id: str, names: list[str]) -> DocumentView:
        """The document's collections from now on (a new revision of its upload unless they are unchanged)."""
        return DocumentView.model_validate(await set_collections(self.http, doc_id, names))

    @route("DELETE", "/v1/documents/{doc_id}")
    async def delete(self, doc_id: str) -> DeleteAccepted:
        """Delete a document (`NotFound` if there is none)."""
        return DeleteAccepted.model_validate(await delete(self.http, doc_id))

    @route("GET", "/v1/documents/{doc_id}/pages/{page}")
    async def page_image(self, doc_id: str, page: int, *, width: int = 800) -> bytes:
        """A page as a PNG (`NotRenderable` for a text document)."""
        return await page_image(self.http, doc_id, page, width)

    @route("GET", "/v1/documents/{doc_id}/pages/{page}/text")
    async def page_text(self, doc_id: str, page: int) -> PageTextView:
        """A page's text: a PDF page's text layer in reading order, or a text file's text (its page 1)."""
        return PageTextView.model_validate(await _request(self.http, "GET", f"/v1/documents/{doc_id}/pages/{page}/text"))

    # ------------------------------------------------------------------- queries

    @route("POST", "/v1/search")
    async def search(
        self, query: str, *, top_k: int = 10, doc_ids: list[str] | None = None, modalities: list[str] | None = None,
        pages: str | None = None,
    ) -> list[Hit]:  # fmt: skip
        """The best chunks for `query`, best first; `pages` is "3-5", "4", "3-" or "-5"."""
        where = filters(doc_ids=doc_ids, modalities=modalities, pages=pages)
        return [Hit.model_validate(h) for h in await search(self.http, query, top_k, where)]

    @route("POST", "/v1/search")
    async def search_image(
        self, image: str | Path, query: str | None = None, *, top_k: int = 10, doc_ids: list[str] | None = None,
        modalities: list[str] | None = None, pages: str | None = None,
    ) -> list[Hit]:  # fmt: skip
        """The chunks that show `image` (the same picture) or hold its text, optionally with `query`."""
        where = filters(doc_ids=doc_ids, modalities=modalities, pages=pages)
        return [Hit.model_validate(h) for h in await search_image(self.http, Path(image), query, top_k, where)]

    @route("POST", "/v1/ask")
    async def ask(
        self, question: str, *, top_k: int = 5, doc_ids: list[str] | None = None, modalities: list[str] | None = None,
        pages: str | None = None, conversation_id: str | None = None, regenerate: bool = False,
    ) -> AsyncIterator[AskEvent]:  # fmt: skip
        """The answer's events as they stream: `retrieval`, `token`..., `citation`..., then `done` (or `error`).
        A `reset` voids the tokens before it. With `conversation_id` the question may follow up on that
        conversation's turns and the answer becomes its next turn (`regenerate`: answer its last question again)."""
        where = filters(doc_ids=doc_ids, modalities=modalities, pages=pages)
        stream = ask_events(self.http, question, top_k, where, conversation_id=conversation_id, regenerate=regenerate)
        async with contextlib.aclosing(stream) as events:
            async for name, data in events:
                model = ASK_EVENTS.get(name)
                if model is not None:  # an event this client does not know (a newer engine) is skipped
                    yield AskEvent(name, model.model_validate(data))

    @route("POST", "/v1/ask")
    async def answer(
        self, question: str, *, top_k: int = 5, doc_ids: list[str] | None = None, modalities: list[str] | None = None,
        pages: str | None = None, conversation_id: str | None = None,
    ) -> Answer:  # fmt: skip
        """The whole answer at once (what `ask` streams, collected); an `error` event raises `Unavailable`."""
        out = Answer()
        events = self.ask(question, top_k=top_k, doc_ids=doc_ids, modalities=modalities, pages=pages,
                          conversation_id=conversation_id)  # fmt: skip
        async with contextlib.aclosing(events):
            async for ev in events:
                out = _collect(out, ev)
        return out


    # ------------------------------------------------------------------- conversations (per API key)

    @route("GET", "/v1/conversations")
    async def conversations(self) -> list[dict[str, Any]]:
        """This key's conversations (without their turns), most recently used first."""
        return (await _request(self.http, "GET", "/v1/conversations"))["conversations"]

    @route("POST", "/v1/conversations")
    async def create_conversation(self, title: str | None = None) -> dict[str, Any]:
        """A new, empty conversation (`id`, `title`, ...); ask in it with `ask(..., conversation_id=id)`."""
        return await create_conversation(self.http, title)

    @route("GET", "/v1/conversations/{id}")
    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A conversation with its turns (question, standalone question searched, answer, citations, feedback)."""
        return await conversation(self.http, conversation_id)

    @route("PATCH", "/v1/conversations/{id}")
    async def rename_conversation(self, conversation_id: str, title: str) -> dict[str, Any]:
        """Give a conversation a new title."""
        return await _request(self.http, "PATCH", f"/v1/conversations/{conversation_id}", json={"title": title})

    @route("DELETE", "/v1/conversations/{id}")
    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation and its turns (`NotFound` if there is none)."""
        with _transport_errors(self.http):
            resp = await self.http.request("DELETE", f"/v1/conversations/{conversation_id}")
        if resp.status_code >= 400:  # 204 on success: no body
            raise error_from_body(resp.status_code, resp.content, resp.reason_phrase)

    @route("PUT", "/v1/conversations/{id}/turns/{n}/feedback")
    async def feedback(self, conversation_id: str, turn: int, rating: str, comment: str | None = None) -> dict[str, Any]:
        """Rate turn `turn` (1-based) of a conversation: `rating` "up" or "down", an optional comment; the turn
        as stored."""
        body = {"rating": rating, **({"comment": comment} if comment is not None else {})}
        return await _request(self.http, "PUT", f"/v1/conversations/{conversation_id}/turns/{turn}/feedback", json=body)

    # ------------------------------------------------------------------- a document's passages, parse again

    @route("GET", "/v1/documents/{doc_id}/passages")
    async def passages(self, doc_id: str, *, page: int = 1, pages: int = 1) -> list[Hit]:
        """The document's chunks on pages `page` .. `page + pages - 1`, in document order."""
        body = await _request(self.http, "GET", f"/v1/documents/{doc_id}/passages", params={"page": page, "pages": pages})
        return [Hit.model_validate(h) for h in body["passages"]]

    @route("POST", "/v1/documents/{doc_id}/reparse")
    async def reparse(self, doc_id: str) -> DocumentView:
        """Parse and index the document again from its stored upload (a new revision)."""
        return DocumentView.model_validate(await _request(self.http, "POST", f"/v1/documents/{doc_id}/reparse"))

    # ------------------------------------------------------------------- re-index (operator keys)

    @route("POST", "/v1/reindex")
    async def reindex(self, settings: dict[str, Any] | None = None, gate: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a re-index into a new generation (`Conflict` while one is building); with a `gate` (`{"tenant",
        "questions", "metric", "tolerance"}`) it flips only if not worse on those questions."""
        return await reindex(self.http, settings, gate)

    @route("GET", "/v1/reindex/{id}")
    async def reindex_status(self, generation_id: str) -> dict[str, Any]:
        return await reindex_status(self.http, generation_id)

    @route("GET", "/v1/reindex/{id}/events")
    async def reindex_events(self, generation_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, view) as the generation builds: `progress`..., then `done`."""
        async with contextlib.aclosing(reindex_events(self.http, generation_id)) as events:
            async for item in events:
                yield item

    @route("DELETE", "/v1/reindex/{id}")
    async def cancel_reindex(self, generation_id: str) -> dict[str, Any]:
        return await cancel_reindex(self.http, generation_id)


    # ------------------------------------------------------------------- evaluations (admin keys)

    @route("POST", "/v1/evaluations")
    async def evaluate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue an evaluation of the tenant's questions (`Conflict` while one runs); its record (`id`, `state`)."""
        return await evaluate(self.http, body)

    @route("GET", "/v1/evaluations/{id}")
    async def evaluation(self, evaluation_id: str) -> dict[str, Any]:
        """An evaluation's state and progress, and once `done` its runs and changes."""
        return await evaluation(self.http, evaluation_id)

    @route("GET", "/v1/evaluations")
    async def evaluations(self) -> list[dict[str, Any]]:
        """The tenant's evaluations (summaries), newest first."""
        return await evaluations(self.http)


class Client:
    """`AsyncClient`, blocking: every method of it, run on a private event loop thread (so it also works where
    a loop is already running, e.g. a notebook); its async iterators are plain iterators here. Use it with
    `with`, or call `close()`."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mmrag-client", daemon=True)
        self._thread.start()
        self._async = AsyncClient(url, api_key, timeout=timeout)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        method = getattr(AsyncClient, name, None)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)
        bound = getattr(self._async, name)
        if inspect.isasyncgenfunction(method):
            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return self._iterate(bound(*args, **kwargs))

            return iterate

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(bound(*args, **kwargs))

        return call

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
