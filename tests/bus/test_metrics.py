"""Prometheus metrics, read back over HTTP as a scraper would, against a real nats-server.

- an agent process (`run_agents`) counts each outcome of its workers and serves them on MMRAG_METRICS_PORT;
- the consumer gauges follow the server's pending / ack-pending of a durable consumer;
- the edge API labels requests by route template, never by raw path.

The registry is the process's default one, shared with other test modules: every test uses its own durable
(agent metrics) or compares before/after (edge metrics).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import nats
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from agents.runtime.agent import ConsumerAgent
from agents.runtime.host import run_agents
from agents.runtime.metrics_server import MetricsServer
from agents.runtime.worker import Delivery, PermanentError
from agents.settings import AgentSettings
from bus.topology import consumer_config, ensure_topology
from contracts.messages import Message
from contracts.topology import ConsumerDef
from edge_api import EdgeSettings, create_app
from tests.engine import NatsServer, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WAIT_S = 20.0


class Job(Message):
    n: int
    mode: str = "ok"  # ok | permanent

    def routing(self) -> tuple[str, ...]:
        return ()


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(
    http: aiohttp.ClientSession, url: str, condition: Callable[[Samples], bool], timeout_s: float = WAIT_S
) -> Samples:
    samples: Samples = {}
    try:
        async with asyncio.timeout(timeout_s):
            while not condition(samples := await scrape(http, url)):
                await asyncio.sleep(0.1)
    except TimeoutError:  # say what the condition last saw, or a slow CI run cannot be told from a wrong count
        seen = sorted(f"{name}{dict(labels)} = {v}" for (name, labels), v in samples.items() if name.startswith("mmrag_"))
        raise AssertionError(f"not met in {timeout_s:.0f}s; last scrape:\n" + "\n".join(seen)) from None
    return samples


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_an_agent_process_serves_the_outcomes_of_its_workers(
    nats_server: NatsServer, nc: nats.NATS, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    durable = f"metrics-{uuid.uuid4().hex[:8]}"
    consumer = ConsumerDef(stream="MTEST", durable=durable, filter_subject="mtest.in", max_deliver=3, backoff_s=(0.5,))

    class Worker(ConsumerAgent[Job]):
        name = "metrics-test"
        model = Job

        def consumer_defs(self) -> Sequence[ConsumerDef]:
            return [consumer]

        def fetch_batch(self) -> int:
            return 10

        async def handle(self, deliveries: Sequence[Delivery[Job]]) -> None:
            for d in deliveries:
                if d.payload.mode == "permanent":
                    raise PermanentError(f"job {d.payload.n} can never work")

    js = nc.jetstream()
    await ensure_topology(js)
    await js.add_stream(name="MTEST", subjects=["mtest.>"])
    await js.add_consumer("MTEST", consumer_config(consumer))
    await js.publish("mtest.in", Job(n=1).model_dump_json().encode())
    await js.publish("mtest.in", b'{"n": "not a number"}')
    await js.publish("mtest.in", Job(n=2, mode="permanent").model_dump_json().encode())

    port = free_port()
    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path / "data", metrics_port=port)
    stop, started = asyncio.Event(), asyncio.Event()
    host = asyncio.create_task(run_agents([Worker], settings, stop, started=started))
    try:
        async with asyncio.timeout(WAIT_S):
            await started.wait()
        url = f"http://127.0.0.1:{port}/metrics"
        worker = {"agent": "metrics-test", "durable": durable}

        def handled(outcome: str, s: Samples) -> float | None:
            return value(s, "mmrag_messages_handled_total", outcome=outcome, **worker)

        def settled(s: Samples) -> bool:  # the gauges are refreshed every few seconds: the last to follow
            consumer_labels = {"stream": "MTEST", "durable": durable}
            return all(handled(o, s) == 1 for o in ("ack", "poison", "dead_letter")) and all(
                value(s, gauge, **consumer_labels) == 0
                for gauge in ("mmrag_consumer_pending", "mmrag_consumer_ack_pending")
            )

        samples = await scrape_until(http, url, settled)
        assert handled("transient", samples) == 0  # every outcome's series exists from the start
        dead = "mmrag_dead_letters_total"
        assert value(samples, dead, durable=durable, error_type="PermanentError") == 1
        assert value(samples, dead, durable=durable, error_type="ValidationError") == 1
        assert value(samples, "mmrag_batch_size_sum", **worker) == 3  # each message fetched once
        # The batch of two valid messages failed, then each ran alone: at least three handler calls.
        assert value(samples, "mmrag_handler_seconds_count", **worker) >= 3
        async with http.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 200
    finally:
        stop.set()
        await host
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the agents
        await scrape(http, url)


async def test_consumer_gauges_follow_pending_and_ack_pending(nc: nats.NATS, http: aiohttp.ClientSession) -> None:
    durable = f"gauges-{uuid.uuid4().hex[:8]}"
    consumer = ConsumerDef(stream="GTEST", durable=durable, filter_subject="gtest.in", max_deliver=1, backoff_s=(30.0,))
    js = nc.jetstream()
    await js.add_stream(name="GTEST", subjects=["gtest.>"])
    await js.add_consumer("GTEST", consumer_config(consumer))
    for n in range(5):  # no worker runs: all five wait
        await js.publish("gtest.in", Job(n=n).model_dump_json().encode())

    server = MetricsServer(0, js, [consumer], host="127.0.0.1", refresh_s=0.1)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        labels = {"stream": "GTEST", "durable": durable}

        def state(pending: int, ack_pending: int) -> Callable[[Samples], bool]:
            return lambda s: (
                value(s, "mmrag_consumer_pending", **labels) == pending
                and value(s, "mmrag_consumer_ack_pending", **labels) == ack_pending
            )

        await scrape_until(http, url, state(5, 0))
        sub = await js.pull_subscribe_bind(durable=durable, stream="GTEST")
        assert len(await sub.fetch(2, timeout=5)) == 2  # delivered, not acked
        await scrape_until(http, url, state(3, 2))

        await js.delete_consumer("GTEST", durable)  # its state is unknown now: no series rather than a stale one
        await scrape_until(http, url, lambda s: value(s, "mmrag_consumer_pending", **labels) is None)
        await sub.unsubscribe()
    finally:
        await server.stop()


async def test_lag_endpoint_sums_each_role_over_generations(nc: nats.NATS, http: aiohttp.ClientSession) -> None:
    """What KEDA's metrics-api trigger reads: a role's backlog is the same query before and after a re-index."""
    tag = uuid.uuid4().hex[:6]
    js = nc.jetstream()
    await js.add_stream(name="LAGTEST", subjects=["lagtest.>"])
    consumers = [
        ConsumerDef(stream="LAGTEST", durable=f"work{tag}-g1", filter_subject="lagtest.g1"),
        ConsumerDef(stream="LAGTEST", durable=f"work{tag}-g2", filter_subject="lagtest.g2"),
        ConsumerDef(stream="LAGTEST", durable=f"other{tag}", filter_subject="lagtest.other"),
    ]
    for consumer in consumers:
        await js.add_consumer("LAGTEST", consumer_config(consumer))
    for subject, n in (("lagtest.g1", 3), ("lagtest.g2", 4), ("lagtest.other", 1)):
        for i in range(n):
            await js.publish(subject, Job(n=i).model_dump_json().encode())

    missing = MetricsServer(0, js, [ConsumerDef(stream="LAGTEST", durable="nobody", filter_subject="lagtest.x")],
                            host="127.0.0.1", refresh_s=0.1)  # fmt: skip
    server = MetricsServer(0, js, consumers, host="127.0.0.1", refresh_s=0.1)
    await missing.start()
    await server.start()
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                async with http.get(f"http://127.0.0.1:{server.port}/lag") as resp:
                    if resp.status == 200 and (body := await resp.json())["pending"] == 8:
                        break
                await asyncio.sleep(0.1)
        assert body["by_role"] == {f"work{tag}": 7, f"other{tag}": 1}
        assert body["consumers"][f"LAGTEST/work{tag}-g2"] == {"pending": 4, "ack_pending": 0}
        async with http.get(f"http://127.0.0.1:{missing.port}/lag") as resp:
            assert resp.status == 503, "nothing read: no number an autoscaler could mistake for an empty backlog"
    finally:
        await server.stop()
        await missing.stop()


async def test_edge_requests_are_labelled_by_route_template(nats_server: NatsServer, http: aiohttp.ClientSession):
    await ensure_topology((nc := await nats.connect(nats_server.url)).jetstream())
    await nc.close()
    ids = [uuid.uuid4().hex, uuid.uuid4().hex]
    route = {"method": "GET", "route": "/v1/documents/{doc_id}"}
    async with TestServer(create_app(EdgeSettings(nats_url=nats_server.url))) as server:
        url = str(server.make_url("/metrics"))
        before = await scrape(http, url)
        statuses = []
        for doc_id in ids:
            async with http.get(server.make_url(f"/v1/documents/{doc_id}")) as resp:
                statuses.append(resp.status)
        async with http.get(server.make_url("/no/such/endpoint")) as resp:
            assert resp.status == 404
        after = await scrape(http, url)

    [status] = set(statuses)  # both unknown documents: the same answer
    counted = "mmrag_http_requests_total"
    delta = (value(after, counted, status=str(status), **route) or 0) - (
        value(before, counted, status=str(status), **route) or 0
    )
    assert delta == 2
    timed = "mmrag_http_request_seconds_count"
    assert (value(after, timed, **route) or 0) - (value(before, timed, **route) or 0) == 2
    raw = [labels for (_, labels) in after if any(doc_id in v for _, v in labels for doc_id in ids)]
    assert raw == []  # no label set per document
    unmatched = {"method": "GET", "route": "other", "status": "404"}
    assert (value(after, counted, **unmatched) or 0) - (value(before, counted, **unmatched) or 0) == 1


async def test_a_taken_port_leaves_the_agents_running_without_the_endpoint(nc: nats.NATS) -> None:
    """Several `mmrag agent` processes on one host: the second one to bind logs it and carries on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer(taken.getsockname()[1], nc.jetstream(), [], host="127.0.0.1")
        await server.start()  # no exception
        assert server.port is None
        await server.stop()
