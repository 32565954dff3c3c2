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

import contextlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.js.errors import NotFoundError

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.units import parse_unit
from agents.runtime.work_pool import Priority, UnitTimedOut
from agents.runtime.worker import Delivery, PermanentError
from bus.objects import remove_object
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
from contracts.topology import (
    ConsumerDef,
    Lane,
    Subjects,
    image_object,
    ingest_consumers,
    page_raster_object,
    stored_objects_object,
    uploads_bucket,
)
from documents import DocumentRejected, OcrWork, ParsedChunk, ParseSettings
from documents.filetypes import IMAGE_CONTENT_TYPES

log = logging.getLogger(__name__)

# A text file's work in pages, for its lane and its parse time budget: about what a page of prose holds.
TEXT_BYTES_PER_PAGE = 3000
# OCR's work in pages of text, for a document's lane: reading a scanned page takes 2-8 s of a core, a text page
# (parse + embed its ~3 chunks) about 0.1-0.3 s, so a scanned page counts as 10 pages (a conservative share) and
# an image's text (a screenshot, a figure: fewer lines) as 2. Without it a 6-page scan is "6 pages": it takes the
# interactive lane, its pages fill the work pool's slots, including the one kept for interactive work, and a
# small text upload waits for a whole OCR page (bench/ingest.py saw 20-60 s).
OCR_PAGE_WORK = 10
OCR_IMAGE_WORK = 2


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
    listed: set[str] = field(default_factory=set)  # names in the document's list of stored objects
    warnings: list[str] = field(default_factory=list)  # the pages' warnings (a sheet cut), recorded with the count

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
            filename=doc.filename, page=parsed.page, bbox=parsed.bbox, locator=parsed.locator, modality=parsed.modality,
            text=parsed.text,
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

    def object_of(self, work: OcrWork) -> str:
        """Where the work's raster is stored."""
        doc = self.doc
        if work.kind == "page":
            return page_raster_object(doc.tenant, doc.doc_id, work.page)
        return image_object(doc.tenant, doc.doc_id, work.digest or "original")

    async def list_objects(self, works: Sequence[OcrWork]) -> None:
        """Add the objects these works will store to the document's list of stored objects (`stored_objects_object`),
        before they are stored, so a delete finds every one. The list keeps the names of earlier revisions too."""
        names = {self.object_of(w) for w in works} - self.listed
        if not names:
            return
        uploads = await self.agent._ctx.uploads.store(self.doc.tenant)
        manifest = stored_objects_object(self.doc.tenant, self.doc.doc_id)
        if not self.listed:  # first write of this parse: start from what earlier revisions (or deliveries) listed
            with contextlib.suppress(NotFoundError):
                self.listed |= set(json.loads((await uploads.get(manifest)).data or b"[]"))
        self.listed |= names
        await uploads.put(manifest, json.dumps(sorted(self.listed)).encode())

    async def ocr(self, work: OcrWork) -> None:
        """Store the work's raster and publish its request, which owns the next batch index."""
        doc = self.doc
        image = None
        name = self.object_of(work)
        if work.kind != "page":
            image = ImageRef(object_name=name, mime=work.mime or doc.content_type, width=work.width,
                             height=work.height, caption=work.caption)  # fmt: skip
        await (await self.agent._ctx.uploads.store(doc.tenant)).put(name, work.raster)
        index = self.next_batch
        self.next_batch += 1
        self.ocr_requests += 1
        gen = self.agent._ctx.generation
        request = OcrRequest(
            doc_id=doc.doc_id, tenant=doc.tenant, generation=gen.number, revision=self.delivery.stream_seq,
            batch_index=index, first_index=OCR_INDEX_BASE + index * OCR_INDEX_STRIDE, filename=doc.filename,
            kind=work.kind, page=work.page, object_name=name, bbox=work.bbox, headings=list(work.headings),
            image=image, nearby_text=work.nearby_text, locator=work.locator,
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


def text_pages(size: int) -> int:
    """The work of a text or office file of `size` bytes, in pages of `TEXT_BYTES_PER_PAGE`."""
    return math.ceil(size / TEXT_BYTES_PER_PAGE)


class ParserAgent(ConsumerAgent[DocumentSubmitted]):
    name = "parser"
    model = DocumentSubmitted
    per_generation = True
    needs = frozenset({Resource.WORK_POOL})

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [ingest_consumers(self._ctx.generation)["parser"]]

    def concurrency(self) -> int:
        return self._ctx.settings.parser_documents_in_flight

    async def handle(self, deliveries: Sequence[Delivery[DocumentSubmitted]]) -> None:
        for delivery in deliveries:
            await self.parse(delivery)

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
            return progress.new(doc.tenant, doc.doc_id, revision, DocumentStatus.PARSING, filename=doc.filename,
                                collections=doc.collections, size=doc.size, content_type=doc.content_type,
                                **doc.origin())  # fmt: skip

        await progress.update(doc.tenant, doc.doc_id, started)
        if stale:
            log.info("parser: %s revision %d was superseded (re-submitted or deleted); skipped", doc.doc_id, revision)
            return
        try:
            emitter = await self._parse(delivery)
        except DocumentRejected as err:
            log.info("parser: %s rejected: %s", doc.doc_id, err)
            await progress.mark_failed(doc.tenant, doc.doc_id, revision, str(err))
            return
        if emitter is None:
            return
        # Sizes, batch count and pages first, then the held-back last message (see `_Emitter`): the count is
        # recorded before the last batch can be indexed, so this write never completes the document.
        await self._record(progress, doc, revision, emitter.batch_sizes, batches_total=emitter.next_batch,
                           pages=emitter.pages, warnings=emitter.warnings)  # fmt: skip
        await emitter.release()
        log.info("parser: %s -> %d chunks in %d batches, %d OCR requests (%s lane)", doc.doc_id, emitter.chunks,
                 len(emitter.batch_sizes), emitter.ocr_requests, emitter.lane)  # fmt: skip

    async def _record(self, progress: ProgressStore, doc: DocumentSubmitted, revision: int, sizes: dict[int, int],
                      *, batches_total: int | None = None, pages: tuple[int, int] | None = None,
                      warnings: Sequence[str] = ()) -> None:  # fmt: skip
        def change(current: DocumentProgress | None) -> DocumentProgress | None:
            if current is None or current.revision != revision:
                return None  # replaced or deleted while we parsed
            for warning in warnings:
                current = current.with_warning(warning)
            updated = current.with_batches(dict(sizes), batches_total=batches_total)
            return updated.with_pages(pages=pages[0], pages_parsed=pages[1]) if pages else updated

        await progress.update(doc.tenant, doc.doc_id, change)

    def parse_settings(self) -> ParseSettings:
        s = self._ctx.settings
        return ParseSettings(chunk_max_tokens=s.chunk_max_tokens, chunk_max_chars=s.chunk_max_chars,
                             sheet_max_cells=s.sheet_max_cells)  # fmt: skip

    def lane(self, doc: DocumentSubmitted, pages: int, ocr: Sequence[OcrWork] = ()) -> Lane:
        """The lane of a document by the work it costs: a PDF's pages, a text's size in pages of
        `TEXT_BYTES_PER_PAGE` (a 50 MB text is no "1-page" document), plus the OCR work known so far (``ocr``:
        the first unit's; `OCR_PAGE_WORK` a scanned page, `OCR_IMAGE_WORK` an image); an image file is one
        small unit."""
        if doc.content_type in IMAGE_CONTENT_TYPES:
            return "interactive"
        work = pages if doc.content_type == "application/pdf" else text_pages(doc.size)
        work += sum(OCR_PAGE_WORK if w.kind == "page" else OCR_IMAGE_WORK for w in ocr)
        return "interactive" if work <= self._ctx.settings.interactive_max_pages else "bulk"

    async def _current(self, doc: DocumentSubmitted, revision: int) -> bool:
        """Is this revision still the document's (not re-submitted or deleted since)?"""
        state = await self._ctx.progress.get(doc.tenant, doc.doc_id)
        return state is not None and state.revision == revision

    async def _read(self, doc: DocumentSubmitted) -> bytes:
        try:
            result = await (await self._ctx.uploads.store(doc.tenant)).get(doc.object_name)
        except NotFoundError as err:
            raise PermanentError(f"the upload of {doc.doc_id} is not in the uploads bucket (deleted?)") from err
        return result.data or b""

    async def _parse(self, delivery: Delivery[DocumentSubmitted]) -> _Emitter | None:
        """Publish the document's chunks and OCR requests unit by unit (`parse_unit_pages` pages of a PDF, a
        text or image file at once), each unit parsed in a worker process in its turn (`WorkPool`); None if the
        revision was superseded meanwhile; DocumentRejected if it has nothing."""
        doc, revision = delivery.payload, delivery.stream_seq
        pool, unit_pages = self._ctx.shared.work_pool, self._ctx.settings.parse_unit_pages
        pdf = doc.content_type == "application/pdf"  # a text or image file is parsed in one unit
        # Before the page count is known, a PDF's first unit is small (unit_pages at most); a text's cost is its size.
        interactive = pdf or self.lane(doc, 1) == "interactive"
        emitter: _Emitter | None = None
        pages: int | None = None
        start = turn = parsed_pages = 0
        while pages is None or start < pages:
            async with pool.slot(Priority(interactive, doc.tenant, turn)):
                if not await self._current(doc, revision):  # deleted or re-submitted while it waited: no cost
                    log.info("parser: %s revision %d superseded while queued; stopped", doc.doc_id, revision)
                    await self._forget_if_deleted(doc, emitter)
                    return None
                data = await self._read(doc)
                per_page = self._ctx.settings.page_time_budget_s
                budget = per_page * (unit_pages if pdf else max(1, text_pages(len(data))))
                try:
                    pages, unit = await pool.run(parse_unit, data, doc.content_type, self.parse_settings(), start,
                                                 unit_pages, pages, timeout_s=budget or None)  # fmt: skip
                except UnitTimedOut as err:
                    where = f"pages {start + 1}-{start + unit_pages}" if pdf else "the file"
                    raise DocumentRejected(
                        f"too slow to read: {where} took longer than {budget:.0f} s ({per_page:.0f} s a page, "
                        "MMRAG_PAGE_TIME_BUDGET_S); the file may be damaged or built to hang readers: check that it "
                        "opens quickly in a viewer, or raise the budget"
                    ) from err
                del data
            if emitter is None:
                if pages > (limit := self._ctx.settings.max_document_pages):
                    raise DocumentRejected(
                        f"too many pages: the document has {pages:,} pages, more than the {limit:,} one document may "
                        "have (MMRAG_MAX_DOCUMENT_PAGES); split it into smaller files, or raise the limit"
                    )
                emitter = _Emitter(self, delivery, self.lane(doc, pages, [w for page in unit for w in page.ocr]))
                interactive = emitter.lane == "interactive"
                await self._record(self._ctx.progress, doc, revision, {}, pages=(pages, 0 if pdf else pages))
            await emitter.list_objects([work for page in unit for work in page.ocr])
            for page in unit:
                emitter.warnings += page.warnings
                for chunk in page.chunks:
                    await emitter.add(chunk)
                for work in page.ocr:
                    await emitter.ocr(work)
            parsed_pages += len(unit)
            start = start + unit_pages if pdf else pages
            turn += 1
            if start < pages:
                await self._record(self._ctx.progress, doc, revision, emitter.batch_sizes, pages=(pages, parsed_pages))
        assert emitter is not None and pages is not None
        if not await self._current(doc, revision):  # deleted while its last unit was parsed
            await self._forget_if_deleted(doc, emitter)
            return None
        await emitter.finish()
        emitter.pages = (pages, parsed_pages)  # recorded by parse() with the batch count
        if emitter.next_batch == 0:
            await self._record(self._ctx.progress, doc, revision, {}, pages=(pages, parsed_pages))
            raise DocumentRejected(
                f"no extractable text: the document has {pages} page(s) but no text, table or image to index"
            )
        return emitter

    async def _forget_if_deleted(self, doc: DocumentSubmitted, emitter: _Emitter | None) -> None:
        """A delete that ran while this parse stored objects could not list them all: remove them now."""
        state = await self._ctx.progress.get(doc.tenant, doc.doc_id)
        if emitter is None or not emitter.listed or state is None or state.status is not DocumentStatus.DELETED:
            return
        for name in [*sorted(emitter.listed), stored_objects_object(doc.tenant, doc.doc_id)]:
            await remove_object(self._ctx.js, uploads_bucket(doc.tenant), name)

    async def on_give_up(self, delivery: Delivery[DocumentSubmitted], reason: str) -> None:
        doc = delivery.payload
        await self._ctx.progress.mark_failed(doc.tenant, doc.doc_id, delivery.stream_seq, f"parsing failed: {reason}")
