"""Knowledge graph: the follower on a real nats-server (extraction and expansion: tests/unit/test_graph.py)."""

from __future__ import annotations

import asyncio

import nats

from search.graph import GraphFollower, IndexedChunk, build_facts, tombstone
from bus.topology import ensure_topology
from contracts.topology import IndexGeneration, Subjects
from tests.unit.test_graph import BUDGET, FALCON, GEN, facts, pid


# --------------------------------------------------------------------------- follower on a real nats-server


async def test_followers_build_identical_graphs_and_skip_bad_messages(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_topology(js, [GEN])
    a, b = facts("a", 1, FALCON), facts("b", 2, BUDGET, tenant="u")
    for f in (a, b):
        await js.publish(Subjects.graph_facts(GEN, *f.routing()), f.model_dump_json().encode())
    await js.publish(Subjects.graph_facts(GEN, "t", "x", 1), b"not json")
    await js.publish(Subjects.graph_facts(GEN, "t", "a", 2), a.model_dump_json().encode())  # subject disagrees
    first = GraphFollower(js, GEN)
    await first.start(catch_up_s=30)
    assert first.caught_up and first.skipped == 2
    assert first.graph.tenant("t") is not None and first.graph.tenant("u") is not None
    # Live: a tombstone reaches a running follower; a replica started later replays to the same graph.
    dead = tombstone(tenant="t", doc_id="a", generation=1, revision=7)
    await js.publish(Subjects.graph_facts(GEN, *dead.routing()), dead.model_dump_json().encode())
    async with asyncio.timeout(30):
        while first.graph.tenant("t").graph.number_of_nodes():  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
    second = GraphFollower(js, GEN)
    await second.start(catch_up_s=30)
    assert second.graph.fingerprint() == first.graph.fingerprint()
    empty = GraphFollower(js, IndexGeneration(2))  # another generation's facts are not this graph's
    await empty.start(catch_up_s=30)
    assert empty.caught_up and empty.graph.applied == 0
    for follower in (first, second, empty):
        await follower.close()
    await nc.close()


async def test_the_graph_follows_the_serving_generation_across_a_reindex_flip(nats_server) -> None:
    from search.graph.serving import ServingGraph
    from bus.generations import GenerationStore

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_topology(js, [GEN])
    g2 = IndexGeneration(2)
    old = facts("a", 1, FALCON)
    new = build_facts(tenant="t", doc_id="a", generation=2, revision=1, batch_index=0,
                      chunks=[IndexedChunk("a-c0", pid(7), "Project Falcon moved to Oslo.")])  # fmt: skip
    await js.publish(Subjects.graph_facts(GEN, *old.routing()), old.model_dump_json().encode())
    await js.publish(Subjects.graph_facts(g2, *new.routing()), new.model_dump_json().encode())
    store = await GenerationStore.open(js)
    await store.bootstrap(1)
    serving = ServingGraph(js, GEN, poll_s=0.1, catch_up_s=30)
    await serving.start()
    assert set(serving.graph.tenant("t").graph.nodes) == {"project falcon", "dana smith"}  # type: ignore[union-attr]
    await store.set_serving(2)
    async with asyncio.timeout(30):
        while serving.generation != g2:
            await asyncio.sleep(0.05)
    assert set(serving.graph.tenant("t").graph.nodes) == {"project falcon", "oslo"}  # type: ignore[union-attr]
    await serving.close()
    await nc.close()
