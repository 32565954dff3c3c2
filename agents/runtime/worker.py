"""The failure policy, in one place: fetch from a durable pull consumer, validate, handle, ack.

Every agent runs its handler under `PullWorker`, so every agent behaves the same way:

- a payload that does not validate against the subject's contract is poison: TERM + dead-letter record;
- a handler that raises `PermanentError` for a message: TERM + dead-letter record (+ the agent's
  `on_give_up`, e.g. to mark the document failed or tell the waiting client);
- any other exception is transient: NAK with exponential backoff, until the consumer's `max_deliver`,
  at which point the message is dead-lettered instead of being silently dropped by the server;
- while a handler runs, in-progress acks keep the message from being redelivered to another replica;
- a message is acked only after its handler returned, i.e. after its effects are durable. A process
  killed mid-message leaves it unacked, and JetStream redelivers it after `ack_wait`.

A batch handler that fails is retried one message at a time, so one poison message in a batch never
takes its neighbours down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from contracts.messages import DeadLetter
from contracts.topology import ConsumerDef, Subjects

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


class PermanentError(Exception):
    """Retrying cannot help (bad input, unsupported document): the message is dead-lettered."""


@dataclass(frozen=True)
class Delivery(Generic[T]):
    msg: Msg
    payload: T

    @property
    def num_delivered(self) -> int:
        return self.msg.metadata.num_delivered


BatchHandler = Callable[[Sequence[Delivery[T]]], Awaitable[None]]
GiveUpHook = Callable[[Delivery[T], str], Awaitable[None]]


def nak_delay(consumer: ConsumerDef, num_delivered: int) -> float:
    return min(consumer.backoff_base_s * 2 ** max(num_delivered - 1, 0), consumer.backoff_max_s)


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
    ) -> None:
        self._js = js
        self.consumer = consumer
        self._model = model
        self._handler = handler
        self._agent = agent
        self._batch = batch
        self._on_give_up = on_give_up
        self._fetch_timeout_s = fetch_timeout_s

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self._js.pull_subscribe_bind(durable=self.consumer.durable, stream=self.consumer.stream)
        log.info("%s: consuming %s", self._agent, self.consumer.filter_subject)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self._batch, timeout=self._fetch_timeout_s)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    continue
                except nats.errors.ConnectionClosedError:
                    return
                # A batch in hand is finished even if stop is set meanwhile: graceful shutdown drains.
                await self.process(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def process(self, msgs: Sequence[Msg]) -> None:
        deliveries: list[Delivery[T]] = []
        for msg in msgs:
            try:
                deliveries.append(Delivery(msg, self._model.model_validate_json(msg.data)))
            except ValidationError as err:
                await self._dead_letter(msg, f"invalid {self._model.__name__}: {err}", "ValidationError")
                await msg.term()
        if not deliveries:
            return
        try:
            async with self._keep_alive(deliveries):
                await self._handler(deliveries)
        except Exception as err:  # noqa: BLE001 - the policy below decides what each failure means
            if len(deliveries) > 1:
                log.warning("%s: batch of %d failed (%r); retrying one by one", self._agent, len(deliveries), err)
                for delivery in deliveries:
                    await self.process_one(delivery)
                return
            await self._fail(deliveries[0], err)
            return
        await asyncio.gather(*(d.msg.ack() for d in deliveries))

    async def process_one(self, delivery: Delivery[T]) -> None:
        try:
            async with self._keep_alive([delivery]):
                await self._handler([delivery])
        except Exception as err:  # noqa: BLE001
            await self._fail(delivery, err)
            return
        await delivery.msg.ack()

    async def _fail(self, delivery: Delivery[T], err: BaseException) -> None:
        permanent = isinstance(err, PermanentError)
        last_try = delivery.num_delivered >= self.consumer.max_deliver
        if not permanent and not last_try:
            delay = nak_delay(self.consumer, delivery.num_delivered)
            log.warning(
                "%s: transient failure (delivery %d), retry in %.1fs: %r",
                self._agent, delivery.num_delivered, delay, err,
            )  # fmt: skip
            await delivery.msg.nak(delay=delay)
            return
        reason = str(err) if permanent else f"gave up after {delivery.num_delivered} deliveries: {err!r}"
        log.error("%s: dead-lettering message: %s", self._agent, reason)
        await self._dead_letter(delivery.msg, reason, type(err).__name__)
        if self._on_give_up is not None:
            try:
                await self._on_give_up(delivery, reason)
            except Exception:  # noqa: BLE001 - the dead letter is recorded; a failing hook must not loop
                log.exception("%s: on_give_up hook failed", self._agent)
        await delivery.msg.term()

    async def _dead_letter(self, msg: Msg, reason: str, error_type: str) -> None:
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
        await self._js.publish(Subjects.deadletter(self.consumer.durable), record.model_dump_json().encode())

    @contextlib.asynccontextmanager
    async def _keep_alive(self, deliveries: Sequence[Delivery[T]]):
        """Send in-progress acks every third of ack_wait while the handler works on these messages."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.consumer.ack_wait_s / 3)
                await asyncio.gather(*(d.msg.in_progress() for d in deliveries), return_exceptions=True)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
