"""Carry a data dir written by an earlier release forward, so no acknowledged document is lost by an upgrade.

Two migrations, each idempotent and cheap when there is nothing to migrate:
- `migrate_legacy`: the 0.1 ingest subjects (below).
- `migrate_uploads`: the one uploads bucket ``mmrag-uploads`` every tenant shared before decision 81. Each of its
  objects (``<tenant>/...``) is copied into its tenant's bucket (`contracts.topology.uploads_bucket`), checked by
  digest, and only then removed from the shared bucket; the shared bucket is deleted once empty. Chosen over a
  fallback read of the old bucket: after it, every reader and writer knows one bucket per tenant and no role
  keeps a grant on the shared bucket's subjects, which do not name the tenant. The indexer's process runs it
  before taking work (`agents.runtime.host`); replicas racing on it copy the same bytes and skip what is gone.

0.1 published every submission on the single subject ``docs.ingest`` (tenant and document in the payload
only) and consumed it with durables named ``parser``, ``embedder-text`` and ``indexer``. Today's parser
reads ``docs.ingest.<tenant>.<doc_id>``, so those submissions would never be seen again. On start-up each
legacy submission is re-published on its new subject (message id ``legacy:<seq>``, so replicas migrating at
the same time publish each once), then the legacy subjects are purged and the legacy consumers deleted. The
new index generation re-parses them: an upgrade is a re-index. Idempotent and cheap when there is nothing
to migrate (one stream lookup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile

import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from pydantic import ValidationError

from bus.objects import remove_object
from bus.uploads import ensure_uploads_bucket
from contracts.messages import DocumentSubmitted
from contracts.topology import HEADER_MSG_ID, LEGACY_UPLOADS_BUCKET, TOKEN, Subjects, uploads_bucket

log = logging.getLogger(__name__)

LEGACY_INGEST = "docs.ingest"
LEGACY_CHUNK_SUBJECTS = ("chunks.parsed.text", "chunks.embedded")
LEGACY_DURABLES = (("DOCS", "parser"), ("CHUNKS", "embedder-text"), ("CHUNKS", "indexer"))


async def migrate_legacy(js: JetStreamContext) -> int:
    """Re-publish 0.1 submissions on today's subjects; returns how many were carried forward."""
    try:
        await js.get_last_msg("DOCS", LEGACY_INGEST)
    except NotFoundError:
        return 0
    sub = await js.pull_subscribe(
        LEGACY_INGEST, durable=None, stream="DOCS", config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
    )
    moved = skipped = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            for msg in msgs:
                try:
                    doc = DocumentSubmitted.model_validate_json(msg.data)
                except ValidationError as err:  # 0.1 dead-lettered these already
                    log.warning("legacy submission at seq %d is invalid, not migrated: %s", msg.metadata.sequence.stream, err)
                    skipped += 1
                else:
                    await js.publish(
                        Subjects.ingest(doc.tenant, doc.doc_id), msg.data,
                        headers={HEADER_MSG_ID: f"legacy:{msg.metadata.sequence.stream}"},
                    )  # fmt: skip
                    moved += 1
                await msg.ack()
    finally:
        await sub.unsubscribe()
    await js.purge_stream("DOCS", subject=LEGACY_INGEST)
    for subject in LEGACY_CHUNK_SUBJECTS:
        await js.purge_stream("CHUNKS", subject=subject)
    for stream, durable in LEGACY_DURABLES:
        try:
            await js.delete_consumer(stream, durable)
        except NotFoundError:
            pass
    log.warning("migrated %d submissions of mmrag 0.1 to per-document subjects (%d invalid ones left out); "
                "they are re-indexed now", moved, skipped)  # fmt: skip
    return moved


async def migrate_uploads(js: JetStreamContext) -> int:
    """Move every object of the shared uploads bucket into its tenant's bucket; returns how many were moved.

    An object whose name names no valid tenant (``<tenant>/...``) is left where it is, with a warning, and the
    shared bucket is then kept: nothing is deleted that was not copied first.
    """
    try:
        legacy = await js.object_store(LEGACY_UPLOADS_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return 0
    try:
        infos = await legacy.list(ignore_deletes=True)
    except NotFoundError:  # nats-py's answer for an empty bucket
        infos = []
    moved = kept = 0
    for info in infos:
        tenant = info.name.split("/", 1)[0]
        if not TOKEN.match(tenant):
            log.warning("object %r of the shared uploads bucket names no tenant: left in %s", info.name,
                        LEGACY_UPLOADS_BUCKET)  # fmt: skip
            kept += 1
            continue
        target = await ensure_uploads_bucket(js, tenant)
        try:
            copied = (await target.get_info(info.name)).digest == info.digest
        except NotFoundError:
            copied = False
        if not copied:
            # Through a temporary file: an upload may be as large as MMRAG_MAX_UPLOAD_BYTES.
            with tempfile.TemporaryFile() as spool:
                try:
                    await legacy.get(info.name, writeinto=spool)
                except NotFoundError:  # another replica moved it meanwhile
                    continue
                spool.seek(0)
                stored = await target.put(info.name, spool)
            if stored.digest != info.digest:
                raise RuntimeError(f"copy of {info.name!r} into {uploads_bucket(tenant)} has another digest: not migrated")
        await remove_object(js, LEGACY_UPLOADS_BUCKET, info.name)
        moved += 1
    if not kept:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"OBJ_{LEGACY_UPLOADS_BUCKET}")
    log.warning("moved %d objects of the shared uploads bucket into their tenants' buckets%s", moved,
                f" ({kept} left: they name no tenant)" if kept else "; the shared bucket is removed")  # fmt: skip
    return moved
