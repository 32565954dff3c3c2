"""The parser agent on a real nats-server: what it publishes from `documents.parse` (chunks with their table
cells, chunks within MMRAG_CHUNK_MAX_CHARS, OCR requests with their stored rasters) and what it records."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from agents.parser import ParserAgent
from agents.runtime.resources import AgentContext, Resource, SharedResources
from agents.runtime.worker import Delivery
from agents.settings import AgentSettings
from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import ChunksParsed, DocumentStatus, DocumentSubmitted, OcrRequest
from bus.uploads import UploadBuckets
from contracts.topology import CHUNKS_STREAM, DOCS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects, object_name
from tests.engine import NatsServer
from tests.factories import make_pdf, make_scanned_pdf, make_table_pdf, synthetic_pages

GEN = IndexGeneration(1)
MAX_CHARS = 150
SHEET_MAX_CELLS = 60


@pytest.fixture
async def parser(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ParserAgent]:
    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path, chunk_max_chars=MAX_CHARS,
                             sheet_max_cells=SHEET_MAX_CELLS)  # fmt: skip
    shared = SharedResources(settings)
    await shared.load({Resource.WORK_POOL})  # the parser parses in worker processes
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_topology(js, [GEN])
    ctx = AgentContext(
        nc=nc, js=js, settings=settings, generation=GEN, progress=ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN),
        uploads=UploadBuckets(js), shared=shared,
    )  # fmt: skip
    yield ParserAgent(ctx)
    await nc.close()
    shared.close()


async def _parsed(parser: ParserAgent, data: bytes, content_type: str = "application/pdf",
                  filename: str = "doc.pdf", tenant: str | None = None) -> tuple[str, list[ChunksParsed], list[OcrRequest]]:  # fmt: skip
    """Submit a document (a PDF unless said) for `tenant` (default: a new one), run the parser on its docs.ingest
    message, and read back what it published."""
    js, tenant, doc_id = parser._ctx.js, tenant or f"t{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await (await parser._ctx.uploads.ensure(tenant)).put(object_name(tenant, doc_id), data)
    submitted = DocumentSubmitted(doc_id=doc_id, tenant=tenant, filename=filename, content_type=content_type,
                                  object_name=object_name(tenant, doc_id), size=len(data))  # fmt: skip
    await js.publish(Subjects.ingest(tenant, doc_id), submitted.model_dump_json().encode())
    sub = await js.pull_subscribe(Subjects.ingest(tenant, doc_id), durable=None, stream=DOCS_STREAM.name)
    (msg,) = await sub.fetch(1, timeout=10)
    await parser.parse(Delivery(msg=msg, payload=submitted))
    out = await js.pull_subscribe(f"chunks.*.{GEN.token}.>", durable=None, stream=CHUNKS_STREAM.name)
    batches, requests = [], []
    try:
        fetched = await out.fetch(100, timeout=2)
    except nats.errors.TimeoutError:  # nothing was published
        fetched = []
    for m in fetched:
        if m.subject.startswith("chunks.ocr.") and m.subject.endswith(tenant):
            requests.append(OcrRequest.model_validate_json(m.data))
        elif m.subject.endswith(tenant):
            batches.append(ChunksParsed.model_validate_json(m.data))
    return doc_id, batches, requests


async def test_table_cells_reach_the_published_chunk_as_data(parser: ParserAgent) -> None:
    _, batches, _ = await _parsed(parser, make_table_pdf([["Part", "Fits"], ["Adapter", "M8|M10"]]))

    [table] = [c for b in batches for c in b.chunks if c.modality == "table"]
    assert table.table is not None and table.table.table_id == "p1-t0"
    assert (table.table.header, table.table.rows) == (["Part", "Fits"], [["Adapter", "M8|M10"]])


async def test_published_chunks_respect_mmrag_chunk_max_chars_and_progress_is_recorded(parser: ParserAgent) -> None:
    doc_id, batches, requests = await _parsed(parser, make_pdf(synthetic_pages(1, 2)))

    chunks = [c for b in batches for c in b.chunks]
    assert requests == [] and len(chunks) > 4 and max(len(c.text) for c in chunks) <= MAX_CHARS
    assert [c.index for c in chunks] == list(range(len(chunks)))  # ids and links as before
    assert [c.chunk_id for c in chunks] == [f"{doc_id}-{i}" for i in range(len(chunks))]
    assert chunks[0].prev_chunk_id is None and chunks[-1].next_chunk_id is None
    state = await parser._ctx.progress.get(batches[0].tenant, doc_id)
    assert state is not None and state.status is DocumentStatus.EMBEDDING  # parsed; nothing indexed here
    assert (state.pages, state.pages_parsed, state.batches_total) == (2, 2, len(batches))
    assert state.batch_chunks == {b.batch_index: len(b.chunks) for b in batches}


async def test_a_scanned_page_becomes_an_ocr_request_with_its_raster_stored(parser: ParserAgent) -> None:
    doc_id, batches, [request] = await _parsed(parser, make_scanned_pdf())

    assert batches == [] and (request.kind, request.page, request.batch_index) == ("page", 1, 0)
    assert request.first_index == 10_000_000 and request.object_name.endswith(f"{doc_id}/pages/1.png")
    raster = (await (await parser._ctx.uploads.store(request.tenant)).get(request.object_name)).data
    assert raster is not None and raster[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_workbook_cut_at_the_cell_limit_is_a_warning_on_its_progress(parser: ParserAgent) -> None:
    """MMRAG_SHEET_MAX_CELLS reaches the reader in the work process, and the cut reaches the document's record."""
    from documents.filetypes import XLSX
    from tests.office_files import make_xlsx

    rows = [("key", "value")] + [(f"k{i}", f"v{i}") for i in range(1, 100)]
    doc_id, batches, _ = await _parsed(parser, make_xlsx({"Big": rows}), XLSX, "big.xlsx")
    chunks = [c for b in batches for c in b.chunks]
    assert chunks and "k29" in chunks[-1].text and "k30" not in " ".join(c.text for c in chunks)  # 30 rows of 2
    assert chunks[-1].locator is not None and "cut here" in chunks[-1].locator
    record = await parser._ctx.progress.get(batches[0].tenant, doc_id)
    assert record is not None and record.warnings == [
        f"sheet 'Big' was cut after row 30: a workbook or CSV is read up to {SHEET_MAX_CELLS} cells "
        "(MMRAG_SHEET_MAX_CELLS); split it, or raise the limit, to index the rest"
    ]


def _with_settings(parser: ParserAgent, **settings: object) -> ParserAgent:
    """Another parser on the same connection, progress and work pool, with `settings` changed."""
    return ParserAgent(dataclasses.replace(parser._ctx, settings=parser._ctx.settings.model_copy(update=settings)))


async def _failure(parser: ParserAgent, data: bytes) -> str:
    """The error of a PDF the parser fails: nothing of it published, its record `failed`."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    doc_id, batches, requests = await _parsed(parser, data, tenant=tenant)
    assert batches == [] and requests == []
    record = await parser._ctx.progress.get(tenant, doc_id)
    assert record is not None and record.status is DocumentStatus.FAILED and record.error is not None
    return record.error


async def test_a_document_over_the_page_limit_fails_naming_it_and_publishes_nothing(parser: ParserAgent) -> None:
    limited = _with_settings(parser, max_document_pages=2)
    error = await _failure(limited, make_pdf(synthetic_pages(1, 3)))
    assert "3 pages" in error and "MMRAG_MAX_DOCUMENT_PAGES" in error
    _, batches, _ = await _parsed(limited, make_pdf(synthetic_pages(1, 2)))  # at the limit: parsed
    assert batches


async def test_a_unit_past_the_page_time_budget_fails_the_document_and_the_pool_goes_on(parser: ParserAgent) -> None:
    error = await _failure(_with_settings(parser, page_time_budget_s=0.001), make_pdf(synthetic_pages(1, 2)))
    assert "MMRAG_PAGE_TIME_BUDGET_S" in error and "pages 1-" in error
    _, batches, _ = await _parsed(parser, make_pdf(synthetic_pages(1, 2)))  # the restarted pool parses
    assert batches
