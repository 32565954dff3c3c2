"""Knowledge graph expansion end to end through the real agents (`mmrag agent`) on a nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from search.graph import GraphFollower
from bus.progress import ProgressStore
from contracts.messages import (
    DocumentDeleted,
    DocumentStatus,
    DocumentSubmitted,
    QueryMode,
    QueryRequest,
    RerankRequest,
)
from bus.uploads import ensure_uploads_bucket
from contracts.topology import GRAPH_STREAM, PROGRESS_BUCKET, Subjects, object_name
from tests.engine import BIN, NatsServer
from tests.unit.test_graph import GEN


# --------------------------------------------------------------------------- end to end through the agents

TENANT = "acme"
DOCS = {
    "falcon": "Project Falcon is led by Dana Smith.",
    "budget": "Dana Smith approved the budget of 4.2 million.",
    **{
        f"heron{i}": f"Who approved the budget for Project {name}? The budget for Project {name} was approved by "
        f"the {name} board, which approved the budget for Project {name} in March."
        for i, name in enumerate(["Heron", "Osprey", "Kestrel", "Harrier", "Merlin", "Condor"])
    },
}
QUESTION = "Who approved the budget for Project Falcon?"


class Agents:
    """`mmrag agent parser embedder indexer retriever` (no reranker: the retriever's candidates stay readable)."""

    def __init__(self, server: NatsServer, root: Path, **env: str) -> None:
        self.log = root / "agents.log"
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [str(BIN / "mmrag"), "agent", "parser", "embedder", "indexer", "retriever"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "NATS_URL": server.url, "MMRAG_DATA_DIR": str(root / "data"),
                 "MMRAG_METRICS_PORT": "0", "MMRAG_RETRIEVE_CANDIDATES": "3",
                 # Graph expansion alone decides here: query feedback expands from the top dense hits, and the five
                 # near-identical heron chunks tie there, so its terms (and the 3 candidates) varied run to run.
                 "MMRAG_QUERY_FEEDBACK_DOCS": "0", **env},
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while b"agents running" not in self.log.read_bytes()[offset:]:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "agents did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(90) == 0, self.log.read_text()[-3000:]


@pytest.fixture
def pipeline(tmp_path) -> Iterator[tuple[NatsServer, Path]]:
    server = NatsServer(tmp_path / "nats").start()
    yield server, tmp_path
    server.stop()


async def candidates(nc, question: str) -> list[str]:
    """The doc ids of the candidates the retriever hands to the reranker for `question`."""
    request_id = uuid.uuid4().hex
    sub = await nc.subscribe(Subjects.query(Subjects.QUERY_RERANK, TENANT))
    try:
        req = QueryRequest(request_id=request_id, tenant=TENANT, query=question, top_k=3, mode=QueryMode.SEARCH)
        await nc.jetstream().publish(Subjects.query(Subjects.QUERY_RETRIEVE, TENANT), req.model_dump_json().encode())
        async with asyncio.timeout(60):
            while True:
                rerank = RerankRequest.model_validate_json((await sub.next_msg(timeout=60)).data)
                if rerank.request.request_id == request_id:
                    return [c.doc_id for c in rerank.candidates]
    finally:
        await sub.unsubscribe()


async def graph_subjects(js, doc_id: str) -> dict[str, int]:
    """The subjects of stream GRAPH that hold a document's facts, with their message counts."""
    info = await js.stream_info(GRAPH_STREAM.name, subjects_filter=Subjects.graph_facts(GEN, TENANT, doc_id, "*"))
    return info.state.subjects or {}


async def test_graph_expansion_end_to_end_through_the_agents(pipeline) -> None:
    server, root = pipeline
    agents = Agents(server, root)  # expansion off (the default)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    try:
        uploads = await ensure_uploads_bucket(js, TENANT)
        progress = ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN)
        for doc_id, text in DOCS.items():
            await uploads.put(object_name(TENANT, doc_id), text.encode())
            msg = DocumentSubmitted(doc_id=doc_id, tenant=TENANT, filename=f"{doc_id}.txt", content_type="text/plain",
                                    object_name=object_name(TENANT, doc_id), size=len(text))  # fmt: skip
            await js.publish(Subjects.ingest(TENANT, doc_id), msg.model_dump_json().encode())
        async with asyncio.timeout(180):
            for doc_id in DOCS:
                while (p := await progress.get(TENANT, doc_id)) is None or p.status is not DocumentStatus.INDEXED:
                    await asyncio.sleep(0.1)
        off = await candidates(nc, QUESTION)
        assert "falcon" in off and "budget" not in off, off  # the budget chunk shares no entity with the question
        agents.stop()

        # A retriever with expansion on replays stream GRAPH (written by the indexer) before taking queries.
        agents = Agents(server, root, MMRAG_GRAPH_EXPANSION="true", MMRAG_GRAPH_HOPS="1", MMRAG_GRAPH_WEIGHT="3")
        on = await candidates(nc, QUESTION)
        assert "falcon" in on and "budget" in on, on  # reached through Dana Smith
        assert len(on) == len(off) == 3  # the same number of candidates: expansion changed which ones

        # Deleting the document that links the two removes its facts from the running graph and from the stream.
        deleted = await js.publish(Subjects.delete(TENANT, "falcon"), DocumentDeleted(doc_id="falcon", tenant=TENANT)
                                   .model_dump_json().encode())  # fmt: skip
        async with asyncio.timeout(120):
            while "budget" in (now := await candidates(nc, QUESTION)) or "falcon" in now:
                await asyncio.sleep(0.2)
        replicas = [GraphFollower(js, GEN), GraphFollower(js, GEN)]
        for replica in replicas:
            await replica.start(catch_up_s=60)
        assert replicas[0].graph.fingerprint() == replicas[1].graph.fingerprint()
        graph = replicas[0].graph.tenant(TENANT)
        assert graph is not None and "project falcon" not in graph.graph and "dana smith" in graph.graph
        assert graph.docs["falcon"].deleted and not graph.docs["falcon"].batches
        assert await graph_subjects(js, "falcon") == {Subjects.graph_facts(GEN, TENANT, "falcon", deleted.seq): 1}
        for replica in replicas:
            await replica.close()

        # A re-submitted document, once indexed, leaves only its new revision's facts in the stream.
        [old_subject] = await graph_subjects(js, "budget")
        text = b"Dana Smith approved the revised budget of 5.1 million."
        await uploads.put(object_name(TENANT, "budget"), text)
        msg = DocumentSubmitted(doc_id="budget", tenant=TENANT, filename="budget.txt", content_type="text/plain",
                                object_name=object_name(TENANT, "budget"), size=len(text))  # fmt: skip
        resubmitted = await js.publish(Subjects.ingest(TENANT, "budget"), msg.model_dump_json().encode())
        async with asyncio.timeout(120):
            while (p := await progress.get(TENANT, "budget")) is None or p.revision != resubmitted.seq or (
                p.status is not DocumentStatus.INDEXED
            ):
                await asyncio.sleep(0.1)
        new_subject = Subjects.graph_facts(GEN, TENANT, "budget", resubmitted.seq)
        assert old_subject != new_subject
        async with asyncio.timeout(60):  # the facts are published, and the old ones purged, just after the progress
            while await graph_subjects(js, "budget") != {new_subject: 1}:
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
        agents.stop()
