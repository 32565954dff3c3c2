"""Every stream a caller can fill has a stated bound on a real nats-server, and the sources of truth have none."""

from __future__ import annotations

import nats
from nats.js import api

from bus.topology import ensure_topology
from contracts.topology import CHUNKS_STREAM, DEADLETTER_STREAM, DOCS_STREAM, QUERIES_STREAM, STREAMS


async def test_caller_filled_streams_are_bounded_and_sources_of_truth_are_not(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # A deployment from before the bounds: the streams exist without them, and a restart must add them.
        for stream in STREAMS:
            await js.add_stream(api.StreamConfig(name=stream.name, subjects=list(stream.subjects),
                                                 storage=api.StorageType.MEMORY if stream.storage == "memory"
                                                 else api.StorageType.FILE))  # fmt: skip
        await ensure_topology(js)
        configs = {s.name: (await js.stream_info(s.name)).config for s in STREAMS}
    finally:
        await nc.close()

    queries = configs[QUERIES_STREAM.name]
    assert queries.max_bytes == QUERIES_STREAM.max_bytes > 0 and queries.max_age == 300
    assert queries.discard == api.DiscardPolicy.NEW, "a full QUERIES refuses new asks, never drops one in flight"
    dead = configs[DEADLETTER_STREAM.name]
    assert dead.max_bytes == DEADLETTER_STREAM.max_bytes > 0 and dead.max_age and dead.max_age > 0
    assert dead.discard == api.DiscardPolicy.OLD
    for source in (DOCS_STREAM, CHUNKS_STREAM):  # acknowledged documents are never discarded by a limit
        assert configs[source.name].max_bytes in (None, -1) and configs[source.name].max_age in (None, 0)
