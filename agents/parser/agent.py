"""parser: `docs.ingest.<tenant>.<doc_id>` -> `chunks.parsed.g<gen>.text.<lane>.<tenant>`.

Reads the upload from the Object Store, extracts text blocks with their page and bbox, chunks them, records
the plan (pages, chunks, batches) in the progress KV, and publishes the chunks in bounded batches on the
document's lane (small documents on the interactive lane, so they never wait behind a big one).

Each submission is a *revision* of its document: the stream sequence of its docs.ingest message. A newer
submission of the same doc_id replaces the older one (fresh progress; the indexer removes the old points
once the new revision is complete); a submission older than what progress records (a redelivery after a
re-submission, or a document deleted since) is skipped. A document that cannot be parsed (encrypted,
corrupt, no text) is marked `failed` with the reason and acknowledged: a finished outcome, not a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.js.errors import NotFoundError

from agents.parser.chunking import chunk_blocks
from agents.parser.extract import DocumentRejected, TextBlock, extract_pdf, extract_text
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery, PermanentError
from bus.publish import Outgoing, publish_all
from contracts.messages import ChunksParsed, DocumentProgress, DocumentStatus, DocumentSubmitted
from contracts.topology import ConsumerDef, Lane, Subjects, ingest_consumers

log = logging.getLogger(__name__)


def extract(doc: DocumentSubmitted, data: bytes) -> tuple[int, list[TextBlock]]:
    if doc.content_type == "application/pdf":
        return extract_pdf(data)
    return extract_text(data, markdown=doc.content_type == "text/markdown")


class ParserAgent(ConsumerAgent[DocumentSubmitted]):
    name = "parser"
    model = DocumentSubmitted

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [ingest_consumers(self._ctx.generation)["parser"]]

    async def handle(self, deliveries: Sequence[Delivery[DocumentSubmitted]]) -> None:
        for delivery in deliveries:
            await self.parse(delivery)

    def lane(self, chunks: int) -> Lane:
        return "interactive" if chunks <= self._ctx.settings.interactive_max_chunks else "bulk"

    async def parse(self, delivery: Delivery[DocumentSubmitted]) -> None:
        doc, revision = delivery.payload, delivery.stream_seq
        progress = self._ctx.progress
        stale = False

        def started(current: DocumentProgress | None) -> DocumentProgress:
            nonlocal stale
            if current is not None and current.revision > revision:
                stale = True  # re-submitted or deleted since: this revision is history
                return current
            if current is not None and current.revision == revision and current.status not in (
                DocumentStatus.QUEUED, DocumentStatus.PARSING
            ):
                return current  # a redelivery after the plan was recorded: keep what is known
            return progress.new(
                doc.tenant, doc.doc_id, revision, DocumentStatus.PARSING, filename=doc.filename
            )  # fmt: skip

        await progress.update(doc.tenant, doc.doc_id, started)
        if stale:
            log.info("parser: %s revision %d was superseded (re-submitted or deleted); skipped", doc.doc_id, revision)
            return
        try:
            result = await self._ctx.uploads.get(doc.object_name)
        except NotFoundError as err:
            raise PermanentError(f"the upload of {doc.doc_id} is not in the uploads bucket (deleted?)") from err
        data = result.data or b""

        s = self._ctx.settings
        try:
            pages, blocks = await asyncio.to_thread(extract, doc, data)
            chunks = chunk_blocks(
                blocks, doc_id=doc.doc_id, tenant=doc.tenant, filename=doc.filename, max_chars=s.chunk_max_chars
            )
        except DocumentRejected as err:
            log.info("parser: %s rejected: %s", doc.doc_id, err)
            await progress.mark_failed(doc.tenant, doc.doc_id, revision, str(err))
            return

        size = s.chunks_per_message
        batches = [chunks[i : i + size] for i in range(0, len(chunks), size)]

        def planned(current: DocumentProgress | None) -> DocumentProgress | None:
            if current is None or current.revision != revision:
                return None  # replaced or deleted while we parsed
            return current.with_plan(pages=pages, chunks_total=len(chunks), batches_total=len(batches))

        after = await progress.update(doc.tenant, doc.doc_id, planned)
        if after is None or after.revision != revision:
            return
        gen = self._ctx.generation
        subject = Subjects.parsed(gen, "text", self.lane(len(chunks)), doc.tenant)
        await publish_all(
            self._ctx.js,
            (
                Outgoing(
                    subject,
                    ChunksParsed(
                        doc_id=doc.doc_id, tenant=doc.tenant, generation=gen.number, revision=revision,
                        batch_index=i, batch_count=len(batches), chunks=batch,
                    ),
                    f"{gen.token}:{doc.doc_id}:{revision}:parsed:{i}",
                    delivery.trace_headers,
                )  # fmt: skip
                for i, batch in enumerate(batches)
            ),
        )
        log.info("parser: %s -> %d pages, %d chunks, %d batches on %s", doc.doc_id, pages, len(chunks), len(batches), subject)

    async def on_give_up(self, delivery: Delivery[DocumentSubmitted], reason: str) -> None:
        doc = delivery.payload
        await self._ctx.progress.mark_failed(doc.tenant, doc.doc_id, delivery.stream_seq, f"parsing failed: {reason}")

