"""Scaling per subject: the embedding stage with 1 and 2 `mmrag agent embedder` replicas, and consumer lag over time
during a burst of document ingests.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scaling.py                          # defaults: a few minutes on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scaling.py --batches 200 --docs 100 --pages 10
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scaling.py --skip-burst             # part 1 only

Everything runs as real processes against a nats-server started here (no engine, no HTTP):

1. Embedding stage alone. For each setup (1 replica; 2 replicas each with ONNX Runtime on all cores; 1 replica
   with one thread; 2 replicas with one thread each), the replicas are started as `mmrag agent embedder` processes sharing the embedder's
   durable consumers; once every replica serves /health (its workers are pulling), `--batches` pre-parsed batches
   of `--chunks` chunks are published at once to ``chunks.parsed.g1.text.bulk.<tenant>``. The clock runs from
   the first publish to the last ``chunks.embedded`` stored. Printed: chunks/s, the ratio to 1 replica, and the
   replicas' CPU seconds per 1,000 chunks (on a machine with few cores, replicas compete for the same cores:
   the CPU cost tells oversubscription from a real gain).
2. A burst of document ingests through the pipeline: one process runs the parser and the indexer (embedded
   Qdrant), `--embedders` (2) run the embedder (one ONNX Runtime thread each when more than one). `--docs` text PDFs of `--pages` pages are submitted at once (upload in the
   Object Store + ``docs.ingest``, as the edge API does). Every `--sample-s` the server's pending + ack-pending
   of each ingest durable is read (the numbers behind ``mmrag_consumer_pending`` / ``_ack_pending``, which the
   replicas export every 5 s; the last column is that gauge as scraped from the replicas, max over them, as an
   autoscaler would aggregate it) and printed as a time series, then pages/s and seconds per 1,000 pages: what a
   re-index by replay from the ingest stream (re-parse + embed + index) costs on this machine.

Figures, not a pass/fail test: the machine may be shared; compare ratios within one run, and see the load
averages printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
import psutil
from nats.js import JetStreamContext
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bus.topology import ensure_topology  # noqa: E402
from bus.progress import ProgressStore  # noqa: E402
from bus.uploads import ensure_uploads_bucket  # noqa: E402
from contracts.messages import Chunk, ChunksParsed, DocumentStatus, DocumentSubmitted  # noqa: E402
from contracts.topology import (  # noqa: E402
    CHUNKS_STREAM,
    DOCS_STREAM,
    LANES,
    PROGRESS_BUCKET,
    IndexGeneration,
    Subjects,
    ingest_consumers,
    object_name,
)
from mmrag.processes import free_port, start_nats_server, stop  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402

BIN = Path(sys.executable).parent
GEN = IndexGeneration(1)
CONSUMERS = ingest_consumers(GEN)
STALL_S = 180.0
EMBEDDER_DURABLES = [CONSUMERS[f"embedder-text-{lane}"].durable for lane in LANES]


@dataclass
class Agent:
    """One `mmrag agent ...` process with its own metrics port."""

    names: list[str]
    replica_id: str
    env: dict[str, str]
    log: Path
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, nats_url: str, data_dir: Path) -> Agent:
        env = {
            **os.environ, "HF_HUB_OFFLINE": "1", "NATS_URL": nats_url, "MMRAG_DATA_DIR": str(data_dir),
            "MMRAG_REPLICA_ID": self.replica_id, "MMRAG_METRICS_PORT": str(self.metrics_port),
            "MMRAG_LOG_FORMAT": "json", **self.env,
        }  # fmt: skip
        self.proc = subprocess.Popen(
            [str(BIN / "mmrag"), "agent", *self.names], stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env
        )
        return self

    async def healthy(self, http: aiohttp.ClientSession, timeout_s: float = 300) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.replica_id} exited with {self.proc.returncode}: see {self.log}")
            try:
                async with http.get(f"http://127.0.0.1:{self.metrics_port}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
        raise TimeoutError(f"{self.replica_id} not healthy in {timeout_s}s: see {self.log}")

    def cpu_s(self) -> float:
        assert self.proc is not None
        try:
            times = psutil.Process(self.proc.pid).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def parsed_batch(tenant: str, n: int, chunks: int) -> ChunksParsed:
    # Unique per setup: the embedder's Nats-Msg-Id is `g1:<doc>:<revision>:embedded:<batch>`. In the pipeline the
    # revision is the docs.ingest stream sequence (unique); these synthetic batches all say revision 1.
    doc_id = f"{tenant}-doc{n:05d}"
    return ChunksParsed(
        doc_id=doc_id, tenant=tenant, generation=GEN.number, revision=1, batch_index=0,
        chunks=[
            Chunk(chunk_id=f"{doc_id}:1:{i}", index=i, doc_id=doc_id, tenant=tenant, filename=f"{doc_id}.pdf", page=1,
                  text=f"Section {n}.{i}. The maintenance interval of pump {n} is {i + 3} months; inspect the seals, "
                       "replace the filter cartridge, record the pressure drop across the strainer and report any "
                       f"vibration above {i + 2} mm/s to the shift supervisor before restarting the line.")
            for i in range(chunks)
        ],
    )  # fmt: skip


class Stall:
    """Raises when a counter has not moved for `STALL_S` (a bug must not hang the bench)."""

    def __init__(self, what: str) -> None:
        self._what, self._last, self._since = what, None, time.monotonic()

    def check(self, value: object) -> None:
        if value != self._last:
            self._last, self._since = value, time.monotonic()
        elif time.monotonic() - self._since > STALL_S:
            raise TimeoutError(f"{self._what}: no progress for {STALL_S:.0f} s (at {value}); see the agents' logs")


async def stored(js: JetStreamContext, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def lag(js: JetStreamContext, durables: list[tuple[str, str]]) -> int:
    """Pending + ack-pending summed over (stream, durable)s: messages not yet done."""
    total = 0
    for stream, durable in durables:
        info = await js.consumer_info(stream, durable)
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total


async def scraped_gauge(http: aiohttp.ClientSession, agents: list[Agent], durables: list[str]) -> float | None:
    """max over replicas of sum over `durables` of mmrag_consumer_pending + _ack_pending, as scraped."""
    best: float | None = None
    for agent in agents:
        try:
            async with http.get(f"http://127.0.0.1:{agent.metrics_port}/metrics") as resp:
                text = await resp.text()
        except aiohttp.ClientError:
            continue
        total, found = 0.0, False
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if (
                    s.name in ("mmrag_consumer_pending", "mmrag_consumer_ack_pending")
                    and s.labels.get("durable") in durables
                ):
                    total += s.value
                    found = True
        if found:
            best = total if best is None else max(best, total)
    return best


# --------------------------------------------------------------------------- part 1: the embedding stage


async def embedding_stage(
    js: JetStreamContext, http: aiohttp.ClientSession, nats_url: str, work: Path, *, setup: int, label: str,
    replicas: int, threads: int | None, batches: int, chunks: int,
) -> dict:  # fmt: skip
    tenant = f"stage{setup}-{os.getpid()}"
    env = {"MMRAG_FETCH_BATCH": "1", **({"MMRAG_EMBEDDING_THREADS": str(threads)} if threads else {})}
    agents = [
        Agent(["embedder"], f"embedder-s{setup}-{i}", env, work / f"embedder-s{setup}-{i}.log") for i in range(replicas)
    ]
    try:
        for agent in agents:
            agent.start(nats_url, work / "data-embedder")
        for agent in agents:
            await agent.healthy(http)
        batches_out = [parsed_batch(tenant, n, chunks) for n in range(batches)]
        # The embedder skips a batch whose document is not current (deleted or re-submitted): record each as such.
        store = ProgressStore(await js.key_value(PROGRESS_BUCKET), GEN)
        for b in batches_out:
            await store.update(tenant, b.doc_id, lambda _, d=b.doc_id: store.new(tenant, d, 1, DocumentStatus.PARSING))
        msgs = [b.model_dump_json().encode() for b in batches_out]
        subject = Subjects.parsed(GEN, "text", "bulk", tenant)
        embedded = Subjects.embedded(GEN, tenant)
        cpu0 = sum(a.cpu_s() for a in agents)
        t0 = time.perf_counter()
        for msg in msgs:
            await js.publish(subject, msg)
        progress = Stall(f"embedding stage '{label}'")
        while (done := await stored(js, CHUNKS_STREAM.name, embedded)) < batches:
            progress.check(done)
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu = sum(a.cpu_s() for a in agents) - cpu0
    finally:
        for agent in agents:
            agent.stop()
    n = batches * chunks
    return {
        "setup": label,
        "chunks": n,
        "seconds": elapsed,
        "chunks/s": n / elapsed,
        "cpu s / 1k chunks": cpu / n * 1000,
    }


# --------------------------------------------------------------------------- part 2: a burst of ingests


async def burst(
    js: JetStreamContext, http: aiohttp.ClientSession, nats_url: str, work: Path, *, docs: int, pages: int,
    embedders: int, sample_s: float,
) -> None:  # fmt: skip
    tenant = "burst"
    pipeline = Agent(["parser", "indexer"], "parser-indexer", {}, work / "parser-indexer.log")
    replicas = [
        Agent(["embedder"], f"burst-embedder-{i}", {"MMRAG_EMBEDDING_THREADS": "1"} if embedders > 1 else {},
              work / f"burst-embedder-{i}.log")
        for i in range(embedders)
    ]  # fmt: skip
    pdfs = [synthetic_pdf(1000 + n, pages=pages) for n in range(docs)]
    uploads = await ensure_uploads_bucket(js, tenant)
    durables = {
        "parser": [(DOCS_STREAM.name, CONSUMERS["parser"].durable)],
        "embedder": [(CHUNKS_STREAM.name, d) for d in EMBEDDER_DURABLES],
        "indexer": [(CHUNKS_STREAM.name, CONSUMERS["indexer"].durable)],
    }
    rows: list[tuple[float, int, int, int, float | None]] = []
    try:
        pipeline.start(nats_url, work / "data-pipeline")
        for agent in replicas:
            agent.start(nats_url, work / "data-embedder")
        for agent in [pipeline, *replicas]:
            await agent.healthy(http)
        for n, pdf in enumerate(pdfs):  # the uploads first (the edge API stores before it publishes)
            await uploads.put(object_name(tenant, f"b{n:04d}"), pdf)
        t0 = time.perf_counter()
        for n, pdf in enumerate(pdfs):
            doc_id = f"b{n:04d}"
            msg = DocumentSubmitted(doc_id=doc_id, tenant=tenant, filename=f"{doc_id}.pdf", content_type="application/pdf",
                                    object_name=object_name(tenant, doc_id), size=len(pdf))  # fmt: skip
            await js.publish(Subjects.ingest(tenant, doc_id), msg.model_dump_json().encode())
        indexed_subject = Subjects.indexed(GEN, tenant)
        progress = Stall("burst")
        while True:
            t = time.perf_counter() - t0
            row = [await lag(js, durables[stage]) for stage in ("parser", "embedder", "indexer")]
            rows.append((t, *row, await scraped_gauge(http, replicas, EMBEDDER_DURABLES)))  # type: ignore[arg-type]
            if (done := await stored(js, DOCS_STREAM.name, indexed_subject)) >= docs:
                break
            progress.check((done, *row))
            await asyncio.sleep(sample_s)
        elapsed = time.perf_counter() - t0
    finally:
        for agent in [pipeline, *replicas]:
            agent.stop()
    step = max(1, len(rows) // 30)  # at most ~30 lines
    shown = rows[::step] if rows[-1] in rows[::step] else [*rows[::step], rows[-1]]
    print(f"\n## consumer lag during a burst of {docs} documents x {pages} pages ({docs * pages} pages), "
          f"parser+indexer in one process, {embedders} embedder replica(s)")  # fmt: skip
    print("lag = pending + ack-pending on the server, summed over the stage's durables (both embedder lanes)")
    print(f"{'t (s)':>7} {'parser':>7} {'embedder':>9} {'indexer':>8} {'embedder gauge (scraped, max)':>30}")
    for t, p, e, i, g in shown:
        print(f"{t:7.1f} {p:7d} {e:9d} {i:8d} {'-' if g is None else f'{g:.0f}':>30}")
    pages_total = docs * pages
    print(f"\nall {docs} documents indexed in {elapsed:.1f} s: {pages_total / elapsed:.1f} pages/s, "
          f"{elapsed / pages_total * 1000:.0f} s per 1,000 pages (parse + embed + index: a replay of the ingest stream)")  # fmt: skip


# --------------------------------------------------------------------------- main


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}")
    base = rows[0]["chunks/s"]
    print(f"{'setup':<42} {'chunks':>7} {'s':>7} {'chunks/s':>9} {'x 1 replica':>12} {'cpu s/1k chunks':>16}")
    for r in rows:
        print(f"{r['setup']:<42} {r['chunks']:>7} {r['seconds']:>7.1f} {r['chunks/s']:>9.1f} "
              f"{r['chunks/s'] / base:>12.2f} {r['cpu s / 1k chunks']:>16.1f}")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    print(
        f"cores: {os.cpu_count()}  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="mmrag-scaling-") as tmp:
        work = Path(tmp)
        port = free_port()
        server = start_nats_server(work / "nats", port=port)
        nats_url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                if not args.skip_stage:
                    # 1 replica with 1 thread is the control: it tells the gain of a second replica from the
                    # gain of giving ONNX Runtime fewer threads on a busy machine.
                    setups = [("1 replica, all cores", 1, None), ("2 replicas, all cores each", 2, None),
                              ("1 replica, 1 thread", 1, 1), ("2 replicas, 1 thread each", 2, 1)]  # fmt: skip
                    rows = []
                    for n, (label, replicas, threads) in enumerate(setups):
                        rows.append(await embedding_stage(
                            js, http, nats_url, work, setup=n, label=label, replicas=replicas, threads=threads,
                            batches=args.batches, chunks=args.chunks,
                        ))  # fmt: skip
                        print(f"  {label}: {rows[-1]['chunks/s']:.1f} chunks/s", flush=True)
                    print_rows(
                        f"embedding stage: {args.batches} batches x {args.chunks} chunks published at once", rows
                    )
                if not args.skip_burst:
                    await burst(js, http, nats_url, work, docs=args.docs, pages=args.pages, embedders=args.embedders,
                                sample_s=args.sample_s)  # fmt: skip
        finally:
            await nc.close()
            stop(server)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=120, help="pre-parsed batches per embedding-stage setup")
    parser.add_argument("--chunks", type=int, default=16, help="chunks per batch")
    parser.add_argument("--docs", type=int, default=40, help="documents in the burst")
    parser.add_argument("--pages", type=int, default=10, help="pages per document in the burst")
    parser.add_argument("--embedders", type=int, default=2, help="embedder replicas during the burst")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between lag samples")
    parser.add_argument("--skip-stage", action="store_true", help="skip part 1 (embedding stage alone)")
    parser.add_argument("--skip-burst", action="store_true", help="skip part 2 (burst through the pipeline)")
    from bench.results import recorded

    with recorded("scaling"):
        asyncio.run(main(parser.parse_args()))
