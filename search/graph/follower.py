"""`GraphFollower`: one process's copy of the knowledge graph, kept current from stream GRAPH.

Each process (each retriever replica) reads `graph.facts.g<gen>.>` from the first message with its own ordered,
ephemeral consumer (no durable state on the server, no graph file on any disk) and folds every message into a
`KnowledgeGraph`. Replicas that read the same stream hold the same graph (see `search.graph.graph`).

`start` returns once the graph holds every fact that was in the stream when it was called (or after
`catch_up_s`, logging that the graph is still loading), so a replica that starts serving already has the
graph. A message that is not valid `GraphFacts`, or whose subject disagrees with its payload, is skipped with a
log line: an ordered consumer has no acks, so there is nothing to dead-letter, and one bad message must never
stop the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from contracts.messages import GraphFacts
from contracts.topology import GRAPH_STREAM, IndexGeneration, Subjects
from search.graph.graph import KnowledgeGraph

log = logging.getLogger(__name__)


class GraphFollower:
    def __init__(self, js: JetStreamContext, generation: IndexGeneration, graph: KnowledgeGraph | None = None) -> None:
        self.graph = graph if graph is not None else KnowledgeGraph()
        self.skipped = 0  # invalid messages
        self._js = js
        self._generation = generation
        self._sub = None
        self._caught_up = asyncio.Event()
        self._processed = 0  # messages handled by this follower
        self._backlog: int | None = None  # messages in the stream for us when we subscribed

    @property
    def filter_subject(self) -> str:
        return f"{Subjects.GRAPH_FACTS}.{self._generation.token}.>"

    async def start(self, catch_up_s: float = 60.0) -> None:
        """Subscribe from the start of the stream and wait (at most `catch_up_s`) until the backlog is folded in."""
        self._sub = await self._js.subscribe(
            self.filter_subject, stream=GRAPH_STREAM.name, cb=self._on_message, ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
        )  # fmt: skip
        info = await self._sub.consumer_info()
        # Delivered so far plus still pending = the backlog; some of it may already sit in our client's queue.
        self._backlog = info.delivered.consumer_seq + info.num_pending
        if self._processed >= self._backlog:
            self._caught_up.set()
        try:
            await asyncio.wait_for(self._caught_up.wait(), catch_up_s)
        except TimeoutError:
            log.warning("graph: still loading after %.0f s (%d facts so far); serving meanwhile", catch_up_s,
                        self.graph.applied)  # fmt: skip

    async def _on_message(self, msg: Msg) -> None:
        try:
            facts = GraphFacts.model_validate_json(msg.data)
            tokens = msg.subject.split(".")
            if tokens[2:] != [self._generation.token, *facts.routing()]:
                raise ValueError(f"subject {msg.subject} does not match the payload's generation/tenant/doc/revision")
            if facts.generation != self._generation.number:
                raise ValueError(f"facts of generation {facts.generation} on {msg.subject}")
        except (ValidationError, ValueError) as err:
            self.skipped += 1
            log.warning("graph: skipping an invalid message on %s: %s", msg.subject, str(err)[:300])
        else:
            self.graph.apply(facts)
        self._processed += 1
        if msg.metadata.num_pending == 0 or (self._backlog is not None and self._processed >= self._backlog):
            self._caught_up.set()

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may already be closing
                await self._sub.unsubscribe()
            self._sub = None
