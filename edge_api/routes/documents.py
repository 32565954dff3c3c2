"""Documents: upload (`POST /v1/documents`), status, list and delete. The tenant is always `tenant_of`.

Where things live: the bytes in the uploads Object Store (``object_name(tenant, doc_id)``), the submission
on the DOCS stream (``Subjects.ingest(tenant, doc_id)``, the source of truth), the progress in the KV bucket
(``ProgressStore``, keyed by generation, tenant and document).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import nats.errors
import nats.js.errors
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, PubAck
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_META_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bus.kv import watch
from bus.objects import UploadTooLarge, put_stream
from bus.progress import ProgressStore
from bus.publish import Outgoing, publish
from contracts.messages import (
    MAX_COLLECTIONS,
    CollectionName,
    ContentType,
    DocumentDeleted,
    DocumentProgress,
    DocumentStatus,
    DocumentSubmitted,
    MAX_SOURCE_PATH_CHARS,
    Identifier,
    Sha256,
    SourceName,
    SourcePath,
    Tenant,
    utcnow,
)
from contracts.topology import (
    DOCS_STREAM,
    PROGRESS_BUCKET,
    TOKEN,
    Subjects,
    bytes_key,
    object_name,
    uploads_bucket,
    progress_key,
)
from documents.filetypes import UnsupportedFile, detect_content_type
from edge_api import quotas
from edge_api.errors import ApiError, request_id
from edge_api.identity import tenant_of
from edge_api.bodies import JSON_BODY_ERRORS, read_body
from edge_api.operations import ERR_503, Err, Json, Operation, Reply
from edge_api.settings import EdgeSettings
from edge_api.state import Backbone, backbone

log = logging.getLogger(__name__)

SNIFF_BYTES = 8192
READ_CHUNK = 64 * 1024
MAX_FILENAME_CHARS = 255
PUBLISH_ATTEMPTS = 3  # same Nats-Msg-Id each time (`_publish_submission`): JetStream stores the submission at most once
PUBLISH_TIMEOUT_S = 5.0
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200
LIST_MAX_QUERY_CHARS = 200
LIST_SCAN_TIMEOUT_S = 5.0  # between two records of the watch (bus.kv.current_values waits as long)
MAX_CURSOR_CHARS = 2048
SORTS = ("uploaded", "updated", "name", "status", "size")
DEFAULT_ORDER = {"uploaded": "desc", "updated": "desc", "name": "asc", "status": "asc", "size": "desc"}
_LIMIT = re.compile(r"^[0-9]{1,4}\Z")
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,%d}\Z" % MAX_CURSOR_CHARS)
_FILENAME_PARAM = re.compile(r"(?i)(^|;)\s*filename\*?\s*=")

DOC_PATH = "/v1/documents/{doc_id}"
# Statuses a document view can show (a deleted document is a 404, never a view).
PublicStatus = Literal[tuple(s.value for s in DocumentStatus if s is not DocumentStatus.DELETED)]  # type: ignore[valid-type]


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentView(_Response):
    """A document as a client sees it (the public fields of its progress record). Every field is present."""

    doc_id: Identifier = Field(description="32 hex digits: 12 of submission time in ms, 20 random")
    tenant: Tenant
    filename: str | None
    status: PublicStatus = Field(description="`failed` comes with `error`")
    pages: int | None = Field(ge=0, description="known once parsing started")
    pages_parsed: int = Field(ge=0, description="pages parsed so far (progress: pages_parsed / pages)")
    chunks_total: int | None = Field(ge=0, description="known once every batch's size is known")
    chunks_indexed: int = Field(ge=0)
    error: str | None = Field(description="why the document failed, for the user")
    warnings: list[str] = Field(
        description="what indexing could not do well, for the user (e.g. a page OCR could not read); the document "
        "is still searchable"
    )
    updated_at: datetime
    collections: list[CollectionName] = Field(description="the collections (tags) the document is in")
    size: int | None = Field(ge=0, description="bytes of the upload (null for a document stored before sizes were recorded)")
    content_type: ContentType | None = Field(description="what the upload is, read from its bytes (null: as for size)")
    source: SourceName | None = Field(description="the synced source it belongs to (`mmrag sync`), else null")
    source_path: SourcePath | None = Field(description="its path inside `source`, '/'-separated; null without one")
    sha256: Sha256 | None = Field(description="SHA-256 of its bytes (hex); null for documents uploaded before it was "
                                  "recorded, or submitted over NATS without it")


class DocumentPage(_Response):
    """One page of the tenant's documents, in the order asked for."""

    documents: list[DocumentView]
    next_cursor: str | None = Field(description="pass it back as `cursor` (with the same `sort` and `order`); null on the last page")
    total: int = Field(ge=0, description="documents matching the filters, on every page together")


class UploadAccepted(_Response):
    """The upload is stored and its submission queued (`queued`; poll `GET /v1/documents/{doc_id}` for its
    progress), or, for a `PUT` of the bytes the document already has, nothing changed (`unchanged`)."""

    doc_id: Identifier
    status: Literal["queued", "unchanged"]
    filename: str = Field(min_length=1, description="the client's filename without directories (or `upload`)")
    content_type: ContentType = Field(description="read from the file's bytes, not from the client's header")
    size: int = Field(ge=0, description="bytes stored")
    collections: list[CollectionName] = Field(description="the collections the document was put in")
    sha256: Sha256 = Field(description="SHA-256 of the bytes, hex")
    source: SourceName | None = Field(description="as given (`?source=`), or kept from the document (`PUT`)")
    source_path: SourcePath | None = Field(description="as given (`?path=`), or kept from the document (`PUT`)")


class MoveBody(BaseModel):
    """`PATCH /v1/documents/{doc_id}`: the document's new place in its synced source (same bytes, new path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceName
    source_path: SourcePath


class DeleteAccepted(_Response):
    """The document is gone from the API at once; its points and upload are removed in the background."""

    doc_id: Identifier
    status: Literal["deleted"]


class UploadForm(BaseModel):
    """`multipart/form-data` with the document in a `file` field; an optional `collections` field (comma-separated
    names) before it puts the document in those collections (other fields are ignored)."""

    collections: str | None = Field(default=None, description="e.g. `legal,q3-2026`; must come before `file`")
    file: bytes = Field(
        json_schema_extra={"format": "binary", "contentMediaType": "application/octet-stream"},
        description="PDF, DOCX, PPTX, XLSX, PNG, JPEG, WebP, TIFF, GIF, .html, .epub, .eml, UTF-8 .txt, .md or "
        ".csv; the type is read from the bytes",
    )


# The fields of a progress record a client sees (not: schema_version, generation, revision, batches).
PUBLIC_FIELDS = tuple(DocumentView.model_fields)
_SOURCE = TypeAdapter(SourceName)
_SOURCE_PATH = TypeAdapter(SourcePath)
DUPLICATES = ("reject", "allow")
# The longest from an upload's claim of its bytes to its stored submission (3 publish attempts of 5 s, and some).
IN_FLIGHT_S = 20.0
IN_FLIGHT_POLL_S = 0.2
CLAIM_ATTEMPTS = 10

_MULTIPART_ERRORS = (ValueError, HttpProcessingError)  # UnicodeError is a ValueError


def new_doc_id() -> str:
    """32 hex digits: milliseconds since the epoch, then 80 random bits. Sorting ids sorts by submission time."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def public_view(progress: DocumentProgress) -> DocumentView:
    return DocumentView.model_validate(progress.model_dump(include=set(PUBLIC_FIELDS)))


def _not_found(doc_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no document {doc_id!r}")


def _invalid_multipart() -> ApiError:
    return ApiError(
        400, "invalid_multipart",
        "the body is not valid multipart/form-data (or a part's headers, e.g. its filename, are not UTF-8)",
    )  # fmt: skip


# --------------------------------------------------------------------------- the stream as a fallback


async def _last_on_stream(js: JetStreamContext, subject: str) -> bytes | None:
    """The last message on `subject` in the DOCS stream, or None if there is none. NATS errors propagate."""
    try:
        msg = await js.get_last_msg(DOCS_STREAM.name, subject)
    except nats.js.errors.NotFoundError:  # no message (or no stream): nothing was stored there
        return None
    return msg.data or b""


async def _submission_on_stream(js: JetStreamContext, tenant: str, doc_id: str) -> DocumentSubmitted | None:
    """The document's submission if it is on the stream and has not been deleted since."""
    raw = await _last_on_stream(js, Subjects.ingest(tenant, doc_id))
    if raw is None or await _last_on_stream(js, Subjects.delete(tenant, doc_id)) is not None:
        return None
    return DocumentSubmitted.model_validate_json(raw)


def _queued_view(submitted: DocumentSubmitted) -> DocumentView:
    return DocumentView(
        doc_id=submitted.doc_id, tenant=submitted.tenant, filename=submitted.filename,
        status=DocumentStatus.QUEUED.value, pages=None, pages_parsed=0, chunks_total=None, chunks_indexed=0,
        error=None, warnings=[], updated_at=submitted.submitted_at, collections=submitted.collections,
        size=submitted.size, content_type=submitted.content_type, **submitted.origin(),
    )  # fmt: skip


# --------------------------------------------------------------------------- upload


async def _file_part(request: web.Request) -> tuple[BodyPartReader, list[str] | None]:
    """The `file` part, and the `collections` field if one came before it (None if none did)."""
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the document as multipart/form-data with a 'file' field")
    collections = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                _check_filename(part)
                return part, collections
            if isinstance(part, BodyPartReader) and part.name == "collections":
                raw = await part.read_chunk(MAX_COLLECTIONS_FIELD_BYTES + 1)
                if len(raw) > MAX_COLLECTIONS_FIELD_BYTES or await part.read_chunk(1):
                    raise collections_error("collections", "is too long")
                collections = parse_collections(raw.decode("utf-8"), "collections")
                continue
            await part.release()
    except LineTooLong:  # aiohttp reads a part's header lines up to 8,190 bytes
        raise ApiError(400, "invalid_multipart", "a header line of the 'file' part is over 8,190 bytes (a file name "
                       f"of thousands of characters?): rename the file to at most {MAX_FILENAME_CHARS} characters") from None
    except _MULTIPART_ERRORS:
        raise _invalid_multipart() from None
    raise ApiError(400, "missing_field", "the multipart body has no 'file' field")


def _check_filename(part: BodyPartReader) -> None:
    """Raise ValueError unless the part's filename is valid UTF-8 (decoded now: a bad one is a 400, not a 500).

    aiohttp keeps undecodable header bytes as lone surrogates, and answers None for an undecodable
    RFC 5987 ``filename*``: both mean the client sent a name that is not UTF-8.
    """
    header = part.headers.get(hdrs.CONTENT_DISPOSITION, "")
    header.encode("utf-8")  # UnicodeEncodeError on surrogates
    if part.filename is None and _FILENAME_PARAM.search(header):
        raise ValueError("undecodable filename")


def _clean_filename(raw: str | None) -> str:
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:MAX_FILENAME_CHARS].strip()
    return name or "upload"


async def _chunks(head: bytes, part: BodyPartReader) -> AsyncIterator[bytes]:
    if head:
        yield head
    while piece := await part.read_chunk(READ_CHUNK):
        yield piece


async def _publish_submission(js: JetStreamContext, submitted: DocumentSubmitted) -> PubAck | None:
    """The PubAck, or None if no attempt was confirmed (the caller then asks the stream)."""
    # One message id per submission (its retries share it): a later submission of the same doc_id (a replacement)
    # within the stream's duplicate window is a new message, not a duplicate dropped after its bytes were stored.
    msg_id = f"{submitted.doc_id}:{submitted.submitted_at.isoformat()}"
    out = Outgoing(Subjects.ingest(submitted.tenant, submitted.doc_id), submitted, msg_id=msg_id)
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            return await publish(js, out, timeout_s=PUBLISH_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error) as err:
            log.warning("submission %s: publish attempt %d unconfirmed: %r", submitted.doc_id, attempt, err)
    return None


async def _discard_chunks(js: JetStreamContext, stored: ObjectInfo, rid: str) -> None:
    """Purge an object's chunks (after its meta was replaced by a newer object of the same name)."""
    chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=stored.bucket, obj=stored.nuid)
    try:
        await js.purge_stream(OBJ_STREAM_TEMPLATE.format(bucket=stored.bucket), subject=chunks)
    except Exception as err:  # noqa: BLE001 - NATS gone: orphaned chunks without a meta (invisible, not served)
        log.warning("request %s: chunks of the replaced upload %s not removed: %r", rid, stored.name, err)


async def _discard_upload(js: JetStreamContext, stored: ObjectInfo, rid: str) -> None:
    """Remove an object's chunks and meta message entirely (an Object Store `delete` would leave a marker)."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=stored.bucket)  # the tenant's bucket (`uploads_bucket`)
    meta = OBJ_META_PRE_TEMPLATE.format(
        bucket=stored.bucket, obj=base64.urlsafe_b64encode(stored.name.encode()).decode()
    )
    chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=stored.bucket, obj=stored.nuid)
    for subject in (meta, chunks):
        try:
            await js.purge_stream(stream, subject=subject)
        except Exception as err:  # noqa: BLE001 - NATS gone: an orphan the indexer's cleanup must find
            log.warning("request %s: upload %s not removed: %r", rid, stored.name, err)


async def _confirm_submission(
    js: JetStreamContext, submitted: DocumentSubmitted, stored: ObjectInfo, rid: str, *, replacing: bool = False
) -> int:
    """After unconfirmed publishes: the stream sequence if the submission is stored, else an `ApiError`."""
    subject = Subjects.ingest(submitted.tenant, submitted.doc_id)
    try:
        msg = await js.get_last_msg(DOCS_STREAM.name, subject)
        if DocumentSubmitted.model_validate_json(msg.data or b"{}") != submitted:  # an older revision's submission
            raise nats.js.errors.NotFoundError
    except nats.js.errors.NotFoundError:
        if not replacing:  # definitely not stored: take the bytes back, so nothing of this request stays behind
            await _discard_upload(js, stored, rid)
            raise ApiError(
                503, "backbone_unavailable", "the submission could not be stored; nothing was accepted, retry later",
                headers={"Retry-After": "1"},
            ) from None  # fmt: skip
        # The new bytes replaced the stored ones, but no new revision is queued: the same PUT again fixes it.
        raise ApiError(
            503, "backbone_unavailable", f"the new revision of document {submitted.doc_id} could not be queued; "
            "send the same PUT again", headers={"Retry-After": "1"},
        ) from None  # fmt: skip
    except (TimeoutError, nats.errors.Error) as err:
        log.warning("request %s: cannot tell whether %s was stored: %r", rid, submitted.doc_id, err)
        raise ApiError(
            503, "submission_unconfirmed",
            f"the upload of document {submitted.doc_id} may or may not have been accepted; "
            f"GET /v1/documents/{submitted.doc_id} will tell (404 means: upload it again)",
            doc_id=submitted.doc_id,
        ) from None  # fmt: skip
    return msg.seq


async def _record_queued(progress: ProgressStore, submitted: DocumentSubmitted, revision: int) -> None:
    """Write the `queued` record of this revision unless the record is already at it or beyond (an agent may
    already be further along, or a newer revision or a delete may have landed)."""

    def change(current: DocumentProgress | None) -> DocumentProgress | None:
        if current is not None and current.revision >= revision:
            return current
        return progress.new(
            submitted.tenant, submitted.doc_id, revision, DocumentStatus.QUEUED, filename=submitted.filename,
            collections=submitted.collections, size=submitted.size, content_type=submitted.content_type,
            **submitted.origin(),
        )  # fmt: skip

    await progress.update(submitted.tenant, submitted.doc_id, change)


MAX_COLLECTIONS_FIELD_BYTES = 4096
_COLLECTION_NAMES = TypeAdapter(list[CollectionName])


def collections_error(field: str, problem: str) -> ApiError:
    return ApiError(
        400, "invalid_query",
        f"{field} {problem}: a comma-separated list of at most {MAX_COLLECTIONS} collection names, each 1-40 "
        "letters, digits, '_', '.' or '-' starting with a letter or digit (e.g. 'legal,q3-2026')",
        field=field,
    )  # fmt: skip


def parse_collections(raw: str, field: str) -> list[str]:
    """`a,b` -> ["a", "b"] (a set, sorted); empty -> []; an `ApiError` 400 naming `field` for anything invalid."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if len(set(names)) > MAX_COLLECTIONS:
        raise collections_error(field, f"names {len(set(names))} collections")
    try:
        return sorted(set(_COLLECTION_NAMES.validate_python(names)))
    except ValidationError:
        raise collections_error(field, "has an invalid name") from None


def _too_large(settings: EdgeSettings, tenant: str, used: quotas.Usage | None, max_bytes: int) -> ApiError:
    """An upload over `max_bytes`: the tenant's byte quota when that is the smaller limit, else the upload limit."""
    if used is not None and max_bytes < settings.max_upload_bytes:
        return quotas.bytes_exceeded(settings, tenant, used)
    return ApiError(413, "too_large", f"upload exceeds the limit of {settings.max_upload_bytes} bytes (MMRAG_MAX_UPLOAD_BYTES)")


def _sha256_hex(info: ObjectInfo) -> str:
    """The object's SHA-256 as hex (the Object Store keeps it as ``SHA-256=<urlsafe base64>``)."""
    return base64.urlsafe_b64decode((info.digest or "").removeprefix("SHA-256=")).hex()


def _origin_query(request: web.Request) -> tuple[str | None, str | None]:
    """`?source=` and `?path=`: both or neither; a 400 `invalid_query` names the bad one."""
    source, path = request.query.get("source"), request.query.get("path")
    if (source is None) != (path is None):
        missing = "path" if path is None else "source"
        raise ApiError(400, "invalid_query", f"source and path go together: add ?{missing}=", field=missing)
    if source is None or path is None:
        return None, None
    try:
        _SOURCE.validate_python(source)
    except ValidationError:
        raise ApiError(400, "invalid_query", "source must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                       "letter or digit (e.g. the synced folder's name)", field="source") from None  # fmt: skip
    path = path.strip().strip("/")
    try:
        _SOURCE_PATH.validate_python(path)
        path.encode("utf-8")
    except (ValidationError, UnicodeError):
        raise ApiError(400, "invalid_query", f"path must be the file's path inside the source, 1-{MAX_SOURCE_PATH_CHARS} characters",
                       field="path") from None  # fmt: skip
    if any(not c.isprintable() for c in path):
        raise ApiError(400, "invalid_query", "path must not contain control characters", field="path")
    return source, path


def _duplicates_allowed(request: web.Request) -> bool:
    raw = request.query.get("duplicates", "reject")
    if raw not in DUPLICATES:
        raise ApiError(400, "invalid_query", "duplicates must be 'reject' (the default) or 'allow'", field="duplicates")
    return raw == "allow"


@dataclass(frozen=True)
class _Received:
    filename: str
    content_type: str
    info: ObjectInfo
    sha256: str
    collections: list[str] | None = None  # as the upload named them (None: not named)


async def _receive(request: web.Request, bb: Backbone, tenant: str, name: str, *, replacing: str | None = None) -> _Received:
    """Read the `file` part, check it and store it as object `name` while it is read (quota and size first).

    `replacing`: the document this upload is a new revision of (it counts neither as one more document nor
    with its old bytes against the tenant's quota)."""
    settings = bb.settings
    used = await quotas.usage(bb, tenant)  # None: no quota set
    if used is not None and replacing is not None:
        old = await _submission_on_stream(bb.jetstream(), tenant, replacing)
        old_size = old.size if old is not None else 0
        used = replace(used, documents=max(used.documents - 1, 0),
                       bytes=None if used.bytes is None else max(used.bytes - old_size, 0))  # fmt: skip
    bytes_left = quotas.check_before_upload(settings, tenant, used)  # refused here: nothing read, nothing stored
    max_bytes = settings.max_upload_bytes if bytes_left is None else min(settings.max_upload_bytes, bytes_left)
    from_query = request.query.get("collections")
    collections = parse_collections(from_query, "collections") if from_query is not None else None
    part, from_form = await _file_part(request)
    if from_form is not None:
        if collections is not None and collections != from_form:
            raise collections_error("collections", "is given twice (query and form) with different names")
        collections = from_form
    filename = _clean_filename(part.filename)
    head = bytearray()
    try:
        while len(head) < SNIFF_BYTES and (piece := await part.read_chunk(SNIFF_BYTES)):
            head.extend(piece)
    except _MULTIPART_ERRORS:
        raise _invalid_multipart() from None
    if not head:
        raise ApiError(400, "empty_file", f"{filename!r} is empty")
    if len(head) > max_bytes:
        raise _too_large(settings, tenant, used, max_bytes)
    try:
        content_type = detect_content_type(filename, part.headers.get("Content-Type"), bytes(head))
    except UnsupportedFile as err:
        raise ApiError(415, "unsupported_file", str(err)) from None

    await bb.uploads(tenant, create=True)  # the tenant's bucket, made on its first upload, before streaming
    try:
        info = await put_stream(bb.jetstream(), uploads_bucket(tenant), name, _chunks(bytes(head), part), max_bytes=max_bytes)
    except UploadTooLarge:
        raise _too_large(settings, tenant, used, max_bytes) from None
    except _MULTIPART_ERRORS:  # put_stream purged what it wrote
        raise _invalid_multipart() from None
    return _Received(filename=filename, content_type=content_type, info=info, sha256=_sha256_hex(info),
                     collections=collections)


@dataclass(frozen=True)
class _Holder:
    """The live document of a tenant that holds some bytes."""

    doc_id: str
    filename: str | None
    state: str  # its status, with its error if it failed
    where: str | None  # source/path


async def _holder(bb: Backbone, tenant: str, doc_id: str, sha256: str, claimed_at: float) -> _Holder | None:
    """`doc_id` if it is a live document of the tenant with these bytes, else None. A claim whose document is
    not submitted yet is an upload in flight: its submission is waited for, up to `IN_FLIGHT_S` after the claim."""
    if not TOKEN.match(doc_id):
        return None
    while True:
        record = await (await bb.progress()).get(tenant, doc_id)
        if record is not None:
            if record.status == DocumentStatus.DELETED or record.sha256 != sha256:
                return None
            where = f"{record.source}/{record.source_path}" if record.source else None
            state = f"{record.status.value}: {record.error}" if record.error else record.status.value
            return _Holder(doc_id, record.filename, state, where)
        submitted = await _submission_on_stream(bb.jetstream(), tenant, doc_id)
        if submitted is not None:
            if submitted.sha256 != sha256:
                return None
            where = f"{submitted.source}/{submitted.source_path}" if submitted.source else None
            return _Holder(doc_id, submitted.filename, "queued", where)
        if time.time() - claimed_at >= IN_FLIGHT_S:
            return None  # an upload that failed after claiming the bytes (and could not release them)
        await asyncio.sleep(IN_FLIGHT_POLL_S)


async def _claim_bytes(bb: Backbone, tenant: str, sha256: str, doc_id: str) -> _Holder | None:
    """Record `doc_id` as the tenant's document with these bytes (key `bytes_key`), unless a live document
    already holds them: then that one. One compare-and-set on one key, so of two identical uploads at the same
    moment exactly one claims the bytes; a stale claim (its document deleted, revised, or never submitted) is
    taken over. Only the caller's tenant's key is read."""
    kv = await bb.progress_kv()
    key = bytes_key(tenant, sha256)
    value = f"{doc_id} {time.time():.3f}".encode()
    for _ in range(CLAIM_ATTEMPTS):
        try:
            await kv.create(key, value)
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # deleted meanwhile: claim it again
            continue
        other, _, at = (entry.value or b"").decode(errors="replace").partition(" ")
        if other == doc_id:
            return None
        holder = await _holder(bb, tenant, other, sha256, float(at or 0))
        if holder is not None:
            return holder
        try:
            await kv.update(key, value, last=entry.revision)
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            continue  # another upload took it over first: look again
    raise ApiError(503, "backbone_unavailable", "the upload could not be checked for duplicates; retry",
                   headers={"Retry-After": "1"})  # fmt: skip


async def _release_bytes(bb: Backbone, tenant: str, sha256: str, doc_id: str) -> None:
    """Remove the claim of these bytes if `doc_id` holds it (its document is deleted, or revised to other bytes);
    best effort: a claim left behind is stale and the next upload of the bytes takes it over."""
    try:
        kv = await bb.progress_kv()
        key = bytes_key(tenant, sha256)
        entry = await kv.get(key)
        if (entry.value or b"").decode(errors="replace").partition(" ")[0] == doc_id:
            await kv.purge(key)  # not a delete: the values before it, which name the document, go too
    except Exception as err:  # noqa: BLE001
        log.info("claim of %s's bytes not removed: %r", doc_id, err)


def _duplicate(existing: _Holder, filename: str) -> ApiError:
    where = f", {existing.where}" if existing.where else ""
    name = f"{existing.filename!r}{where}, " if existing.filename else ""
    return ApiError(
        409, "duplicate",
        f"{filename!r} has the same bytes as document {existing.doc_id} ({name}{existing.state}), "
        "so it was not stored again; use that document, delete it first, or upload with ?duplicates=allow",
        doc_id=existing.doc_id,
    )  # fmt: skip


async def _submit(request: web.Request, bb: Backbone, submitted: DocumentSubmitted, got: _Received,
                  *, replacing: bool) -> UploadAccepted:  # fmt: skip
    """Publish the submission (one message id per submission: its retries dedupe, a later revision does not), then
    record it as `queued`."""
    js = bb.jetstream()
    ack = await _publish_submission(js, submitted)
    revision = ack.seq if ack is not None else await _confirm_submission(
        js, submitted, got.info, request_id(request), replacing=replacing
    )  # fmt: skip
    # The submission is stored: from here the document is accepted even if the progress write fails (the
    # status endpoint then answers from the stream).
    try:
        await _record_queued(await bb.progress(), submitted, revision)
    except Exception as err:  # noqa: BLE001
        log.warning("request %s: queued record of %s not written: %r", request_id(request), submitted.doc_id, err)
    return UploadAccepted(
        doc_id=submitted.doc_id, status="queued", filename=submitted.filename, content_type=submitted.content_type,
        size=submitted.size, sha256=got.sha256, source=submitted.source, source_path=submitted.source_path,
        collections=submitted.collections,
    )  # fmt: skip


async def upload_document(request: web.Request) -> Reply:
    bb = backbone(request)
    js = bb.jetstream()
    tenant = tenant_of(request)
    source, path = _origin_query(request)
    allow_duplicates = _duplicates_allowed(request)
    doc_id = new_doc_id()
    name = object_name(tenant, doc_id)
    got = await _receive(request, bb, tenant, name)
    if not allow_duplicates:
        try:
            existing = await _claim_bytes(bb, tenant, got.sha256, doc_id)
        except BaseException:
            await _discard_upload(js, got.info, request_id(request))
            raise
        if existing is not None:
            await _discard_upload(js, got.info, request_id(request))
            raise _duplicate(existing, got.filename)
    submitted = DocumentSubmitted(
        doc_id=doc_id, tenant=tenant, filename=got.filename, object_name=name, size=got.info.size or 0,
        content_type=got.content_type,  # type: ignore[arg-type] - detect_content_type returns a supported type
        source=source, source_path=path, sha256=got.sha256, collections=got.collections or [],
    )  # fmt: skip
    try:
        accepted = await _submit(request, bb, submitted, got, replacing=False)
    except ApiError as err:
        if not allow_duplicates and err.code == "backbone_unavailable":  # nothing stored: the bytes are free again
            await _release_bytes(bb, tenant, got.sha256, doc_id)
        raise
    return Reply(accepted, status=202)


async def _live_document(bb: Backbone, tenant: str, doc_id: str) -> DocumentProgress | DocumentSubmitted:
    """The document's progress record, or its submission when no record is written yet; 404 if deleted or unknown."""
    current = await (await bb.progress()).get(tenant, doc_id)
    if current is not None:
        if current.status == DocumentStatus.DELETED:
            raise _not_found(doc_id)
        return current
    submitted = await _submission_on_stream(bb.jetstream(), tenant, doc_id)
    if submitted is None:
        raise _not_found(doc_id)
    return submitted


async def replace_document(request: web.Request) -> Reply:
    """A new revision of an existing document (the same doc id): its points are replaced once it is indexed.

    The same bytes as the document's are a no-op (200 `unchanged`). The upload replaces the stored original
    (the older revision stays searchable until the new one is indexed, as for any revision)."""
    bb = backbone(request)
    js = bb.jetstream()
    tenant, doc_id = tenant_of(request), _doc_id(request)
    source, path = _origin_query(request)
    current = await _live_document(bb, tenant, doc_id)
    if source is None:  # kept from the document
        source, path = current.source, current.source_path
    name = object_name(tenant, doc_id)
    try:
        before = await (await bb.uploads(tenant)).get_info(name)
    except nats.js.errors.NotFoundError:
        before = None
    got = await _receive(request, bb, tenant, name, replacing=doc_id)
    if before is not None and before.nuid != got.info.nuid:  # the replaced object's chunks (as nats-py's put does)
        await _discard_chunks(js, before, request_id(request))
    if got.sha256 == current.sha256 and (source, path) == (current.source, current.source_path):
        accepted = UploadAccepted(
            doc_id=doc_id, status="unchanged", filename=got.filename,
            content_type=got.content_type,  # type: ignore[arg-type]
            size=got.info.size or 0, sha256=got.sha256, source=source, source_path=path,
            collections=current.collections,
        )  # fmt: skip
        return Reply(accepted, status=200)
    # A new revision keeps the document's collections unless the upload names others.
    collections = current.collections if got.collections is None else got.collections
    submitted = DocumentSubmitted(
        doc_id=doc_id, tenant=tenant, filename=got.filename, object_name=name, size=got.info.size or 0,
        content_type=got.content_type,  # type: ignore[arg-type]
        source=source, source_path=path, sha256=got.sha256, collections=collections,
    )  # fmt: skip
    accepted = await _submit(request, bb, submitted, got, replacing=True)
    # The new bytes are this document's unless a live document already holds them (a PUT is never refused); the
    # old ones are let go, so a document holds at most one claim.
    await _claim_bytes(bb, tenant, got.sha256, doc_id)
    if current.sha256 is not None and current.sha256 != got.sha256:
        await _release_bytes(bb, tenant, current.sha256, doc_id)
    return Reply(accepted, status=202)


async def move_document(request: web.Request) -> DocumentView:
    """Give a document a new place in a synced source (a renamed file whose bytes did not change): its progress
    record changes, nothing is parsed or indexed again."""
    bb = backbone(request)
    tenant, doc_id = tenant_of(request), _doc_id(request)
    body = await read_body(request, MoveBody)
    store = await bb.progress()
    if await store.get(tenant, doc_id) is None:
        await _live_document(bb, tenant, doc_id)  # 404 unless its submission is on the stream
        raise ApiError(409, "not_recorded_yet", f"document {doc_id} is queued but not recorded yet; retry in a moment",
                       headers={"Retry-After": "1"})  # fmt: skip

    def change(record: DocumentProgress | None) -> DocumentProgress | None:
        if record is None or record.status == DocumentStatus.DELETED:
            return record
        return record.model_copy(update={"source": body.source, "source_path": body.source_path,
                                         "schema_version": 3, "updated_at": utcnow()})  # fmt: skip

    record = await store.update(tenant, doc_id, change)
    if record is None or record.status == DocumentStatus.DELETED:
        raise _not_found(doc_id)
    return public_view(record)


# --------------------------------------------------------------------------- status, list, delete


def _doc_id(request: web.Request) -> str:
    doc_id = request.match_info["doc_id"]
    if not TOKEN.match(doc_id):
        raise _not_found(doc_id[:100])
    return doc_id


async def document_status(request: web.Request) -> DocumentView:
    bb = backbone(request)
    js = bb.jetstream()
    tenant, doc_id = tenant_of(request), _doc_id(request)
    progress = await (await bb.progress()).get(tenant, doc_id)
    if progress is not None:
        if progress.status == DocumentStatus.DELETED:
            raise _not_found(doc_id)
        return public_view(progress)
    submitted = await _submission_on_stream(js, tenant, doc_id)
    if submitted is None:
        raise _not_found(doc_id)
    return _queued_view(submitted)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_ORDER = {status.value: i for i, status in enumerate(DocumentStatus)}  # queued .. failed: the pipeline's order
SortKey = tuple[int | str, str]
TEXT_SORTS = ("uploaded", "name")  # the sorts whose first key is text (the others' is an integer)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


# Each sort's key of a record, ascending; the doc id last, so no two documents tie and a cursor is a position.
SORT_KEYS: dict[str, Callable[[DocumentProgress], SortKey]] = {
    "uploaded": lambda r: (r.doc_id, r.doc_id),  # ids start with their submission time (`new_doc_id`)
    "updated": lambda r: (_micros(r.updated_at), r.doc_id),
    "name": lambda r: ((r.filename or "").casefold(), r.doc_id),
    "status": lambda r: (_STATUS_ORDER[r.status.value], r.doc_id),
    "size": lambda r: (-1 if r.size is None else r.size, r.doc_id),
}


@dataclass(frozen=True)
class ListQuery:
    """What `GET /v1/documents` asks for: filters, order, page size and position."""

    limit: int
    sort: str
    descending: bool
    after: SortKey | None  # the cursor: the last document of the previous page
    text: str | None  # a case-folded substring of the filename
    statuses: frozenset[str] | None
    collections: frozenset[str] | None
    source: str | None = None  # one synced source's documents (what `mmrag sync` compares its folder with)

    def matches(self, r: DocumentProgress) -> bool:
        return (
            r.status is not DocumentStatus.DELETED
            and (self.source is None or r.source == self.source)
            and (self.statuses is None or r.status.value in self.statuses)
            and (self.collections is None or not self.collections.isdisjoint(r.collections))
            and (self.text is None or self.text in (r.filename or "").casefold())
        )

    def after_cursor(self, key: SortKey) -> bool:
        if self.after is None:
            return True
        return key < self.after if self.descending else key > self.after

    def cursor(self, key: SortKey) -> str:
        raw = json.dumps([self.sort, "desc" if self.descending else "asc", *key], separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_query(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_query", message, field=field)


def _list_limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(LIST_DEFAULT_LIMIT))
    if not _LIMIT.match(raw) or not 1 <= int(raw) <= LIST_MAX_LIMIT:
        raise _bad_query("limit", f"limit must be an integer from 1 to {LIST_MAX_LIMIT}")
    return int(raw)


def _decode_cursor(raw: str, sort: str, order: str) -> SortKey:
    invalid = _bad_query("cursor", "cursor must be a next_cursor value from a previous page (start again without one)")
    if not _CURSOR.match(raw):
        raise invalid
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise invalid from None
    if not (isinstance(decoded, list) and len(decoded) == 4 and all(isinstance(v, (str, int)) for v in decoded)):
        raise invalid
    c_sort, c_order, first, doc_id = decoded
    if (c_sort, c_order) != (sort, order):
        raise _bad_query("cursor", f"this cursor continues a list sorted by {c_sort} {c_order}, not {sort} {order}: "
                         "send the same sort and order with it, or start again without a cursor")  # fmt: skip
    if not isinstance(doc_id, str) or isinstance(first, bool) or isinstance(first, str) != (sort in TEXT_SORTS):
        raise invalid
    return (first, doc_id)


def _choice(request: web.Request, field: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query.get(field, default)
    if value not in allowed:
        raise _bad_query(field, f"{field} must be one of {', '.join(allowed)}")
    return value


def list_query(request: web.Request) -> ListQuery:
    """The query parameters of the list, each checked (a bad one is a 400 naming it)."""
    limit = _list_limit(request)
    sort = _choice(request, "sort", SORTS, "uploaded")
    order = _choice(request, "order", ("asc", "desc"), DEFAULT_ORDER[sort])
    raw_cursor = request.query.get("cursor")
    after = _decode_cursor(raw_cursor, sort, order) if raw_cursor is not None else None
    text = request.query.get("q", "").strip()
    if len(text) > LIST_MAX_QUERY_CHARS:
        raise _bad_query("q", f"q (a part of the filename) must be at most {LIST_MAX_QUERY_CHARS} characters")
    statuses = None
    if raw := request.query.get("status"):
        statuses = frozenset(s.strip() for s in raw.split(",") if s.strip())
        public = [s.value for s in DocumentStatus if s is not DocumentStatus.DELETED]
        if not statuses or not statuses <= set(public):
            raise _bad_query("status", f"status must be a comma-separated list of {', '.join(public)}")
    collections = None
    if (raw := request.query.get("collection")) is not None:
        collections = frozenset(parse_collections(raw, "collection")) or None
    source = request.query.get("source")
    if source is not None:
        try:
            _SOURCE.validate_python(source)
        except ValidationError:
            raise _bad_query("source", "source must be a source's name (1-64 letters, digits, '.', '_' or '-')") from None
    return ListQuery(limit, sort, order == "desc", after, text.casefold() or None, statuses, collections, source)


async def tenant_records(bb: Backbone, tenant: str) -> AsyncIterator[tuple[str, DocumentProgress]]:
    """(key, record) of every progress record of the tenant in the serving generation, one at a time (the caller
    keeps what it needs), from a KV watch on ``g<gen>.<tenant>.*`` (not ``kv.keys(filters=...)``: nats-py filters
    those client-side, over every key of every tenant).

    The scan ends at the entry after which nothing is pending (`delta` 0), not at the watch's "initial values
    done" marker: nats-py can put that marker first when the server has pushed every value before the watch
    asked how many were pending, and the values then follow it (seen here: a page cut short at random). A marker
    before any value is confirmed by asking the stream whether the tenant has any key at all.
    """
    kv = await bb.progress_kv()
    pattern = progress_key(await bb.serving_generation(), tenant, "x")[: -len("x")] + "*"  # g<gen>.<tenant>.*
    watcher = await watch(kv, pattern)  # deletes too: whatever the last entry is, its delta is 0
    seen = 0
    try:
        while True:
            entry = await watcher.updates(timeout=LIST_SCAN_TIMEOUT_S)
            if entry is None:
                if seen == 0 and not await _any_key(bb, pattern):
                    return
                continue
            seen += 1
            if entry.value and entry.operation is None:
                try:
                    yield entry.key, DocumentProgress.model_validate_json(entry.value)
                except ValueError:
                    log.warning("progress record %s is not readable; skipped in the list", entry.key)
            if entry.delta == 0:
                return
    finally:
        await watcher.stop()


async def _any_key(bb: Backbone, pattern: str) -> bool:
    info = await bb.jetstream().stream_info(f"KV_{PROGRESS_BUCKET}", subjects_filter=f"$KV.{PROGRESS_BUCKET}.{pattern}")
    return bool(info.state.subjects)


async def select_documents(bb: Backbone, tenant: str, q: ListQuery) -> DocumentPage:
    """One page of the tenant's documents, reading every progress record of the tenant once.

    This code keeps at most 2 x (limit + 1) candidate records (sorted and cut whenever that fills) plus a small
    entry per document (its key, whether it matched: for the total, and to replace a record the watch delivers
    twice). Measured (`bench/doclist.py`): time about 0.2-0.5 ms per document of the tenant, nearly all of it
    nats-py's handling of the watch's messages (66 ms at 300 documents, 2.5 s at 5,000 on the shared 2-core
    machine); peak memory about 1.3 KB per document, because nats-py queues every value the server pushes ahead
    of this loop. `MMRAG_TENANT_MAX_DOCUMENTS` bounds both where set (docs/decisions.md, 74).
    """
    key_of = SORT_KEYS[q.sort]
    keep = q.limit + 1
    matched: dict[str, bool] = {}
    candidates: dict[str, tuple[SortKey, DocumentProgress]] = {}

    def cut() -> None:
        best = sorted(candidates.items(), key=lambda item: item[1][0], reverse=q.descending)[:keep]
        candidates.clear()
        candidates.update(best)

    async for key, record in tenant_records(bb, tenant):
        candidates.pop(key, None)  # a newer value of a key already seen replaces it
        matched[key] = q.matches(record)
        if matched[key] and q.after_cursor(sort_key := key_of(record)):
            candidates[key] = (sort_key, record)
            if len(candidates) >= 2 * keep:
                cut()
    cut()
    page = [record for _, (_, record) in list(candidates.items())[: q.limit]]
    more = len(candidates) > q.limit
    next_cursor = q.cursor(key_of(page[-1])) if more and page else None
    return DocumentPage(documents=[public_view(r) for r in page], next_cursor=next_cursor, total=sum(matched.values()))


async def list_documents(request: web.Request) -> DocumentPage:
    bb = backbone(request)
    bb.jetstream()
    return await select_documents(bb, tenant_of(request), list_query(request))


async def delete_document(request: web.Request) -> Reply:
    bb = backbone(request)
    js = bb.jetstream()
    tenant, doc_id = tenant_of(request), _doc_id(request)
    store = await bb.progress()
    current = await store.get(tenant, doc_id)
    if current is None:
        submitted = await _submission_on_stream(js, tenant, doc_id)
        if submitted is None:
            raise _not_found(doc_id)
    elif current.status == DocumentStatus.DELETED:
        raise _not_found(doc_id)

    # One message id per deleted revision: a retried request is deduplicated, but a delete after a re-submission is a
    # new message (`delete-<doc_id>` alone was dropped as a duplicate within the stream's window: 202, nothing deleted).
    revision = current.revision if current is not None else uuid.uuid4().hex
    tombstone = Outgoing(Subjects.delete(tenant, doc_id), DocumentDeleted(doc_id=doc_id, tenant=tenant),
                         msg_id=f"delete-{doc_id}-{revision}")  # fmt: skip
    ack = await publish(js, tombstone, timeout_s=PUBLISH_TIMEOUT_S)

    def change(record: DocumentProgress | None) -> DocumentProgress:
        if record is not None and record.revision >= ack.seq:  # a newer submission or delete is already applied
            return record
        return store.new(tenant, doc_id, ack.seq, DocumentStatus.DELETED)  # a tombstone: ids and revision only

    await store.update(tenant, doc_id, change)
    if current is not None and current.sha256 is not None:
        await _release_bytes(bb, tenant, current.sha256, doc_id)
    return Reply(DeleteAccepted(doc_id=doc_id, status="deleted"), status=202)


DOC_ID = {
    "name": "doc_id", "in": "path", "required": True,
    "description": "the `doc_id` the upload answered with (anything else is a 404)",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip
ERR_404_DOC = Err("`not_found`: no such document (unknown, deleted, or not a valid id)")
ORIGIN_QUERY = (
    {
        "name": "source", "in": "query", "required": False,
        "description": "the synced source the file belongs to (with `path`; `mmrag sync` sets both)",
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    },
    {
        "name": "path", "in": "query", "required": False,
        "description": "the file's path inside `source`, '/'-separated (with `source`)",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SOURCE_PATH_CHARS},
    },
)
ERR_400_UPLOAD = (
    "`empty_file`, `missing_field` (no `file` field), `invalid_multipart` (a malformed body, or a filename that is "
    "not UTF-8) or `invalid_query` (`field` names it: `source` and `path` go together, `duplicates` is "
    "`reject` or `allow`)"
)
ERR_413_UPLOAD = Err(
    "`too_large`: the file is over `MMRAG_MAX_UPLOAD_BYTES`; `quota_exceeded`: the tenant holds "
    "`MMRAG_TENANT_MAX_DOCUMENTS` documents or `MMRAG_TENANT_MAX_PAGES` parsed pages, or this file would take it "
    "over `MMRAG_TENANT_MAX_BYTES` (`quota` and `usage` say which numbers; delete documents or have the quota raised)"
)
ERR_415_UPLOAD = Err(
    "`unsupported_file` (not a PDF, a supported image or UTF-8 text; or named/declared as one "
    "type while its bytes are another) or `unsupported_media_type` (not multipart/form-data)"
)

OPERATIONS = (
    Operation(
        "POST", "/v1/documents", upload_document, "uploadDocument", "documents", "Upload a document to index",
        role="writer",
        description="The bytes are stored, then the submission is queued; the document is parsed, embedded and "
        "indexed in the background. Uploads larger than `MMRAG_MAX_UPLOAD_BYTES` are 413.",
        request={"multipart/form-data": UploadForm},
        parameters=(
            {
                "name": "collections", "in": "query", "required": False,
                "description": "put the document in these collections (comma-separated; or a `collections` "
                "form field before `file`)",
                "schema": {"type": "string"},
            },
            *ORIGIN_QUERY,
            {
                "name": "duplicates", "in": "query", "required": False,
                "description": "`reject`: the same bytes as a document of the tenant are a 409 `duplicate`; "
                "`allow`: stored and indexed again as a new document",
                "schema": {"type": "string", "enum": list(DUPLICATES), "default": "reject"},
            },
        ),
        responses={
            202: Json("accepted and queued", UploadAccepted),
            400: Err(ERR_400_UPLOAD),
            409: Err(
                "`duplicate`: the tenant already has a document with the same bytes (`doc_id` names it); nothing "
                "was stored. Another tenant's documents are never compared"
            ),
            413: ERR_413_UPLOAD,
            415: ERR_415_UPLOAD,
            503: Err(
                "`backbone_unavailable` (nothing was accepted, retry later) or `submission_unconfirmed` "
                "(the bytes are stored but NATS did not confirm the submission: `doc_id` names the document, "
                "whose status tells: 200 accepted, 404 upload it again)",
                retry_after=True,
            ),
        },
    ),
    Operation(
        "GET", "/v1/documents", list_documents, "listDocuments", "documents",
        "List documents: search, filter, sort, page", role="reader",
        description="Every document of the caller's tenant that matches the filters, `limit` at a time, in the "
        "order asked for; `next_cursor` continues after the last one (a position, stable while documents "
        "change: none is shown twice or skipped unless it changed its place meanwhile), `total` counts them "
        "all. Each request reads every progress record of the tenant (time linear in its documents) and keeps "
        "at most 2 x (`limit` + 1) of them in memory.",
        parameters=(
            {
                "name": "limit", "in": "query", "required": False, "description": "page size",
                "schema": {"type": "integer", "minimum": 1, "maximum": LIST_MAX_LIMIT, "default": LIST_DEFAULT_LIMIT},
            },
            {
                "name": "cursor", "in": "query", "required": False,
                "description": "the `next_cursor` of the previous page (with the same `sort` and `order`)",
                "schema": {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{1,{MAX_CURSOR_CHARS}}}$"},
            },
            {
                "name": "sort", "in": "query", "required": False,
                "description": "`uploaded` (submission time), `updated` (last change), `name` (filename, "
                "case-insensitive), `status` (pipeline order: queued .. indexed, failed) or `size` (bytes)",
                "schema": {"type": "string", "enum": list(SORTS), "default": "uploaded"},
            },
            {
                "name": "order", "in": "query", "required": False,
                "description": "default: `desc` for uploaded, updated and size (newest, largest first), `asc` for "
                "name and status",
                "schema": {"type": "string", "enum": ["asc", "desc"]},
            },
            {
                "name": "q", "in": "query", "required": False,
                "description": "only documents whose filename contains this (case-insensitive)",
                "schema": {"type": "string", "maxLength": LIST_MAX_QUERY_CHARS},
            },
            {
                "name": "status", "in": "query", "required": False,
                "description": "only documents in one of these statuses (comma-separated, e.g. `failed` or "
                "`queued,parsing`)",
                "schema": {"type": "string"},
            },
            {
                "name": "collection", "in": "query", "required": False,
                "description": "only documents in at least one of these collections (comma-separated)",
                "schema": {"type": "string"},
            },
            {
                "name": "source", "in": "query", "required": False,
                "description": "only the documents of this synced source",
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            },
        ),
        responses={
            200: Json("one page", DocumentPage),
            400: Err("`invalid_query`: `field` names the bad parameter (`limit`, `cursor`, `sort`, `order`, `q`, "
                     "`status`, `collection` or `source`)"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", DOC_PATH, document_status, "getDocument", "documents", "A document's status", role="reader",
        parameters=(DOC_ID,),
        responses={200: Json("the document", DocumentView), 404: ERR_404_DOC, 503: ERR_503},
    ),
    Operation(
        "PUT", DOC_PATH, replace_document, "replaceDocument", "documents", "Upload a new revision of a document",
        role="writer",
        description="The same `file` form as the upload. Different bytes (or a new `source`/`path`) become a new "
        "revision of the same document: queued, and its points replace the older revision's once it is indexed "
        "(the older one stays searchable until then). The same bytes are a no-op (200 `unchanged`). Without "
        "`source`/`path` the document keeps its own.",
        request={"multipart/form-data": UploadForm},
        parameters=(DOC_ID, *ORIGIN_QUERY),
        responses={
            200: Json("the same bytes: nothing changed", UploadAccepted),
            202: Json("a new revision, queued", UploadAccepted),
            400: Err(ERR_400_UPLOAD),
            404: ERR_404_DOC,
            413: ERR_413_UPLOAD,
            415: ERR_415_UPLOAD,
            503: Err(
                "`backbone_unavailable` (no new revision was queued: send the same PUT again) or "
                "`submission_unconfirmed` (NATS did not confirm the revision; the document's status tells)",
                retry_after=True,
            ),
        },
    ),
    Operation(
        "PATCH", DOC_PATH, move_document, "moveDocument", "documents", "Move a document within its synced source",
        role="writer",
        description="A renamed file whose bytes did not change: the document's `source` and `source_path` change, "
        "nothing is parsed or indexed again (its hits keep the filename it was uploaded with).",
        request={"application/json": MoveBody},
        parameters=(DOC_ID,),
        responses={
            200: Json("the document, moved", DocumentView),
            **JSON_BODY_ERRORS,
            404: ERR_404_DOC,
            409: Err("`not_recorded_yet`: the document was just uploaded and is not recorded yet; retry", retry_after=True),
            503: ERR_503,
        },
    ),
    Operation(
        "DELETE", DOC_PATH, delete_document, "deleteDocument", "documents", "Delete a document", role="writer",
        parameters=(DOC_ID,),
        responses={
            202: Json("deleted from the API; removed from the index in the background", DeleteAccepted),
            404: Err("`not_found`: no such document (unknown, already deleted, or not a valid id)"),
            503: ERR_503,
        },
    ),
)  # fmt: skip
