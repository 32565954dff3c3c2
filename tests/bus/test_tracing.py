"""Traces and logs: one ask and one upload are each one trace across the edge API and the agents.

The edge API (aiohttp TestServer) and real `PullWorker`s run in this process against a real nats-server, with
the SDK's in-memory span exporter. The workers consume the subjects the edge API really publishes on
(``query.retrieve.*`` with the retriever's durable, ``docs.ingest.*.*`` with the parser's) and publish onward
with `bus.publish`, as the agents do; a batch worker stands for the embedder.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agents.runtime.worker import Delivery, PullWorker
from telemetry import logs
from bus.publish import Outgoing, headers_for, publish
from bus.topology import consumer_config, ensure_topology
from telemetry.tracing import configure_tracing, tracer
from contracts.messages import DocumentSubmitted, DoneEvent, Message, QueryRequest, RetrievalEvent
from contracts.topology import (
    HEADER_MSG_ID,
    HEADER_TRACEPARENT,
    QUERY_CONSUMERS,
    ConsumerDef,
    IndexGeneration,
    Subjects,
    ingest_consumers,
)
from edge_api.app import create_app
from edge_api.settings import EdgeSettings
from tests.engine import NatsServer

EXPORTER = InMemorySpanExporter()
_installed = False
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")  # W3C trace context, version 00

HOP2 = ConsumerDef(
    stream="TRACETEST", durable="trace-hop2", filter_subject="trace.hop2.*", max_deliver=3, backoff_s=(0.5,)
)
HOP3 = ConsumerDef(
    stream="TRACETEST", durable="trace-hop3", filter_subject="trace.hop3.*", max_deliver=3, backoff_s=(0.5,)
)


class Hop(Message):
    """What a test agent hands to the next one: which request or document it is about."""

    key: str
    tenant: str

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    global _installed
    if not _installed:  # one provider per process: add our exporter to it once
        configure_tracing("mmrag-test", exporter=EXPORTER)
        _installed = True
    EXPORTER.clear()
    return EXPORTER


@dataclass
class Stack:
    js: JetStreamContext
    nc: nats.NATS
    base: str
    http: aiohttp.ClientSession
    stop: asyncio.Event
    tasks: list[asyncio.Task]

    def run(self, worker: PullWorker) -> None:
        self.tasks.append(asyncio.create_task(worker.run(self.stop)))


@pytest.fixture
async def stack(nats_server: NatsServer, spans: InMemorySpanExporter) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as exits:
        nc = await nats.connect(nats_server.url)
        exits.push_async_callback(nc.close)
        js = nc.jetstream()
        await ensure_topology(js)
        await js.add_stream(name="TRACETEST", subjects=["trace.>"])
        for consumer in (HOP2, HOP3):
            await js.add_consumer("TRACETEST", consumer_config(consumer))
        overrides: dict[str, object] = {"nats_url": nats_server.url, "query_timeout_s": 10.0}
        if "auth" in EdgeSettings.model_fields:  # every request is the default tenant, no API key needed
            overrides["auth"] = "off"
        server = await exits.enter_async_context(TestServer(create_app(EdgeSettings(**overrides))))
        http = await exits.enter_async_context(aiohttp.ClientSession())
        s = Stack(js, nc, str(server.make_url("")).rstrip("/"), http, asyncio.Event(), [])
        yield s
        s.stop.set()
        await asyncio.gather(*s.tasks)


def forward(js: JetStreamContext, subject: str, key: Callable[[Message], str]) -> Callable[..., Awaitable[None]]:
    """A handler that publishes one `Hop` per message onto `subject`, carrying the message's trace context."""

    async def handle(deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            hop = Hop(key=key(d.payload), tenant=d.payload.tenant)
            await publish(
                js, Outgoing(f"{subject}.{hop.tenant}", hop, msg_id=f"{subject}:{hop.key}", headers=d.trace_headers)
            )

    return handle


async def until_spans(
    exporter: InMemorySpanExporter, condition: Callable[[list[ReadableSpan]], bool], what: str
) -> list[ReadableSpan]:
    try:
        async with asyncio.timeout(20):
            while not condition(finished := list(exporter.get_finished_spans())):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"no {what} within 20s: {[s.name for s in exporter.get_finished_spans()]}")
    return finished


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        child.parent is not None
        and child.parent.span_id == parent.context.span_id
        and child.context.trace_id == parent.context.trace_id
    )


async def test_one_ask_is_one_trace_across_the_edge_api_and_the_agents(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    retriever = QUERY_CONSUMERS["retriever"]

    async def answer(deliveries: Sequence[Delivery[Hop]]) -> None:  # the last stage answers the waiting client
        for d in deliveries:
            subject = Subjects.answer(d.payload.tenant, d.payload.key)
            await stack.nc.publish(
                subject, RetrievalEvent(request_id=d.payload.key, seq=0, hits=[]).model_dump_json().encode()
            )
            await stack.nc.publish(
                subject, DoneEvent(request_id=d.payload.key, seq=1, answerer="test").model_dump_json().encode()
            )

    stack.run(
        PullWorker(
            stack.js,
            retriever,
            QueryRequest,
            forward(stack.js, "trace.hop2", lambda p: p.request_id),
            agent="retriever",
        )
    )
    stack.run(PullWorker(stack.js, HOP2, Hop, answer, agent="generator"))

    async with stack.http.post(f"{stack.base}/v1/ask", json={"question": "what is traced?"}) as resp:
        assert resp.status == 200
        body = await resp.text()
    assert "event: done" in body, body

    finished = await until_spans(
        spans,
        lambda s: len(named(s, "POST /v1/ask")) == 1 and len(named(s, f"{HOP2.filter_subject} process")) == 1,
        "ask spans",
    )
    [server] = named(finished, "POST /v1/ask")
    [first] = named(finished, f"{retriever.filter_subject} process")
    [second] = named(finished, f"{HOP2.filter_subject} process")
    assert server.kind == SpanKind.SERVER and server.parent is None
    assert server.attributes["http.route"] == "/v1/ask" and server.attributes["http.response.status_code"] == 200
    assert server.attributes["mmrag.tenant"] == "default" and server.attributes["mmrag.request_id"]
    assert first.kind == SpanKind.CONSUMER and second.kind == SpanKind.CONSUMER
    assert is_child(first, server), (first.parent, server.context)
    assert is_child(second, first), (second.parent, first.context)
    assert first.attributes["mmrag.agent"] == "retriever" and first.attributes["mmrag.outcome"] == "ack"
    assert first.attributes["messaging.consumer.group.name"] == "retriever"
    assert first.attributes["messaging.destination.name"] == "query.retrieve.default"
    assert second.attributes["mmrag.agent"] == "generator" and second.attributes["mmrag.outcome"] == "ack"


async def test_uploads_are_traces_and_a_batch_links_the_messages_it_took(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    parser = ingest_consumers(IndexGeneration(1))["parser"]
    stack.run(
        PullWorker(
            stack.js, parser, DocumentSubmitted, forward(stack.js, "trace.hop2", lambda p: p.doc_id), agent="parser"
        )
    )

    doc_ids = []
    for i in range(2):
        form = aiohttp.FormData()
        form.add_field("file", f"document {i}\n".encode(), filename=f"n{i}.txt", content_type="text/plain")
        async with stack.http.post(f"{stack.base}/v1/documents", data=form) as resp:
            assert resp.status in (200, 201, 202), await resp.text()
            doc_ids.append((await resp.json())["doc_id"])

    # Both hand-offs wait on the next hop's consumer before the batch worker starts: it takes them in one fetch.
    async with asyncio.timeout(20):
        while (await stack.js.consumer_info("TRACETEST", HOP2.durable)).num_pending < 2:
            await asyncio.sleep(0.05)
    stack.run(
        PullWorker(stack.js, HOP2, Hop, forward(stack.js, "trace.hop3", lambda p: p.key), agent="embedder", batch=2)
    )
    stack.run(PullWorker(stack.js, HOP3, Hop, forward(stack.js, "trace.done", lambda p: p.key), agent="indexer"))

    finished = await until_spans(spans, lambda s: len(named(s, f"{HOP3.filter_subject} process")) == 2, "ingest spans")
    servers = named(finished, "POST /v1/documents")
    parsed = named(finished, f"{parser.filter_subject} process")
    [batch] = named(finished, f"{HOP2.filter_subject} process")
    indexed = named(finished, f"{HOP3.filter_subject} process")
    assert len(servers) == 2 and len(parsed) == 2 and len(indexed) == 2
    assert len({s.context.trace_id for s in servers}) == 2  # each upload is its own trace

    by_doc = {p.attributes["mmrag.doc_id"]: p for p in parsed}
    assert set(by_doc) == set(doc_ids)
    for p in parsed:  # each parse is a child of its upload's request span
        assert any(is_child(p, s) for s in servers), p.parent
    # The batch: one span, in no upload's trace, linked to the context of each message it took.
    assert batch.parent is None and batch.attributes["messaging.batch.message_count"] == 2
    assert batch.attributes["mmrag.outcome"] == "ack"
    assert {(link.context.trace_id, link.context.span_id) for link in batch.links} == {
        (p.context.trace_id, p.context.span_id) for p in parsed
    }
    assert batch.context.trace_id not in {s.context.trace_id for s in servers}
    # What the batch handler published carried each message's own context on: the next hop of each document
    # is still in that document's trace.
    for i in indexed:
        assert any(is_child(i, p) for p in parsed), i.parent


def test_publish_injects_the_current_span_into_the_headers(spans: InMemorySpanExporter) -> None:
    out = Outgoing("trace.hop2.t1", Hop(key="k", tenant="t1"), msg_id="m1")
    assert HEADER_TRACEPARENT not in headers_for(out)  # no current span: no context invented
    with tracer().start_as_current_span("publisher") as span:
        headers = headers_for(out)
        kept = headers_for(
            Outgoing(
                out.subject, out.message, "m2", headers={HEADER_TRACEPARENT: "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
            )
        )
    match = TRACEPARENT.match(headers[HEADER_TRACEPARENT])
    assert match is not None, headers
    assert match.group(1) == format(span.get_span_context().trace_id, "032x")
    assert match.group(2) == format(span.get_span_context().span_id, "016x")
    assert int(match.group(3), 16) & 1  # sampled
    assert headers[HEADER_MSG_ID] == "m1"
    assert kept[HEADER_TRACEPARENT] == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"  # an explicit carry wins


async def test_a_published_message_carries_the_traceparent_on_the_wire(
    stack: Stack, spans: InMemorySpanExporter
) -> None:
    sub = await stack.js.pull_subscribe("trace.hop3.t9", durable=None, stream="TRACETEST")
    with tracer().start_as_current_span("publisher") as span:
        await publish(stack.js, Outgoing("trace.hop3.t9", Hop(key="w", tenant="t9"), msg_id="w1"))
    [msg] = await sub.fetch(1, timeout=5)
    match = TRACEPARENT.match((msg.headers or {}).get(HEADER_TRACEPARENT, ""))
    assert match is not None and match.group(2) == format(span.get_span_context().span_id, "016x"), msg.headers


def test_json_logs_carry_the_trace_and_the_stdlib_lines_keep_their_text(spans: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    assert logs.configure_logging(logging.INFO, fmt="json") == "json"
    try:
        assert logs._handler is not None
        logs._handler.setStream(stream)  # type: ignore[attr-defined]
        with tracer().start_as_current_span("logging") as span:
            logging.getLogger("agents.runtime.host").info("agents running: %s (index generation %d)", "parser", 1)
        logging.getLogger("mmrag.supervisor").warning("nats-server (pid 7) was killed by SIGKILL")
    finally:
        root.removeHandler(logs._handler)
        logs._handler = None
        root.setLevel(level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "agents running: parser (index generation 1)"
    assert first["level"] == "info" and first["logger"] == "agents.runtime.host" and "T" in first["timestamp"]
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert first["span_id"] == format(span.get_span_context().span_id, "016x")
    assert second["event"] == "nats-server (pid 7) was killed by SIGKILL" and "trace_id" not in second


async def test_one_upload_and_one_ask_are_each_one_trace_through_the_real_agents(
    stack: Stack, spans: InMemorySpanExporter, nats_server: NatsServer, tmp_path
) -> None:
    """The real parser, embedder, indexer, retriever, reranker and generator, in this process: each hop's span
    is the child of the previous hop's, all in the trace of the HTTP request that started it."""
    from agents.runtime.host import run_agents
    from agents.settings import AgentSettings
    from mmrag.registry import agent_types
    from tests.factories import make_pdf

    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path / "data", fetch_batch=1, metrics_port=0)
    started, stop = asyncio.Event(), asyncio.Event()
    names = ("parser", "embedder", "indexer", "retriever", "reranker", "generator")
    host = asyncio.create_task(run_agents(agent_types(names), settings, stop, started=started))
    try:
        async with asyncio.timeout(120):
            await asyncio.wait([host, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED)
        assert started.is_set(), host.exception() if host.done() else "agents did not start"
        form = aiohttp.FormData()
        form.add_field("file", make_pdf(["The heron census counted 311 herons."]), filename="h.pdf",
                       content_type="application/pdf")  # fmt: skip
        async with stack.http.post(f"{stack.base}/v1/documents", data=form) as resp:
            assert resp.status == 202, await resp.text()
        hops = ["docs.ingest.*.* process", "chunks.parsed.g1.text.interactive.* process", "chunks.embedded.g1.* process"]
        done = await until_spans(spans, lambda s: all(named(s, h) for h in hops), "ingest hops")
        [request] = named(done, "POST /v1/documents")
        chain = [request, *(named(done, h)[0] for h in hops)]
        for parent, child in zip(chain, chain[1:]):
            assert is_child(child, parent), (parent.name, child.name)

        spans.clear()
        async with stack.http.post(f"{stack.base}/v1/ask", json={"question": "How many herons were counted?"}) as resp:
            assert resp.status == 200
            assert b"event: done" in await resp.read()
        hops = ["query.retrieve.* process", "query.rerank.* process", "query.generate.* process"]
        done = await until_spans(spans, lambda s: all(named(s, h) for h in hops) and named(s, "POST /v1/ask"), "ask hops")
        [request] = named(done, "POST /v1/ask")
        chain = [request, *(named(done, h)[0] for h in hops)]
        for parent, child in zip(chain, chain[1:]):
            assert is_child(child, parent), (parent.name, child.name)
    finally:
        stop.set()
        await asyncio.wait_for(host, 60)
