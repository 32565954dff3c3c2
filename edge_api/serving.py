"""Serving the edge API so that aiohttp's own refusals are JSON errors like every other answer.

aiohttp answers a request its HTTP parser refuses (a request line or a header over 8,190 bytes, a malformed
request line, a bad character in a header) before any middleware runs, with the plain-text 400 of
`aiohttp.web_protocol.RequestHandler.handle_error`; an exception that escapes every middleware gets its
plain-text 500 the same way. aiohttp has no public hook for these answers (aio-libs/aiohttp#3287, open since
2018; see also #9882): `handle_error` is a public method of `web.RequestHandler`, but the handler class is chosen
by `web.Server.__call__`, which `web.AppRunner._make_server` builds. So this module, and nothing else in the
project, subclasses the two (source: aiohttp/web_protocol.py `handle_error`, aiohttp/web_server.py
`Server.__call__`, aiohttp/web_runner.py `AppRunner._make_server`, aiohttp 3.14). `tests/bus/test_parser_errors.py`
fails if an aiohttp upgrade changes that path.

`run` serves an app like `web.run_app` (until SIGINT/SIGTERM, then a graceful shutdown) with that runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadHttpMessage, LineTooLong

from edge_api.errors import REQUEST_ID_HEADER, error_body, request_id

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S = 75.0  # web.run_app's default (the handler's own is an hour)


def _refusal(status: int, exc: BaseException | None) -> tuple[str, str]:
    """The error code and message for a request aiohttp refused (`status` is aiohttp's: 400, or 500)."""
    if status >= 500:
        return "internal_error", "the server failed on this request; quote its request id when reporting it"
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "8190"
        return "line_too_long", (
            f"the request line or a header line is longer than {limit} bytes: shorten the URL (a path or id, the "
            "query string) or the header"
        )
    if isinstance(exc, BadHttpMethod):
        return "bad_request_line", "the request line is not HTTP/1.x (`METHOD /path HTTP/1.1`): check the client"
    if isinstance(exc, BadHttpMessage):
        return "bad_request", "the request is not valid HTTP/1.1 (its request line or headers): check the client"
    return "bad_request", "the server could not read this request: check the client"


class JsonErrorsRequestHandler(web.RequestHandler):
    """aiohttp's protocol handler, answering its own refusals with the API's JSON error body."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # aiohttp's own first: it logs the traceback, and raises if a response was started
            super().handle_error(request, status, exc, message)
        else:  # a client's unreadable request: one line, no traceback, none of its bytes (aiohttp logs both)
            if request.writer.output_size > 0:
                raise ConnectionError("a response was already sent; the error cannot be answered")
            log.info("refused a request from %s that is not valid HTTP: %s", request.remote, type(exc).__name__)
        code, text = _refusal(status, exc)
        response = web.json_response(error_body(request, code, text), status=status)  # type: ignore[arg-type]
        response.headers[REQUEST_ID_HEADER] = request_id(request)  # type: ignore[arg-type]
        response.force_close()  # as aiohttp's: the connection's state is unknown after a refusal
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections are served by `JsonErrorsRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorsServer  # the same server; only the protocol handlers it makes differ
        return server


def run(app: web.Application, *, host: str, port: int, **runner_options: Any) -> None:
    """Serve `app` on `host:port` until SIGINT or SIGTERM, then shut it down gracefully (as `web.run_app`)."""

    async def serve() -> None:
        runner = JsonErrorsAppRunner(
            app, handle_signals=True, keepalive_timeout=KEEPALIVE_TIMEOUT_S, **runner_options
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit out of the loop
        finally:
            await runner.cleanup()

    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve())
