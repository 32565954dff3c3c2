"""Carry a data dir written by mmrag 0.1 forward, so no acknowledged document is lost by an upgrade.

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
import logging

import nats.errors
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from contracts.messages import DocumentSubmitted
from contracts.topology import HEADER_MSG_ID, Subjects

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
