"""The ingest agents through NATS only (no HTTP): revisions, deletes, bad vectors, small documents first.

One `mmrag agent` process runs all seven pipeline agents (and the re-index coordinator, beside the indexer) against a real nats-server for the module; each test uses
its own documents (fresh ids), so no test depends on what another left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js.errors import NotFoundError

from bus.progress import ProgressStore
from contracts.messages import (
    Chunk,
    ChunksParsed,
    ChunksEmbedded,
    DeadLetter,
    DocumentDeleted,
    DocumentProgress,
    DocumentStatus,
    DocumentSubmitted,
    EmbeddedChunk,
    QueryMode,
    QueryRequest,
    answer_event_adapter,
)
from bus.uploads import ensure_uploads_bucket
from contracts.topology import PROGRESS_BUCKET, IndexGeneration, Subjects, object_name
from tests.engine import BIN, NatsServer
from tests.factories import (
    FIGURE_2,
    SCAN_SENTENCES,
    SCREENSHOT_LABEL,
    make_figures_pdf,
    make_pdf,
    make_scanned_pdf,
    make_screenshot_pdf,
    make_table_pdf,
    render_text_image,
    synthetic_pdf,
)

TENANT = "acme"
GEN = IndexGeneration(1)


@pytest.fixture(scope="module")
def agents(tmp_path_factory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("pipeline")
    server = NatsServer(root / "nats").start()
    log = root / "agents.log"
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "NATS_URL": server.url, "MMRAG_DATA_DIR": str(root / "data"),
        "MMRAG_CHUNK_MAX_CHARS": "300", "MMRAG_INTERACTIVE_MAX_PAGES": "5",
    }  # fmt: skip
    proc = subprocess.Popen(
        [str(BIN / "mmrag"), "agent", "parser", "ocr", "embedder", "indexer", "retriever", "reranker", "generator"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while b"agents running" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "agents did not start"
        time.sleep(0.2)
    server.log = log  # type: ignore[attr-defined]
    yield server
    proc.send_signal(2)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    server.stop()


@pytest.fixture
async def js(agents: NatsServer) -> AsyncIterator:
    nc = await nats.connect(agents.url)
    yield nc.jetstream()
    await nc.close()


async def submit(js, doc_id: str, data: bytes, filename: str = "doc.pdf", tenant: str = TENANT,
                 content_type: str = "application/pdf") -> int:  # fmt: skip
    store = await ensure_uploads_bucket(js, tenant)
    await store.put(object_name(tenant, doc_id), data)
    msg = DocumentSubmitted(doc_id=doc_id, tenant=tenant, filename=filename, content_type=content_type,
                            object_name=object_name(tenant, doc_id), size=len(data))  # fmt: skip
    ack = await js.publish(Subjects.ingest(tenant, doc_id), msg.model_dump_json().encode())
    return ack.seq


async def progress_of(js, doc_id: str, tenant: str = TENANT) -> DocumentProgress | None:
    return await ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN).get(tenant, doc_id)


async def wait_progress(js, doc_id: str, done, timeout_s: float = 120) -> DocumentProgress:
    async with asyncio.timeout(timeout_s):
        while True:
            p = await progress_of(js, doc_id)
            if p is not None and done(p):
                return p
            await asyncio.sleep(0.1)


async def search(js, query: str, tenant: str = TENANT, top_k: int = 10) -> list:
    nc = js._nc
    request_id = uuid.uuid4().hex
    sub = await nc.subscribe(Subjects.answer(tenant, request_id))
    try:
        req = QueryRequest(request_id=request_id, tenant=tenant, query=query, top_k=top_k, mode=QueryMode.SEARCH)
        await js.publish(Subjects.query(Subjects.QUERY_RETRIEVE, tenant), req.model_dump_json().encode())
        event = answer_event_adapter.validate_json((await sub.next_msg(timeout=30)).data)
        assert event.event == "results", event
        return event.hits
    finally:
        await sub.unsubscribe()


def indexed(revision: int):
    return lambda p: p.revision == revision and p.status in (DocumentStatus.INDEXED, DocumentStatus.FAILED)


async def test_resubmitting_a_doc_id_replaces_the_document_cleanly(js) -> None:
    doc_id = uuid.uuid4().hex
    first = await submit(js, doc_id, make_pdf(["The heron census counted 311 herons.", "Page two says hello."]))
    old = await wait_progress(js, doc_id, indexed(first))
    assert old.status is DocumentStatus.INDEXED and old.pages == 2

    second = await submit(js, doc_id, make_pdf(["The otter census counted 58 otters."]))
    new = await wait_progress(js, doc_id, indexed(second))
    assert new.status is DocumentStatus.INDEXED and new.pages == 1
    assert new.chunks_indexed == new.chunks_total == 1  # progress was reset, not added to

    hits = [h for h in await search(js, "How many herons did the census count?") if h.doc_id == doc_id]
    assert hits and all("otter" in h.text for h in hits)  # the old revision's points are gone
    assert len(hits) == 1


def text_then_unreadable_scan(text: str) -> bytes:
    """Page 1 with a text layer, page 2 a scan where OCR reads nothing (a lone dot is not text)."""
    import pymupdf

    doc = pymupdf.open(stream=make_pdf([text]))
    try:
        doc.insert_pdf(pymupdf.open(stream=make_scanned_pdf(["."])))
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


async def test_a_replacement_completed_by_an_empty_ocr_batch_is_announced_and_replaces_the_old(js) -> None:
    """The scan's empty batch goes through the indexer like any batch. OCR (about 0.3 s a page) usually ends after
    the text batch is indexed, so it is the write that completes the document: the event must still go out and
    the old revision's points must still go."""
    doc_id = uuid.uuid4().hex
    first = await submit(js, doc_id, make_pdf(["The heron census counted 311 herons."]))
    await wait_progress(js, doc_id, indexed(first))
    announced = await js._nc.subscribe(Subjects.indexed(GEN, TENANT))
    try:
        second = await submit(js, doc_id, text_then_unreadable_scan("The otter census counted 58 otters."))
        new = await wait_progress(js, doc_id, indexed(second))
        assert new.status is DocumentStatus.INDEXED and new.pages == 2
        assert new.batch_chunks == {0: 0, 1: 1}, "batch 0 is the scan's (empty), batch 1 the text page's"
        assert new.chunks_indexed == new.chunks_total == 1
        async with asyncio.timeout(30):
            while True:
                event = DocumentProgress.model_validate_json((await announced.next_msg(timeout=30)).data)
                # The first revision's own event can arrive after its progress record said indexed (the indexer
                # writes the record, then publishes): skip it, wait for the second's.
                if event.doc_id == doc_id and event.revision >= second:
                    break
        assert event.status is DocumentStatus.INDEXED
    finally:
        await announced.unsubscribe()
    hits = [h for h in await search(js, "How many herons did the census count?") if h.doc_id == doc_id]
    assert hits and all("otter" in h.text for h in hits), "the old revision's points are gone"


async def test_delete_removes_points_upload_and_status_and_a_stale_resubmission_stays_deleted(js) -> None:
    doc_id = uuid.uuid4().hex
    seq = await submit(js, doc_id, make_pdf(["Zebra crossings number 4242 in the old town."]))
    await wait_progress(js, doc_id, indexed(seq))
    assert any(h.doc_id == doc_id for h in await search(js, "How many zebra crossings?"))

    ack = await js.publish(Subjects.delete(TENANT, doc_id), DocumentDeleted(doc_id=doc_id, tenant=TENANT).model_dump_json().encode())
    gone = await wait_progress(js, doc_id, lambda p: p.status is DocumentStatus.DELETED)
    assert gone.revision == ack.seq
    async with asyncio.timeout(30):
        while any(h.doc_id == doc_id for h in await search(js, "How many zebra crossings?")):
            await asyncio.sleep(0.2)
        store = await ensure_uploads_bucket(js, TENANT)
        while True:
            try:
                await store.get_info(object_name(TENANT, doc_id))
                await asyncio.sleep(0.2)
            except NotFoundError:
                break


async def dead_letters(js, durable: str, n: int, timeout_s: float = 30) -> list[DeadLetter]:
    sub = await js.pull_subscribe(Subjects.deadletters(durable), durable=None, stream="DEADLETTER")
    out: list[DeadLetter] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < n:
            try:
                out += [DeadLetter.model_validate_json(m.data) for m in await sub.fetch(n - len(out), timeout=1)]
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
    return out


async def test_wrong_dimension_is_dead_lettered_at_once_and_nan_is_poison(js) -> None:
    doc_id = uuid.uuid4().hex
    seq = await submit(js, doc_id, make_pdf(["Dimension checks keep the index sane."]))
    await wait_progress(js, doc_id, indexed(seq))  # the collection exists with 384-dim vectors

    chunk = dict(chunk_id=f"{doc_id}-9", index=9, doc_id=doc_id, tenant=TENANT, filename="x.pdf", page=1, text="x")
    wrong = ChunksEmbedded(doc_id=doc_id, tenant=TENANT, generation=1, revision=seq, batch_index=0,
                           model="m", embedded_by="test", chunks=[EmbeddedChunk(**chunk, vector=[0.1] * 7)])  # fmt: skip
    await js.publish(Subjects.embedded(GEN, TENANT), wrong.model_dump_json().encode())
    nan = wrong.model_dump_json().replace("0.1,", "NaN,", 1).encode()
    await js.publish(Subjects.embedded(GEN, TENANT), nan)
    letters = await dead_letters(js, "indexer-g1", 2)
    by_type = {letter.error_type: letter for letter in letters}
    assert by_type["PermanentError"].num_delivered == 1 and "7" in by_type["PermanentError"].reason
    assert "ValidationError" in by_type


async def test_a_deleted_documents_queued_batch_is_skipped_and_leaves_chunks(js) -> None:
    """A parsed batch of a document that is no longer current (deleted, or never recorded) costs no model call: the
    embedder publishes nothing for it, and the message is gone from CHUNKS once skipped."""
    doc_id = uuid.uuid4().hex
    chunk = Chunk(chunk_id=f"{doc_id}-0", index=0, doc_id=doc_id, tenant=TENANT, filename="gone.pdf", page=1,
                  modality="text", text="A batch queued before its document was deleted.")  # fmt: skip
    batch = ChunksParsed(doc_id=doc_id, tenant=TENANT, generation=GEN.number, revision=7, batch_index=0, chunks=[chunk])
    embedded = await js._nc.subscribe(Subjects.embedded(GEN, TENANT))
    try:
        ack = await js.publish(Subjects.parsed(GEN, "text", "interactive", TENANT), batch.model_dump_json().encode())
        async with asyncio.timeout(30):
            while True:
                try:
                    await js.get_msg("CHUNKS", ack.seq)
                except NotFoundError:
                    break  # settled and deleted
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # an embedded batch would be published before the settle
        published = []
        while True:
            try:
                published.append(await embedded.next_msg(timeout=0.1))
            except nats.errors.TimeoutError:
                break
        assert not [m for m in published if doc_id.encode() in m.data]
    finally:
        await embedded.unsubscribe()


async def test_a_small_document_is_not_stuck_behind_a_big_one(js) -> None:
    big, small = uuid.uuid4().hex, uuid.uuid4().hex
    big_seq = await submit(js, big, synthetic_pdf(1, pages=150), "big.pdf")
    # The small one arrives once the big one is under way (its first unit parsed, so its page count is known),
    # not once it is planned: planning ends its parse, and on a fast machine the rest of its work (embedding and
    # indexing ~600 chunks) took less time than the small one's whole trip (a CI run saw the big one win).
    started = await wait_progress(js, big, lambda p: p.pages is not None)
    assert started.status is not DocumentStatus.INDEXED
    small_seq = await submit(js, small, make_pdf(["A tiny note about 3 kittens."]), "small.pdf")
    done_small = await wait_progress(js, small, indexed(small_seq))
    big_then = await progress_of(js, big)
    assert done_small.status is DocumentStatus.INDEXED
    assert big_then is not None and big_then.status is not DocumentStatus.INDEXED, (
        "the big document finished first: the small one waited behind it"
    )
    await wait_progress(js, big, indexed(big_seq), timeout_s=300)


async def test_a_scan_takes_the_bulk_lane_by_its_ocr_work_and_a_text_of_as_many_pages_the_interactive(js) -> None:
    """A scanned page costs OCR (seconds of a core), not a text page's milliseconds: a 1-page scan is 11 pages of
    work (over MMRAG_INTERACTIVE_MAX_PAGES=5 here), so its OCR request goes on the bulk lane and cannot fill the
    work slot kept for interactive work; a 2-page text PDF stays interactive. By page count alone both were
    interactive (bench/ingest.py: a 6-page scan held small uploads 20-60 s)."""
    scan, text = uuid.uuid4().hex, uuid.uuid4().hex
    seen: list[tuple[str, str]] = []  # (subject, doc_id) of every OCR request and text batch of the tenant

    async def record(msg) -> None:  # noqa: ANN001
        seen.append((msg.subject, json.loads(msg.data)["doc_id"]))

    nc = js._nc
    subs = [await nc.subscribe(f"chunks.ocr.{GEN.token}.*.{TENANT}", cb=record),
            await nc.subscribe(f"chunks.parsed.{GEN.token}.text.*.{TENANT}", cb=record)]  # fmt: skip
    try:
        scan_seq = await submit(js, scan, make_scanned_pdf(pages=1), "scan.pdf")
        # Parsed once its page count is recorded with its batches; OCR (slow on a busy machine) need not be done.
        await wait_progress(js, scan, lambda p: p.revision == scan_seq and p.batches_total is not None)
        await wait_progress(js, text, indexed(await submit(js, text, synthetic_pdf(3, pages=2), "text.pdf")))
    finally:
        for sub in subs:
            await sub.unsubscribe()
    scan_ocr = [s for s, d in seen if d == scan and s.startswith(Subjects.CHUNKS_OCR)]
    assert scan_ocr == [Subjects.ocr(GEN, "bulk", TENANT)], scan_ocr
    text_batches = [s for s, d in seen if d == text]
    assert text_batches and set(text_batches) == {Subjects.parsed(GEN, "text", "interactive", TENANT)}, text_batches
    await wait_progress(js, scan, indexed(scan_seq), timeout_s=600)  # nothing left running for the next test


# --------------------------------------------------------------------------- multi-modal content


async def ingested(js, data: bytes, filename: str, content_type: str = "application/pdf") -> tuple[str, DocumentProgress]:
    doc_id = uuid.uuid4().hex
    seq = await submit(js, doc_id, data, filename, content_type=content_type)
    return doc_id, await wait_progress(js, doc_id, indexed(seq))


async def test_a_scanned_page_is_read_by_ocr_and_found_on_its_page(js) -> None:
    doc_id, done = await ingested(js, make_scanned_pdf(pages=2), "scan.pdf")
    assert done.status is DocumentStatus.INDEXED and done.pages == 2
    hits = [h for h in await search(js, "How often must the filter cartridge be replaced?") if h.doc_id == doc_id]
    assert hits and "filter cartridge" in hits[0].text.lower()
    assert hits[0].modality == "text" and hits[0].page in (1, 2) and hits[0].bbox is not None
    x0, y0, x1, y1 = hits[0].bbox
    assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 850  # OCR lines mapped back to page points
    recovered = " ".join(h.text for h in await search(js, SCAN_SENTENCES[0], top_k=20) if h.doc_id == doc_id)
    assert "switched off" in recovered.lower()


async def test_a_figure_is_found_by_its_caption_as_an_image_hit_with_its_bbox(js) -> None:
    pdf, rects = make_figures_pdf()
    doc_id, done = await ingested(js, pdf, "figures.pdf")
    assert done.status is DocumentStatus.INDEXED
    hits = [h for h in await search(js, "wiring diagram of the pump controller") if h.doc_id == doc_id]
    image_hits = [h for h in hits if h.modality == "image"]
    assert image_hits, [(h.modality, h.text) for h in hits]
    best = image_hits[0]
    assert FIGURE_2 in best.text and best.page == 1
    assert best.bbox == pytest.approx(tuple(rects[1]), abs=2)  # the image's own region, not the caption's
    assert best.image is not None and best.image.caption == FIGURE_2 and best.image.width == 440
    store = await ensure_uploads_bucket(js, TENANT)
    assert (await store.get(best.image.object_name)).data[:8] == b"\x89PNG\r\n\x1a\n"


async def test_text_inside_a_screenshot_is_searchable(js) -> None:
    pdf, rect = make_screenshot_pdf()
    doc_id, _ = await ingested(js, pdf, "screens.pdf")
    hits = [h for h in await search(js, SCREENSHOT_LABEL.lower()) if h.doc_id == doc_id and h.modality == "image"]
    assert hits and SCREENSHOT_LABEL in hits[0].text.upper()
    x0, y0, x1, y1 = hits[0].bbox  # where the image is drawn: inside the rect it was placed in (aspect kept)
    assert rect.x0 - 1 <= x0 < x1 <= rect.x1 + 1 and (y0, y1) == pytest.approx((rect.y0, rect.y1), abs=1)


async def test_a_table_row_is_a_table_hit_with_its_cells(js) -> None:
    doc_id, _ = await ingested(js, make_table_pdf(), "parts.pdf")
    hits = [h for h in await search(js, "Which supplier makes the rubber gasket?") if h.doc_id == doc_id]
    tables = [h for h in hits if h.modality == "table"]
    assert tables and "|Gasket|Rubber|0.3 kg|Belmont Seals|" in tables[0].text  # the whole row, never split


async def test_an_uploaded_image_file_is_ocrd_and_searchable(js) -> None:
    png = render_text_image(["Boiler room key hangs in locker 17."], fontsize=16)
    doc_id, done = await ingested(js, png, "note.png", "image/png")
    assert done.status is DocumentStatus.INDEXED and done.chunks_total == 1
    hits = [h for h in await search(js, "Where does the boiler room key hang?") if h.doc_id == doc_id]
    assert hits and hits[0].modality == "image" and "locker 17" in hits[0].text.lower()


async def test_a_mislabelled_image_file_fails_with_the_reason(js) -> None:
    doc_id = uuid.uuid4().hex
    seq = await submit(js, doc_id, b"GIF89a" + bytes(200), "x.png", content_type="image/png")
    failed = await wait_progress(js, doc_id, indexed(seq))
    assert failed.status is DocumentStatus.FAILED and "not a PNG" in (failed.error or "")


async def test_exact_identifiers_win_among_near_identical_pages(js) -> None:
    """Dense vectors barely tell "D3P7" from "D3P8"; the sparse (BM25) signal fused in does."""
    from tests.factories import ledger_value

    ids = {}
    for n in (31, 32):
        doc_id = uuid.uuid4().hex
        ids[n] = doc_id
        seq = await submit(js, doc_id, synthetic_pdf(n, pages=8), f"ledger{n}.pdf")
        await wait_progress(js, doc_id, indexed(seq))
    for n, page in ((31, 7), (32, 3), (31, 2)):
        hits = [h for h in await search(js, f"D{n}P{page}", top_k=3) if h.doc_id in ids.values()]
        assert hits, (n, page)
        assert (hits[0].doc_id, hits[0].page) == (ids[n], page), [(h.doc_id == ids[n], h.page) for h in hits]
        assert f"{ledger_value(n, page)} crates" in hits[0].text


async def test_every_embedded_chunk_carries_a_sparse_vector(js) -> None:
    # Embedded batches as published (CHUNKS deletes each once the indexer handled it): a core subscription.
    live = await js._nc.subscribe(Subjects.embedded(GEN, TENANT))
    try:
        doc_id, _ = await ingested(js, make_pdf(["Sparse vectors are computed for every chunk.", "Page two too."]), "s.pdf")
        seen = []
        while True:
            try:
                msg = await live.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                break
            if doc_id.encode() in msg.data:  # not other tests' batches (one of them deliberately invalid)
                seen += ChunksEmbedded.model_validate_json(msg.data).chunks
    finally:
        await live.unsubscribe()
    assert seen and all(c.sparse is not None and len(c.sparse.indices) >= 2 for c in seen)
