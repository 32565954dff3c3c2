"""`ConsumerAgent`: the shape of every agent — durable consumers, one contract model each, batch handlers.

An agent declares what it needs from its process (`needs`: the embedding model, the vector store) and the
host provides it; the runtime never knows agents by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from agents.runtime.resources import AgentContext, Resource
from agents.runtime.worker import Delivery, PullWorker
from contracts.topology import ConsumerDef

T = TypeVar("T", bound=BaseModel)


class ConsumerAgent(Generic[T]):
    """Subclasses set `name`, `model`, `needs`, implement `consumer_defs` (one worker is run per consumer)
    and `handle` (and `on_give_up` if a dead-lettered message must be reported somewhere, e.g. a document
    marked failed).

    `handle` gets a batch of validated deliveries and returns once their effects are durable; the runtime
    acks them then. It raises `PermanentError` for input that can never succeed, anything else to retry.
    """

    name: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    needs: ClassVar[frozenset[Resource]] = frozenset()
    # True for the ingest agents: the host runs one instance per active index generation (the serving one and
    # one being built by a re-index), each with that generation's context and settings.
    per_generation: ClassVar[bool] = False

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        raise NotImplementedError

    def fetch_batch(self) -> int:
        """How many messages one `handle` call gets at most; ingest agents micro-batch."""
        return 1

    def concurrency(self) -> int:
        """How many messages of one consumer are handled at once, each on its own (with `fetch_batch` 1)."""
        return 1

    def workers(self) -> Sequence[PullWorker[Any]]:
        return [
            PullWorker(
                self._ctx.js, consumer, self.model, self.handle, agent=self.name, batch=self.fetch_batch(),
                on_give_up=self.on_give_up, concurrency=self.concurrency(),
            )
            for consumer in self.consumer_defs()
        ]  # fmt: skip

    async def start(self) -> None:
        """Called once before any worker runs, with the needed resources ready (checks, warm-up)."""

    async def close(self) -> None:
        """Called once after every worker stopped (cancel background tasks here)."""

    async def handle(self, deliveries: Sequence[Delivery[T]]) -> None:
        raise NotImplementedError

    async def on_give_up(self, delivery: Delivery[T], reason: str) -> None:
        """Called after a message was dead-lettered; the default records nothing more."""
