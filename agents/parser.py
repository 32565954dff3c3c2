"""parser: `docs.ingest.<tenant>.<doc_id>` -> `chunks.parsed.g<gen>.text.<lane>.<tenant>` and `chunks.ocr...`.

Reads the upload from the Object Store and walks it page by page with `documents.parse` (a 1,000-page PDF never
holds more than one page's content and one batch of chunks): text blocks with their headings as context,
tables (markdown + cells, a row never split), images (stored in the Object Store with page, bbox and size).
Chunks go out in bounded batches on the document's lane as they are made. What needs OCR — a scanned page,
the text inside an image, an uploaded image file — goes to the OCR subject as one request per page or image,
each owning one batch of the document, so OCR scales apart and never holds back text.

Each submission is a *revision* of its document: the stream sequence of its docs.ingest message. A newer
submission of the same doc_id replaces the older one (fresh progress; the indexer removes the old points
once the new revision is complete); a submission older than what progress records (a redelivery after a
re-submission, or a document deleted since) is skipped. A document that cannot be parsed (encrypted,
corrupt, no content) is marked `failed` with the reason and acknowledged: a finished outcome, not a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.js.errors import NotFoundError

from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery, PermanentError
from bus.progress import ProgressStore
from bus.publish import Outgoing, publish_all
from contracts.messages import (
    Chunk,
    ChunksParsed,
    DocumentProgress,
    DocumentStatus,
    DocumentSubmitted,
    ImageRef,
    OcrRequest,
    TableData,
    utcnow,
)
from contracts.topology import ConsumerDef, Lane, Subjects, ingest_consumers, object_name
from documents import DocumentRejected, OcrWork, ParsedChunk, ParseSettings, parse
from documents.filetypes import IMAGE_CONTENT_TYPES

log = logging.getLogger(__name__)

PROGRESS_EVERY_PAGES = 25


def page_object(tenant: str, doc_id: str, page: int) -> str:
    return f"{object_name(tenant, doc_id)}/pages/{page}.png"


def image_object(tenant: str, doc_id: str, digest: str) -> str:
    return f"{object_name(tenant, doc_id)}/images/{digest}"


@dataclass
class _Emitter:
    """Turns a document's chunks into batches and OCR requests, publishing as it goes; numbers batches.

    Invariant: the LAST outgoing message (batch or OCR request) is held back until `release()`, which the
    parser calls only after recording `batches_total`. So the last batch can be indexed only once the total is
    known, and the write that completes the document is always the indexer's (which then publishes
    `docs.indexed` and removes older revisions), never the parser's batch count.
    """

    agent: ParserAgent
    delivery: Delivery[DocumentSubmitted]
    lane: Lane
    pending: list[Chunk] = field(default_factory=list)
    held: ParsedChunk | None = None
    held_page_index: int = 0
    next_index: int = 0
    next_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    ocr_requests: int = 0
    chunks: int = 0
    pages: tuple[int, int] | None = None  # (pages, pages parsed), recorded with the batch count
    outgoing: Outgoing | None = None  # the message held back (see the invariant above)

    @property
    def doc(self) -> DocumentSubmitted:
        return self.delivery.payload

    def _chunk(self, parsed: ParsedChunk, index: int, *, last: bool) -> Chunk:
        doc = self.doc
        table = None
        if parsed.table is not None and parsed.table_id is not None:
            table = TableData(table_id=parsed.table_id, group_id=parsed.table_group_id or parsed.table_id,
                              header=list(parsed.table.header), rows=[list(r) for r in parsed.table.rows])  # fmt: skip
        return Chunk(
            chunk_id=f"{doc.doc_id}-{index}", index=index, doc_id=doc.doc_id, tenant=doc.tenant,
            filename=doc.filename, page=parsed.page, bbox=parsed.bbox, modality=parsed.modality, text=parsed.text,
            headings=list(parsed.headings), table=table,
            prev_chunk_id=f"{doc.doc_id}-{index - 1}" if index > 0 else None,
            next_chunk_id=None if last else f"{doc.doc_id}-{index + 1}",
        )  # fmt: skip

    async def add(self, parsed: ParsedChunk) -> None:
        """Chunks are held back by one, so the last one knows it has no next neighbour."""
        if self.held is not None:
            self.pending.append(self._chunk(self.held, self.next_index, last=False))
            self.next_index += 1
            if len(self.pending) >= self.agent._ctx.settings.chunks_per_message:
                await self._flush()
        self.held = parsed

    async def _flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        index = self.next_batch
        self.next_batch += 1
        self.batch_sizes[index] = len(batch)
        self.chunks += len(batch)
        doc, gen = self.doc, self.agent._ctx.generation
        message = ChunksParsed(doc_id=doc.doc_id, tenant=doc.tenant, generation=gen.number,
                               revision=self.delivery.stream_seq, batch_index=index, chunks=batch)  # fmt: skip
        await self._send(Outgoing(
            Subjects.parsed(gen, "text", self.lane, doc.tenant), message,
            f"{gen.token}:{doc.doc_id}:{self.delivery.stream_seq}:parsed:{index}", self.delivery.trace_headers,
        ))  # fmt: skip

    async def _send(self, outgoing: Outgoing) -> None:
        """Publish the message held so far and hold this one: the last one waits for `release()`."""
        held, self.outgoing = self.outgoing, outgoing
        if held is not None:
            await publish_all(self.agent._ctx.js, [held])

    async def release(self) -> None:
        """Publish the held-back last message; call only once `batches_total` is recorded."""
        held, self.outgoing = self.outgoing, None
        if held is not None:
            await publish_all(self.agent._ctx.js, [held])

    async def ocr(self, work: OcrWork) -> None:
        """Store the work's raster and publish its request, which owns the next batch index."""
        doc = self.doc
        image = None
        if work.kind == "page":
            name = page_object(doc.tenant, doc.doc_id, work.page)
        else:
            name = image_object(doc.tenant, doc.doc_id, work.digest or "original")
            image = ImageRef(object_name=name, mime=work.mime or doc.content_type, width=work.width,
                             height=work.height, caption=work.caption)  # fmt: skip
        await self.agent._ctx.uploads.put(name, work.raster)
        index = self.next_batch
        self.next_batch += 1
        self.ocr_requests += 1
        gen = self.agent._ctx.generation
        request = OcrRequest(
            doc_id=doc.doc_id, tenant=doc.tenant, generation=gen.number, revision=self.delivery.stream_seq,
            batch_index=index, first_index=OCR_INDEX_BASE + index * OCR_INDEX_STRIDE, filename=doc.filename,
            kind=work.kind, page=work.page, object_name=name, bbox=work.bbox, headings=list(work.headings),
            image=image, nearby_text=work.nearby_text,
        )  # fmt: skip
        await self._send(Outgoing(
            Subjects.ocr(gen, self.lane, doc.tenant), request,
            f"{gen.token}:{doc.doc_id}:{self.delivery.stream_seq}:ocr:{index}", self.delivery.trace_headers,
        ))  # fmt: skip

    async def finish(self) -> None:
        if self.held is not None:
            self.pending.append(self._chunk(self.held, self.next_index, last=True))
            self.next_index += 1
            self.held = None
        await self._flush()


# OCR chunks are numbered apart from the text chunks (their count is known only once OCR ran): request b's
# chunks take indices OCR_INDEX_BASE + b * OCR_INDEX_STRIDE + k.
OCR_INDEX_BASE = 10_000_000
OCR_INDEX_STRIDE = 10_000


class ParserAgent(ConsumerAgent[DocumentSubmitted]):
    name = "parser"
    model = DocumentSubmitted
    per_generation = True

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [ingest_consumers(self._ctx.generation)["parser"]]

    async def handle(self, deliveries: Sequence[Delivery[DocumentSubmitted]]) -> None:
        for delivery in deliveries:
            await self.parse(delivery)

    def lane(self, pages: int) -> Lane:
        return "interactive" if pages <= self._ctx.settings.interactive_max_pages else "bulk"

    async def parse(self, delivery: Delivery[DocumentSubmitted]) -> None:
        doc, revision = delivery.payload, delivery.stream_seq
        progress = self._ctx.progress
        stale = False

        def started(current: DocumentProgress | None) -> DocumentProgress | None:
            nonlocal stale
            if current is not None and current.revision > revision:
                stale = True  # re-submitted or deleted since: this revision is history
                return None
            if current is not None and current.revision == revision:
                # This revision's record is kept whatever its status: a redelivery parses again and its msg ids
                # dedupe, so the batches already indexed (recorded nowhere else) must stay recorded.
                if current.status is not DocumentStatus.QUEUED:
                    return None
                return current.model_copy(update={"status": DocumentStatus.PARSING, "updated_at": utcnow()})
            return progress.new(doc.tenant, doc.doc_id, revision, DocumentStatus.PARSING, filename=doc.filename)

        await progress.update(doc.tenant, doc.doc_id, started)
        if stale:
            log.info("parser: %s revision %d was superseded (re-submitted or deleted); skipped", doc.doc_id, revision)
            return
        try:
            result = await self._ctx.uploads.get(doc.object_name)
        except NotFoundError as err:
            raise PermanentError(f"the upload of {doc.doc_id} is not in the uploads bucket (deleted?)") from err
        data = result.data or b""
        try:
            emitter = await self._parse(delivery, data)
        except DocumentRejected as err:
            log.info("parser: %s rejected: %s", doc.doc_id, err)
            await progress.mark_failed(doc.tenant, doc.doc_id, revision, str(err))
            return
        # Sizes, batch count and pages first, then the held-back last message (see `_Emitter`): the count is
        # recorded before the last batch can be indexed, so this write never completes the document.
        await self._record(progress, doc, revision, emitter.batch_sizes, batches_total=emitter.next_batch,
                           pages=emitter.pages)  # fmt: skip
        await emitter.release()
        log.info("parser: %s -> %d chunks in %d batches, %d OCR requests (%s lane)", doc.doc_id, emitter.chunks,
                 len(emitter.batch_sizes), emitter.ocr_requests, emitter.lane)  # fmt: skip

    async def _record(self, progress: ProgressStore, doc: DocumentSubmitted, revision: int, sizes: dict[int, int],
                      *, batches_total: int | None = None, pages: tuple[int, int] | None = None) -> None:  # fmt: skip
        def change(current: DocumentProgress | None) -> DocumentProgress | None:
            if current is None or current.revision != revision:
                return None  # replaced or deleted while we parsed
            updated = current.with_batches(dict(sizes), batches_total=batches_total)
            return updated.with_pages(pages=pages[0], pages_parsed=pages[1]) if pages else updated

        await progress.update(doc.tenant, doc.doc_id, change)

    def parse_settings(self) -> ParseSettings:
        s = self._ctx.settings
        return ParseSettings(chunk_max_tokens=s.chunk_max_tokens, chunk_max_chars=s.chunk_max_chars)

    async def _parse(self, delivery: Delivery[DocumentSubmitted], data: bytes) -> _Emitter:
        """Publish the document's chunks and OCR requests page by page; DocumentRejected if it has nothing."""
        doc, revision = delivery.payload, delivery.stream_seq
        parsed = await asyncio.to_thread(parse, data, doc.content_type, self.parse_settings())
        try:
            pages = parsed.page_count
            image = doc.content_type in IMAGE_CONTENT_TYPES
            emitter = _Emitter(self, delivery, "interactive" if image else self.lane(pages))
            pdf = doc.content_type == "application/pdf"  # a text or image file is parsed in one step
            await self._record(self._ctx.progress, doc, revision, {}, pages=(pages, 0 if pdf else pages))
            parsed_pages = 0
            contents = iter(parsed)
            while (page := await asyncio.to_thread(next, contents, None)) is not None:
                for chunk in page.chunks:
                    await emitter.add(chunk)
                for work in page.ocr:
                    await emitter.ocr(work)
                parsed_pages += 1
                if parsed_pages % PROGRESS_EVERY_PAGES == 0:
                    await self._record(self._ctx.progress, doc, revision, emitter.batch_sizes, pages=(pages, parsed_pages))
            await emitter.finish()
            emitter.pages = (pages, parsed_pages)  # recorded by parse() with the batch count
            if emitter.next_batch == 0:
                await self._record(self._ctx.progress, doc, revision, {}, pages=(pages, parsed_pages))
                raise DocumentRejected(
                    f"no extractable text: the document has {pages} page(s) but no text, table or image to index"
                )
            return emitter
        finally:
            parsed.close()

    async def on_give_up(self, delivery: Delivery[DocumentSubmitted], reason: str) -> None:
        doc = delivery.payload
        await self._ctx.progress.mark_failed(doc.tenant, doc.doc_id, delivery.stream_seq, f"parsing failed: {reason}")
