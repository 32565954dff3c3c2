"""A document's passages (its chunks) page by page, in document order: `GET /v1/documents/{doc_id}/passages`.

The edge API reaches neither the vector store nor the CHUNKS stream: it asks the retriever, which holds the store,
with a `browse` query (`QueryMode.BROWSE`: one document, a page range, no text) on the usual query subject, and
the retriever answers `results` on the request's answer subject, as a search's reranker does.
"""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import MAX_PAGE, DocumentStatus, ErrorEvent, Hit, QueryFilters, QueryMode, ResultsEvent
from edge_api.errors import ApiError
from edge_api.identity import tenant_of
from edge_api.operations import ERR_503, Err, Json, Operation
from edge_api.routes.documents import DOC_ID, ERR_404_DOC, _doc_id, _not_found
from edge_api.routes.queries import QueryTimeout, _events, _query
from edge_api.state import backbone

MAX_PAGES_AT_ONCE = 10
_NUMBER = re.compile(r"^[0-9]{1,10}\Z")


class Passages(BaseModel):
    """The chunks of pages `page_from`..`page_to` of the document, in document order (page, then position)."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str
    page_from: int = Field(ge=1)
    page_to: int = Field(ge=1)
    passages: list[Hit] = Field(description="text, table (the rows as markdown) and image chunks; `score` is 0")


def _number(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name, str(default))
    if not _NUMBER.match(raw) or not 1 <= int(raw) <= most:
        raise ApiError(400, "invalid_query", f"{name} must be a whole number from 1 to {most}", field=name)
    return int(raw)


async def document_passages(request: web.Request) -> Passages:
    bb = backbone(request)
    bb.jetstream()
    tenant, doc_id = tenant_of(request), _doc_id(request)
    first = _number(request, "page", 1, MAX_PAGE)
    last = min(first + _number(request, "pages", 1, MAX_PAGES_AT_ONCE) - 1, MAX_PAGE)
    record = await (await bb.progress()).get(tenant, doc_id)
    if record is None or record.status is DocumentStatus.DELETED:
        raise _not_found(doc_id)
    timeout_s = bb.settings.query_timeout_s
    filters = QueryFilters(doc_ids=[doc_id], page_from=first, page_to=last)
    async with _query(bb, tenant, None, 1, QueryMode.BROWSE, filters) as pending:
        try:
            async for event in _events(pending, timeout_s):
                if isinstance(event, ResultsEvent):
                    return Passages(doc_id=doc_id, page_from=first, page_to=last, passages=event.hits)
                if isinstance(event, ErrorEvent):
                    raise ApiError(502, "query_failed", event.message, reason=event.code)
        except QueryTimeout:
            raise ApiError(504, "timeout", f"no passages within {timeout_s}s") from None
    raise ApiError(502, "query_failed", "the retriever ended without an answer", reason="no_results")


OPERATIONS = (
    Operation(
        "GET", "/v1/documents/{doc_id}/passages", document_passages, "listDocumentPassages", "documents",
        "A document's passages, page by page", role="reader",
        description="The chunks (text, tables, images) of `pages` pages from `page`, in document order, as the "
        "index holds them (a document still being indexed shows what is indexed so far).",
        parameters=(
            DOC_ID,
            {"name": "page", "in": "query", "required": False, "description": "the first page (1-based)",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}},
            {"name": "pages", "in": "query", "required": False, "description": "how many pages",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGES_AT_ONCE, "default": 1}},
        ),
        responses={
            200: Json("the passages", Passages),
            400: Err("`invalid_query`: `field` names `page` or `pages`"),
            404: ERR_404_DOC,
            502: Err("`query_failed`: the retriever failed (`reason`)"),
            503: ERR_503,
            504: Err("`timeout`: no answer within `MMRAG_QUERY_TIMEOUT_S`"),
        },
    ),
)  # fmt: skip
