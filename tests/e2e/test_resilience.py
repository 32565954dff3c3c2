"""Scaling and crashes with real processes: shared consumers, SIGKILL mid-ingest, restart on the same data."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import nats

from search.vectorstore import open_vector_store
from bus.progress import ProgressStore
from contracts.messages import ChunksEmbedded, DocumentStatus, DocumentSubmitted
from bus.uploads import ensure_uploads_bucket
from contracts.topology import PROGRESS_BUCKET, IndexGeneration, Subjects, object_name
from tests.engine import BIN, Engine, NatsServer, upload_bytes, wait_status
from tests.factories import ledger_value, synthetic_pdf


def spawn_agents(names: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "mmrag"), "agent", *names],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )  # fmt: skip


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while text.encode() not in log.read_bytes():
        assert proc.poll() is None, f"agent exited early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {log}"
        time.sleep(0.2)


def interrupt(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(2)
    return proc.wait(60)


def edge_count(data_dir: Path, **filters: str) -> int:
    """Points in the serving collection (through the alias), read after the engine released the store."""
    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=data_dir / "qdrant")
    try:
        return store.count("mmrag", **filters)
    finally:
        store.close()


async def test_two_embedder_replicas_share_one_durable_consumer(nats_server: NatsServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    common = {"NATS_URL": nats_server.url, "MMRAG_DATA_DIR": str(data), "MMRAG_CHUNKS_PER_MESSAGE": "2",
              "MMRAG_CHUNK_MAX_CHARS": "200", "MMRAG_FETCH_BATCH": "1"}  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in ("rest", "embedder-a", "embedder-b")}
    rest = spawn_agents(["parser", "indexer"], logs["rest"], **common)
    embedders = [
        spawn_agents(["embedder"], logs[name], MMRAG_REPLICA_ID=name, **common) for name in ("embedder-a", "embedder-b")
    ]
    procs = [rest, *embedders]
    try:
        for proc, log in zip(procs, logs.values(), strict=True):
            wait_for_line(log, "agents running", proc)  # both replicas are ready before work arrives

        docs = 8
        async with await nats.connect(nats_server.url) as nc:
            js = nc.jetstream()
            # Embedded batches as published (CHUNKS deletes each once the indexer handled it): a core subscription.
            published: list[bytes] = []

            async def keep(msg) -> None:  # noqa: ANN001
                published.append(msg.data)

            live = await nc.subscribe(Subjects.embedded(IndexGeneration(1), "*"), cb=keep)
            uploads = await ensure_uploads_bucket(js, "default")
            progress = ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1))
            ids = [uuid.uuid4().hex for _ in range(docs)]
            for n, doc_id in enumerate(ids):
                await uploads.put(object_name("default", doc_id), synthetic_pdf(n, pages=4))
                msg = DocumentSubmitted(doc_id=doc_id, tenant="default", filename=f"d{n}.pdf",
                                        content_type="application/pdf", object_name=object_name("default", doc_id),
                                        size=0)  # fmt: skip
                await js.publish(Subjects.ingest("default", doc_id), msg.model_dump_json().encode())

            async with asyncio.timeout(180):
                while True:
                    states = [await progress.get("default", d) for d in ids]
                    if all(s is not None and s.status is DocumentStatus.INDEXED for s in states):
                        break
                    assert not any(s is not None and s.status is DocumentStatus.FAILED for s in states), states
                    await asyncio.sleep(0.3)
            chunks_total = sum(s.chunks_total or 0 for s in states)
            batches_total = sum(s.batches_total or 0 for s in states)

            await live.unsubscribe()
            embedded = [ChunksEmbedded.model_validate_json(data) for data in published]
        batches = Counter((e.doc_id, e.batch_index) for e in embedded)
        assert len(batches) == batches_total and max(batches.values()) == 1  # every batch, once
        assert sum(len(e.chunks) for e in embedded) == chunks_total
        by_replica = Counter(e.embedded_by for e in embedded)
        assert set(by_replica) == {"embedder-a", "embedder-b"}, by_replica  # the work was shared
    finally:
        codes = [interrupt(p) for p in procs]
    assert codes == [0, 0, 0]  # graceful drain on SIGINT
    assert edge_count(data) == chunks_total  # nothing indexed twice


async def test_sigkill_mid_ingest_loses_nothing(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", tmp_path / "engine.log", env={"MMRAG_CHUNK_MAX_CHARS": "200"}).start()
    try:
        async with aiohttp.ClientSession() as http:
            pdfs = [synthetic_pdf(n) for n in range(20)]
            responses = await asyncio.gather(*(upload_bytes(http, engine.url, pdf, f"doc{n}.pdf") for n, pdf in enumerate(pdfs)))
            assert [r.status for r in responses] == [202] * 20
            ids = [(await r.json())["doc_id"] for r in responses]

            async def statuses() -> list[str]:
                out = []
                for doc_id in ids:
                    async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
                        out.append((await resp.json())["status"])
                return out

            async with asyncio.timeout(120):
                while (seen := await statuses()).count("indexed") == 0:
                    await asyncio.sleep(0.05)
            engine.kill()  # SIGKILL the process that holds the indexer and the embedded store
            assert seen.count("indexed") < 20, "ingest finished before the kill: the test proved nothing"

            engine.start()
            finals = [await wait_status(http, engine.url, d, {"indexed", "failed"}, timeout_s=240) for d in ids]
            assert [f["status"] for f in finals] == ["indexed"] * 20
            assert all(f["chunks_indexed"] == f["chunks_total"] > 0 for f in finals)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    chunks_total = sum(f["chunks_total"] for f in finals)
    assert edge_count(engine.data_dir) == chunks_total  # points == chunks: no loss, no duplicate
    assert edge_count(engine.data_dir, doc_id=ids[0]) == finals[0]["chunks_total"]


async def test_restart_on_the_same_data_dir_keeps_everything(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "data", tmp_path / "engine.log").start()
    async with aiohttp.ClientSession() as http:
        try:
            resp = await upload_bytes(http, engine.url, synthetic_pdf(5, pages=3), "kept.pdf")
            doc_id = (await resp.json())["doc_id"]
            assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
        finally:
            code = engine.stop()
        assert code == 0, engine.log_tail()

        engine.start()
        try:
            status = await wait_status(http, engine.url, doc_id, {"indexed"}, timeout_s=10)
            assert status["filename"] == "kept.pdf"
            async with http.post(f"{engine.url}/v1/search", json={"query": "Ledger entry D5P2 records how many crates?"}) as resp:
                hits = (await resp.json())["hits"]
            assert hits[0]["doc_id"] == doc_id and hits[0]["page"] == 2
            assert f"{ledger_value(5, 2)} crates" in hits[0]["text"]
        finally:
            code = engine.stop()
        assert code == 0, engine.log_tail()
