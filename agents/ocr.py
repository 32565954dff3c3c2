"""ocr: `chunks.ocr.g<gen>.<lane>.<tenant>` -> `chunks.parsed.g<gen>.text.<lane>.<tenant>`.

Reads one raster the parser stored (a scanned page, an embedded image, an uploaded image file) with the PP-OCR
models shipped in the `rapidocr` wheel, and publishes what it read as the batch the parser reserved for it:

- a page: OCR lines in page points, grouped into paragraphs and chunked like text (`source="ocr"`), so a
  sentence of a scan is a `text` hit on its page with its bbox;
- an image: one `image` chunk (or a few, if long) whose text is the caption, the OCR text and, when the image
  has neither, the text near it (a picture with none of them still gets one chunk, `documents.NO_TEXT`, so its image vector
  makes it findable by picture); its bbox is the image's on the page and it carries the image's reference.

A raster with nothing readable yields an empty batch, which travels to the indexer like any other. A raster
whose lines OCR found but could not read (`documents.ocr.legibility`: a script the shipped models do not read,
noise) adds a warning to the document's progress record (`DocumentProgress.warnings`): it stays indexed, and
the API, the CLI and the UI show the warning. With `MMRAG_OCR_FALLBACK_LANGUAGES` (e.g. "rus"), such a raster is
read again by Tesseract with those language packs, and what it reads is kept when it is more legible. Reading is
`documents.read_page` / `documents.read_image` (the document library the parser uses too); this agent does the
I/O. It is its own agent and subject because OCR costs seconds a page and must scale apart from text parsing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import replace

from nats.js.errors import NotFoundError

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.work_pool import Priority
from agents.runtime.worker import Delivery, PermanentError
from bus.publish import Outgoing, publish_all
from contracts.messages import Chunk, ChunksParsed, DocumentProgress, OcrRequest
from contracts.topology import LANES, ConsumerDef, Subjects, ingest_consumers
from documents import ParseSettings, read_image_checked, read_page_checked
from documents.ocr import Legibility, OcrSettings, check_fallback

log = logging.getLogger(__name__)


OCR_IN_POOL = OcrSettings(threads=1)


def illegible_warning(req: OcrRequest, read: Legibility) -> str | None:
    """The document's warning when OCR found text on this page or image but could not read it (`documents.ocr`'s
    legibility test), else None. Says what to do about it."""
    if not read.illegible:
        return None
    where = f"page {req.page}" if req.kind == "page" else f"an image on page {req.page}"
    return (f"{where}: OCR found text it could not read (legible share {read.share:.2f}): its script is probably "
            f"not one the shipped OCR models read (Latin and Chinese), or the scan is too noisy; its text is not "
            f"searchable. Upload a version with a text layer")  # fmt: skip


class OcrAgent(ConsumerAgent[OcrRequest]):
    name = "ocr"
    model = OcrRequest
    per_generation = True
    needs = frozenset({Resource.WORK_POOL})

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        consumers = ingest_consumers(self._ctx.generation)
        return [consumers[f"ocr-{lane}"] for lane in LANES]

    def parse_settings(self) -> ParseSettings:
        s = self._ctx.settings
        # One inference thread per work process: the pool runs one request per core, and one thread per process
        # read a dense page with the least CPU (bench/results/ocr_models.md); all-core sessions in several
        # processes oversubscribed the cores.
        return ParseSettings(chunk_max_tokens=s.chunk_max_tokens, chunk_max_chars=s.chunk_max_chars,
                             ocr=replace(OCR_IN_POOL, fallback_languages=s.ocr_fallback_languages))  # fmt: skip

    async def start(self) -> None:
        # Fallback languages that are not installed fail the start, naming the package to install.
        await asyncio.to_thread(check_fallback, self._ctx.settings.ocr_fallback_languages)

    def concurrency(self) -> int:
        # Enough requests in hand to keep every work process busy; they take turns in the work pool.
        return self._ctx.settings.work_processes or os.cpu_count() or 1

    async def handle(self, deliveries: Sequence[Delivery[OcrRequest]]) -> None:
        for d in deliveries:
            await self.read(d)

    async def read(self, delivery: Delivery[OcrRequest]) -> None:
        req = delivery.payload
        state = await self._ctx.progress.get(req.tenant, req.doc_id)
        if state is None or state.revision != req.revision:
            log.info("ocr: dropping stale request %d of %s", req.batch_index, req.doc_id)
            return
        try:
            raster = (await (await self._ctx.uploads.store(req.tenant)).get(req.object_name)).data or b""
        except NotFoundError as err:
            raise PermanentError(f"the raster {req.object_name!r} is gone from the uploads bucket") from err
        settings, pool = self.parse_settings(), self._ctx.shared.work_pool
        gen = self._ctx.generation
        lane = delivery.msg.subject.split(".")[-2]
        # In a worker process (the models load there on first use), in its turn: the interactive lane first, a
        # document's early requests before its late ones, tenants in turn (`agents.runtime.work_pool`).
        # A page that hangs the reader is stopped after MMRAG_PAGE_TIME_BUDGET_S (`UnitTimedOut`: given up).
        budget = self._ctx.settings.page_time_budget_s or None
        async with pool.slot(Priority(lane == "interactive", req.tenant, req.batch_index)):
            if req.kind == "page":
                read = await pool.run(read_page_checked, raster, req.bbox, settings, timeout_s=budget)
            else:
                caption = req.image.caption if req.image else None
                read = await pool.run(read_image_checked, raster, caption, req.nearby_text, req.bbox, settings,
                                      timeout_s=budget)  # fmt: skip
        parsed = read.chunks
        warning = illegible_warning(req, read.legibility)
        chunks = [
            Chunk(
                chunk_id=f"{req.doc_id}-{req.first_index + k}", index=req.first_index + k, doc_id=req.doc_id,
                tenant=req.tenant, filename=req.filename, page=req.page, bbox=p.bbox, locator=req.locator,
                modality=p.modality,
                text=p.text, headings=list(req.headings), source="ocr", image=req.image,
                prev_chunk_id=f"{req.doc_id}-{req.first_index + k - 1}" if k else None,
                next_chunk_id=f"{req.doc_id}-{req.first_index + k + 1}" if k + 1 < len(parsed) else None,
            )  # fmt: skip
            for k, p in enumerate(parsed)
        ]
        # Published even when empty (nothing readable): the indexer's write of this batch may be the one that
        # completes the document, and only the indexer announces completion and removes an older revision.
        batch = ChunksParsed(doc_id=req.doc_id, tenant=req.tenant, generation=gen.number, revision=req.revision,
                             batch_index=req.batch_index, chunks=chunks)  # fmt: skip
        await publish_all(self._ctx.js, [Outgoing(
            Subjects.parsed(gen, "text", lane, req.tenant), batch,
            f"{gen.token}:{req.doc_id}:{req.revision}:parsed:{req.batch_index}", delivery.trace_headers,
        )])  # fmt: skip

        def record(current: DocumentProgress | None) -> DocumentProgress | None:
            # Recording a size never completes a document (it changes neither the batch count nor the indexed
            # batches), so the indexer's write does and announces it.
            if current is None or current.revision != req.revision:
                return None
            updated = current.with_warning(warning) if warning else current
            return updated.with_batches({req.batch_index: len(chunks)})

        await self._ctx.progress.update(req.tenant, req.doc_id, record)
        log.info("ocr: %s %s %d of %s -> %d chunks (legible share %.2f of ~%.0f characters)", req.kind,
                 req.object_name.rsplit("/", 1)[-1], req.page, req.doc_id, len(chunks), read.legibility.share,
                 read.legibility.expected)  # fmt: skip

    async def on_give_up(self, delivery: Delivery[OcrRequest], reason: str) -> None:
        req = delivery.payload
        await self._ctx.progress.mark_failed(req.tenant, req.doc_id, req.revision, f"OCR failed: {reason}")
