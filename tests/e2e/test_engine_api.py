"""The edge API of a real `mmrag up`: the first real answer, search, and every kind of bad input.

On the shared engine, each test in a tenant of its own (tests/e2e/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import aiohttp
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.messages import DeadLetter, DocumentSubmitted
from bus.uploads import ensure_uploads_bucket
from contracts.topology import Subjects, object_name
from tests.engine import BIN, TenantEngine, sse_events, upload_bytes, wait_status
from tests.uploads import uploads_state
from tests.factories import (
    FIVE_PAGES,
    corrupt_pdf,
    five_page_pdf_with_fact,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
    truncated_pdf,
)


async def ingest(http: aiohttp.ClientSession, engine: TenantEngine, data: bytes, filename: str, ctype: str = "application/pdf") -> dict:
    resp = await upload_bytes(http, engine.url, data, filename, ctype)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued"
    return await wait_status(http, engine.url, body["doc_id"], {"indexed", "failed"})


async def test_health_and_ready(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{engine.url}/health") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with http.get(f"{engine.url}/ready") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "nats": "connected"}


async def test_ask_streams_tokens_and_cites_page_3(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    pdf, question, phrase = five_page_pdf_with_fact()
    status = await ingest(http, engine, pdf, "reactor.pdf")
    assert status["status"] == "indexed", status
    assert status["pages"] == status["pages_parsed"] == 5 and status["chunks_indexed"] == status["chunks_total"] > 0

    events = await sse_events(http, engine.url, {"question": question, "top_k": 3})
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done"
    assert kinds.count("token") >= 1
    answer = "".join(d["text"] for k, d in events if k == "token")
    assert "4127" in answer
    citations = [d for k, d in events if k == "citation"]
    assert citations[0]["n"] == 1 and citations[0]["page"] == 3 and citations[0]["doc_id"] == status["doc_id"]
    assert phrase in citations[0]["text"]
    x0, y0, x1, y1 = citations[0]["bbox"]
    assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 850  # on an A4 page, in points
    assert "[1]" in answer


async def test_search_ranks_the_page_with_the_fact_first(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    phrase = "exactly 5309 litres"
    pages = [*FIVE_PAGES[:2], f"The Brannock-4 cistern holds {phrase} of rain water.", *FIVE_PAGES[3:]]
    status = await ingest(http, engine, make_pdf(pages), "search.pdf")
    async with http.post(f"{engine.url}/v1/search", json={"query": "How much water does the Brannock-4 cistern hold?", "top_k": 4}) as resp:
        assert resp.status == 200
        hits = (await resp.json())["hits"]
    assert 1 <= len(hits) <= 4
    assert hits[0]["page"] == 3 and phrase in hits[0]["text"] and hits[0]["doc_id"] == status["doc_id"]
    assert {"doc_id", "page", "bbox", "score", "text", "modality"} <= hits[0].keys()
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


async def test_cli_ingest_and_ask(engine: TenantEngine, tmp_path) -> None:
    # A fact no other test of this module ingests: the answer cannot come from another test's document.
    pages = [*FIVE_PAGES[:2], "The Quillon-9 kiln fires at exactly 1865 degrees Celsius.", *FIVE_PAGES[3:]]
    question = "At what temperature does the Quillon-9 kiln fire?"
    path = tmp_path / "cli-kiln.pdf"
    path.write_bytes(make_pdf(pages))
    env = {**os.environ, **engine.client_env}
    ingest = subprocess.run(
        [str(BIN / "mmrag"), "ingest", str(path), "--url", engine.url], capture_output=True, text=True, timeout=180,
        env=env,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    doc_id = ingest.stdout.split()[0]
    ask = subprocess.run(
        [str(BIN / "mmrag"), "ask", question, "--url", engine.url, "--top-k", "3"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert ask.returncode == 0, ask.stderr
    assert "1865" in ask.stdout
    assert f"[1] cli-kiln.pdf page 3 (doc {doc_id})" in ask.stdout
    assert len(doc_id) == 32


async def test_markdown_upload_is_indexed(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    text = "# Notes\n\nThe quokka colony on Rottnest Island counts 12000 animals.\n\nUnrelated closing words."
    status = await ingest(http, engine, text.encode(), "notes.md", "text/markdown")
    assert status["status"] == "indexed", status
    async with http.post(f"{engine.url}/v1/search", json={"query": "How many quokkas live on Rottnest?"}) as resp:
        hits = (await resp.json())["hits"]
    assert hits[0]["doc_id"] == status["doc_id"] and hits[0]["bbox"] is None and hits[0]["page"] == 1


# --------------------------------------------------------------------------- bad input


async def test_unsupported_or_mislabelled_files_are_415(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    resp = await upload_bytes(http, engine.url, b"BM" + b"\x00" * 100, "scan.bmp", "image/bmp")
    assert resp.status == 415
    assert "upload a PDF, an image" in (await resp.json())["error"]["message"]
    resp = await upload_bytes(http, engine.url, b"hello, I am plain text", "photo.png", "image/png")
    assert resp.status == 415
    assert "not a PNG, JPEG, WebP, TIFF or GIF image" in (await resp.json())["error"]["message"]
    resp = await upload_bytes(http, engine.url, b"hello, I am plain text", "fake.pdf")
    assert resp.status == 415
    assert "not a PDF" in (await resp.json())["error"]["message"]


async def test_empty_file_is_400(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    resp = await upload_bytes(http, engine.url, b"", "empty.pdf")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "empty_file"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (corrupt_pdf, "corrupt"),
        (lambda: truncated_pdf(FIVE_PAGES), "truncated"),
        (lambda: make_encrypted_pdf(["secret"]), "encrypted"),
        (make_image_only_pdf, "no extractable text"),
    ],
    ids=["corrupt", "truncated", "encrypted", "no-text"],
)
async def test_unparseable_pdf_is_failed_with_reason(engine: TenantEngine, http: aiohttp.ClientSession, make, reason) -> None:
    status = await ingest(http, engine, make(), "bad.pdf")
    assert status["status"] == "failed"
    assert reason in status["error"]


async def test_oversized_upload_is_413_and_leaves_nothing(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    async with await nats.connect(engine.nats_url) as nc:
        before = await uploads_state(nc.jetstream(), engine.tenant)
        resp = await upload_bytes(http, engine.url, b"%PDF-1.7\n" + b"0" * (3 * 1024 * 1024), "huge.pdf")
        assert resp.status == 413
        assert "limit of 1048576 bytes" in (await resp.json())["error"]["message"]
        assert await uploads_state(nc.jetstream(), engine.tenant) == before  # the partial upload was purged


async def test_missing_field_and_wrong_bodies(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("document", b"%PDF-1.7", filename="x.pdf")
    async with http.post(f"{engine.url}/v1/documents", data=form) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "missing_field"
    async with http.post(f"{engine.url}/v1/documents", json={"file": "x"}) as resp:
        assert resp.status == 415
    async with http.post(f"{engine.url}/v1/ask", data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["message"].startswith("invalid JSON")
    async with http.post(f"{engine.url}/v1/ask", json={"question": ""}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["details"][0]["field"] == "question"
    async with http.post(f"{engine.url}/v1/search", json={"query": "x", "top_k": 500}) as resp:
        assert resp.status == 400
    async with http.get(f"{engine.url}/v1/documents/{uuid.uuid4().hex}") as resp:
        assert resp.status == 404


async def test_direct_publish_is_ingested_and_malformed_is_dead_lettered(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    """What the README shows: put the bytes in the Object Store, publish `DocumentSubmitted` to docs.ingest."""
    async with await nats.connect(engine.nats_url) as nc:
        js = nc.jetstream()
        dead = await js.pull_subscribe(  # new letters only: other modules' letters may be in the shared engine's stream
            Subjects.deadletters("parser-g1"), durable=None, stream="DEADLETTER",
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )  # fmt: skip
        # A malformed message straight onto the ingest subject: dead-lettered, nothing else affected.
        await js.publish(Subjects.ingest(engine.tenant, "x"), b'{"doc_id": "no good", "hello": 1}')
        letter = DeadLetter.model_validate_json((await dead.fetch(1, timeout=30))[0].data)
        assert letter.consumer == "parser-g1" and letter.error_type == "ValidationError"
        assert "hello" in letter.payload_excerpt and "doc_id" in letter.reason

        doc_id = uuid.uuid4().hex
        store = await ensure_uploads_bucket(js, engine.tenant)
        await store.put(object_name(engine.tenant, doc_id), make_pdf(["Direct publishing works: the marmot count is 77."]))
        submitted = DocumentSubmitted(
            doc_id=doc_id, tenant=engine.tenant, filename="direct.pdf", content_type="application/pdf",
            object_name=object_name(engine.tenant, doc_id), size=0,
        )  # fmt: skip
        # Another tenant's subject for this payload is refused: dead-lettered, never ingested.
        await js.publish(Subjects.ingest("other", doc_id), submitted.model_dump_json().encode())
        letter = DeadLetter.model_validate_json((await dead.fetch(1, timeout=30))[0].data)
        assert letter.error_type == "RoutingMismatch"
        await js.publish(Subjects.ingest(engine.tenant, doc_id), submitted.model_dump_json().encode())
    status = await wait_status(http, engine.url, doc_id, {"indexed", "failed"})
    assert status["status"] == "indexed" and status["filename"] == "direct.pdf"
    events = await sse_events(http, engine.url, {"question": "What is the marmot count?"})
    assert any(k == "citation" and d["doc_id"] == doc_id for k, d in events)


async def test_ask_with_nothing_relevant_still_answers(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    events = await sse_events(http, engine.url, {"question": "xylophone quantum giraffe", "top_k": 2})
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done" and "token" in kinds
    assert len(events[0][1]["hits"]) <= 2


async def test_answer_tokens_are_clauses_not_words(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    pages = ["The Varnak bridge spans 312 metres. It opened in 1931; engineers still praise its arches."]
    status = await ingest(http, engine, make_pdf(pages), "bridge.pdf")
    events = await sse_events(http, engine.url, {"question": "How long is the Varnak bridge and when did it open?"})
    tokens = [d["text"] for k, d in events if k == "token"]
    answer = "".join(tokens)
    assert "312 metres" in answer and status["doc_id"] in {d["doc_id"] for k, d in events if k == "citation"}
    assert len(tokens) < len(answer.split()) / 2  # pieces of several words, not one event per word
