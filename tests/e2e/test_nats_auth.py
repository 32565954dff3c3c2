"""The locked bus: a real nats-server with the users and permissions `mmrag.natsauth` writes (issue 16).

Each role's identity does what its agent does and is refused what it must not (another role's consumer, a purge,
another identity's inbox); a wrong or missing password is refused. The whole pipeline under these permissions runs
in every e2e test (`mmrag up` starts its nats-server with them).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from nats.js import api

from bus.connection import CredentialsRefused, connect, connect_options, redacted
from bus.identities import ADMIN, ROLE_CONSUMERS, ROLES, identity_permissions, inbox_prefix
from bus.topology import ensure_consumer, ensure_topology
from bus.uploads import ensure_uploads_bucket
from contracts.topology import (
    PROGRESS_BUCKET,
    QUERY_CONSUMERS,
    IndexGeneration,
    Subjects,
    ingest_consumers,
    uploads_bucket,
)
from edge_api.quotas import submitted_bytes
from mmrag import natsauth
from mmrag.natsauth import Credential
from mmrag.processes import nats_server_binary
from tests.engine import BIN, free_port
from tests.nats_probe import Probe, locked_server

G1 = IndexGeneration(1)


def cred(name: str) -> Credential:
    return Credential(name, f"pw-{name}-0123456789")


@pytest.fixture
def server(tmp_path):
    users = [(cred(role), identity_permissions(role, (role,))) for role in ROLES] + [(cred(ADMIN), None)]
    srv = locked_server(tmp_path, users).start()
    yield srv
    srv.stop()


@pytest.fixture
async def admin(server):
    probe = await Probe.connect(server.url, ADMIN, cred(ADMIN).password)
    await ensure_topology(probe.js, [G1])
    yield probe
    await probe.close()


async def as_role(server, role: str) -> Probe:
    return await Probe.connect(server.url, role, cred(role).password)


async def test_a_wrong_or_missing_password_is_refused_at_once(server):
    start = time.monotonic()
    with pytest.raises(CredentialsRefused, match="MMRAG_NATS_USER"):
        await connect(server.url, name="t", user="edge", password="wrong", connect_within_s=20)
    with pytest.raises(CredentialsRefused):
        await connect(server.url, name="t", connect_within_s=20)
    assert time.monotonic() - start < 10  # not retried for connect_within_s
    nc = await connect(server.url, name="t", user="edge", password=cred("edge").password)
    await nc.close()


@pytest.mark.parametrize("role", [r for r in ROLES if r != "edge"])
async def test_every_agent_role_bootstraps_and_pulls_only_its_own_consumers(server, admin, role):
    probe = await as_role(server, role)
    try:
        await probe.allowed(lambda: ensure_topology(probe.js, []), f"{role}: bootstrap the topology")
        await probe.allowed(lambda: probe.js.stream_info("DOCS"), f"{role}: stream info")
        for consumer in ROLE_CONSUMERS.get(role, ()):
            await probe.allowed(lambda c=consumer: ensure_consumer(probe.js, c), f"{role}: create {consumer.durable}")
            sub = await probe.js.pull_subscribe_bind(durable=consumer.durable, stream=consumer.stream)
            await probe.allowed(lambda s=sub: _fetch_nothing(s), f"{role}: fetch from {consumer.durable}")
        # A consumer of another role, on a stream this role does not read (or, on the same stream, another name).
        own_streams = {c.stream for c in ROLE_CONSUMERS.get(role, ())}
        others = [c for c in _all_consumers() if c.stream not in own_streams]
        other = others[0] if others else next(c for c in QUERY_CONSUMERS.values() if c not in ROLE_CONSUMERS[role])
        sub = await probe.js.pull_subscribe_bind(durable=other.durable, stream=other.stream)
        await probe.refused(lambda: sub.fetch(1, timeout=0.5), f"{role}: fetch from {other.durable}")
        await probe.refused(lambda: probe.js.delete_stream("DOCS"), f"{role}: delete DOCS")
        await probe.refused(lambda: probe.nc.subscribe(f"{inbox_prefix('edge')}.>"), f"{role}: the edge's inbox")
        await probe.refused(lambda: probe.nc.subscribe("_INBOX.>"), f"{role}: the shared inbox space")
    finally:
        await probe.close()


async def _fetch_nothing(sub) -> None:
    try:
        await sub.fetch(1, timeout=0.3)
    except TimeoutError:
        pass


def _all_consumers():
    return [*ingest_consumers(G1).values(), *QUERY_CONSUMERS.values()]


async def test_agents_publish_only_their_outputs(server, admin):
    parser = await as_role(server, "parser")
    generator = await as_role(server, "generator")
    try:
        await parser.allowed(
            lambda: parser.js.publish(Subjects.parsed(G1, "text", "interactive", "acme"), b"{}"), "parser: its chunks"
        )
        await ensure_uploads_bucket(admin.js, "acme")
        uploads = await parser.js.object_store(uploads_bucket("acme"))  # any tenant's bucket
        await parser.allowed(lambda: uploads.put("acme/d1/images/x", b"png"), "parser: an extracted image")
        await parser.refused(lambda: ensure_uploads_bucket(parser.js, "beta"), "parser: create a tenant's bucket")
        await parser.refused(lambda: parser.js.get_msg("QUERIES", 1), "parser: read QUERIES (outside its grants)")
        await parser.refused(lambda: parser.js.get_msg("OBJ_mmrag-query-images", 1), "parser: a query image")
        kv = await parser.js.key_value(PROGRESS_BUCKET)
        await parser.allowed(lambda: kv.put("g1.acme.d1", b"{}"), "parser: progress")
        await parser.refused(lambda: parser.js.publish(Subjects.embedded(G1, "acme"), b"{}"), "parser: embedded chunks")
        await parser.refused(lambda: parser.nc.publish("answer.acme.r1", b"x"), "parser: an answer")
        await parser.refused(lambda: parser.js.purge_stream("DOCS"), "parser: purge DOCS")
        await generator.allowed(lambda: generator.nc.publish("answer.acme.r1", b"x"), "generator: an answer")
        await generator.refused(lambda: generator.nc.subscribe("answer.>"), "generator: read answers")
        await generator.refused(lambda: generator.js.publish(Subjects.ingest("acme", "d"), b"{}"), "generator: submit")
    finally:
        await parser.close()
        await generator.close()


async def test_the_retriever_answers_a_browse_itself_but_reads_no_answer(server, admin):
    """A browse (the document page's passages) is answered by the retriever on the answer subject; as for a
    give-up's error event, which it sends the same way."""
    retriever = await as_role(server, "retriever")
    try:
        await retriever.allowed(lambda: retriever.nc.publish("answer.acme.r1", b"x"), "retriever: a browse's results")
        await retriever.refused(lambda: retriever.nc.subscribe("answer.>"), "retriever: read answers")
        await retriever.refused(lambda: retriever.js.publish(Subjects.ingest("acme", "d"), b"{}"), "retriever: submit")
    finally:
        await retriever.close()


async def test_the_edge_api_submits_reads_and_answers_but_cannot_purge_or_consume(server, admin):
    edge = await as_role(server, "edge")
    try:
        ack = await edge.allowed(lambda: edge.js.publish(Subjects.ingest("acme", "d1"), b"{}"), "edge: submit")
        msg = await edge.allowed(lambda: edge.js.get_last_msg("DOCS", Subjects.ingest("acme", "d1")), "edge: read DOCS")
        assert msg.seq == ack.seq
        await edge.allowed(lambda: edge.js.publish(Subjects.delete("acme", "d1"), b"{}"), "edge: delete")
        await edge.allowed(lambda: edge.nc.subscribe("answer.acme.r1"), "edge: an answer stream")
        kv = await edge.js.key_value(PROGRESS_BUCKET)
        await edge.allowed(lambda: kv.put("g1.acme.d1", b"{}"), "edge: progress")
        await edge.allowed(lambda: kv.get("g1.acme.d1"), "edge: read progress")
        # A tenant's first upload creates its bucket, as the topology's replicas say; then put, read, remove.
        uploads = await edge.allowed(lambda: ensure_uploads_bucket(edge.js, "acme"), "edge: create acme's bucket")
        await edge.allowed(lambda: uploads.put("acme/d1", b"%PDF"), "edge: upload")
        await edge.allowed(lambda: uploads.get("acme/d1"), "edge: read an upload")
        await edge.allowed(lambda: edge.js.purge_stream(f"OBJ_{uploads_bucket('acme')}", subject="$O.x.C.y"),
                           "edge: purge a replaced upload's chunks")  # fmt: skip
        # The wildcards that reach every tenant's bucket reach none of the topology's other streams.
        await edge.refused(lambda: edge.js.get_msg("CHUNKS", 1), "edge: read a CHUNKS message")
        await edge.refused(lambda: edge.js.get_msg("QUERIES", 1, direct=True), "edge: direct-get QUERIES")
        await edge.refused(lambda: edge.js.add_stream(name="CHUNKS", subjects=["chunks.>"]), "edge: create CHUNKS")
        await edge.refused(lambda: edge.js.purge_stream("KV_mmrag-index"), "edge: purge the index records")
        await edge.refused(lambda: edge.js.subscribe("chunks.>", stream="CHUNKS", ordered_consumer=True),
                           "edge: an ordered consumer on CHUNKS")  # fmt: skip
        for stream in ("DOCS", "CHUNKS", "GRAPH", "DEADLETTER"):
            await edge.refused(lambda s=stream: edge.js.purge_stream(s), f"edge: purge {stream}")
        await edge.refused(lambda: edge.js.delete_stream("QUERIES"), "edge: delete QUERIES")
        await edge.refused(
            lambda: edge.js.update_stream(api.StreamConfig(name="DOCS", subjects=["docs.>"], max_msgs=1)),
            "edge: shrink DOCS",
        )
        # The byte quota's consumer (a random name, the ingest filter) works; other consumers do not.
        assert await edge.allowed(lambda: submitted_bytes(edge.js, "acme", {"d1"}), "edge: the byte quota") == 0
        await edge.refused(
            lambda: edge.js.add_consumer("DOCS", api.ConsumerConfig(name="spy", filter_subject="docs.delete.*.*")),
            "edge: a DOCS consumer of another filter",
        )
        sub = await edge.js.pull_subscribe_bind(durable="indexer-g1", stream="CHUNKS")
        await edge.refused(lambda: sub.fetch(1, timeout=0.5), "edge: the indexer's consumer")
        await edge.refused(lambda: edge.nc.subscribe("chunks.>"), "edge: chunks")
        await edge.refused(lambda: edge.js.publish(Subjects.embedded(G1, "acme"), b"{}"), "edge: embedded chunks")
        await edge.refused(lambda: edge.nc.subscribe(f"{inbox_prefix('indexer')}.>"), "edge: the indexer's inbox")
    finally:
        await edge.close()


def test_mmrag_up_writes_private_credentials_and_a_valid_config(tmp_path):
    data = tmp_path / "data"
    config = natsauth.write_server_config(data)
    folder = natsauth.auth_dir(data)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [config, *folder.glob("*.json")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    creds = natsauth.local_credentials(data)
    assert set(creds) == {"agents", "edge", ADMIN} and len({c.password for c in creds.values()}) == 3
    assert natsauth.local_credentials(data) == creds  # written once, the same at the next start
    users = {u["user"]: u for u in json.loads(config.read_text())["authorization"]["users"]}
    agents = identity_permissions("agents", natsauth.LOCAL_IDENTITIES["agents"])
    assert set(users["agents"]["permissions"]["publish"]["allow"]) == agents.publish
    assert "permissions" not in users[ADMIN]
    assert "docs.ingest.*.*" not in users["agents"]["permissions"]["publish"]["allow"]  # only the edge submits
    check = subprocess.run([nats_server_binary(), "-c", str(config), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout


def test_mmrag_up_on_a_locked_external_nats_with_a_wrong_password_is_refused_in_one_line(server, tmp_path):
    url = f"nats://edge:not-the-password@127.0.0.1:{server.port}"
    run = subprocess.run(
        [str(BIN / "mmrag"), "up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), "--nats-url", url],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MMRAG_NATS_USER": "", "MMRAG_NATS_PASSWORD": ""},
    )  # fmt: skip
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "refused the credentials" in lines[0] and "MMRAG_NATS_USER" in lines[0]
    assert "not-the-password" not in run.stderr + run.stdout  # the URL is shown without its password


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


@pytest.fixture(scope="module")
def engine(private_engine):  # noqa: ANN001, ANN201 - it reads the engine's processes and their credentials
    return private_engine


@pytest.mark.e2e
async def test_mmrag_up_gives_each_child_only_its_own_credential(engine):
    creds = {name: engine.nats_credential(name) for name in ("agents", "edge", ADMIN)}
    environ = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in _children(engine.proc.pid)}
    edge = [pid for pid, env in environ.items() if b"\0MMRAG_NATS_USER=edge\0" in b"\0" + env]
    assert len(edge) == 1, environ.keys()
    assert f"\0MMRAG_NATS_PASSWORD={creds['edge'].password}\0".encode() in b"\0" + environ[edge[0]]
    servers = []
    for pid, env in environ.items():  # nats-server, the edge API, the agents' work-pool processes
        for name in ("agents", ADMIN):  # the agents' credential stays in `mmrag up`'s memory, admin's on disk
            assert creds[name].password.encode() not in env, (pid, name)
        if pid not in edge:
            assert b"MMRAG_NATS_PASSWORD" not in env, pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        if "nats-server" in cmdline:
            servers.append(pid)
            assert str(natsauth.auth_dir(engine.data_dir) / natsauth.CONFIG_NAME) in cmdline
    assert len(servers) == 1, environ.keys()
    with pytest.raises(CredentialsRefused):  # anonymous clients are refused
        await connect(f"nats://127.0.0.1:{engine.nats_port}", name="anonymous", connect_within_s=5)


def test_connect_options_take_the_identity_from_settings_or_the_url():
    assert connect_options("nats://a:1, nats://b:2") == {"servers": ["nats://a:1", "nats://b:2"]}
    from_url = connect_options("nats://edge:secret@a:1")
    assert from_url == {"servers": ["nats://edge:secret@a:1"], "inbox_prefix": inbox_prefix("edge")}
    given = connect_options("nats://edge:secret@a:1", user="parser", password="pw")
    assert given["user"] == "parser" and given["password"] == "pw" and given["inbox_prefix"] == "_INBOX_parser"
    assert redacted("nats://edge:secret@a:1,nats://b:2") == "nats://edge:***@a:1,nats://b:2"
