"""`ServingGraph`: the knowledge graph of whichever index generation serves, across re-index flips.

Facts are per generation (`graph.facts.g<N>...`: a re-index writes the new generation's facts while it builds).
This follows the serving generation's facts with a `GraphFollower`, re-reads which generation serves every
`poll_s` (the `mmrag-index` bucket, as the agents' host does), and when it changed, builds the new generation's
graph from its stream before swapping it in, so a query always sees one complete graph.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext

from bus.generations import GenerationStore
from bus.tasks import cancel_and_wait
from contracts.topology import IndexGeneration
from search.graph.follower import GraphFollower
from search.graph.graph import KnowledgeGraph

log = logging.getLogger(__name__)


class ServingGraph:
    def __init__(
        self, js: JetStreamContext, generation: IndexGeneration, *, poll_s: float = 5.0, catch_up_s: float = 60.0
    ) -> None:
        self._js = js
        self._poll_s = poll_s
        self._catch_up_s = catch_up_s
        self._follower = GraphFollower(js, generation)
        self._generation = generation
        self._watch: asyncio.Task[None] | None = None

    @property
    def graph(self) -> KnowledgeGraph:
        return self._follower.graph

    @property
    def generation(self) -> IndexGeneration:
        return self._generation

    async def start(self) -> None:
        await self._follower.start(self._catch_up_s)
        self._watch = asyncio.create_task(self._follow_serving(), name="graph-serving-generation")

    async def _follow_serving(self) -> None:
        store = await GenerationStore.open(self._js)
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                serving = await store.serving()
                if serving is None or serving.generation == self._generation.number:
                    continue
                generation = IndexGeneration(serving.generation)
                follower = GraphFollower(self._js, generation)
                await follower.start(self._catch_up_s)
                old, self._follower, self._generation = self._follower, follower, generation
                await old.close()
                log.info("graph: now following index generation %d", generation.number)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the graph in hand stays usable; try again at the next poll
                log.exception("graph: could not switch to the serving index generation")

    async def close(self) -> None:
        await cancel_and_wait(self._watch)
        await self._follower.close()
