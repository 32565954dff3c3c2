"""`ConsumerAgent`: the shape of every agent — one durable consumer, one contract model, one batch handler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from agents.runtime.host import AgentContext
from agents.runtime.worker import Delivery, PullWorker
from contracts.topology import ConsumerDef

T = TypeVar("T", bound=BaseModel)


class ConsumerAgent(Generic[T]):
    """Subclasses set `name`, `consumer` and `model`, and implement `handle` (and `on_give_up` if a
    dead-lettered message must be reported somewhere, e.g. a document marked failed).

    `handle` gets a batch of validated deliveries and returns once their effects are durable; the runtime
    acks them then. It raises `PermanentError` for input that can never succeed, anything else to retry.
    """

    name: ClassVar[str]
    consumer: ClassVar[ConsumerDef]
    model: ClassVar[type[BaseModel]]

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx

    def fetch_batch(self) -> int:
        """How many messages one `handle` call gets at most; ingest agents micro-batch."""
        return 1

    def workers(self) -> Sequence[PullWorker[Any]]:
        return [
            PullWorker(
                self._ctx.js, self.consumer, self.model, self.handle,
                agent=self.name, batch=self.fetch_batch(), on_give_up=self.on_give_up,
            )
        ]  # fmt: skip

    async def handle(self, deliveries: Sequence[Delivery[T]]) -> None:
        raise NotImplementedError

    async def on_give_up(self, delivery: Delivery[T], reason: str) -> None:
        """Called after a message was dead-lettered; the default records nothing more."""
