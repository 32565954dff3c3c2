"""Reliability under load, with faults injected and hostile input: one table row per scenario (issue 16).

    python bench/reliability.py            # every scenario (about 5 minutes on 2 busy cores)
    python bench/reliability.py --quick    # fewer documents per scenario, no NATS cluster

One private `mmrag up` (real nats-server, agents, edge API) runs with a Redis (`MMRAG_REDIS_URL`: answer cache and
rate limits) and a local OpenAI-compatible LLM that answers until a scenario makes it hang. For each scenario the
bench runs a steady load (concurrent `/v1/search` and `/v1/ask` clients) and uploads a batch of documents (each
with a unique token), injects the fault or the hostile input, stops the load, then records:

- requests: answered (2xx; an ask whose event stream ends `done`), cleanly refused (4xx or 503 with a JSON error;
  an ask stream ending with an `error` event) and failed (any other 5xx, a timeout, a connection error), with the
  reasons of the refusals and failures;
- documents: acknowledged (202) vs indexed exactly once: status `indexed`, `chunks_indexed == chunks_total`, the
  document's passages (read from the index) are exactly `chunks_total` distinct chunks, and a search for its token
  finds it;
- consumers drained: every JetStream consumer at 0 pending and 0 unacknowledged (nats-server's `/jsz`);
- RSS of the engine's processes (psutil, sampled every 0.5 s): total before, peak, after.

At the end the engine stops and the vector store is opened: its points must equal the chunks of every indexed
document (nothing indexed twice across the whole run). docs/reliability.md explains each scenario; the figures of
the last run are in bench/results/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import nats
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import recorded  # noqa: E402
from contracts.topology import DEFAULT_MAX_PAYLOAD, QUERY_CONSUMERS, IndexGeneration, ingest_consumers  # noqa: E402
from mmrag.processes import stop  # noqa: E402
from tests.bus.test_cluster import Node, start_cluster, urls  # noqa: E402
from tests.bus.test_ratelimit import RedisServer  # noqa: E402
from tests.doubles import send_openai_stream  # noqa: E402
from tests.e2e.test_cluster_engine import agents_node  # noqa: E402
from tests.e2e.test_resilience import edge_count  # noqa: E402
from tests.engine import Engine, upload_bytes, upload_until_accepted, wait_status  # noqa: E402
from tests.factories import make_pdf, make_pdf_image_bomb  # noqa: E402

REQUEST_TIMEOUT_S = 60.0  # one load request; past it, it counts as failed (timeout)
LLM_READ_TIMEOUT_S = 4.0  # MMRAG_LLM_READ_TIMEOUT_S of the engine: how long an ask waits for a hung LLM
MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # MMRAG_MAX_UPLOAD_BYTES of the engine: the oversized probes go past it
SETTLE_S = 300.0  # longest wait for a scenario's documents to end `indexed` or `failed`
DRAIN_S = 90.0  # longest wait for every consumer to reach 0 pending / 0 unacknowledged
RSS_BOUND = 2.0  # "bounded": the engine's RSS after a scenario is at most this times its RSS after the warm-up


# --------------------------------------------------------------------------------------------- the fake LLM
class _LLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible `chat/completions` that streams a short answer, or never answers while `hang` is set."""

    hang = threading.Event()
    release = threading.Event()  # set at the end: hung handlers return and the server can close

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.hang.is_set():
            self.release.wait()
            return
        send_openai_stream(self, "From the manual: see [1].")


# --------------------------------------------------------------------------------------------- load and tallies
@dataclass
class Tally:
    answered: int = 0
    refused: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # "refused 503 backbone_unavailable", "failed timeout"
    slowest_ask_s: float = 0.0
    answerers: Counter[str] = field(default_factory=Counter)

    def refuse(self, why: str) -> None:
        self.refused += 1
        self.reasons[f"refused {why}"] += 1

    def fail(self, why: str) -> None:
        self.failed += 1
        self.reasons[f"failed {why}"] += 1


async def _error_code(resp: aiohttp.ClientResponse) -> str | None:
    """The `error.code` of a JSON error body, or None when the body is not one."""
    try:
        body = json.loads(await resp.read())
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


async def classify(resp: aiohttp.ClientResponse, tally: Tally) -> bool:
    """Count a non-2xx answer; True if it was 2xx (the caller reads the body)."""
    if 200 <= resp.status < 300:
        return True
    code = await _error_code(resp)
    if (400 <= resp.status < 500 or resp.status == 503) and code:
        tally.refuse(f"{resp.status} {code}")
    else:
        tally.fail(f"{resp.status} {code or 'no JSON error'}")
    return False


async def one_request(http: aiohttp.ClientSession, url: str, kind: str, question: str, tally: Tally) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            if kind == "search":
                async with http.post(f"{url}/v1/search", json={"query": question, "top_k": 5}) as resp:
                    if await classify(resp, tally):
                        await resp.json()
                        tally.answered += 1
                return
            async with http.post(f"{url}/v1/ask", json={"question": question, "top_k": 3}) as resp:
                if not await classify(resp, tally):
                    return
                events = await read_sse(resp)
            last, data = events[-1] if events else ("", {})
            if last == "done":
                tally.answered += 1
                tally.answerers[str(data.get("answerer"))] += 1
            elif last == "error":
                tally.refuse(f"ask event error {data.get('code', '?')}")
            else:
                tally.fail(f"ask stream ended after {last or 'nothing'}")
    except TimeoutError:
        tally.fail(f"no answer in {REQUEST_TIMEOUT_S:.0f}s")
    except aiohttp.ClientConnectorError:
        tally.fail("connection refused")
    except (aiohttp.ClientError, ValueError) as e:
        tally.fail(type(e).__name__)
    finally:
        if kind == "ask":
            tally.slowest_ask_s = max(tally.slowest_ask_s, time.monotonic() - started)


async def read_sse(resp: aiohttp.ClientResponse) -> list[tuple[str, dict]]:
    events, event, data = [], "message", []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
    return events


QUESTIONS = ("How many fish does the otter count?", "What does the heron keep?", "Which beaver builds dams?")


class Load:
    """`searchers` + `askers` clients, each sending its next request as soon as the last one ended."""

    def __init__(self, http: aiohttp.ClientSession, url: str, searchers: int = 3, askers: int = 2) -> None:
        self.tally = Tally()
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._client(http, url, kind, n))
            for n, kind in enumerate(["search"] * searchers + ["ask"] * askers)
        ]

    async def _client(self, http: aiohttp.ClientSession, url: str, kind: str, n: int) -> None:
        i = n
        while not self._stop.is_set():
            await one_request(http, url, kind, QUESTIONS[i % len(QUESTIONS)], self.tally)
            i += 1
            await asyncio.sleep(0.05)

    async def stop(self) -> Tally:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.tally


# --------------------------------------------------------------------------------------------- documents
_TOKENS = (f"tok{n:05d}x" for n in range(100_000))


def unique_pdf() -> tuple[str, bytes]:
    token = next(_TOKENS)
    pages = [f"Field note {token}. The otter counts {len(token) * 3} fish near the heron.",
             f"Second page of {token}: a beaver builds dams and the heron keeps watch."]  # fmt: skip
    return token, make_pdf(pages)


@dataclass
class Batch:
    docs: dict[str, str] = field(default_factory=dict)  # doc_id -> token
    upload_errors: Counter[str] = field(default_factory=Counter)


async def upload_batch(http: aiohttp.ClientSession, url: str, n: int, batch: Batch, gap_s: float = 0.3) -> None:
    """Upload `n` unique documents one after another (a careful client: retries what was surely not stored)."""
    for _ in range(n):
        token, pdf = unique_pdf()
        try:
            doc_id = await upload_until_accepted(http, url, pdf, f"{token}.pdf", timeout_s=120)
        except (AssertionError, TimeoutError, aiohttp.ClientError) as e:
            batch.upload_errors[type(e).__name__ + (f": {str(e)[:80]}" if isinstance(e, AssertionError) else "")] += 1
            continue
        batch.docs[doc_id] = token
        await asyncio.sleep(gap_s)


@dataclass
class DocCheck:
    acknowledged: int = 0
    indexed_once: int = 0
    failed_cleanly: int = 0  # status `failed` with a message (expected only for hostile input)
    problems: list[str] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)


async def check_documents(http: aiohttp.ClientSession, url: str, docs: dict[str, str | None]) -> DocCheck:
    """Each document's final record, then (if indexed) its passages and a search for its token (`None`: no token)."""
    out = DocCheck(acknowledged=len(docs))
    for doc_id, token in docs.items():
        try:
            record = await wait_status(http, url, doc_id, {"indexed", "failed"}, timeout_s=SETTLE_S)
        except TimeoutError:
            out.problems.append(f"{doc_id[:8]} not settled in {SETTLE_S:.0f}s")
            continue
        out.records[doc_id] = record
        if record["status"] == "failed":
            if record.get("error"):
                out.failed_cleanly += 1
            else:
                out.problems.append(f"{doc_id[:8]} failed with no message")
            continue
        total = record["chunks_total"]
        async with http.get(f"{url}/v1/documents/{doc_id}/passages", params={"pages": "10"}) as resp:
            passages = (await resp.json()).get("passages", []) if resp.status == 200 else None
        ids = [p["chunk_id"] for p in passages or []]
        if record["chunks_indexed"] != total or passages is None or len(ids) != total or len(set(ids)) != total:
            out.problems.append(
                f"{doc_id[:8]} chunks total {total} indexed {record['chunks_indexed']} "
                f"passages {len(ids) if passages is not None else 'unreadable'} distinct {len(set(ids))}"
            )
            continue
        if token is not None:
            async with http.post(f"{url}/v1/search", json={"query": token, "top_k": 10}) as resp:
                hits = (await resp.json()).get("hits", []) if resp.status == 200 else []
            if doc_id not in {h["doc_id"] for h in hits}:
                out.problems.append(f"{doc_id[:8]} not found by its token")
                continue
        out.indexed_once += 1
    return out


# --------------------------------------------------------------------------------------------- consumers, memory
async def undrained(http: aiohttp.ClientSession, monitor_urls: list[str]) -> dict[str, tuple[int, int]]:
    """Consumers with pending or unacknowledged messages ({stream/consumer: (pending, ack pending)}); waits up to
    DRAIN_S for them to drain. Any of `monitor_urls` that answers is read (a cluster: each node)."""
    deadline = time.monotonic() + DRAIN_S
    while True:
        busy: dict[str, tuple[int, int]] = {}
        jsz: dict | None = None
        for monitor in monitor_urls:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{monitor}/jsz?consumers=true&accounts=true") as resp:
                    jsz = await resp.json(content_type=None)
                break
        if jsz is None:
            busy["(no monitoring endpoint answered)"] = (-1, -1)
        for account in (jsz or {}).get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                for c in stream.get("consumer_detail") or []:
                    if c.get("num_pending") or c.get("num_ack_pending"):
                        busy[f"{c['stream_name']}/{c['name']}"] = (c["num_pending"], c["num_ack_pending"])
        if not busy or time.monotonic() > deadline:
            return busy
        await asyncio.sleep(1)


def process_kind(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "mmrag up (agents)"
    name, cmd = proc.name(), " ".join(proc.cmdline())
    if name == "nats-server":
        return "nats-server"
    if "edge_api" in cmd:
        return "edge API"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "multiprocessing" in cmd:
        return "work-pool worker"
    return "other (a child between fork and exec)" if name == "mmrag" else name


class RssSampler(threading.Thread):
    """Every 0.5 s: the RSS (MiB) of each process of the engine's tree, by kind; peaks kept per kind."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.samples: list[tuple[float, float]] = []  # (time, total MiB)
        self.peak_by_kind: Counter[str] = Counter()  # the largest single process of each kind
        self._done = threading.Event()

    def total_now(self) -> float:
        total, by_kind = self._sample()
        self.samples.append((time.monotonic(), total))
        for kind, mib in by_kind.items():
            self.peak_by_kind[kind] = max(self.peak_by_kind[kind], mib)
        return total

    def _sample(self) -> tuple[float, dict[str, float]]:
        proc = self.engine.proc
        if proc is None or proc.poll() is not None:
            return 0.0, {}
        by_kind: dict[str, float] = {}
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    mib = p.memory_info().rss / 2**20
                    kind = process_kind(p, proc.pid)
                    by_kind[kind] = max(by_kind.get(kind, 0.0), mib)
                    total += mib
        return total, by_kind

    def peak_since(self, t0: float) -> float:
        return max((mib for t, mib in self.samples if t >= t0), default=0.0)

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.total_now()

    def stop(self) -> None:
        self._done.set()


def child(engine: Engine, kind: str) -> psutil.Process:
    assert engine.proc is not None
    root = psutil.Process(engine.proc.pid)
    found = [p for p in root.children(recursive=True) if process_kind(p, root.pid) == kind]
    if not found:
        raise RuntimeError(f"no {kind} process under mmrag up (pid {root.pid})")
    return found[0]


async def wait_ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 120) -> float:
    """Seconds until `/ready` answers 200."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/ready") as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------------------------- scenarios
@dataclass
class Ctx:
    engine: Engine
    http: aiohttp.ClientSession
    redis: RedisServer | None
    rss: RssSampler
    docs_per_scenario: int
    all_docs: dict[str, str | None] = field(default_factory=dict)  # every acknowledged document of the run
    extra_docs: dict[str, str | None] = field(default_factory=dict)  # a scenario's own uploads (fuzz)
    details: list[str] = field(default_factory=list)  # lines printed after the table
    monitor_urls: list[str] = field(default_factory=list)  # nats-server monitoring (a cluster: every node)
    cluster: list[Node] = field(default_factory=list)  # the NATS nodes, when the engine runs on a cluster


Fault = Callable[[Ctx], Awaitable[str]]


async def first_indexed(ctx: Ctx, batch: Batch, timeout_s: float = 120) -> None:
    """Wait until one document of the batch is indexed: the fault then lands mid-ingest."""
    async with asyncio.timeout(timeout_s):
        while True:
            for doc_id in list(batch.docs):
                with contextlib.suppress(aiohttp.ClientError):
                    async with ctx.http.get(f"{ctx.engine.url}/v1/documents/{doc_id}") as resp:
                        if resp.status == 200 and (await resp.json())["status"] == "indexed":
                            return
            await asyncio.sleep(0.2)


async def no_fault(ctx: Ctx) -> str:
    await asyncio.sleep(5)
    return "reference row: the same load with nothing injected"


def kill_child(kind: str, sig: signal.Signals = signal.SIGKILL) -> Fault:
    async def fault(ctx: Ctx) -> str:
        victim = child(ctx.engine, kind)
        victim.send_signal(sig)
        await asyncio.sleep(1)
        ready_s = await wait_ready(ctx.http, ctx.engine.url)
        again = child(ctx.engine, kind)
        await asyncio.sleep(5)
        return (f"{sig.name} {kind} pid {victim.pid}; the supervisor restarted it as pid {again.pid}; "
                f"/ready again after {ready_s:.1f}s")  # fmt: skip

    return fault


async def kill_worker(ctx: Ctx) -> str:
    victim = child(ctx.engine, "work-pool worker")
    victim.send_signal(signal.SIGKILL)
    await asyncio.sleep(6)
    workers = [p.pid for p in psutil.Process(ctx.engine.proc.pid).children(recursive=True)  # type: ignore[union-attr]
               if process_kind(p, ctx.engine.proc.pid) == "work-pool worker"]  # type: ignore[union-attr]  # fmt: skip
    return f"SIGKILL work-pool worker pid {victim.pid}; workers now {len(workers)} (pool rebuilt: {victim.pid not in workers})"


async def kill_mmrag_up(ctx: Ctx) -> str:
    assert ctx.engine.proc is not None
    pid = ctx.engine.proc.pid
    await asyncio.to_thread(ctx.engine.kill)
    started = time.monotonic()
    await asyncio.to_thread(ctx.engine.start)
    return (f"SIGKILL mmrag up pid {pid} (the agents; its children die with it), started again on the same data "
            f"by the bench in {time.monotonic() - started:.1f}s: requests meanwhile find no server")  # fmt: skip


async def stop_redis(ctx: Ctx) -> str:
    assert ctx.redis is not None
    ctx.redis.stop()
    await asyncio.sleep(8)
    ctx.redis.start()
    await asyncio.sleep(4)
    return "redis-server stopped for 8s mid-load, then started again on the same port (empty)"


async def hang_llm(ctx: Ctx) -> str:
    _LLM.hang.set()
    try:
        tally = Tally()
        started = time.monotonic()
        await asyncio.gather(*(one_request(ctx.http, ctx.engine.url, "ask", q, tally) for q in QUESTIONS))
        took = time.monotonic() - started
    finally:
        _LLM.hang.clear()
    return (f"LLM never answers; 3 asks sent at once: {tally.answered} answered by {dict(tally.answerers)}, "
            f"slowest {tally.slowest_ask_s:.1f}s (MMRAG_LLM_READ_TIMEOUT_S={LLM_READ_TIMEOUT_S:.0f}, "
            f"all in {took:.1f}s)")  # fmt: skip


def hostile_probes() -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    """(name, method, path, body, headers) of requests an attacker or a broken client sends."""
    js = {"Content-Type": "application/json"}
    nested = b'{"query": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    return [
        ("nested JSON 50k deep", "POST", "/v1/search", nested, js),
        ("top_k of 400 digits", "POST", "/v1/search", b'{"query": "otter", "top_k": 1' + b"0" * 400 + b"}", js),
        ("page_to of 400 digits", "POST", "/v1/ask",
         b'{"question": "otter?", "filters": {"page_to": 9' + b"9" * 400 + b"}}", js),
        ("float top_k 1e308", "POST", "/v1/search", b'{"query": "otter", "top_k": 1e308}', js),
        ("control characters in a question", "POST", "/v1/ask",
         json.dumps({"question": "otter\u0000\u001b[31m\u202e?"}).encode(), js),
        ("control characters in a doc id", "GET", "/v1/documents/abc%00%0a%1bdef", b"", {}),
        ("path traversal doc id", "GET", "/v1/documents/..%2F..%2Fetc%2Fpasswd", b"", {}),
        ("doc id of 10k characters", "GET", "/v1/documents/" + "a" * 10_000, b"", {}),
        ("invalid UTF-8 body", "POST", "/v1/search", b'{"query": "\xff\xfe\xfd"}', js),
        ("not JSON", "POST", "/v1/search", b"query=otter", js),
        ("JSON body of 16 MiB", "POST", "/v1/search", b'{"query": "' + b"a" * (16 * 2**20) + b'"}', js),
        ("upload past MMRAG_MAX_UPLOAD_BYTES", "UPLOAD", "/v1/documents", b"%PDF-1.7\n" + b"0" * (MAX_UPLOAD_BYTES + 1), {}),
        ("unknown fields", "POST", "/v1/search", b'{"query": "otter", "top_k": 3, "evil": {"$where": 1}}', js),
        ("filters of 5k doc ids", "POST", "/v1/search",
         json.dumps({"query": "otter", "filters": {"doc_ids": [f"d{i}" for i in range(5000)]}}).encode(), js),
    ]  # fmt: skip


async def hostile_http(ctx: Ctx) -> str:
    tally = Tally()
    outcomes = []
    for name, method, path, body, headers in hostile_probes():
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if method == "UPLOAD":
                    resp = await upload_bytes(ctx.http, ctx.engine.url, body, "big.pdf")
                    ok, code = await classify(resp, tally), await _error_code(resp)
                else:
                    async with ctx.http.request(method, f"{ctx.engine.url}{path}", data=body, headers=headers) as resp:
                        ok, code = await classify(resp, tally), await _error_code(resp)
            if ok:
                tally.answered += 1
            outcomes.append(f"{name}: {resp.status} {code or ('' if ok else 'NO JSON ERROR')}")
        except (TimeoutError, aiohttp.ClientError) as e:
            tally.fail(type(e).__name__)
            outcomes.append(f"{name}: {type(e).__name__}")
    ctx.details.append("hostile HTTP probes (status each): " + "; ".join(outcomes))
    return (f"{len(outcomes)} probes: {tally.refused} refused with a JSON error, {tally.answered} answered (2xx), "
            f"{tally.failed} failed {dict(tally.reasons) if tally.failed else ''}")  # fmt: skip


def fuzz_corpus(seed: int = 16) -> list[tuple[str, bytes]]:
    """Broken PDFs made from a valid one with a fixed seed: truncations, flipped bytes, bombs, lies."""
    rng = random.Random(seed)
    _, base = unique_pdf()
    out = [(f"truncated at {f:.0%}", base[: int(len(base) * f)]) for f in (0.1, 0.5, 0.9, 0.99)]
    for flips in (1, 10, 100, 1000):
        data = bytearray(base)
        for _ in range(flips):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append((f"{flips} bytes flipped", bytes(data)))
    tail = bytearray(base)
    for i in range(len(tail) - 200, len(tail)):
        tail[i] = rng.randrange(256)
    out.append(("xref and trailer scrambled", bytes(tail)))
    # A page whose content stream inflates 1,000x (64 MiB of operators from 64 KiB): a decompression bomb.
    content = zlib.compress(b"q Q " * (16 * 2**20), 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream"]  # fmt: skip
    pdf, offsets = bytearray(b"%PDF-1.7\n"), []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    out.append((f"flate bomb ({len(content) // 1024} KiB inflating to 64 MiB)", bytes(pdf)))
    out.append(("image claiming 100000x100000 pixels", make_pdf_image_bomb()))
    out.append(("random bytes named .pdf", rng.randbytes(4096)))
    out.append(("PDF header then garbage", b"%PDF-1.7\n" + rng.randbytes(4096)))
    out.append(("empty file", b""))
    return out


async def pdf_fuzz(ctx: Ctx) -> str:
    assert ctx.engine.proc is not None
    pid, statuses, lines = ctx.engine.proc.pid, Counter[str](), []
    for n, (name, data) in enumerate(fuzz_corpus()):
        resp = await upload_bytes(ctx.http, ctx.engine.url, data, f"fuzz{n}.pdf")
        if resp.status == 202:
            doc_id = (await resp.json())["doc_id"]
            ctx.extra_docs[doc_id] = None
            record = await wait_status(ctx.http, ctx.engine.url, doc_id, {"indexed", "failed"}, timeout_s=SETTLE_S)
            outcome = record["status"] + (f" ({(record.get('error') or 'NO MESSAGE')[:70]})" if record["status"] == "failed" else "")
        else:
            code = await _error_code(resp)
            outcome = f"upload {resp.status} {code or 'NO JSON ERROR'}"
        statuses[outcome.split(" (")[0]] += 1
        lines.append(f"{name}: {outcome}")
    ctx.details.append("PDF fuzz corpus (seed 16), each upload's end: " + "; ".join(lines))
    alive = ctx.engine.proc.poll() is None and ctx.engine.proc.pid == pid
    return f"{sum(statuses.values())} broken PDFs: {dict(statuses)}; agents still running: {alive}"


def subject_matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s, strict=False))
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


async def malformed_messages(ctx: Ctx) -> str:
    gen = IndexGeneration(1)
    consumers = [*ingest_consumers(gen).values(), *QUERY_CONSUMERS.values()]
    subjects = [c.filter_subject.replace("*", "default", 1).replace("*", "fuzzdoc") for c in consumers]
    payloads = {"garbage": b"{garbage", "empty": b"", "null": b"null", "wrong types": b'{"doc_id": 5, "tenant": []}',
                "deep nesting": b"[" * 10_000 + b"]" * 10_000,
                "just under max_payload": b'{"doc_id": "' + b"x" * (DEFAULT_MAX_PAYLOAD - 2048) + b'"}',
                "over max_payload": b"x" * (DEFAULT_MAX_PAYLOAD + 1)}  # fmt: skip
    assert ctx.engine.proc is not None
    pid = ctx.engine.proc.pid
    stored: Counter[str] = Counter()  # per durable: messages the stream took
    refused = 0
    nc = await nats.connect(ctx.engine.nats_url)
    try:
        js = nc.jetstream()

        async def dead_letters() -> Counter[str]:
            out: Counter[str] = Counter()
            for c in consumers:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    info = await js.stream_info("DEADLETTER", subjects_filter=f"deadletter.{c.durable}.>")
                    out[c.durable] = sum((info.state.subjects or {}).values())
            return out

        before = await dead_letters()
        for consumer, subject in zip(consumers, subjects, strict=True):
            for data in payloads.values():
                try:
                    await js.publish(subject, data, timeout=10)
                    stored[consumer.durable] += 1
                except (nats.errors.Error, TimeoutError):
                    refused += 1  # the server refuses a message over max_payload
                    if nc.is_closed:
                        nc = await nats.connect(ctx.engine.nats_url)
                        js = nc.jetstream()
        # Every stored message must be dead-lettered by its consumer: wait for the counts (the drain check follows).
        deadline = time.monotonic() + 60
        while True:
            after = await dead_letters()
            missing = {d: stored[d] - (after[d] - before[d]) for d in stored if after[d] - before[d] < stored[d]}
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    finally:
        await nc.close()
    alive = ctx.engine.proc.poll() is None and ctx.engine.proc.pid == pid
    ctx.details.append(
        f"malformed messages: {len(payloads)} payloads ({', '.join(payloads)}) on each of {len(subjects)} subjects: "
        + ", ".join(subjects)
    )
    return (f"{sum(stored.values())} stored by JetStream, {refused} refused by the server (over max_payload); "
            f"dead-lettered: {sum(stored.values()) - sum(missing.values())} of {sum(stored.values())}"
            + (f", NOT dead-lettered: {missing}" if missing else "") + f"; agents still running: {alive}")  # fmt: skip


async def lose_a_node(ctx: Ctx) -> str:
    assert ctx.engine.proc is not None
    pid = ctx.engine.proc.pid
    victim = await agents_node(ctx.http, ctx.cluster)
    if victim is None:
        raise RuntimeError("the agents' connection is on no node")
    victim.proc.kill()
    victim.proc.wait()
    survivors = [n for n in ctx.cluster if n is not victim]
    ctx.monitor_urls = [f"http://127.0.0.1:{n.monitor_port}" for n in survivors]
    async with asyncio.timeout(120):
        while (moved := await agents_node(ctx.http, survivors)) is None:
            await asyncio.sleep(0.5)
    await asyncio.sleep(5)
    same = ctx.engine.proc.poll() is None and ctx.engine.proc.pid == pid
    return (f"SIGKILL of NATS node {victim.name} of 3 (the one the agents were connected to; streams R3); the "
            f"agents reconnected to {moved.name}; same mmrag up process: {same}")  # fmt: skip


CLUSTER_ROW = "one of three NATS nodes lost"


async def cluster_row(root: Path, docs_per_scenario: int) -> Row:
    """The node-loss scenario, on an engine of its own (`mmrag up --nats-url` on a three-node cluster)."""
    nodes = await asyncio.to_thread(start_cluster, root / "cluster")
    engine = Engine(root / "cluster-data", root / "cluster-engine.log", external_nats=urls(nodes),
                    env={"MMRAG_STREAM_REPLICAS": "3", "MMRAG_METRICS_PORT": "0"})  # fmt: skip
    rss = RssSampler(engine)
    try:
        await asyncio.to_thread(engine.start, 240)
        rss.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S + 30)) as http:
            ctx = Ctx(engine, http, None, rss, docs_per_scenario, cluster=nodes,
                      monitor_urls=[f"http://127.0.0.1:{n.monitor_port}" for n in nodes])  # fmt: skip
            row = await run_scenario(ctx, CLUSTER_ROW, lose_a_node)
            records = (await check_documents(http, engine.url, ctx.all_docs)).records
    finally:
        rss.stop()
        code = await asyncio.to_thread(engine.stop)
        for node in nodes:
            stop(node.proc)
    chunks = sum(r["chunks_total"] for r in records.values() if r["status"] == "indexed")
    points = edge_count(engine.data_dir)
    row.what += f"; store: {points} points for {chunks} chunks; mmrag up exit code {code}"
    if points != chunks or code != 0:
        row.docs.problems.append(f"store holds {points} points for {chunks} chunks; exit code {code}")
    return row


# --------------------------------------------------------------------------------------------- the run
@dataclass
class Row:
    name: str
    what: str
    tally: Tally
    docs: DocCheck
    undrained: dict[str, tuple[int, int]]
    rss: tuple[float, float, float]


async def run_scenario(ctx: Ctx, name: str, fault: Fault) -> Row:
    ctx.extra_docs = {}
    before = ctx.rss.total_now()
    t0 = time.monotonic()
    load = Load(ctx.http, ctx.engine.url)
    batch = Batch()
    uploads = asyncio.create_task(upload_batch(ctx.http, ctx.engine.url, ctx.docs_per_scenario, batch))
    with contextlib.suppress(TimeoutError):
        await first_indexed(ctx, batch)
    try:
        what = await fault(ctx)
    except Exception as e:  # noqa: BLE001 - a fault that could not be injected is a row that says so
        what = f"INJECTION FAILED: {type(e).__name__}: {e}"
    await uploads
    tally = await load.stop()
    docs: dict[str, str | None] = dict(batch.docs)
    check = await check_documents(ctx.http, ctx.engine.url, docs)
    check.problems += [f"upload gave up ({n}x): {why}" for why, n in batch.upload_errors.items()]
    extra = await check_documents(ctx.http, ctx.engine.url, ctx.extra_docs) if ctx.extra_docs else DocCheck()
    ctx.all_docs.update(docs)
    ctx.all_docs.update(ctx.extra_docs)
    busy = await undrained(ctx.http, ctx.monitor_urls or [ctx.engine.monitor_url])
    after = ctx.rss.total_now()
    row = Row(name, what, tally, check, busy, (before, ctx.rss.peak_since(t0), after))
    row.docs.problems += extra.problems
    print(f"[{name}] {what}", file=sys.stderr, flush=True)
    return row


def scenarios(quick: bool) -> list[tuple[str, Fault]]:
    return [
        ("no fault", no_fault),
        ("SIGKILL edge API", kill_child("edge API")),
        ("SIGKILL nats-server", kill_child("nats-server")),
        ("nats-server restart (SIGTERM)", kill_child("nats-server", signal.SIGTERM)),
        ("SIGKILL work-pool worker", kill_worker),
        ("SIGKILL mmrag up (agents)", kill_mmrag_up),
        ("Redis stopped", stop_redis),
        ("LLM provider hangs", hang_llm),
        ("hostile HTTP input", hostile_http),
        ("PDF fuzz corpus", pdf_fuzz),
        ("malformed NATS messages", malformed_messages),
    ]


def print_table(rows: list[Row], warm_rss: float) -> None:
    print("| scenario | requests answered / refused / failed | docs acknowledged / indexed once | consumers drained "
          "| engine RSS MiB before / peak / after | bounded |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        t, d = r.tally, r.docs
        drained = "yes" if not r.undrained else "NO " + ", ".join(f"{k} {v}" for k, v in r.undrained.items())
        bounded = "yes" if r.rss[2] <= warm_rss * RSS_BOUND else f"NO (> {RSS_BOUND:.0f}x {warm_rss:.0f})"
        print(f"| {r.name} | {t.answered} / {t.refused} / {t.failed} | {d.acknowledged} / {d.indexed_once} | {drained} "
              f"| {r.rss[0]:.0f} / {r.rss[1]:.0f} / {r.rss[2]:.0f} | {bounded} |")  # fmt: skip
    print()
    print("What was injected and the reasons behind each refusal and failure:")
    print()
    for r in rows:
        reasons = ", ".join(f"{why} x{n}" for why, n in r.tally.reasons.most_common()) or "none"
        problems = "; ".join(r.docs.problems)
        print(f"- {r.name}: {r.what}. Refusals/failures: {reasons}."
              + (f" Document problems: {problems}." if problems else ""))  # fmt: skip


async def main_async(args: argparse.Namespace, root: Path) -> int:
    redis = RedisServer(root / "redis").start()
    llm = ThreadingHTTPServer(("127.0.0.1", 0), _LLM)
    threading.Thread(target=llm.serve_forever, daemon=True).start()
    providers = [{"name": "local-llm", "base_url": f"http://127.0.0.1:{llm.server_address[1]}/v1",
                  "api_key": "sk-bench", "model": "m"}]  # fmt: skip
    engine = Engine(root / "data", root / "engine.log", env={
        "MMRAG_REDIS_URL": redis.url, "MMRAG_LLM_PROVIDERS": json.dumps(providers),
        "MMRAG_LLM_READ_TIMEOUT_S": str(LLM_READ_TIMEOUT_S), "MMRAG_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "MMRAG_METRICS_PORT": "0",
    })  # fmt: skip
    await asyncio.to_thread(engine.start)
    rss = RssSampler(engine)
    rss.start()
    rows: list[Row] = []
    code = None
    try:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S + 30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            ctx = Ctx(engine, http, redis, rss, docs_per_scenario=3 if args.quick else 6)
            warm = Batch()  # models loaded, caches warm: the RSS every "bounded" compares with
            await upload_batch(http, engine.url, 2, warm, gap_s=0)
            for doc_id in warm.docs:
                await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=SETTLE_S)
            await asyncio.gather(*(one_request(http, engine.url, k, QUESTIONS[0], Tally()) for k in ("search", "ask")))
            ctx.all_docs.update(warm.docs)
            warm_rss = rss.total_now()
            for name, fault in scenarios(args.quick):
                if args.only and args.only not in name:
                    continue
                rows.append(await run_scenario(ctx, name, fault))
            records = {d: r for d, r in (await check_documents(http, engine.url, ctx.all_docs)).records.items()}
    finally:
        rss.stop()
        code = await asyncio.to_thread(engine.stop)
        _LLM.release.set()
        llm.shutdown()
        llm.server_close()
        redis.stop()
    chunks = sum(r["chunks_total"] for r in records.values() if r["status"] == "indexed")
    points = edge_count(engine.data_dir)
    if not args.quick and args.only in CLUSTER_ROW:
        rows.append(await cluster_row(root, ctx.docs_per_scenario))
    print_table(rows, warm_rss)
    for line in ctx.details:
        print(f"- {line}")
    print()
    print(f"Whole run: {len(records)} documents acknowledged, "
          f"{sum(r['status'] == 'indexed' for r in records.values())} indexed with {chunks} chunks; the vector store "
          f"holds {points} points ({'no point twice, none missing' if points == chunks else 'MISMATCH'}); "
          f"mmrag up stopped with exit code {code}.")  # fmt: skip
    print("Largest process of each kind over the run (RSS MiB): "
          + ", ".join(f"{k} {v:.0f}" for k, v in rss.peak_by_kind.most_common()))  # fmt: skip
    print(f"Warm-up RSS (every process of the engine, MiB): {warm_rss:.0f}; 'bounded' = after a scenario at most "
          f"{RSS_BOUND:.0f}x that.")  # fmt: skip
    return 0 if code == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 documents a scenario instead of 6, no NATS cluster")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this (not recorded)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="mmrag-reliability-") as tmp:
        if args.only:
            sys.exit(asyncio.run(main_async(args, Path(tmp))))
        with recorded("reliability"):
            status = asyncio.run(main_async(args, Path(tmp)))
        sys.exit(status)


if __name__ == "__main__":
    main()
