"""parser: `docs.ingest` -> `chunks.parsed.text`.

Reads the upload from the Object Store, extracts text blocks with their page and bbox, chunks them, records
the plan (pages, chunks, batches) in the progress KV, and publishes the chunks in bounded batches.
A document that cannot be parsed (encrypted, corrupt, no text) is marked `failed` with the reason and
acknowledged: it is a finished outcome, not a message to retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.js.errors import NotFoundError

from agents.parser.chunking import chunk_blocks
from agents.parser.extract import DocumentRejected, TextBlock, extract_pdf, extract_text
from agents.runtime.connection import publish_all
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery, PermanentError
from contracts.messages import ChunksParsed, DocumentProgress, DocumentStatus, DocumentSubmitted, utcnow
from contracts.topology import CONSUMERS, Subjects

log = logging.getLogger(__name__)


def extract(doc: DocumentSubmitted, data: bytes) -> tuple[int, list[TextBlock]]:
    if doc.content_type == "application/pdf":
        return extract_pdf(data)
    return extract_text(data, markdown=doc.content_type == "text/markdown")


class ParserAgent(ConsumerAgent[DocumentSubmitted]):
    name = "parser"
    consumer = CONSUMERS.parser
    model = DocumentSubmitted

    async def handle(self, deliveries: Sequence[Delivery[DocumentSubmitted]]) -> None:
        for delivery in deliveries:
            await self.parse(delivery.payload)

    async def parse(self, doc: DocumentSubmitted) -> None:
        progress = self._ctx.progress

        def started(current: DocumentProgress | None) -> DocumentProgress:
            if current is not None and current.status not in (DocumentStatus.QUEUED, DocumentStatus.PARSING):
                return current  # a redelivery after the plan was recorded: keep what is known
            base = current or DocumentProgress(doc_id=doc.doc_id, tenant=doc.tenant, status=DocumentStatus.QUEUED)
            return base.model_copy(
                update={"status": DocumentStatus.PARSING, "filename": doc.filename, "updated_at": utcnow()}
            )

        await progress.update(doc.doc_id, started)
        try:
            result = await self._ctx.uploads.get(doc.object_name)
        except NotFoundError as err:
            raise PermanentError(f"upload object {doc.object_name!r} is not in the uploads bucket") from err
        data = result.data or b""

        s = self._ctx.settings
        try:
            pages, blocks = await asyncio.to_thread(extract, doc, data)
            chunks = chunk_blocks(
                blocks, doc_id=doc.doc_id, tenant=doc.tenant, filename=doc.filename, max_chars=s.chunk_max_chars
            )
        except DocumentRejected as err:
            log.info("parser: %s rejected: %s", doc.doc_id, err)
            await progress.mark_failed(doc.doc_id, doc.tenant, str(err))
            return

        size = s.chunks_per_message
        batches = [chunks[i : i + size] for i in range(0, len(chunks), size)]
        await progress.update(
            doc.doc_id,
            lambda current: (current or DocumentProgress(doc_id=doc.doc_id, tenant=doc.tenant, status=DocumentStatus.PARSING)).with_plan(
                pages=pages, chunks_total=len(chunks), batches_total=len(batches)
            ),
        )  # fmt: skip
        await publish_all(
            self._ctx.js,
            (
                (
                    Subjects.CHUNKS_PARSED_TEXT,
                    ChunksParsed(
                        doc_id=doc.doc_id, tenant=doc.tenant, batch_index=i, batch_count=len(batches), chunks=batch
                    ),
                    f"{doc.doc_id}:parsed:{i}",
                )
                for i, batch in enumerate(batches)
            ),
        )
        log.info("parser: %s -> %d pages, %d chunks, %d batches", doc.doc_id, pages, len(chunks), len(batches))

    async def on_give_up(self, delivery: Delivery[DocumentSubmitted], reason: str) -> None:
        doc = delivery.payload
        await self._ctx.progress.mark_failed(doc.doc_id, doc.tenant, f"parsing failed: {reason}")
