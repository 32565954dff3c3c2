"""A delete removes every byte of the document (issue 16): after `DELETE`, a scan of every stream, bucket and KV of
the engine's NATS, and a search of the vector store, find nothing of it.

The document has a text page, a scanned page (a page raster stored for OCR) and figures (extracted images), and a
dead letter about it, so each place a document leaves bytes is filled before the delete. The same scan run before
the delete finds them (the check can fail). What may stay, by design: the `docs.delete` tombstone (a replay must
see it), the progress key's tombstone (ids, revision and status only) and the graph tombstone (both name only ids).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import aiohttp
import nats
import pymupdf
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.messages import ChunksEmbedded, EmbeddedChunk
from contracts.topology import LEGACY_UPLOADS_BUCKET, IndexGeneration, Subjects, object_name, uploads_bucket
from tests.engine import TenantEngine, upload_bytes, wait_status
from tests.factories import make_figures_pdf, make_pdf, make_scanned_pdf

GEN = IndexGeneration(1)
SECRET = "Zephyrine quokka valve calibration code QX7731 is confidential."
LETTER_SECRET = "Dead letter secret marmoset 55821 quoted by a poison batch."
ALLOWED_SUBJECT_PREFIXES = ("docs.delete.", "$KV.mmrag-progress.", "graph.facts.")


def mixed_pdf() -> bytes:
    """A text page with `SECRET`, a scanned page (no text layer: OCR), and a page with two figures."""
    out = pymupdf.open()
    for part in (make_pdf([SECRET]), make_scanned_pdf(), make_figures_pdf()[0]):
        with pymupdf.open(stream=part, filetype="pdf") as doc:
            out.insert_pdf(doc)
    try:
        return out.tobytes()
    finally:
        out.close()


async def stream_messages(js: JetStreamContext, stream: str) -> list[tuple[str, bytes]]:
    """Every message of `stream` now: (subject, data), read by an ephemeral ordered pass over it."""
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    subjects = info.config.subjects or []
    sub = await js.pull_subscribe(
        subjects[0] if len(subjects) == 1 else "", durable=None, stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
    )  # fmt: skip
    out: list[tuple[str, bytes]] = []
    try:
        while len(out) < info.state.messages:
            try:
                msgs = await sub.fetch(256, timeout=2)
            except nats.errors.TimeoutError:
                break  # fewer than counted: some expired or were deleted meanwhile
            for m in msgs:
                out.append((m.subject, m.data))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


async def leftovers(js: JetStreamContext, tenant: str, doc_id: str, needles: list[bytes], nuids: set[str]) -> list[str]:
    """Where anything of the document is still stored: a needle in any message of any stream, a subject or object
    named after it (outside the allowed tombstones), or a chunk of one of its objects."""
    found: list[str] = []
    prefix = object_name(tenant, doc_id)
    async for info in _streams(js):
        for subject, data in await stream_messages(js, info):
            for needle in needles:
                if needle in data:
                    found.append(f"{info}: {subject} holds {needle[:40]!r}")
            if doc_id in subject and not subject.startswith(ALLOWED_SUBJECT_PREFIXES):
                found.append(f"{info}: subject {subject}")
            kind = _uploads_kind(subject)  # in any tenant's uploads bucket (or the shared one of earlier releases)
            if kind == "M":
                name = base64.urlsafe_b64decode(subject.rsplit(".", 1)[1] + "==").decode()
                if name == prefix or name.startswith(f"{prefix}/"):
                    found.append(f"{info}: object {name}")
            if kind == "C" and subject.rsplit(".", 1)[1] in nuids:
                found.append(f"{info}: a chunk of one of the document's objects ({subject})")
    return sorted(set(found))


def _uploads_kind(subject: str) -> str | None:
    """``M`` (an object's meta) or ``C`` (a chunk) for a subject of an uploads bucket, whosever; else None."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[0] == "$O" and parts[1].startswith(LEGACY_UPLOADS_BUCKET) and parts[2] in "MC":
        return parts[2]
    return None


async def _streams(js: JetStreamContext):
    for info in await js.streams_info():
        yield info.config.name


async def object_nuids(js: JetStreamContext, tenant: str, doc_id: str) -> set[str]:
    """The chunk ids of every object stored under the document's name (its upload, rasters, images, list)."""
    prefix = object_name(tenant, doc_id)
    nuids = set()
    for subject, data in await stream_messages(js, f"OBJ_{uploads_bucket(tenant)}"):
        if _uploads_kind(subject) == "M":
            meta = json.loads(data)
            if meta.get("name", "").startswith(prefix):
                nuids.add(meta["nuid"])
    return nuids


async def poison_batch(js: JetStreamContext, tenant: str, doc_id: str, revision: int) -> None:
    """An embedded batch of the document whose vector has the wrong length: the indexer dead-letters it (the dead
    letter quotes its text) and marks the document failed."""
    chunk = EmbeddedChunk(chunk_id=f"{doc_id}-999", index=999, doc_id=doc_id, tenant=tenant, filename="x.pdf", page=1,
                          modality="text", text=LETTER_SECRET, vector=[0.1, 0.2, 0.3])  # fmt: skip
    batch = ChunksEmbedded(doc_id=doc_id, tenant=tenant, generation=GEN.number, revision=revision, batch_index=999,
                           model="poison", embedded_by="test", chunks=[chunk])  # fmt: skip
    await js.publish(Subjects.embedded(GEN, tenant), batch.model_dump_json().encode())


async def test_a_delete_leaves_no_byte_of_the_document(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    filename = f"secret-{uuid.uuid4().hex[:12]}.pdf"
    resp = await upload_bytes(http, engine.url, mixed_pdf(), filename)
    assert resp.status == 202, await resp.text()
    doc_id = (await resp.json())["doc_id"]
    done = await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=300)
    assert done["status"] == "indexed", done

    nc = await nats.connect(engine.nats_url)
    try:
        js = nc.jetstream()
        progress = await (await js.key_value("mmrag-progress")).get(f"{GEN.token}.{engine.tenant}.{doc_id}")
        revision = json.loads(progress.value)["revision"]
        await poison_batch(js, engine.tenant, doc_id, revision)
        await wait_status(http, engine.url, doc_id, {"failed"}, timeout_s=60)
        needles = [b"QX7731", LETTER_SECRET.encode(), filename.encode()]
        nuids = await object_nuids(js, engine.tenant, doc_id)
        assert len(nuids) >= 4, nuids  # the upload, the scanned page's raster, two figures (and the list)
        before = await leftovers(js, engine.tenant, doc_id, needles, nuids)
        assert any("DEADLETTER" in f for f in before) and any("object" in f for f in before), before

        async with http.delete(f"{engine.url}/v1/documents/{doc_id}") as resp:
            assert resp.status == 202, await resp.text()
        deadline, found = time.monotonic() + 90, before
        while found and time.monotonic() < deadline:
            await asyncio.sleep(1)
            found = await leftovers(js, engine.tenant, doc_id, needles, nuids)
        assert not found, f"left after the delete: {found}"
        stored = await (await js.key_value("mmrag-progress")).get(f"{GEN.token}.{engine.tenant}.{doc_id}")
        assert json.loads(stored.value)["status"] == "deleted" and json.loads(stored.value)["filename"] is None
    finally:
        await nc.close()

    async with http.post(f"{engine.url}/v1/search", json={"query": SECRET, "top_k": 20}) as resp:
        assert resp.status == 200, await resp.text()
        hits = (await resp.json())["hits"]
    assert all(h["doc_id"] != doc_id for h in hits)
