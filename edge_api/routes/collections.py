"""Collections (tags) and new revisions of a stored document: `GET /v1/collections`,
`PUT /v1/documents/{doc_id}/collections` and `POST /v1/documents/{doc_id}/reparse`.

A document's collections travel in its submission (`DocumentSubmitted.collections`): the parser copies them to
the progress record, the indexer into every point's payload, where a search's `filters.collections` finds them.
Changing them (`PUT .../collections`), like a re-parse, is a new submission of the stored upload (a new revision): the document is
parsed and indexed again, its points of the old revision are removed once the new one is indexed, and a re-index
(a replay of `docs.ingest`) sees the latest collections. Until then the old points answer with the old
collections (docs/decisions.md, 74).
"""

from __future__ import annotations

import nats.js.errors
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bus.publish import Outgoing, publish
from contracts.messages import MAX_COLLECTIONS, CollectionName, DocumentProgress, DocumentStatus, DocumentSubmitted
from contracts.topology import Subjects
from edge_api.bodies import JSON_BODY_ERRORS, read_body
from edge_api.errors import ApiError
from edge_api.identity import tenant_of
from edge_api.operations import ERR_503, Err, Json, Operation, Reply
from edge_api.routes.documents import (
    DOC_ID,
    DOC_PATH,
    ERR_404_DOC,
    PUBLISH_TIMEOUT_S,
    DocumentView,
    _doc_id,
    _not_found,
    _submission_on_stream,
    public_view,
    tenant_records,
)
from edge_api.state import backbone


class CollectionsBody(BaseModel):
    """The document's collections from now on (all of them: a name left out is taken away; `[]` takes all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collections: list[CollectionName] = Field(max_length=MAX_COLLECTIONS)


class CollectionCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CollectionName
    documents: int = Field(ge=1, description="documents of the tenant in it (deleted ones not counted)")


class CollectionList(BaseModel):
    """Every collection of the tenant's documents, by name."""

    model_config = ConfigDict(extra="forbid")

    collections: list[CollectionCount]


async def list_collections(request: web.Request) -> CollectionList:
    """Counts over every progress record of the tenant (time linear in its documents, memory in its collections)."""
    bb = backbone(request)
    bb.jetstream()
    latest: dict[str, list[str]] = {}  # key -> the collections of its latest value (a key may come twice)
    async for key, record in tenant_records(bb, tenant_of(request)):
        latest[key] = [] if record.status is DocumentStatus.DELETED else record.collections
    counts: dict[str, int] = {}
    for names in latest.values():
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return CollectionList(collections=[CollectionCount(name=n, documents=counts[n]) for n in sorted(counts)])


async def resubmit(request: web.Request, collections: list[str] | None) -> Reply:
    """A new revision of the document from its stored upload (with `collections`, or its current ones)."""
    bb = backbone(request)
    js = bb.jetstream()
    tenant, doc_id = tenant_of(request), _doc_id(request)
    store = await bb.progress()
    current = await store.get(tenant, doc_id)
    if current is not None and current.status is DocumentStatus.DELETED:
        raise _not_found(doc_id)
    submitted = await _submission_on_stream(js, tenant, doc_id)
    if submitted is None:
        raise _not_found(doc_id)
    if collections is not None and current is not None and sorted(set(collections)) == current.collections:
        return Reply(public_view(current), status=200)  # nothing changes: no new revision
    try:
        await (await bb.uploads(tenant)).get_info(submitted.object_name)
    except nats.js.errors.NotFoundError:
        raise ApiError(409, "upload_missing", f"the upload of document {doc_id} is no longer stored, so it cannot be "
                       "parsed again: upload the file again (a new document)") from None  # fmt: skip
    fields = submitted.model_dump(exclude={"schema_version", "submitted_at", "collections"})
    keep = current.collections if current is not None else submitted.collections
    again = DocumentSubmitted(**fields, collections=keep if collections is None else collections)
    # Its own message id, as every submission's (`<doc_id>:<submitted_at>`): never dropped as a duplicate.
    msg_id = f"{doc_id}:{again.submitted_at.isoformat()}"
    ack = await publish(js, Outgoing(Subjects.ingest(tenant, doc_id), again, msg_id=msg_id), timeout_s=PUBLISH_TIMEOUT_S)

    def queued(record: DocumentProgress | None) -> DocumentProgress | None:
        if record is not None and record.revision >= ack.seq:
            return None  # a newer submission or a delete is already applied
        return store.new(tenant, doc_id, ack.seq, DocumentStatus.QUEUED, filename=again.filename,
                         collections=again.collections, size=again.size, content_type=again.content_type,
                         **again.origin())  # fmt: skip

    state = await store.update(tenant, doc_id, queued)
    if state is None or state.status is DocumentStatus.DELETED:
        raise _not_found(doc_id)
    return Reply(public_view(state), status=202)


async def set_collections(request: web.Request) -> Reply:
    body = await read_body(request, CollectionsBody)
    return await resubmit(request, body.collections)


async def reparse_document(request: web.Request) -> Reply:
    return await resubmit(request, None)


_NEW_REVISION = (
    "The document is submitted again from its stored upload (a new revision): it is parsed, embedded and indexed "
    "again (its status goes back to `queued`), and its points of the previous revision are removed once the new "
    "one is indexed; until then searches still find the previous revision."
)
ERR_409_UPLOAD = Err("`upload_missing`: the upload is no longer stored (upload the file again)")

OPERATIONS = (
    Operation(
        "GET", "/v1/collections", list_collections, "listCollections", "documents",
        "The tenant's collections and how many documents each holds", role="reader",
        responses={200: Json("every collection, by name", CollectionList), 503: ERR_503},
    ),
    Operation(
        "PUT", f"{DOC_PATH}/collections", set_collections, "setDocumentCollections", "documents",
        "Change a document's collections", role="writer", parameters=(DOC_ID,),
        description=f"{_NEW_REVISION} The same collections as now change nothing (200).",
        request={"application/json": CollectionsBody},
        responses={
            200: Json("the collections were already these: nothing changed", DocumentView),
            202: Json("the new revision, queued", DocumentView),
            **JSON_BODY_ERRORS,
            404: ERR_404_DOC,
            409: ERR_409_UPLOAD,
            503: ERR_503,
        },
    ),
    Operation(
        "POST", f"{DOC_PATH}/reparse", reparse_document, "reparseDocument", "documents",
        "Parse and index a document again", role="writer", parameters=(DOC_ID,),
        description=f"{_NEW_REVISION} For a document that failed, or one parsed by an older release.",
        responses={
            202: Json("the new revision, queued", DocumentView),
            404: ERR_404_DOC,
            409: ERR_409_UPLOAD,
            503: ERR_503,
        },
    ),
)  # fmt: skip
