"""Scaling per subject: two `mmrag agent embedder` processes share the embedder's durable consumers.

Against a real nats-server, two replica processes (as two pods of one Deployment) take the `chunks.parsed` batches
from the same durables: both do some of the work, no batch is handled twice (acks counted by each process's own
metrics, redeliveries counted by the server), and each process reports the consumer lag of every durable it
consumes, labelled by that durable (the autoscaling signal, `telemetry.metrics`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js.api import DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from bus.progress import ProgressStore
from bus.topology import ensure_topology
from contracts.messages import Chunk, ChunksEmbedded, ChunksParsed, DocumentStatus
from contracts.topology import CHUNKS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects, ingest_consumers
from tests.engine import NatsServer, free_port

BIN = Path(sys.executable).parent
GEN = IndexGeneration(1)
TENANT = "scale"
BATCHES = 40
REPLICAS = ("embedder-a", "embedder-b")
BULK = ingest_consumers(GEN)["embedder-text-bulk"].durable
INTERACTIVE = ingest_consumers(GEN)["embedder-text-interactive"].durable


def parsed_batch(doc: int, batch: int, chunks: int = 6) -> ChunksParsed:
    doc_id = f"doc{doc:03d}"
    return ChunksParsed(
        doc_id=doc_id, tenant=TENANT, generation=GEN.number, revision=1, batch_index=batch,
        chunks=[
            Chunk(chunk_id=f"{doc_id}:1:{batch * chunks + i}", index=batch * chunks + i, doc_id=doc_id, tenant=TENANT,
                  filename=f"{doc_id}.pdf", page=1,
                  text=f"Replica scaling test, document {doc} batch {batch} chunk {i}: otters hold hands while they "
                       f"sleep so they do not drift apart, and the colony counts {doc * 100 + i} of them.")
            for i in range(chunks)
        ],
    )  # fmt: skip


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, port: int) -> Samples:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def acks(samples: Samples, durable: str) -> float:
    key = frozenset({"agent": "embedder", "durable": durable, "outcome": "ack"}.items())
    return samples.get(("mmrag_messages_handled_total", key), 0.0)


@pytest.fixture
def replicas(nats_server: NatsServer, tmp_path: Path) -> Iterator[list[tuple[str, int, subprocess.Popen[bytes]]]]:
    started = []
    for name in REPLICAS:
        port = free_port()
        env = {
            **os.environ, "HF_HUB_OFFLINE": "1", "NATS_URL": nats_server.url, "MMRAG_DATA_DIR": str(tmp_path / name),
            "MMRAG_REPLICA_ID": name, "MMRAG_METRICS_PORT": str(port), "MMRAG_FETCH_BATCH": "1",
            "MMRAG_EMBEDDING_THREADS": "1",
        }  # fmt: skip
        log = (tmp_path / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(BIN / "mmrag"), "agent", "embedder"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        started.append((name, port, proc))
    yield started
    for _, _, proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def wait_healthy(http: aiohttp.ClientSession, port: int, proc: subprocess.Popen[bytes]) -> None:
    """The metrics endpoint answers once the process's workers are about to pull."""
    while True:
        assert proc.poll() is None, f"replica exited with {proc.returncode}"
        try:
            async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)


async def test_two_embedder_processes_share_the_work_and_handle_each_batch_once(
    nats_server: NatsServer, nc: nats.NATS, replicas, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    js = nc.jetstream()
    await ensure_topology(js)
    async with asyncio.timeout(240):  # model loads on a busy 2-core machine
        for _, port, proc in replicas:
            await wait_healthy(http, port, proc)
    # The embedder skips a batch whose document is not current (deleted or re-submitted): record each as current.
    store = ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN)
    for doc_id in {parsed_batch(doc=n // 4, batch=0).doc_id for n in range(BATCHES)}:
        await store.update(TENANT, doc_id, lambda _, d=doc_id: store.new(TENANT, d, 1, DocumentStatus.PARSING))
    expected = set()
    for n in range(BATCHES):  # both replicas are pulling before the first batch arrives
        batch = parsed_batch(doc=n // 4, batch=n % 4)
        expected.add((batch.doc_id, batch.batch_index))
        await js.publish(Subjects.parsed(GEN, "text", "bulk", TENANT), batch.model_dump_json().encode())

    embedded_subject = Subjects.embedded(GEN, TENANT)
    async with asyncio.timeout(300):
        while True:
            info = await js.stream_info(CHUNKS_STREAM.name, subjects_filter=embedded_subject)
            if sum((info.state.subjects or {}).values()) >= BATCHES:
                break
            await asyncio.sleep(0.5)

    # Each batch embedded once, by one of the two replicas; both took part.
    sub = await js.subscribe(embedded_subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    seen: Counter[tuple[str, int]] = Counter()
    by_replica: Counter[str] = Counter()
    for _ in range(BATCHES):
        out = ChunksEmbedded.model_validate_json((await sub.next_msg(timeout=30)).data)
        seen[(out.doc_id, out.batch_index)] += 1
        by_replica[out.embedded_by] += 1
    await sub.unsubscribe()
    assert set(seen) == expected and set(seen.values()) == {1}
    assert set(by_replica) == set(REPLICAS), by_replica

    # The server delivered each message once to the shared durable, and it is fully acknowledged.
    async with asyncio.timeout(60):
        while (info := await js.consumer_info(CHUNKS_STREAM.name, BULK)).num_ack_pending:
            await asyncio.sleep(0.2)
    assert info.num_redelivered == 0 and info.delivered.consumer_seq == BATCHES and info.num_pending == 0

    # Each process counted only its own acks; together exactly one per batch.
    samples = [await scrape(http, port) for _, port, _ in replicas]
    per_replica = [acks(s, BULK) for s in samples]
    assert all(n > 0 for n in per_replica) and sum(per_replica) == BATCHES, per_replica

    # Both report the lag of both durables they consume, labelled by durable (gauges refresh every few s).
    async with asyncio.timeout(60):
        while True:
            samples = [await scrape(http, port) for _, port, _ in replicas]
            gauges = [
                {
                    durable: s.get(
                        ("mmrag_consumer_pending", frozenset({"stream": "CHUNKS", "durable": durable}.items()))
                    )
                    for durable in (BULK, INTERACTIVE)
                }
                for s in samples
            ]
            if all(g == {BULK: 0.0, INTERACTIVE: 0.0} for g in gauges):
                break
            await asyncio.sleep(0.5)

    for name, _, proc in replicas:
        proc.send_signal(signal.SIGTERM)
    for name, _, proc in replicas:
        assert proc.wait(60) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
