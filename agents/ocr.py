"""ocr: `chunks.ocr.g<gen>.<lane>.<tenant>` -> `chunks.parsed.g<gen>.text.<lane>.<tenant>`.

Reads one raster the parser stored (a scanned page, an embedded image, an uploaded image file) with the PP-OCR
models shipped in the `rapidocr` wheel, and publishes what it read as the batch the parser reserved for it:

- a page: OCR lines in page points, grouped into paragraphs and chunked like text (`source="ocr"`), so a
  sentence of a scan is a `text` hit on its page with its bbox;
- an image: one `image` chunk (or a few, if long) whose text is the caption, the OCR text and, when the image
  has neither, the text near it (a picture with none of them still gets one chunk, `NO_TEXT`, so its image vector
  makes it findable by picture); its bbox is the image's on the page and it carries the image's reference.

A raster with nothing readable yields an empty batch, which travels to the indexer like any other. This agent lives in
the parser package because it shares the parser's document library (chunking, OCR); it is its own agent and
subject because OCR costs seconds a page and must scale apart from text parsing.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence

from nats.js.errors import NotFoundError
from PIL import Image

from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery, PermanentError
from bus.publish import Outgoing, publish_all
from contracts.messages import Chunk, ChunksParsed, DocumentProgress, OcrRequest
from contracts.topology import LANES, ConsumerDef, Subjects, ingest_consumers
from documents.chunks import MAX_TOKENS, ParsedChunk, page_chunks, split_to_tokens, wordpiece_counter
from documents.images import ImageRejected
from documents.layout import PageBlock, PageContent
from documents.ocr import DEFAULT_OCR, lines_to_paragraphs, ocr_image, ocr_pixels

log = logging.getLogger(__name__)


def read_page(raster: bytes, bbox: tuple[float, float, float, float], max_tokens: int = MAX_TOKENS) -> list[ParsedChunk]:
    """OCR a rendered page; chunks in page points."""
    with Image.open(io.BytesIO(raster)) as img:
        img.load()
        scale = (bbox[2] - bbox[0]) / img.width
        lines = ocr_pixels(img, scale=scale, offset=(bbox[0], bbox[1]), settings=DEFAULT_OCR)
    # Shapes and noise read as stray symbols ("=", "|"): a line without two letters or digits is not text.
    lines = [line for line in lines if sum(ch.isalnum() for ch in line.text) >= 2]
    blocks = tuple(PageBlock(1, box, text, "text", "ocr") for box, text in lines_to_paragraphs(lines))
    content = PageContent(page=1, width=bbox[2], height=bbox[3], blocks=blocks, tables=(), images=(),
                          skipped_images=(), needs_ocr=False)  # fmt: skip
    return list(page_chunks(content, [], max_tokens, wordpiece_counter()))


# The text of an image chunk whose image holds no words and has no caption or nearby text (what a hit shows).
NO_TEXT = "(a picture with no text)"


def read_image(
    raster: bytes, caption: str | None, nearby: str | None, bbox, max_tokens: int = MAX_TOKENS
) -> list[ParsedChunk]:
    """The text an image chunk carries: caption + OCR text, or the nearby text when it has neither."""
    readable = True
    try:
        lines = ocr_image(raster, settings=DEFAULT_OCR)
        ocr_text = "\n".join(line.text for line in lines if sum(ch.isalnum() for ch in line.text) >= 2)
    except ImageRejected as err:
        log.info("ocr: image not readable (%s); indexing its caption only", err)
        ocr_text, readable = "", False
    text = "\n".join(t for t in (caption, ocr_text) if t) or (nearby or "")
    if not text.strip():
        # A readable picture with no words around or in it is still found by its image vector (the embedder's:
        # CLIP, or its perceptual hash): it gets a chunk saying so; an unreadable one has nothing to index.
        return [ParsedChunk(1, bbox, NO_TEXT, "image")] if readable else []
    count = wordpiece_counter()
    return [ParsedChunk(1, bbox, piece, "image") for piece in split_to_tokens(text, max_tokens, count)]


class OcrAgent(ConsumerAgent[OcrRequest]):
    name = "ocr"
    model = OcrRequest
    per_generation = True

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        consumers = ingest_consumers(self._ctx.generation)
        return [consumers[f"ocr-{lane}"] for lane in LANES]

    async def start(self) -> None:
        from documents.ocr import _engine

        await asyncio.to_thread(_engine, DEFAULT_OCR)  # load the three ONNX sessions before work arrives

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
            raster = (await self._ctx.uploads.get(req.object_name)).data or b""
        except NotFoundError as err:
            raise PermanentError(f"the raster {req.object_name!r} is gone from the uploads bucket") from err
        if req.kind == "page":
            parsed = await asyncio.to_thread(read_page, raster, req.bbox, self._ctx.settings.chunk_max_tokens)
        else:
            caption = req.image.caption if req.image else None
            parsed = await asyncio.to_thread(read_image, raster, caption, req.nearby_text, req.bbox,
                                            self._ctx.settings.chunk_max_tokens)
        chunks = [
            Chunk(
                chunk_id=f"{req.doc_id}-{req.first_index + k}", index=req.first_index + k, doc_id=req.doc_id,
                tenant=req.tenant, filename=req.filename, page=req.page, bbox=p.bbox, modality=p.modality,
                text=p.text, headings=list(req.headings), source="ocr", image=req.image,
                prev_chunk_id=f"{req.doc_id}-{req.first_index + k - 1}" if k else None,
                next_chunk_id=f"{req.doc_id}-{req.first_index + k + 1}" if k + 1 < len(parsed) else None,
            )  # fmt: skip
            for k, p in enumerate(parsed)
        ]
        gen = self._ctx.generation
        lane = delivery.msg.subject.split(".")[-2]
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
            return current.with_batches({req.batch_index: len(chunks)})

        await self._ctx.progress.update(req.tenant, req.doc_id, record)
        log.info("ocr: %s %s %d of %s -> %d chunks", req.kind, req.object_name.rsplit("/", 1)[-1], req.page,
                 req.doc_id, len(chunks))  # fmt: skip

    async def on_give_up(self, delivery: Delivery[OcrRequest], reason: str) -> None:
        req = delivery.payload
        await self._ctx.progress.mark_failed(req.tenant, req.doc_id, req.revision, f"OCR failed: {reason}")
