"""A message whose every delivery crashed its process (no handler ever returned, so no dead letter was written)
is given up from JetStream's max-deliveries advisory: dead-lettered and its document marked failed, instead of
staying `parsing` forever and blocking a re-index's catch-up.

Real processes on a real nats-server: a child process runs a `PullWorker` whose handler kills the process, once
per delivery; then a healthy worker of the same durable (the restarted agent) receives the advisory.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import nats

from agents.runtime.worker import Delivery, PullWorker
from bus.progress import ProgressStore
from bus.topology import consumer_config, ensure_topology
from contracts.messages import DeadLetter, DocumentStatus, Message
from contracts.topology import PROGRESS_BUCKET, ConsumerDef, IndexGeneration, Subjects

CONSUMER = ConsumerDef(stream="CRASH", durable="crashy", filter_subject="crash.in.*", max_deliver=2, backoff_s=(0.5, 0.5))


class Doc(Message):
    tenant: str
    doc_id: str

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)


# The agent whose handler takes its process down (a segfault in a parser library, the OOM killer...).
CRASHING_AGENT = textwrap.dedent(
    """
    import asyncio, os, sys
    import nats
    from agents.runtime.worker import PullWorker
    from tests.bus.test_max_deliveries import CONSUMER, Doc

    async def main():
        nc = await nats.connect(sys.argv[1])
        async def crash(deliveries):
            os._exit(137)
        await PullWorker(nc.jetstream(), CONSUMER, Doc, crash, agent="parser").run(asyncio.Event())

    asyncio.run(main())
    """
)


async def test_a_document_whose_deliveries_all_crashed_is_failed_from_the_advisory(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        await js.add_stream(name="CRASH", subjects=["crash.>"])
        await js.add_consumer("CRASH", consumer_config(CONSUMER))
        progress = ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1))
        ack = await js.publish("crash.in.t1", Doc(tenant="t1", doc_id="doc1").model_dump_json().encode())
        await progress.update("t1", "doc1", lambda _: progress.new("t1", "doc1", ack.seq, DocumentStatus.PARSING))

        for _ in range(CONSUMER.max_deliver):  # each delivery kills the process that took it
            child = subprocess.run([sys.executable, "-c", CRASHING_AGENT, nats_server.url], timeout=60, capture_output=True)
            assert child.returncode == 137, child.stderr.decode()[-2000:]
        info = await js.consumer_info("CRASH", CONSUMER.durable)
        assert info.num_ack_pending == 1 and info.num_redelivered == 1  # unsettled, and no dead letter written

        handled: list[int] = []

        async def handle(deliveries) -> None:  # noqa: ANN001
            handled.extend(d.stream_seq for d in deliveries)

        async def mark_failed(delivery: Delivery[Doc], reason: str) -> None:  # what the parser's on_give_up does
            doc = delivery.payload
            await progress.mark_failed(doc.tenant, doc.doc_id, delivery.stream_seq, f"parsing failed: {reason}")

        worker = PullWorker(js, CONSUMER, Doc, handle, agent="parser", on_give_up=mark_failed)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            async with asyncio.timeout(20):
                while (record := await progress.get("t1", "doc1")).status is not DocumentStatus.FAILED:
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task
        assert handled == [], "a message past max_deliver is never handled again"
        assert record.revision == ack.seq
        assert "gave up after 2 attempts" in record.error and "parser stopped" in record.error, record.error
        assert "deadletter.crashy.t1.doc1" in record.error  # where the operator finds the details

        sub = await js.pull_subscribe(Subjects.deadletters(CONSUMER.durable), durable=None, stream="DEADLETTER")
        [msg] = await sub.fetch(1, timeout=5)
        letter = DeadLetter.model_validate_json(msg.data)
        assert (letter.error_type, letter.stream, letter.stream_seq, letter.num_delivered) == (
            "MaxDeliveries", "CRASH", ack.seq, 2,
        )  # fmt: skip
        assert letter.subject == "crash.in.t1" and '"doc1"' in letter.payload_excerpt and "advisory" in letter.reason
        info = await js.consumer_info("CRASH", CONSUMER.durable)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await nc.close()
