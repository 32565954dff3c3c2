"""Every error the edge API answers is JSON: ``{"error": {"code", "message", "request_id", ...}}``.

Handlers raise `ApiError`; aiohttp's own errors (404 unknown route, 405, 413 over ``client_max_size``...)
are `web.HTTPException`s and get the same shape here; NATS failures become a 503 the client can retry on;
anything else is a 500 ``internal_error`` that names the request id and nothing of the server's internals
(the traceback goes to the log, under the same request id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import Identifier

log = logging.getLogger(__name__)

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"

# Codes of the HTTP errors aiohttp raises by itself (routing, body size, methods).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
_HTTP_MESSAGES = {
    404: "no such endpoint; see docs/api.md",
    405: "this endpoint does not accept that method",
    413: "the request body is larger than this endpoint accepts",
}


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="dotted path of the body field, or `(body)`")
    problem: str


class ErrorDetail(BaseModel):
    """What went wrong; `code` is stable, `message` says what to change. Some codes carry more fields."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="machine-readable; see the responses of each operation for the codes")
    message: str
    request_id: str = Field(description="also in the `X-Request-Id` header and in the server's log lines")
    details: list[FieldProblem] | None = Field(default=None, description="`invalid_body`: each invalid field")
    field: str | None = Field(default=None, description="`invalid_query`: the query parameter")
    reason: str | None = Field(default=None, description="`query_failed`: the agents' error code")
    doc_id: Identifier | None = Field(default=None, description="`submission_unconfirmed`: the document to check")
    retry_after_s: int | None = Field(
        default=None, description="`rate_limited`, `too_many_streams`: seconds to wait, as `Retry-After`"
    )
    quota: int | None = Field(default=None, description="`quota_exceeded`: the tenant's quota (documents or bytes)")
    usage: int | None = Field(default=None, description="`quota_exceeded`: what the tenant holds, in the same unit")


class ErrorBody(BaseModel):
    """Every error the API answers, whatever produced it (a handler, routing, a body too large, a crash)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class ApiError(Exception):
    """An error answer: raised anywhere below a handler, turned into JSON by `error_middleware`."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: object):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class NotConnected(nats.errors.Error):
    """Raised before any work while the edge API is between NATS connections (fail fast, not after timeouts)."""


class BackboneLost(NotConnected):
    """Raised to a request waiting for its answer when the edge API loses NATS (`Backbone.outage`): the answer
    travels on core NATS and is lost with the connection, so the request ends now (503, or an SSE `error` event)
    instead of after `MMRAG_QUERY_TIMEOUT_S`."""


def request_id(request: web.Request) -> str:
    """The id of this request (also in the ``X-Request-Id`` response header and in the logs)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = uuid.uuid4().hex
        request[REQUEST_ID] = rid
    return rid


def error_body(request: web.Request, code: str, message: str, **extra: object) -> dict:
    """The JSON of an `ErrorBody` (only the fields given: an optional field that does not apply is absent)."""
    detail = ErrorDetail(code=code, message=message, request_id=request_id(request), **extra)
    return ErrorBody(error=detail).model_dump(mode="json", exclude_unset=True)


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    response = web.json_response(error_body(request, code, message, **extra), status=status, headers=headers)
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    message = _HTTP_MESSAGES.get(exc.status, exc.reason)
    return error_response(request, exc.status, code, message, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _internal_error(request: web.Request, rid: str) -> web.Response:
    """A 500 with no internals; the traceback (of the exception being handled) goes to the log."""
    log.exception("request %s: %s %s failed", rid, request.method, request.path)
    return error_response(
        request, 500, "internal_error", f"the server failed on this request; quote request id {rid} when reporting it"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    try:
        response = await handler(request)
    except ApiError as err:
        return error_response(request, err.status, err.code, err.message, headers=err.headers, **err.extra)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return _from_http_exception(request, exc)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as err:  # NATS down, no ack in time...
        if isinstance(err, nats.js.errors.BadRequestError):  # JetStream rejected what we sent: our bug
            return _internal_error(request, rid)
        log.warning("request %s: backbone unavailable for %s %s: %r", rid, request.method, request.path, err)
        if isinstance(err, BackboneLost):
            message = (
                "the message backbone (NATS) became unreachable while this request waited for its answer, "
                "which is lost with the connection; retry in a moment"
            )
        else:
            reason = "is not connected" if isinstance(err, NotConnected) else f"did not answer ({type(err).__name__})"
            message = f"the message backbone (NATS) {reason}; nothing was accepted, retry later"
        return error_response(request, 503, "backbone_unavailable", message, headers={"Retry-After": "1"})
    except Exception:
        return _internal_error(request, rid)
    if not response.prepared:
        response.headers.setdefault(REQUEST_ID_HEADER, rid)
    return response
