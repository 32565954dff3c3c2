"""The MCP server: the engine's documents for AI assistants, over the Model Context Protocol (official `mcp` SDK).

Tools: `search`, `ask` (progress notifications while the answer streams, then the answer with its citations),
`list_documents`, `get_page` (a page picture, or its text), `ingest` (a file's bytes as base64); resources
``mmrag://documents/{doc_id}`` (a document's status).

Every tool calls the engine's own HTTP API (`/v1/*`) with the caller's API key (decision 67): who may do what,
the tenant, the limits of each body, the rate limit, quotas and the answer cache are decided once, by the
routes and middlewares of that API, for HTTP and MCP callers alike. Two ways in, one server:

- the edge API serves it at ``/mcp`` (`setup`): the Streamable HTTP transport, stateless (each POST is one
  JSON-RPC exchange, its progress notifications on that POST's event stream; no session kept in this process,
  so any edge replica answers any request). The auth middleware has already checked the key (``reader`` may
  call ``/mcp``); the tools call this same server over loopback with that key. An MCP request is a stream of its
  caller (`edge_api.streams`): it counts against ``MMRAG_MAX_STREAMS_PER_CALLER`` and ends when the key is
  revoked. Bodies are at most `MAX_BODY_BYTES` (413).
- ``mmrag mcp`` serves it over stdio (`run_stdio`) for a local assistant, calling a running engine's URL with a
  key from the environment.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import json
import logging
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from aiohttp import web
from httpx_sse import SSEError, aconnect_sse
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field

from edge_api.auth import presented_key, required_role
from edge_api.errors import ApiError
from edge_api.identity import identity_of
from edge_api.keys import ROLE_RANK
from edge_api.ratelimit import identity_key
from edge_api.streams import OPEN_REQUESTS, OpenRequest

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
UPLOAD_ROUTE = "/v1/documents"
DOCUMENT_URI = "mmrag://documents/{doc_id}"
# The largest MCP request body (413 beyond): an `ingest` carries its file as base64 in JSON, so this admits files
# of about 12 MB; bigger files go through `POST /v1/documents`, which streams.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_INGEST_BYTES = MAX_BODY_BYTES * 3 // 4 - 64 * 1024
READ_CHUNK = 64 * 1024
DISCONNECT_POLL_S = 1.0
HTTP_TIMEOUT = httpx.Timeout(30.0, read=300.0)



@dataclass(frozen=True)
class EngineApi:
    """Where the tools send their HTTP requests, and with which key (None: an engine in local mode). `http` is
    shared by every request of the process (making an httpx client costs ~100 ms: its TLS context)."""

    http: httpx.AsyncClient
    base_url: str
    api_key: str | None = None
    may_upload: bool | None = None  # what the key's role allows, where known (over HTTP): `ingest` is listed then

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def new_http() -> httpx.AsyncClient:
    # trust_env=False: a proxy of the environment must never see a loopback call or its key.
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False)


# The API of the request being served: set per HTTP request by `handle`, once by `run_stdio`.
_API: contextvars.ContextVar[EngineApi] = contextvars.ContextVar("mmrag_mcp_api")


def _failure(status: int, body: bytes) -> str:
    """The API's own error, one line: `HTTP 403 forbidden: the API key's role ...`."""
    try:
        err = json.loads(body)["error"]
        text = f"{err['code']}: {err['message']}"
        if isinstance(err.get("details"), list):
            text += " (" + "; ".join(f"{d.get('field')}: {d.get('problem')}" for d in err["details"]) + ")"
    except (ValueError, KeyError, TypeError):
        text = " ".join(body.decode(errors="replace").split())[:300]
    return f"HTTP {status} {text}"


@contextlib.asynccontextmanager
async def _engine(error: type[Exception] = ToolError) -> AsyncIterator[EngineApi]:
    api = _API.get()
    try:
        yield api
    except httpx.TransportError as e:
        raise error(f"cannot reach the engine at {api.base_url}: {e or type(e).__name__}") from None


async def _call(api: EngineApi, method: str, path: str, error: type[Exception] = ToolError,
                **kwargs: Any) -> httpx.Response:  # fmt: skip
    resp = await api.http.request(method, api.url(path), headers=api.headers, **kwargs)
    if resp.status_code >= 400:
        raise error(_failure(resp.status_code, resp.content))
    return resp


def _filters(doc_ids: list[str] | None, modalities: list[str] | None, page_from: int | None,
             page_to: int | None) -> dict[str, Any]:  # fmt: skip
    given = {"doc_ids": doc_ids, "modalities": modalities, "page_from": page_from, "page_to": page_to}
    return {k: v for k, v in given.items() if v is not None}


DocIds = Annotated[list[str] | None, Field(description="only these documents (ids from list_documents)")]
Modalities = Annotated[list[Literal["text", "table", "image"]] | None, Field(description="only these kinds of chunk")]
PageFrom = Annotated[int | None, Field(ge=1, description="only pages from this one (1-based)")]
PageTo = Annotated[int | None, Field(ge=1, description="only pages up to this one")]


# --------------------------------------------------------------------------- the tools


async def search(
    query: Annotated[str | None, Field(description="what to look for (optional with image_base64)")] = None,
    top_k: Annotated[int, Field(ge=1, le=50, description="how many hits")] = 10,
    doc_ids: DocIds = None,
    modalities: Modalities = None,
    page_from: PageFrom = None,
    page_to: PageTo = None,
    image_base64: Annotated[
        str | None, Field(description="search with this image (PNG, JPEG, WebP, TIFF), base64: the same picture, "
                          "or the text read in it")
    ] = None,
) -> dict[str, Any]:
    """Search the documents of your tenant: the best chunks (text, table rows, images), best first, each with its
    document, filename, page and region (bbox: [x0, y0, x1, y1] in PDF points)."""
    where = _filters(doc_ids, modalities, page_from, page_to)
    async with _engine() as api:
        if image_base64 is None:
            if query is None:
                raise ToolError("give a query, an image_base64, or both")
            body: dict[str, Any] = {"query": query, "top_k": top_k}
            if where:
                body["filters"] = where
            resp = await _call(api, "POST", "/v1/search", json=body)
        else:
            form = {"top_k": str(top_k), **({"query": query} if query else {})}
            if where:
                form["filters"] = json.dumps(where)
            files = {"image": ("query-image", _decode(image_base64, "image_base64"), "application/octet-stream")}
            resp = await _call(api, "POST", "/v1/search", data=form, files=files)
    return resp.json()


async def ask(
    question: Annotated[str, Field(description="the question, in your own words")],
    ctx: Context,
    top_k: Annotated[int, Field(ge=1, le=50, description="how many passages the answer may use")] = 5,
    doc_ids: DocIds = None,
    modalities: Modalities = None,
    page_from: PageFrom = None,
    page_to: PageTo = None,
) -> dict[str, Any]:
    """Answer a question from the documents of your tenant, with numbered citations ([1], [2]...) that name the
    document, filename, page and region each sentence comes from. While the answer streams, each piece arrives as
    a progress notification. `abstained` is true when the documents do not hold the answer (the answer says so)."""
    body: dict[str, Any] = {"question": question, "top_k": top_k}
    where = _filters(doc_ids, modalities, page_from, page_to)
    if where:
        body["filters"] = where
    answer: list[str] = []
    citations: list[dict[str, Any]] = []
    done: dict[str, Any] = {}
    step = 0
    async with _engine() as api, aconnect_sse(api.http, "POST", api.url("/v1/ask"), json=body,
                                              headers=api.headers) as source:  # fmt: skip
        if source.response.status_code >= 400:
            raise ToolError(_failure(source.response.status_code, await source.response.aread()))
        try:
            async for sse in source.aiter_sse():
                data = sse.json()
                step += 1
                if sse.event == "retrieval":
                    await ctx.report_progress(step, message=f"retrieved {len(data['hits'])} passages")
                elif sse.event == "token":
                    answer.append(data["text"])
                    await ctx.report_progress(step, message=data["text"])
                elif sse.event == "reset":  # a provider failed mid-answer: a new answer follows from scratch
                    answer.clear()
                    citations.clear()
                    await ctx.report_progress(step, message=f"(the answer restarts: {data.get('reason', '')})")
                elif sse.event == "citation":
                    citations.append(data)
                elif sse.event == "done":
                    done = data
                elif sse.event == "error":
                    raise ToolError(f"{data.get('code')}: {data.get('message')}")
        except SSEError as e:
            raise ToolError(f"the engine did not answer with an event stream: {e}") from None
    if not done:
        raise ToolError("the answer stream ended before its end (`done`): ask again")
    return {"answer": "".join(answer), "citations": citations, "abstained": done.get("abstained", False),
            "answerer": done.get("answerer")}  # fmt: skip


async def list_documents(
    limit: Annotated[int, Field(ge=1, le=200, description="documents per page")] = 50,
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    """List the documents of your tenant, newest first: id, filename, status (queued, parsing, indexing, indexed,
    failed), pages and chunks. Pass `next_cursor` back as `cursor` for the next page."""
    params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    async with _engine() as api:
        return (await _call(api, "GET", "/v1/documents", params=params)).json()


async def get_page(
    doc_id: Annotated[str, Field(description="the document's id")],
    page: Annotated[int, Field(ge=1, description="1-based page number")],
    as_text: Annotated[bool, Field(description="the page's text instead of its picture")] = False,
    width: Annotated[int, Field(ge=64, le=2000, description="the picture's width in pixels")] = 800,
) -> Image | dict[str, Any]:
    """One page of a document: its picture (PNG; a PDF page or an uploaded image), or with `as_text` its text (a PDF
    page's text layer in reading order, a text file's text). Text files have no picture: use `as_text`. A scanned
    page has no text layer: look at its picture, or search it (its OCR text is indexed)."""
    async with _engine() as api:
        if not as_text:
            resp = await api.http.get(api.url(f"/v1/documents/{doc_id}/pages/{page}"), params={"width": width},
                                      headers=api.headers)  # fmt: skip
            if resp.status_code == 422:  # a text file has no picture, but it has text
                raise ToolError(_failure(422, resp.content) + "; get_page with as_text=true gives a page's text")
            if resp.status_code >= 400:
                raise ToolError(_failure(resp.status_code, resp.content))
            return Image(data=resp.content, format="png")
        return (await _call(api, "GET", f"/v1/documents/{doc_id}/pages/{page}/text")).json()


async def ingest(
    filename: Annotated[str, Field(min_length=1, description="the file's name, e.g. manual.pdf")],
    content_base64: Annotated[str, Field(description="the file's bytes, base64 (PDF, PNG, JPEG, WebP, TIFF, .txt, .md)")],
) -> dict[str, Any]:
    """Add a document to your tenant (needs a key whose role may upload: writer or above). Answers its `doc_id`
    at once; it is searchable once `list_documents` (or the resource mmrag://documents/{doc_id}) says `indexed`.
    Files over about 12 MB: use the HTTP API (POST /v1/documents)."""
    data = _decode(content_base64, "content_base64")
    if len(data) > MAX_INGEST_BYTES:
        raise ToolError(f"{len(data)} bytes is over what an MCP request carries ({MAX_INGEST_BYTES}): upload it with "
                        "POST /v1/documents or `mmrag ingest`")  # fmt: skip
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    async with _engine() as api:
        return (await _call(api, "POST", "/v1/documents", files={"file": (filename, data, ctype)})).json()


async def document(doc_id: str) -> str:
    """A document of your tenant: its status and counts (JSON, as GET /v1/documents/{doc_id})."""
    async with _engine(ResourceError) as api:
        return (await _call(api, "GET", f"/v1/documents/{doc_id}", error=ResourceError)).text


def _decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ToolError(f"{field} is not valid base64") from None


def _quiet() -> None:
    """At INFO the SDK logs each stateless request ("Terminating session: None") and httpx each loopback call:
    noise in the edge's log (the API's own request logs and metrics already tell). Only where MCP is served."""
    logging.getLogger("mcp").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _Server(MCPServer):
    async def list_tools(self) -> list:
        """Every tool, but `ingest` for a key whose role may not upload (a call would still be the API's 403)."""
        tools = await super().list_tools()
        api = _API.get(None)
        return [t for t in tools if t.name != "ingest"] if api is not None and api.may_upload is False else tools


def build_server() -> MCPServer:
    """The MCP server with its tools and resources (the HTTP API it calls is the context's `EngineApi`)."""
    server = _Server(
        name="mmrag",
        instructions="Search and ask the user's own documents (PDFs, images, text) in mmrag. Cite what you use: "
        "each hit and citation names its document, page and region. get_page shows a page.",
    )
    server.tool(annotations={"readOnlyHint": True})(search)
    server.tool(annotations={"readOnlyHint": True})(ask)
    server.tool(annotations={"readOnlyHint": True})(list_documents)
    server.tool(annotations={"readOnlyHint": True})(get_page)
    server.tool(annotations={"readOnlyHint": False, "destructiveHint": False})(ingest)
    server.resource(DOCUMENT_URI, mime_type="application/json")(document)
    return server


# --------------------------------------------------------------------------- stdio (`mmrag mcp`)


async def run_stdio(base_url: str, api_key: str | None) -> None:
    """Serve MCP on stdin/stdout, calling the engine at `base_url` with `api_key`."""
    _quiet()
    async with new_http() as http:
        _API.set(EngineApi(http, base_url.rstrip("/"), api_key))
        await build_server().run_stdio_async()


# --------------------------------------------------------------------------- Streamable HTTP at /mcp

SESSIONS = web.AppKey("mcp_sessions", StreamableHTTPSessionManager)
HTTP = web.AppKey("mcp_http", httpx.AsyncClient)  # the tools' client of this same server (loopback)


def _loopback(request: web.Request) -> str:
    """This server as its own client: the address the request came in on (a local address, so always reachable)."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        raise web.HTTPServiceUnavailable(text="the connection is gone")
    host, port = sock[0], sock[1]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _AsgiExchange:
    """One aiohttp request handed to the SDK's ASGI app: the body in, the response out, and `http.disconnect` once
    the client is gone (the SDK's event streams wait for it; aiohttp-asgi answers an empty body forever instead,
    which turns that wait into a busy loop)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.body_done = False
        self.response: web.StreamResponse | None = None

    def scope(self) -> dict[str, Any]:
        r = self.request
        return {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": f"{r.version.major}.{r.version.minor}",
            "method": r.method, "scheme": r.scheme, "path": r.path, "raw_path": r.raw_path.encode(),
            "root_path": "", "query_string": r.query_string.encode(),
            "headers": [(k.lower(), v) for k, v in r.raw_headers],
            "client": (r.remote, 0) if r.remote else None, "server": None,
        }  # fmt: skip

    async def receive(self) -> dict[str, Any]:
        if not self.body_done:
            chunk = await self.request.content.read(READ_CHUNK)
            self.body_done = self.request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not self.body_done}
        transport = self.request.transport
        while transport is not None and not transport.is_closing():
            await asyncio.sleep(DISCONNECT_POLL_S)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", ()):
                self.response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await self.response.prepare(self.request)
        elif message["type"] == "http.response.body" and self.response is not None:
            try:
                if message.get("body"):
                    await self.response.write(message["body"])
                if not message.get("more_body", False):
                    await self.response.write_eof()
            except ConnectionResetError:  # the client has what it needed and left (the SDK's client hangs up as
                pass  # soon as it has the JSON-RPC answer): nothing left to tell it, and no error of ours


async def handle(request: web.Request) -> web.StreamResponse:
    """``/mcp``: the key was checked by the auth middleware; the request counts as one of its caller's streams."""
    if request.method not in ("POST", "DELETE"):  # stateless: no standalone event stream to GET (it would idle)
        raise ApiError(405, "method_not_allowed", f"{request.method} {MCP_PATH}: MCP here is POST (each request "
                       "answers on its own stream)", headers={"Allow": "POST, DELETE"})  # fmt: skip
    identity = identity_of(request)
    entry = OpenRequest(identity_key(request), identity.key_id if identity else None, True, asyncio.current_task())
    with request.app[OPEN_REQUESTS].open(entry):  # 429 too_many_streams beyond MMRAG_MAX_STREAMS_PER_CALLER
        # The auth middleware's rule for an upload, applied to the key's role (auth off: the local user may).
        may_upload = identity is None or ROLE_RANK[identity.role] >= ROLE_RANK[required_role("POST", UPLOAD_ROUTE)]
        _API.set(EngineApi(request.app[HTTP], _loopback(request), presented_key(request), may_upload))
        exchange = _AsgiExchange(request)
        await request.app[SESSIONS].handle_request(exchange.scope(), exchange.receive, exchange.send)
    if exchange.response is None:
        raise web.HTTPInternalServerError(text="the MCP server sent no response")
    return exchange.response


async def _sessions_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The SDK's manager runs in a task of its own: its anyio task group must be left in the task that entered
    it, and an app's startup and cleanup may run in different tasks."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app[SESSIONS].run():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run(), name="mcp-sessions")
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        ready.cancel()
        await task  # it failed to start: its error stops the app's start
    try:
        yield
    finally:
        stop.set()
        await task
        await app[HTTP].aclose()


def setup(app: web.Application) -> None:
    """Serve MCP at `MCP_PATH` (Streamable HTTP, stateless). The edge's security middleware checks Host and
    Origin, so the SDK's own DNS-rebinding check is off (one place decides)."""
    _quiet()
    server = build_server()
    server.streamable_http_app(  # creates the server's session manager; the Starlette app itself is not used
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=MAX_BODY_BYTES,
    )
    app[SESSIONS] = server.session_manager
    app[HTTP] = new_http()
    app.cleanup_ctx.append(_sessions_lifecycle)
    app.router.add_route("*", MCP_PATH, handle)
