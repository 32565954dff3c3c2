"""Two tenants on one bus: tenant A's external-publisher credential (`mmrag nats-user create --tenant A`) writes
A's uploads bucket, submits and deletes A's documents and reads A's progress, and is refused everything of tenant B
and of the engine. On a running engine with auth on, what it stores and submits is indexed and searchable through
A's API key.

A real nats-server runs with the config `mmrag up` writes (the data dir's identities); the credential is created
by the real command while the server runs, which reloads its config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid

import aiohttp
import nats
import nats.js.errors
import pytest
from nats.js.errors import NotFoundError

from bus.connection import CredentialsRefused, connect
from bus.identities import inbox_prefix
from bus.topology import ensure_topology
from bus.uploads import ensure_uploads_bucket
from contracts.messages import DocumentSubmitted
from contracts.topology import HEADER_MSG_ID, PROGRESS_BUCKET, IndexGeneration, Subjects, object_name, uploads_bucket
from mmrag import natsauth
from tests.engine import BIN, NatsServer, sse_events, wait_status
from tests.factories import make_pdf
from tests.nats_probe import Probe
from tests.security.conftest import new_tenant

G1 = IndexGeneration(1)


def nats_user(data_dir, tenant: str, nats_url: str) -> dict[str, str]:
    out = subprocess.run(
        [str(BIN / "mmrag"), "nats-user", "create", "--tenant", tenant, "--data-dir", str(data_dir),
         "--nats-url", nats_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def api_config(stream: str):
    from nats.js import api

    return api.StreamConfig(name=stream, subjects=[f"$O.{stream[4:]}.>"], max_bytes=1)


@pytest.fixture
def engine_bus(tmp_path):
    """nats-server with `mmrag up`'s config and pid file, its topology bootstrapped by the agents' identity."""
    data = tmp_path / "data"
    server = NatsServer(tmp_path / "nats", config=natsauth.write_server_config(data), pid_file=natsauth.pid_file(data))
    server.start()
    yield data, server
    server.stop()


async def test_tenant_a_reaches_only_its_own_documents(engine_bus):
    data, server = engine_bus
    creds = natsauth.local_credentials(data)
    agents = await Probe.connect(server.url, "agents", creds["agents"].password)
    edge = await Probe.connect(server.url, "edge", creds["edge"].password)
    await ensure_topology(agents.js, [G1])
    # Tenant B's document, as the edge API stores it (in B's bucket, made on B's first upload); A's progress record.
    uploads = await ensure_uploads_bucket(edge.js, "B")
    await uploads.put("B/doc1", b"B's confidential bytes")
    await edge.js.publish(Subjects.ingest("B", "doc1"), b"{}")
    progress = await edge.js.key_value(PROGRESS_BUCKET)
    await progress.put("g1.B.doc1", b'{"status": "indexed"}')
    await progress.put("g1.A.doc1", b'{"status": "indexed"}')

    # The agents follow their durables' max-deliveries advisories and read the message one names (`PullWorker`).
    advisory = Subjects.max_deliveries_advisory("DOCS", G1.durable("parser"))
    await agents.allowed(lambda: agents.nc.subscribe(advisory, queue=G1.durable("parser")), "agents: the advisory")
    await agents.allowed(lambda: agents.js.get_msg("DOCS", 1), "agents: read a DOCS message by its sequence")

    cred = nats_user(data, "A", server.url)  # while the server runs: it reloads its config, A's bucket is made
    assert cred["user"] == "tenant-A"
    assert nats_user(data, "A", server.url) == cred  # shown again, not replaced
    a = await Probe.connect(server.url, cred["user"], cred["password"])
    try:
        ack = await a.allowed(lambda: a.js.publish(Subjects.ingest("A", "doc2"), b"{}"), "A: submit for A")
        assert ack.stream == "DOCS"
        await a.allowed(lambda: a.js.publish(Subjects.delete("A", "doc2"), b"{}"), "A: delete A's document")
        stream, key = f"KV_{PROGRESS_BUCKET}", f"$KV.{PROGRESS_BUCKET}"
        entry = await a.allowed(lambda: a.js.get_msg(stream, subject=f"{key}.g1.A.doc1", direct=True), "A: A's progress")
        assert entry.data == b'{"status": "indexed"}'

        # A's own bucket, before any upload over HTTP: what nats-py's ObjectStore does to store a document.
        own = await a.allowed(lambda: a.js.object_store(uploads_bucket("A")), "A: open A's bucket")
        await a.allowed(lambda: own.put("A/doc2", b"A's first version"), "A: store A's document")
        await a.allowed(lambda: own.put("A/doc2", b"A's second version"), "A: replace it (purges the old chunks)")
        assert (await a.allowed(lambda: own.get_info("A/doc2"), "A: its info")).size == len(b"A's second version")
        await a.allowed(lambda: own.delete("A/doc2"), "A: delete it")

        bucket_b, stream_b = uploads_bucket("B"), f"OBJ_{uploads_bucket('B')}"
        meta_b = f"$O.{bucket_b}.M.Qi9kb2Mx"  # base64 of "B/doc1"
        await a.refused(lambda: a.js.object_store(bucket_b), "A: open B's bucket")
        await a.refused(lambda: a.js.get_last_msg(stream_b, meta_b), "A: read B's object info")
        await a.refused(lambda: a.js.get_msg(stream_b, 1, direct=True), "A: read B's chunks (direct)")
        await a.refused(lambda: a.nc.request(f"$JS.API.STREAM.MSG.GET.{stream_b}", b"{}"), "A: read B's upload")
        await a.refused(lambda: a.nc.publish(meta_b, b"{}"), "A: overwrite B's upload")
        await a.refused(lambda: a.nc.publish(f"$O.{bucket_b}.C.x", b"junk"), "A: add chunks to B's bucket")
        await a.refused(lambda: a.js.purge_stream(stream_b), "A: purge B's bucket (delete every upload of B)")
        await a.refused(lambda: a.js.delete_stream(stream_b), "A: delete B's bucket")
        await a.refused(lambda: a.nc.subscribe(f"$O.{bucket_b}.>"), "A: watch B's bucket's subjects")
        await a.refused(lambda: a.js.subscribe(f"$O.{bucket_b}.M.>", stream=stream_b, ordered_consumer=True),
                        "A: watch (list) B's bucket")  # fmt: skip
        await a.refused(lambda: a.js.stream_info(stream_b), "A: B's bucket's size")
        await a.refused(lambda: a.nc.request("$JS.API.STREAM.NAMES", b"{}"), "A: the bucket names (every tenant's)")
        await a.refused(lambda: ensure_uploads_bucket(a.js, "C"), "A: create a bucket")
        await a.refused(lambda: a.js.update_stream(api_config(stream_b)), "A: change B's bucket")

        await a.refused(lambda: a.js.get_msg(stream, subject=f"{key}.g1.B.doc1", direct=True), "A: B's progress")
        await a.refused(lambda: a.js.get_msg(stream, subject=f"{key}.g1.B.doc1"), "A: B's progress, not direct")
        await a.refused(lambda: a.js.key_value(PROGRESS_BUCKET), "A: the progress bucket's counts (all tenants)")
        await a.refused(lambda: a.js.subscribe(f"{key}.g1.B.*", stream=stream), "A: watch B's progress")
        await a.refused(lambda: a.nc.publish(f"{key}.g1.A.doc1", b"{}"), "A: write progress")
        await a.refused(lambda: a.js.publish(Subjects.delete("B", "doc1"), b"{}"), "A: delete B's document")
        await a.refused(lambda: a.js.publish(Subjects.ingest("B", "x"), b"{}"), "A: submit for B")
        await a.refused(lambda: a.js.publish(Subjects.query("query.retrieve", "A"), b"{}"), "A: ask on the bus")
        for subject in ("answer.>", "answer.B.*", "chunks.>", "docs.>", "graph.>", "deadletter.>", "_INBOX.>",
                        f"{inbox_prefix('edge')}.>", "$KV.>", "$O.>", "$JS.EVENT.>", advisory, ">"):  # fmt: skip
            await a.refused(lambda s=subject: a.nc.subscribe(s), f"A: subscribe {subject}")
        for stream in ("DOCS", "CHUNKS", "QUERIES", "GRAPH", f"KV_{PROGRESS_BUCKET}"):
            await a.refused(lambda s=stream: a.js.purge_stream(s), f"A: purge {stream}")
        await a.refused(lambda: a.js.delete_stream("DOCS"), "A: delete DOCS")
        await a.refused(lambda: a.js.get_last_msg("DOCS", Subjects.ingest("B", "doc1")), "A: read B's submission")
        await a.refused(lambda: a.js.pull_subscribe("docs.ingest.B.>", durable="spy", stream="DOCS"), "A: a consumer")
        await a.refused(lambda: a.js.streams_info(), "A: list the streams")
        # B's upload and submission are intact.
        assert (await uploads.get("B/doc1")).data == b"B's confidential bytes"
        assert (await edge.js.get_last_msg("DOCS", Subjects.ingest("B", "doc1"))).data == b"{}"
    finally:
        for probe in (a, agents, edge):
            await probe.close()
    # B's credential is not A's.
    cred_b = nats_user(data, "B", server.url)
    with pytest.raises(CredentialsRefused):
        await connect(server.url, name="t", user=cred_b["user"], password=cred["password"], connect_within_s=5)


async def _indexed_revision(engine, tenant: str, doc_id: str, revision: int) -> None:
    """Until the document's progress record says this revision is indexed (the API's view has no revision)."""
    nc = await nats.connect(engine.nats_url)
    try:
        kv = await nc.jetstream().key_value(PROGRESS_BUCKET)
        async with asyncio.timeout(120):
            while True:
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    record = json.loads((await kv.get(f"g1.{tenant}.{doc_id}")).value or b"{}")
                    assert record.get("status") != "failed", record
                    if record.get("status") == "indexed" and record.get("revision") == revision:
                        return
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.mark.e2e
async def test_an_external_publisher_of_a_stores_and_submits_and_a_finds_it(shared_engine):
    """The README's ingest path with tenant A's own NATS credential on a running engine with auth on: the bytes into
    A's bucket, the submission on ``docs.ingest.A.<doc_id>``; indexed and searchable through A's API key. A
    replacement with its own message id is not dropped as a duplicate."""
    a_engine = new_tenant(shared_engine, "publisher-a")
    cred = nats_user(shared_engine.data_dir, a_engine.tenant, f"nats://127.0.0.1:{shared_engine.nats_port}")
    a = await Probe.connect(f"nats://127.0.0.1:{shared_engine.nats_port}", cred["user"], cred["password"])
    doc_id = uuid.uuid4().hex
    name = object_name(a_engine.tenant, doc_id)
    try:
        store = await a.allowed(lambda: a.js.object_store(uploads_bucket(a_engine.tenant)), "A: its bucket")
        for n, text in enumerate(["The heron count at the weir is 41.", "The heron count at the weir is 58."]):
            data = make_pdf([text])
            await a.allowed(lambda d=data: store.put(name, d), "A: store the bytes")
            submitted = DocumentSubmitted(doc_id=doc_id, tenant=a_engine.tenant, filename="herons.pdf",
                                          content_type="application/pdf", object_name=name, size=len(data))  # fmt: skip
            ack = await a.allowed(
                lambda s=submitted: a.js.publish(Subjects.ingest(a_engine.tenant, doc_id), s.model_dump_json().encode(),
                                                 headers={HEADER_MSG_ID: f"{doc_id}:{s.submitted_at.isoformat()}"}),
                "A: submit",
            )  # fmt: skip
            assert not ack.duplicate, n
            async with aiohttp.ClientSession(headers=a_engine.headers) as http:
                await _indexed_revision(shared_engine, a_engine.tenant, doc_id, ack.seq)
                assert (await wait_status(http, a_engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
                events = await sse_events(http, a_engine.url, {"question": "What is the heron count at the weir?"})
            answer = "".join(d.get("text", "") for k, d in events if k == "token")
            assert any(k == "citation" and d["doc_id"] == doc_id for k, d in events), events
            assert ("41" if n == 0 else "58") in answer, answer
    finally:
        await a.close()
    # The agents read it from A's bucket; nothing of A went anywhere else.
    admin = await Probe.connect(f"nats://127.0.0.1:{shared_engine.nats_port}", "admin",
                                shared_engine.nats_credential().password)  # fmt: skip
    try:
        assert (await (await admin.js.object_store(uploads_bucket(a_engine.tenant))).get_info(name)).size > 0
        with pytest.raises(NotFoundError):
            await admin.js.stream_info("OBJ_mmrag-uploads")  # no shared bucket on a fresh data dir
    finally:
        await admin.close()
