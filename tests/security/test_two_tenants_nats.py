"""Two tenants on one bus: tenant A's external-publisher credential (`mmrag nats-user create --tenant A`) submits
and deletes A's documents and reads A's progress, and is refused everything of tenant B and of the engine.

A real nats-server runs with the config `mmrag up` writes (the data dir's identities); the credential is created
by the real command while the server runs, which reloads its config.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from bus.connection import CredentialsRefused, connect
from bus.identities import inbox_prefix
from bus.topology import ensure_topology
from contracts.topology import PROGRESS_BUCKET, UPLOADS_BUCKET, IndexGeneration, Subjects
from mmrag import natsauth
from tests.engine import BIN, NatsServer
from tests.nats_probe import Probe

G1 = IndexGeneration(1)


def nats_user(data_dir, tenant: str) -> dict[str, str]:
    out = subprocess.run(
        [str(BIN / "mmrag"), "nats-user", "create", "--tenant", tenant, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


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
    # Tenant B's document, as the edge API stores it; and a progress record of A's.
    uploads = await edge.js.object_store(UPLOADS_BUCKET)
    await uploads.put("B/doc1", b"B's confidential bytes")
    await edge.js.publish(Subjects.ingest("B", "doc1"), b"{}")
    progress = await edge.js.key_value(PROGRESS_BUCKET)
    await progress.put("g1.B.doc1", b'{"status": "indexed"}')
    await progress.put("g1.A.doc1", b'{"status": "indexed"}')

    # The agents follow their durables' max-deliveries advisories and read the message one names (`PullWorker`).
    advisory = Subjects.max_deliveries_advisory("DOCS", G1.durable("parser"))
    await agents.allowed(lambda: agents.nc.subscribe(advisory, queue=G1.durable("parser")), "agents: the advisory")
    await agents.allowed(lambda: agents.js.get_msg("DOCS", 1), "agents: read a DOCS message by its sequence")

    cred = nats_user(data, "A")  # while the server runs: it reloads its config
    assert cred["user"] == "tenant-A"
    assert nats_user(data, "A") == cred  # shown again, not replaced
    a = await Probe.connect(server.url, cred["user"], cred["password"])
    try:
        ack = await a.allowed(lambda: a.js.publish(Subjects.ingest("A", "doc2"), b"{}"), "A: submit for A")
        assert ack.stream == "DOCS"
        await a.allowed(lambda: a.js.publish(Subjects.delete("A", "doc2"), b"{}"), "A: delete A's document")
        stream, key = f"KV_{PROGRESS_BUCKET}", f"$KV.{PROGRESS_BUCKET}"
        entry = await a.allowed(lambda: a.js.get_msg(stream, subject=f"{key}.g1.A.doc1", direct=True), "A: A's progress")
        assert entry.data == b'{"status": "indexed"}'

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
        for stream in ("DOCS", "CHUNKS", "QUERIES", "GRAPH", f"KV_{PROGRESS_BUCKET}", f"OBJ_{UPLOADS_BUCKET}"):
            await a.refused(lambda s=stream: a.js.purge_stream(s), f"A: purge {stream}")
        await a.refused(lambda: a.js.delete_stream("DOCS"), "A: delete DOCS")
        await a.refused(lambda: a.js.get_last_msg("DOCS", Subjects.ingest("B", "doc1")), "A: read B's submission")
        await a.refused(lambda: a.js.object_store(UPLOADS_BUCKET), "A: open the uploads bucket")
        await a.refused(lambda: a.nc.request(f"$JS.API.STREAM.MSG.GET.OBJ_{UPLOADS_BUCKET}", b"{}"), "A: B's upload")
        await a.refused(lambda: a.nc.publish(f"$O.{UPLOADS_BUCKET}.M.Qi9kb2Mx", b"{}"), "A: overwrite B's upload")
        await a.refused(lambda: a.js.pull_subscribe("docs.ingest.B.>", durable="spy", stream="DOCS"), "A: a consumer")
        await a.refused(lambda: a.js.streams_info(), "A: list the streams")
        # B's upload and submission are intact.
        assert (await uploads.get("B/doc1")).data == b"B's confidential bytes"
        assert (await edge.js.get_last_msg("DOCS", Subjects.ingest("B", "doc1"))).data == b"{}"
    finally:
        for probe in (a, agents, edge):
            await probe.close()
    # B's credential is not A's.
    cred_b = nats_user(data, "B")
    with pytest.raises(CredentialsRefused):
        await connect(server.url, name="t", user=cred_b["user"], password=cred["password"], connect_within_s=5)
