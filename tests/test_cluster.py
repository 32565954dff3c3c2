"""A three-node NATS cluster on loopback, and `mmrag up --nats-url` on an existing NATS.

- the topology is replicated (R3) and survives the loss of a node;
- the engine ingests 50 documents through a cluster while the node its agents are connected to is SIGKILLed:
  all 50 end `indexed`, none is submitted or indexed twice, and the agents and the edge API reconnect by
  themselves (same processes, no restart);
- `mmrag up --nats-url` starts no nats-server, leaves that NATS running when it stops, and refuses in one line
  a NATS that is unreachable, has no JetStream, or cannot hold the requested replicas.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats
import psutil
import pytest
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from bus.topology import ensure_topology
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, STREAMS, UPLOADS_BUCKET, IndexGeneration
from mmrag.processes import free_port, nats_server_binary, spawn, stop, wait_for_port
from tests.engine import Engine, upload_bytes
from tests.factories import make_pdf

BIN = Path(sys.executable).parent
DOCS = 50


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{cluster_port}" for _, cluster_port, _ in ports)
    nodes = []
    for i, (port, cluster_port, monitor_port) in enumerate(ports):
        argv = [
            nats_server_binary(), "-js", "-sd", str(tmp_path / f"n{i}"), "-a", "127.0.0.1", "-p", str(port),
            "-m", str(monitor_port), "--server_name", f"n{i}", "--cluster_name", "mmrag",
            "--cluster", f"nats://127.0.0.1:{cluster_port}", "--routes", routes, "-l", str(tmp_path / f"n{i}.log"),
        ]  # fmt: skip
        proc = spawn(argv)
        wait_for_port("127.0.0.1", port, proc=proc, what=f"nats-server n{i}")
        nodes.append(Node(f"n{i}", proc, port, monitor_port))
    yield nodes
    for node in nodes:
        stop(node.proc)


def urls(nodes: list[Node]) -> str:
    return ",".join(node.url for node in nodes)


async def test_streams_and_buckets_are_replicated_three_times_and_survive_a_node(cluster: list[Node]) -> None:
    nc = await nats.connect(servers=urls(cluster).split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(60):
            while True:  # the cluster elects its JetStream meta leader first
                try:
                    await ensure_topology(js, replicas=3)
                    break
                except Exception:  # noqa: BLE001 - not ready yet (no meta leader / not enough peers)
                    await asyncio.sleep(0.5)
        for name in [*(s.name for s in STREAMS), f"OBJ_{UPLOADS_BUCKET}", f"KV_{PROGRESS_BUCKET}"]:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
        ack = await js.publish("docs.ingest.t.d1", b"{}")
        victim = next(node.proc for node in cluster if node.port != nc.connected_url.port)
        victim.kill()
        victim.wait()
        async with asyncio.timeout(30):  # a quorum of two keeps the acknowledged message
            while True:
                try:
                    msg = await js.get_msg("DOCS", ack.seq)
                    break
                except Exception:  # noqa: BLE001 - leader election after the loss
                    await asyncio.sleep(0.3)
        assert msg.data == b"{}"
    finally:
        await nc.close()


# --------------------------------------------------------------------------- the engine on the cluster


async def connection_names(http: aiohttp.ClientSession, node: Node) -> list[str]:
    async with http.get(f"http://127.0.0.1:{node.monitor_port}/connz?limit=1024") as resp:
        assert resp.status == 200
        return [c.get("name", "") for c in (await resp.json(content_type=None)).get("connections") or []]


async def agents_node(http: aiohttp.ClientSession, nodes: list[Node]) -> Node | None:
    """The node holding the agents' connection (named ``mmrag-parser+ocr+...``), if it is up."""
    for node in nodes:
        if node.proc.poll() is None and any(n.startswith("mmrag-parser+") for n in await connection_names(http, node)):
            return node
    return None


async def upload_until_accepted(http: aiohttp.ClientSession, url: str, data: bytes, filename: str) -> str:
    """Upload as a careful client does while the cluster elects new leaders: 503 ``backbone_unavailable`` (nothing
    was stored) is retried; 503 ``submission_unconfirmed`` is settled by the document's status first (200: it
    was stored, keep that id; 404: it was not, upload again), so a retry never submits a document twice."""
    async with asyncio.timeout(180):
        while True:
            resp = await upload_bytes(http, url, data, filename)
            if resp.status == 202:
                return (await resp.json())["doc_id"]
            assert resp.status == 503, (resp.status, await resp.text())
            error = (await resp.json())["error"]
            if error["code"] == "submission_unconfirmed":
                while True:
                    async with http.get(f"{url}/v1/documents/{error['doc_id']}") as status:
                        if status.status == 200:
                            return error["doc_id"]
                        if status.status == 404:
                            break
                    await asyncio.sleep(0.5)
            await asyncio.sleep(0.5)


async def per_document(js: JetStreamContext, subject: str) -> Counter[str]:
    """How many messages each document has on `subject` (a wildcard), read from the stream's start.

    The document is the subject's last token on ``docs.ingest.<tenant>.<doc_id>``, else the payload's ``doc_id``.
    """
    info = await js.stream_info(DOCS_STREAM.name, subjects_filter=subject)
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    counts: Counter[str] = Counter()
    try:
        for _ in range(sum((info.state.subjects or {}).values())):
            msg = await sub.next_msg(timeout=30)
            by_subject = msg.subject.startswith("docs.ingest.")
            counts[msg.subject.rsplit(".", 1)[-1] if by_subject else json.loads(msg.data)["doc_id"]] += 1
    finally:
        await sub.unsubscribe()
    return counts


async def all_statuses(http: aiohttp.ClientSession, url: str, doc_ids: list[str]) -> dict[str, dict]:
    out = {}
    for doc_id in doc_ids:
        async with http.get(f"{url}/v1/documents/{doc_id}") as resp:
            out[doc_id] = await resp.json() if resp.status == 200 else {"status": f"http {resp.status}"}
    return out


@pytest.mark.e2e
async def test_engine_on_a_cluster_indexes_every_document_once_through_the_loss_of_a_node(
    cluster: list[Node], tmp_path: Path
) -> None:
    engine = Engine(
        tmp_path / "data", tmp_path / "engine.log", external_nats=urls(cluster),
        env={"MMRAG_STREAM_REPLICAS": "3", "MMRAG_METRICS_PORT": "0"},
    )  # fmt: skip
    await asyncio.to_thread(engine.start, 240)
    timeout = aiohttp.ClientTimeout(total=60)
    doc_ids: list[str] = []
    try:
        assert engine.proc is not None
        tree = psutil.Process(engine.proc.pid)
        assert not [p for p in tree.children(recursive=True) if p.name() == "nats-server"]  # none of its own
        [edge] = [p.pid for p in tree.children() if "edge_api" in " ".join(p.cmdline())]
        async with aiohttp.ClientSession(timeout=timeout) as http:
            victim = await agents_node(http, cluster)
            assert victim is not None, "the agents' connection is on no node"
            pdfs = [
                make_pdf([f"Cluster document {i}. The otter number of this page is {1000 + i}."]) for i in range(DOCS)
            ]
            for i, pdf in enumerate(pdfs):
                if i == DOCS // 2:  # half submitted, the first ones being parsed, embedded, indexed
                    victim.proc.kill()
                    victim.proc.wait()
                doc_ids.append(await upload_until_accepted(http, engine.url, pdf, f"doc{i}.pdf"))
            assert len(set(doc_ids)) == DOCS

            async with asyncio.timeout(420):
                while True:
                    statuses = await all_statuses(http, engine.url, doc_ids)
                    if all(s["status"] in ("indexed", "failed") for s in statuses.values()):
                        break
                    await asyncio.sleep(1)
            assert {d: s["status"] for d, s in statuses.items() if s["status"] != "indexed"} == {}, engine.log_tail()
            for s in statuses.values():
                assert s["chunks_total"] >= 1 and s["chunks_indexed"] == s["chunks_total"], s

            # The agents reconnected by themselves: same processes, their connection on a surviving node.
            assert engine.proc.poll() is None
            assert [p.pid for p in tree.children() if "edge_api" in " ".join(p.cmdline())] == [edge]
            moved = await agents_node(http, cluster)
            assert moved is not None and moved is not victim
            log = engine.log_path.read_text(errors="replace")
            assert "reconnected to NATS" in log

        survivors = [node for node in cluster if node is not victim]
        nc = await nats.connect(servers=urls(survivors).split(","))
        try:
            js = nc.jetstream()
            assert (await js.stream_info(DOCS_STREAM.name)).config.num_replicas == 3
            submitted = await per_document(js, "docs.ingest.>")
            # Exactly one `docs.indexed` event per document, even when the parser's batch-count write is delayed
            # or redelivered through the failover: the parser holds back its last batch until the count is
            # recorded, so the completing write (which publishes the event) is always the indexer's. The event
            # follows that write, so the last ones may still be on their way when the statuses say `indexed`.
            async with asyncio.timeout(60):
                while True:
                    indexed = await per_document(js, "docs.indexed.>")
                    if all(indexed[d] for d in doc_ids):
                        break
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()
        assert {d: submitted[d] for d in doc_ids} == dict.fromkeys(doc_ids, 1)  # each stored once
        assert sum(submitted.values()) == DOCS  # and nothing else (no retried upload stored as well)
        assert {d: indexed[d] for d in doc_ids} == dict.fromkeys(doc_ids, 1)  # each announced exactly once
        assert set(indexed) <= set(doc_ids)
    finally:
        code = await asyncio.to_thread(engine.stop)
    assert code == 0, engine.log_tail()
    assert all(node.proc.poll() is None for node in cluster if node is not victim)  # not ours to stop

    from search.vectorstore import open_vector_store

    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=engine.data_dir / "qdrant")
    try:
        collection = IndexGeneration(1).collection("mmrag")
        points = {d: store.count(collection, doc_id=d) for d in doc_ids}
        assert store.count(collection) == sum(points.values())
    finally:
        store.close()
    assert points == {d: statuses[d]["chunks_total"] for d in doc_ids}  # no point twice, none missing


# --------------------------------------------------------------------------- mmrag up --nats-url refusals


def refused(nats_url: str, tmp_path: Path, **env: str) -> str:
    """Run `mmrag up --nats-url` expecting a refusal: the one stderr line."""
    run = subprocess.run(
        [str(BIN / "mmrag"), "up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), "--nats-url", nats_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "mmrag is up" not in run.stdout
    assert not (tmp_path / "d" / "nats").exists()  # no store of its own
    return lines[0]


def test_an_unreachable_nats_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}"
    assert "unreachable" in refused(url, tmp_path)


def test_a_nats_without_jetstream_is_refused_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)])  # no -js
    try:
        wait_for_port("127.0.0.1", port, proc=proc, what="nats-server")
        line = refused(f"nats://127.0.0.1:{port}", tmp_path)
        assert "has no JetStream" in line and "-js" in line
        assert proc.poll() is None  # left running
    finally:
        stop(proc)


def test_more_replicas_than_servers_are_refused_in_one_line(nats_server, tmp_path: Path) -> None:
    line = refused(nats_server.url, tmp_path, MMRAG_STREAM_REPLICAS="3")
    assert "refused the topology with 3 replica(s)" in line and "MMRAG_STREAM_REPLICAS" in line
