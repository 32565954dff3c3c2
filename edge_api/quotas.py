"""Per-tenant quotas, checked at upload: documents (``MMRAG_TENANT_MAX_DOCUMENTS``), bytes
(``MMRAG_TENANT_MAX_BYTES``) and pages (``MMRAG_TENANT_MAX_PAGES``) a tenant may hold; unset = unlimited (the
default).

- Usage is counted from the sources of truth, only for the quotas that are set: documents are the tenant's
  live progress records of the serving generation (not deleted, failed ones included: their upload is stored);
  bytes are the ``size`` of each live document's latest submission on the DOCS stream
  (the last message of ``docs.ingest.<tenant>.<doc_id>``, read directly); pages are the ``pages`` of the live
  progress records (what the parser read: a document not parsed yet counts 0).
- Over a quota: 413 ``quota_exceeded``, whose message names the quota, the usage and the fix (delete documents,
  or raise the setting). 413, not 429: waiting does not help, only a delete does.
- An upload is refused before its bytes are stored when the tenant is already at a quota; the bytes left
  under the byte quota bound the upload itself (it stops being read beyond them, as `MMRAG_MAX_UPLOAD_BYTES`).
- Concurrent uploads of one tenant are each checked against the usage before them, so a burst can go over a
  quota by at most the uploads in flight (no lock across edge replicas).
- The read costs O(the tenant's documents) per upload, and only when a quota is set: `bench/quota_usage.py`
  measured 22 ms at 100, 0.8 s at 1,000 and 2.0 s at 5,000 documents on a 2-core machine. A usage counter
  kept by every writer of documents is the follow-up if tenants hold many thousands.
- Pages are known only once the parser read the document: the page quota refuses uploads once the tenant's
  parsed pages reach it, so it can be passed by the documents uploaded meanwhile; the parser's maximum pages per
  document (``MMRAG_MAX_DOCUMENT_PAGES``) bounds each of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.kv import current_values
from contracts.messages import DocumentProgress, DocumentStatus, DocumentSubmitted
from contracts.topology import DOCS_STREAM, Subjects, progress_key
from edge_api.errors import ApiError
from edge_api.settings import EdgeSettings
from edge_api.state import Backbone

log = logging.getLogger(__name__)

CONCURRENT_READS = 32  # direct reads of submissions in flight at once


@dataclass(frozen=True)
class Usage:
    documents: int
    bytes: int | None  # None when no byte quota is set (not counted)
    pages: int = 0  # of the documents parsed so far


async def live_documents(bb: Backbone, tenant: str) -> dict[str, int]:
    """doc id -> pages (0 until parsed) of the tenant's documents that are not deleted, in the serving generation."""
    kv = await bb.progress_kv()
    pattern = progress_key(await bb.serving_generation(), tenant, "x")[: -len("x")] + "*"  # g<gen>.<tenant>.*
    live: dict[str, int] = {}
    for key, value in await current_values(kv, pattern):
        try:
            record = DocumentProgress.model_validate_json(value)
        except ValueError:
            log.warning("progress record %s is not readable; not counted in the quota", key)
            continue
        if record.status != DocumentStatus.DELETED:
            live[record.doc_id] = record.pages or 0
    return live


async def submitted_bytes(js: JetStreamContext, tenant: str, doc_ids: set[str]) -> int:
    """The sum of the `size` of the latest submission of each of `doc_ids`: one direct read of the last message
    of its ``docs.ingest.<tenant>.<doc_id>`` subject each, a few at a time.

    Not an ephemeral consumer: its pending count could read 0 right after it was created on a busy server (an
    upload then went over the byte quota, seen in a test), and it needed consumer rights on DOCS for the edge."""

    async def size(doc_id: str) -> int:
        try:
            msg = await js.get_last_msg(DOCS_STREAM.name, Subjects.ingest(tenant, doc_id))
        except NotFoundError:  # submitted through another path and purged since: nothing stored to count
            return 0
        try:
            return DocumentSubmitted.model_validate_json(msg.data or b"").size
        except ValueError:
            log.warning("submission of %s/%s is not readable; not counted in the quota", tenant, doc_id)
            return 0

    total = 0
    ids = sorted(doc_ids)
    for start in range(0, len(ids), CONCURRENT_READS):
        total += sum(await asyncio.gather(*(size(d) for d in ids[start : start + CONCURRENT_READS])))
    return total


async def usage(bb: Backbone, tenant: str) -> Usage | None:
    """The tenant's usage for the quotas that are set; None when none is."""
    s = bb.settings
    if s.tenant_max_documents is None and s.tenant_max_bytes is None and s.tenant_max_pages is None:
        return None
    live = await live_documents(bb, tenant)
    stored = await submitted_bytes(bb.jetstream(), tenant, set(live)) if s.tenant_max_bytes is not None else None
    return Usage(len(live), stored, sum(live.values()))


def exceeded(tenant: str, what: str, setting: str, quota: int, used: int, adding: str = "") -> ApiError:
    return ApiError(
        413, "quota_exceeded",
        f"tenant {tenant!r} has a quota of {quota} {what} ({setting}) and holds {used} {what}{adding}: "
        "delete documents it no longer needs (or ask the operator to raise the quota) and upload again",
        quota=quota, usage=used,
    )  # fmt: skip


def check_before_upload(settings: EdgeSettings, tenant: str, used: Usage | None) -> int | None:
    """Raise `quota_exceeded` if the tenant may not add a document; else the bytes it may still add (None:
    no byte quota)."""
    if used is None:
        return None
    if settings.tenant_max_documents is not None and used.documents >= settings.tenant_max_documents:
        raise exceeded(tenant, "documents", "MMRAG_TENANT_MAX_DOCUMENTS", settings.tenant_max_documents, used.documents)
    if settings.tenant_max_pages is not None and used.pages >= settings.tenant_max_pages:
        raise exceeded(tenant, "pages", "MMRAG_TENANT_MAX_PAGES", settings.tenant_max_pages, used.pages)
    if settings.tenant_max_bytes is None or used.bytes is None:
        return None
    left = settings.tenant_max_bytes - used.bytes
    if left <= 0:
        raise exceeded(tenant, "bytes", "MMRAG_TENANT_MAX_BYTES", settings.tenant_max_bytes, used.bytes)
    return left


def bytes_exceeded(settings: EdgeSettings, tenant: str, used: Usage) -> ApiError:
    """The upload went past the bytes left under the tenant's byte quota."""
    assert settings.tenant_max_bytes is not None and used.bytes is not None
    left = settings.tenant_max_bytes - used.bytes
    return exceeded(tenant, "bytes", "MMRAG_TENANT_MAX_BYTES", settings.tenant_max_bytes, used.bytes,
                    f" and this upload is larger than the {left} bytes left")  # fmt: skip
