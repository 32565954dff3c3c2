"""The failure policy, in one place: fetch from a durable pull consumer, validate, handle, ack.

Every agent runs its handler under `PullWorker`, so every agent behaves the same way:

- a payload that does not validate against the subject's contract, or that travels on another tenant's
  subject than its own, is poison: dead-letter record, then TERM;
- a handler that raises `PermanentError` for a message: dead-letter record (+ the agent's `on_give_up`,
  e.g. to mark the document failed or tell the waiting client), then TERM;
- any other exception is transient: the message is left unacked and the server redelivers it on the
  consumer's ``backoff`` schedule (`ConsumerDef.backoff_s`), until `max_deliver`, at which point the
  message is dead-lettered instead of being silently dropped by the server;
- a message whose every delivery ended without its handler returning (the process crashed or was killed while
  handling it, so no dead letter was written) reaches `max_deliver` unsettled: the server then publishes its
  max-deliveries advisory, which one worker of the consumer (a queue group per durable) receives; it reads the
  message by its stream sequence and gives up on it like on a last failed try (dead letter, `on_give_up`:
  the document is marked failed instead of blocking its progress, and a re-index, forever);
- while a handler runs, in-progress acks keep the message from being redelivered to another replica;
- a message is acked only after its handler returned, i.e. after its effects are durable. A process
  killed mid-message leaves it unacked, and JetStream redelivers it after ``backoff_s[n-1]``.

A batch handler that fails is retried one message at a time, so one poison message in a batch never
takes its neighbours down with it. A message is TERMed only once its dead letter is stored: if NATS
cannot take the dead letter, the message stays unacked and comes back.

The worker survives the bus: an ack, term or dead-letter publish that fails during a NATS hiccup is
logged and left to redelivery (handlers are idempotent), and fetch errors while reconnecting are retried.
Only `stop` ends `run`.

Each outcome is counted (`telemetry.metrics`: messages by outcome, dead letters, handler time, batch size).

Each handling is traced (`telemetry.tracing`): one CONSUMER span per message, a child of the context its
``traceparent`` carries, so a document's or a question's hops are one trace; a batch of several messages is
one span with a link to each message's context (and each message's own context is what its outputs carry
on, `Delivery.trace_headers`). The span's attributes: agent, durable, subject, batch size, outcome. Log
lines written meanwhile carry agent, durable, subject (and tenant / request id of a single message).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from pydantic import BaseModel, ValidationError

from bus.tasks import await_chain, cancel_and_wait
from contracts.messages import DeadLetter, Message
from contracts.topology import HEADER_TRACEPARENT, STREAMS_BY_NAME, TOKEN, ConsumerDef, Subjects
from telemetry import tracing
from telemetry.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

# Errors of the bus itself (disconnected, timed out, server said no): never a reason to crash a worker.
BUS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)
# JetStream's error code for a message delete of a sequence that is not (or no longer) stored.
_NO_MESSAGE_FOUND = 10057


# How long a worker with concurrency > 1 lets its messages in hand finish after `stop` (well inside the 60 s that
# `mmrag up` gives the agents to stop).
DRAIN_S = 20.0


class PermanentError(Exception):
    """Retrying cannot help (bad input, unsupported document): the message is dead-lettered."""


class HandlerBudgetExceeded(PermanentError):
    """A handling ran past its consumer's ``handler_budget_s`` and was cancelled (what it waited on is logged)."""


@dataclass(frozen=True)
class Delivery(Generic[T]):
    msg: Msg
    payload: T
    # The trace context to carry on, set by the worker while the message's own span is current.
    carry: Mapping[str, str] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_delivered(self) -> int:
        return self.msg.metadata.num_delivered

    @property
    def stream_seq(self) -> int:
        return self.msg.metadata.sequence.stream

    @property
    def trace_headers(self) -> Mapping[str, str]:
        """Headers to carry on to what this message causes (the trace context): its handling span's context
        when handled alone, else (in a batch) the context the message came with."""
        if self.carry is not None:
            return self.carry
        headers = self.msg.headers or {}
        return {k: v for k, v in headers.items() if k in (HEADER_TRACEPARENT, tracing.HEADER_TRACESTATE)}


BatchHandler = Callable[[Sequence[Delivery[T]]], Awaitable[None]]
GiveUpHook = Callable[[Delivery[T], str], Awaitable[None]]


def routing_mismatch(subject: str, payload: BaseModel) -> str | None:
    """Why `payload` may not travel on `subject` (its tenant/doc tokens disagree), or None."""
    expected = payload.routing() if isinstance(payload, Message) else ()
    if not expected:
        return None
    actual = tuple(subject.split(".")[-len(expected) :])
    if actual != expected:
        return f"subject {subject!r} does not match the payload's {'.'.join(expected)!r} (tenant/document)"
    return None


def _about(payload: BaseModel) -> tuple[str, str]:
    """The (tenant, doc id) a message is about, as subject tokens; ``_`` for what it does not name."""
    tokens = []
    for key in ("tenant", "doc_id"):
        value = getattr(payload, key, None)
        tokens.append(value if isinstance(value, str) and TOKEN.match(value) else "_")
    return tokens[0], tokens[1]


def _outcome(span: trace.Span, outcome: str, err: BaseException | None = None) -> None:
    span.set_attribute("mmrag.outcome", outcome)
    if err is not None:
        span.record_exception(err)
        span.set_status(Status(StatusCode.ERROR, f"{type(err).__name__}: {err}"[:300]))


class PullWorker(Generic[T]):
    """Runs `handler` on batches fetched from one durable pull consumer until `stop` is set.

    Replicas of an agent each run a PullWorker on the same durable consumer and so share its work.
    """

    def __init__(
        self,
        js: JetStreamContext,
        consumer: ConsumerDef,
        model: type[T],
        handler: BatchHandler[T],
        *,
        agent: str,
        batch: int = 1,
        on_give_up: GiveUpHook[T] | None = None,
        fetch_timeout_s: float = 1.0,
        concurrency: int = 1,
    ) -> None:
        self._js = js
        self.consumer = consumer
        self._model = model
        self._handler = handler
        self._agent = agent
        self._batch = batch
        self._on_give_up = on_give_up
        self._fetch_timeout_s = fetch_timeout_s
        if concurrency < 1 or (concurrency > 1 and batch != 1):
            raise ValueError(f"{consumer.durable}: concurrency must be >= 1, and > 1 only with batch 1")
        self._concurrency = concurrency
        self._last_bus_warning = 0.0
        self._metrics = WorkerMetrics(agent, consumer.durable)
        stream = STREAMS_BY_NAME.get(consumer.stream)
        self._consumed_once = stream is not None and stream.consumed_once

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and process until `stop`. With ``concurrency`` n > 1, up to n messages are handled at once, each
        on its own (fetched as slots free up, so a message never waits for a slow neighbour to be fetched)."""
        sub = advisories = None
        slots = asyncio.Semaphore(self._concurrency)
        in_flight: set[asyncio.Task[None]] = set()

        async def one(msg: Msg) -> None:
            try:
                await self.process([msg])
            finally:
                slots.release()

        try:
            while not stop.is_set():
                try:
                    if sub is None:
                        advisories = advisories or await self._follow_max_deliveries()  # before the first fetch
                        sub = await self._js.pull_subscribe_bind(durable=self.consumer.durable, stream=self.consumer.stream)
                        log.info("%s: consuming %s (%s)", self._agent, self.consumer.filter_subject, self.consumer.durable)
                        await self._purge_settled()
                    if self._concurrency > 1:
                        await slots.acquire()  # at least one free slot, then every other free one
                        free = 1
                        while not slots.locked():
                            await slots.acquire()
                            free += 1
                        try:
                            msgs = await sub.fetch(free, timeout=self._fetch_timeout_s)
                        except BaseException:
                            for _ in range(free):
                                slots.release()
                            raise
                        for _ in range(free - len(msgs)):
                            slots.release()
                        for msg in msgs:
                            task = asyncio.create_task(one(msg))
                            in_flight.add(task)
                            task.add_done_callback(in_flight.discard)
                        continue
                    msgs = await sub.fetch(self._batch, timeout=self._fetch_timeout_s)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    continue
                except nats.errors.ConnectionClosedError:
                    return
                except BUS_ERRORS as err:  # reconnecting, consumer being re-created...: wait and try again
                    self._bus_warning("fetch", err)
                    await asyncio.sleep(0.5)
                    continue
                # A batch in hand is finished even if stop is set meanwhile: graceful shutdown drains.
                await self.process(msgs)
        finally:
            if in_flight:
                # Graceful shutdown drains for a while; what is still in hand then (documents waiting for their
                # turn) is abandoned unacked, and redelivered to the next replica or process.
                _, late = await asyncio.wait(in_flight, timeout=DRAIN_S)
                for task in late:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
            for subscription in (sub, advisories):
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()

    async def process(self, msgs: Sequence[Msg]) -> None:
        self._metrics.batch_size.observe(len(msgs))
        deliveries: list[Delivery[T]] = []
        for msg in msgs:
            try:
                payload = self._model.model_validate_json(msg.data)
            except ValidationError as err:
                await self._poison(msg, f"invalid {self._model.__name__}: {err}", "ValidationError")
                continue
            if (mismatch := routing_mismatch(msg.subject, payload)) is not None:
                await self._poison(msg, mismatch, "RoutingMismatch")
                continue
            deliveries.append(Delivery(msg, payload))
        if not deliveries:
            return
        if len(deliveries) == 1:
            await self.process_one(deliveries[0])
            return
        with self._traced(deliveries) as (span, traced):
            try:
                await self._run_handler(traced)
            except Exception as err:  # noqa: BLE001 - the policy below decides what each failure means
                _outcome(span, "split", err)
                failed = err
            else:
                await asyncio.gather(*(self._settle(d.msg, "ack") for d in deliveries))
                self._metrics.count("ack", len(deliveries))
                _outcome(span, "ack")
                return
        log.warning("%s: batch of %d failed (%r); retrying one by one", self._agent, len(deliveries), failed)
        for delivery in deliveries:
            await self.process_one(delivery)

    async def process_one(self, delivery: Delivery[T]) -> None:
        with self._traced([delivery]) as (span, [traced]):
            try:
                await self._run_handler([traced])
            except Exception as err:  # noqa: BLE001
                _outcome(span, await self._fail(traced, err), err)
                return
            await self._settle(delivery.msg, "ack")
            self._metrics.count("ack")
            _outcome(span, "ack")

    @contextlib.contextmanager
    def _traced(self, deliveries: Sequence[Delivery[T]]) -> Iterator[tuple[trace.Span, list[Delivery[T]]]]:
        """The span of one handling, current while it runs, and the deliveries that carry its context on.

        One message: a CONSUMER span, child of the message's context, and its outputs carry this span's
        context. Several: one span (a new trace) linked to each message's context; each message's outputs
        carry the context it came with, so every document stays one trace.
        """
        first = deliveries[0].msg
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": first.subject,
            "messaging.consumer.group.name": self.consumer.durable,
            "messaging.batch.message_count": len(deliveries),
            "mmrag.agent": self._agent,
        }
        logged = {"agent": self._agent, "durable": self.consumer.durable, "subject": first.subject}
        if len(deliveries) == 1:
            parent = tracing.extract(first.headers)
            links: list[Link] = []
            payload = deliveries[0].payload
            for key in ("tenant", "request_id", "doc_id"):
                if isinstance(value := getattr(payload, key, None), str):
                    attributes[f"mmrag.{key}"] = logged[key] = value
        else:
            parent = otel_context.Context()  # a batch is a root span of its own, linked to every message
            links = [Link(sc) for d in deliveries if (sc := tracing.span_context_of(tracing.extract(d.msg.headers)))]
        name = f"{self.consumer.filter_subject} process"
        with (
            tracing.tracer().start_as_current_span(
                name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links,
                record_exception=False, set_status_on_exception=False,
            ) as span,
            structlog.contextvars.bound_contextvars(**logged),
        ):  # fmt: skip
            if len(deliveries) == 1:
                carry = dict(tracing.inject({}))
                yield span, [dataclasses.replace(deliveries[0], carry=carry or None)]
            else:
                yield span, list(deliveries)

    async def _run_handler(self, deliveries: Sequence[Delivery[T]]) -> None:
        with self._metrics.handler_seconds.time():
            async with self._keep_alive(deliveries):
                budget = self.consumer.handler_budget_s
                if budget is None:
                    await self._handler(deliveries)
                    return
                # A task of its own (it copies this context: the span and the log fields), so that past the
                # budget the log can say where it waits before it is cancelled.
                handling = asyncio.create_task(self._handler(deliveries))
                try:
                    await asyncio.wait([handling], timeout=budget)
                except BaseException:  # this worker is being cancelled: take the handling down with it
                    await cancel_and_wait(handling)
                    raise
                if not handling.done():
                    where = "\n  ".join(await_chain(handling))
                    log.error("%s: handling ran past its %g s budget, cancelled; it waited in:\n  %s",
                              self._agent, budget, where)  # fmt: skip
                    await cancel_and_wait(handling)
                    raise HandlerBudgetExceeded(
                        f"the {self._agent} took longer than {budget:g} s and gave up; try again, and see the "
                        f"{self._agent} log if it happens again"
                    )
                handling.result()  # its exception, if any, is the policy's to judge

    async def _fail(self, delivery: Delivery[T], err: BaseException) -> str:
        """Apply the policy to a failed message; returns the outcome (transient, dead_letter, unrecorded)."""
        permanent = isinstance(err, PermanentError)
        last_try = delivery.num_delivered >= self.consumer.max_deliver
        if not permanent and not last_try:
            # No NAK: the server redelivers after backoff_s[n-1] (a NAK without delay would redeliver at once).
            backoff = self.consumer.backoff_s
            delay = backoff[min(delivery.num_delivered, len(backoff)) - 1]
            log.warning(
                "%s: transient failure (delivery %d of %d), the server redelivers within %.1fs: %r",
                self._agent, delivery.num_delivered, self.consumer.max_deliver, delay, err,
            )  # fmt: skip
            self._metrics.count("transient")
            return "transient"
        reason = str(err) if permanent else f"gave up after {delivery.num_delivered} deliveries: {err!r}"
        # What users see (a document's error, an SSE error): our own PermanentError messages are written for
        # them; an unexpected exception may carry internals (engine paths...), so it stays in logs and the
        # dead letter only.
        public = reason if permanent else (
            f"gave up after {delivery.num_delivered} attempts; the cause is in the {self._agent} log and in the "
            f"dead letter on {Subjects.deadletter(self.consumer.durable, *_about(delivery.payload))}"
        )  # fmt: skip
        if not await self._give_up(delivery, reason, type(err).__name__, public):
            return "unrecorded"  # not recorded: leave it unacked, it comes back and we try again
        await self._settle(delivery.msg, "term")
        return "dead_letter"

    async def _give_up(self, delivery: Delivery[T], reason: str, error_type: str, public: str) -> bool:
        """Dead-letter the message and call the agent's `on_give_up`; False if the dead letter was not stored."""
        log.error("%s: dead-lettering message: %s", self._agent, reason)
        if not await self._dead_letter(delivery.msg, reason, error_type, _about(delivery.payload)):
            return False
        self._metrics.count("dead_letter")
        if self._on_give_up is not None:
            try:
                await self._on_give_up(delivery, public)
            except Exception:  # noqa: BLE001 - the dead letter is recorded; a failing hook must not loop
                log.exception("%s: on_give_up hook failed", self._agent)
        return True

    async def _follow_max_deliveries(self):  # noqa: ANN202 - a nats-py Subscription
        """Subscribe to this consumer's max-deliveries advisory (one worker of the durable's queue group gets each)."""
        nc = self._js._nc  # the JetStream context's connection (nats-py keeps it there; advisories are core NATS)
        subject = Subjects.max_deliveries_advisory(self.consumer.stream, self.consumer.durable)
        subscription = await nc.subscribe(subject, queue=self.consumer.durable, cb=self._on_max_deliveries)
        await nc.flush()  # the server knows the subscription before this worker's first fetch
        return subscription

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """A message reached max_deliver with no handler ever returning (each delivery's process died, or was
        killed, while handling it): read it by its stream sequence and give up on it (dead letter, `on_give_up`)."""
        try:
            event = json.loads(advisory.data)
            seq, deliveries = int(event["stream_seq"]), int(event.get("deliveries") or self.consumer.max_deliver)
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable max-deliveries advisory on %s", self._agent, advisory.subject)
            return
        stream, durable = self.consumer.stream, self.consumer.durable
        try:
            stored = await self._js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return  # gone meanwhile (a delete purged it, or another worker settled and deleted it)
        except BUS_ERRORS as err:
            log.warning("%s: message %s/%d reached max deliveries but cannot be read: %r", self._agent, stream, seq, err)
            return
        # The message as its deliveries saw it: an ack subject names stream, durable, delivery count and sequence.
        msg = Msg(advisory._client, subject=stored.subject or "", data=stored.data or b"", headers=stored.headers,
                  reply=f"$JS.ACK.{stream}.{durable}.{deliveries}.{seq}.0.{time.time_ns()}.0")  # fmt: skip
        try:
            payload = self._model.model_validate_json(msg.data)
        except ValidationError as err:  # never handled: the worker dead-letters poison before its handler
            await self._dead_letter(msg, f"invalid {self._model.__name__}: {err}", "ValidationError")
            return
        delivery = Delivery(msg, payload)
        reason = (
            f"gave up after {deliveries} deliveries, none finished: each ended with the {self._agent} process "
            "stopping while handling it (a crash, or killed for memory or time); JetStream's max-deliveries advisory"
        )  # fmt: skip
        public = (
            f"gave up after {deliveries} attempts: the {self._agent} stopped (crashed or was killed) each time "
            f"while handling it; see the {self._agent} log and the dead letter on "
            f"{Subjects.deadletter(durable, *_about(payload))}"
        )  # fmt: skip
        with structlog.contextvars.bound_contextvars(agent=self._agent, durable=durable, subject=msg.subject):
            if not await self._give_up(delivery, reason, "MaxDeliveries", public):
                return
        if self._consumed_once:
            with contextlib.suppress(nats.js.errors.NotFoundError, *BUS_ERRORS):
                await self._js.delete_msg(stream, seq)

    async def _poison(self, msg: Msg, reason: str, error_type: str) -> None:
        log.error("%s: dead-lettering a malformed message on %s: %s", self._agent, msg.subject, reason[:300])
        if await self._dead_letter(msg, reason, error_type):
            self._metrics.count("poison")
            await self._settle(msg, "term")

    async def _dead_letter(self, msg: Msg, reason: str, error_type: str, about: tuple[str, str] = ("_", "_")) -> bool:
        """Store a dead-letter record on the subject of the document it is `about` (tenant, doc id: what a delete
        purges); False if the bus could not take it."""
        meta = msg.metadata
        record = DeadLetter(
            consumer=self.consumer.durable,
            subject=msg.subject,
            stream=meta.stream,
            stream_seq=meta.sequence.stream,
            num_delivered=meta.num_delivered,
            reason=reason[:4000],
            error_type=error_type,
            payload_excerpt=msg.data[:2048].decode("utf-8", errors="replace"),
            agent=self._agent,
        )
        try:
            await self._js.publish(
                Subjects.deadletter(self.consumer.durable, *about),
                record.model_dump_json().encode(),
                # One record per delivery of a message, however often the publish itself is retried.
                headers={"Nats-Msg-Id": f"{meta.stream}:{meta.sequence.stream}:{meta.num_delivered}"},
            )
        except BUS_ERRORS as err:
            self._bus_warning("dead-letter publish", err)
            return False
        self._metrics.dead_letter(error_type)
        return True

    async def _purge_settled(self) -> None:
        """On a consumed-once stream, purge what this consumer settled but is still stored: messages a failed delete
        left, or that a release before `StreamDef.consumed_once` kept (everything below the consumer's ack floor
        on its subject; the consumer is its subject's only one)."""
        if not self._consumed_once:
            return
        try:
            info = await self._js.consumer_info(self.consumer.stream, self.consumer.durable)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            if floor:
                await self._js.purge_stream(self.consumer.stream, subject=self.consumer.filter_subject, seq=floor + 1)
        except BUS_ERRORS as err:
            self._bus_warning("purge of settled messages", err)

    async def _settle(self, msg: Msg, how: str) -> None:
        """ack or term; a lost acknowledgement only means a redelivery, which handlers are built for.

        On a stream whose messages are consumed once (`StreamDef.consumed_once`: CHUNKS), the settled message is
        then deleted from the stream, so a document's chunk text and vectors are gone once handled. A failed delete
        leaves one message behind (logged); the work is done either way.
        """
        try:
            await (msg.ack() if how == "ack" else msg.term())
        except BUS_ERRORS as err:
            self._bus_warning(how, err)
            return
        if self._consumed_once:
            try:
                await self._js.delete_msg(self.consumer.stream, msg.metadata.sequence.stream)
            except nats.js.errors.APIError as err:
                # 10057 "no message found": already gone (a redelivered copy settled twice, a purge). Anything else
                # leaves one handled message behind until the next start's `_purge_settled`.
                if err.err_code != _NO_MESSAGE_FOUND:
                    log.warning("%s: a handled message was not deleted from %s: %s", self._agent,
                                self.consumer.stream, err)  # fmt: skip
            except BUS_ERRORS as err:
                self._bus_warning("delete of a settled message", err)

    def _bus_warning(self, what: str, err: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_bus_warning >= 10:
            self._last_bus_warning = now
            log.warning("%s: %s failed, NATS unavailable? %r", self._agent, what, err)

    @contextlib.asynccontextmanager
    async def _keep_alive(self, deliveries: Sequence[Delivery[T]]):
        """Send in-progress acks, well inside the shortest ack wait, while the handler works on these."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.consumer.heartbeat_s)
                await asyncio.gather(*(d.msg.in_progress() for d in deliveries), return_exceptions=True)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            await cancel_and_wait(task)
