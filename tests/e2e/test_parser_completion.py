"""Who completes a document: the indexer's progress write, never the parser's batch count (real NATS, agents).

The indexer publishes `docs.indexed` (and removes older revisions) only when ITS write turns a document
`indexed`. The parser therefore holds back its last batch until it has recorded `batches_total`. These tests run
the real embedder and indexer (`mmrag agent embedder indexer`) against a real nats-server, and the parser in
the test, on the real docs.ingest message, so that its count write can be delayed (as a NATS failover delays
it) or the parser can die before writing it and see its message again (a redelivery).
"""

from __future__ import annotations

import asyncio
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
from bus.uploads import UploadBuckets, ensure_uploads_bucket
from contracts.messages import DocumentProgress, DocumentStatus, DocumentSubmitted
from contracts.topology import (
    DOCS_STREAM,
    PROGRESS_BUCKET,
    IndexGeneration,
    Subjects,
    object_name,
)
from tests.engine import NatsServer
from tests.factories import synthetic_pdf
from tests.e2e.test_resilience import interrupt, spawn_agents, wait_for_line

pytestmark = pytest.mark.e2e
GEN = IndexGeneration(1)


class ParserCrashed(Exception):
    """Stands for the parser process dying (SIGKILL) just before it records the batch count."""


class ProbedParser(ParserAgent):
    """The real parser; before its batch-count write it waits until every batch it published so far is
    indexed (a write delayed that long by a failover), then writes it or, with `crash`, dies instead."""

    crash = False

    async def _record(self, progress, doc, revision, sizes, *, batches_total=None, pages=None, **more) -> None:  # type: ignore[no-untyped-def]
        if batches_total is not None:
            while True:
                state = await progress.get(doc.tenant, doc.doc_id)
                published = len(sizes) - 1  # every batch but the last, held back until this write (`_Emitter`)
                if state is not None and published and len(state.batches_indexed) >= published:
                    break
                await asyncio.sleep(0.05)
            if self.crash:
                raise ParserCrashed
        await super()._record(progress, doc, revision, sizes, batches_total=batches_total, pages=pages, **more)


@pytest.fixture(scope="module")
def ingest_agents(tmp_path_factory) -> AsyncIterator[NatsServer]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("completion")
    server = NatsServer(root / "nats").start()
    log = root / "agents.log"
    proc = spawn_agents(["embedder", "indexer"], log, NATS_URL=server.url, MMRAG_DATA_DIR=str(root / "data"))
    try:
        wait_for_line(log, "agents running", proc)
        yield server
        assert interrupt(proc) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


@pytest.fixture
async def parser(ingest_agents: NatsServer, tmp_path: Path) -> AsyncIterator[ProbedParser]:
    settings = AgentSettings(nats_url=ingest_agents.url, data_dir=tmp_path, chunks_per_message=1)
    shared = SharedResources(settings)
    await shared.load({Resource.WORK_POOL})  # the parser parses in worker processes
    nc = await nats.connect(ingest_agents.url)
    js = nc.jetstream()
    ctx = AgentContext(
        nc=nc, js=js, settings=settings, generation=GEN, progress=ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN),
        uploads=UploadBuckets(js), shared=shared,
    )  # fmt: skip
    yield ProbedParser(ctx)
    await nc.close()
    shared.close()


async def _submission(js, tenant: str, doc_id: str, data: bytes) -> Delivery[DocumentSubmitted]:  # type: ignore[no-untyped-def]
    """Submit a PDF and read back its docs.ingest message as the parser's consumer would deliver it."""
    await (await ensure_uploads_bucket(js, tenant)).put(object_name(tenant, doc_id), data)
    submitted = DocumentSubmitted(doc_id=doc_id, tenant=tenant, filename="doc.pdf", content_type="application/pdf",
                                  object_name=object_name(tenant, doc_id), size=len(data))  # fmt: skip
    await js.publish(Subjects.ingest(tenant, doc_id), submitted.model_dump_json().encode())
    sub = await js.pull_subscribe(Subjects.ingest(tenant, doc_id), durable=f"probe-{doc_id}", stream=DOCS_STREAM.name)
    try:
        (msg,) = await sub.fetch(1, timeout=10)
        await msg.ack()
    finally:
        await js.delete_consumer(DOCS_STREAM.name, f"probe-{doc_id}")
    return Delivery(msg=msg, payload=submitted)


async def _indexed_event(sub) -> DocumentProgress:  # type: ignore[no-untyped-def]
    """The docs.indexed event (the indexer publishes it right after its completing write)."""
    return DocumentProgress.model_validate_json((await sub.next_msg(timeout=60)).data)


async def _check_completed(parser: ProbedParser, tenant: str, doc_id: str, revision: int, events) -> None:  # type: ignore[no-untyped-def]
    event = await _indexed_event(events)
    assert (event.doc_id, event.revision, event.status) == (doc_id, revision, DocumentStatus.INDEXED)
    state = await parser._ctx.progress.get(tenant, doc_id)
    assert state is not None and state.status is DocumentStatus.INDEXED, state
    assert state.batches_total is not None and state.batches_total >= 2  # several batches: the test means something
    assert state.chunks_indexed == state.chunks_total == sum(state.batch_chunks.values()) == state.batches_total
    assert sorted(state.batches_indexed) == list(range(state.batches_total))


async def test_a_late_batch_count_write_still_lets_the_indexer_complete_and_announce(parser: ProbedParser) -> None:
    """The count write lands after every batch already out is indexed: the document is still announced once."""
    tenant, doc_id = f"t{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    js, nc = parser._ctx.js, parser._ctx.nc
    events = await nc.subscribe(Subjects.indexed(GEN, tenant))
    await nc.flush()
    delivery = await _submission(js, tenant, doc_id, synthetic_pdf(1, pages=3))
    await parser.parse(delivery)
    await _check_completed(parser, tenant, doc_id, delivery.stream_seq, events)


async def test_a_parser_redelivered_after_its_batches_were_indexed_finishes_the_document(parser: ProbedParser) -> None:
    """The parser dies after its batches went out and were indexed, before recording their count; the
    redelivered submission is parsed again (its batches dedupe) and the document completes, announced."""
    tenant, doc_id = f"t{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    js, nc = parser._ctx.js, parser._ctx.nc
    events = await nc.subscribe(Subjects.indexed(GEN, tenant))
    await nc.flush()
    delivery = await _submission(js, tenant, doc_id, synthetic_pdf(2, pages=3))
    parser.crash = True
    with pytest.raises(ParserCrashed):
        await parser.parse(delivery)
    before = await parser._ctx.progress.get(tenant, doc_id)
    assert before is not None and before.batches_indexed and before.status is DocumentStatus.INDEXING, before
    parser.crash = False
    await parser.parse(delivery)  # the redelivery: same message, same revision
    await _check_completed(parser, tenant, doc_id, delivery.stream_seq, events)
    assert set(before.batches_indexed) <= set((await parser._ctx.progress.get(tenant, doc_id)).batches_indexed)  # type: ignore[union-attr]
