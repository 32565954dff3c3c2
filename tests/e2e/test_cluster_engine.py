"""`mmrag up --nats-url` on a three-node NATS cluster (tests/bus/test_cluster.py starts it): the engine ingests 50
documents while the node its agents are connected to is SIGKILLed: all 50 end `indexed`, none is submitted or
indexed twice, and the agents and the edge API reconnect by themselves (same processes, no restart).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import nats
import psutil
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from contracts.topology import DOCS_STREAM, IndexGeneration
from tests.bus.test_cluster import DOCS, Node, cluster, urls  # noqa: F401 - `cluster` is the fixture
from tests.engine import Engine, upload_until_accepted
from tests.factories import make_pdf


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


async def test_engine_on_a_cluster_indexes_every_document_once_through_the_loss_of_a_node(
    cluster: list[Node], tmp_path: Path  # noqa: F811 - the fixture imported above
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


