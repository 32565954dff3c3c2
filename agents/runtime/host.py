"""Hosting agents in one process: connect, bootstrap the topology, load resources, run workers, drain.

`mmrag agent NAME...` and `mmrag up` both end up in `run_agents`, with the agent classes to run. The process
serves Prometheus metrics on `AgentSettings.metrics_port` (`agents.runtime.metrics_server`) while it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from agents.runtime.agent import ConsumerAgent
from agents.runtime.metrics_server import MetricsServer
from agents.runtime.resources import AgentContext, Resource, SharedResources
from agents.settings import AgentSettings
from bus.connection import connect
from bus.logs import configure_logging, logging_configured
from bus.progress import ProgressStore
from bus.topology import ensure_topology
from bus.tracing import configure_tracing, flush_tracing
from contracts.topology import PROGRESS_BUCKET, UPLOADS_BUCKET, IndexGeneration

log = logging.getLogger(__name__)


async def run_agents(
    agent_types: Sequence[type[ConsumerAgent]],
    settings: AgentSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Run the agents until `stop` is set, then finish in-flight batches and drain the connection.

    Raises if start-up fails or a worker crashes, so the process exits non-zero and gets restarted.
    """
    generation = IndexGeneration(settings.index_generation)
    names = "+".join(a.name for a in agent_types)
    if settings.log_format or not logging_configured():  # keeps the level `mmrag agent` chose
        configure_logging(logging.getLogger().level if logging_configured() else logging.INFO, settings.log_format)
    configure_tracing(f"mmrag-{names}", endpoint=settings.otel_endpoint, sample_ratio=settings.otel_sample_ratio)
    # A restarted server has lost its memory streams (QUERIES): re-bootstrap on every reconnection.
    nc = await connect(
        settings.nats_url,
        name=f"mmrag-{names}-{settings.replica_id}",
        on_reconnect=lambda: ensure_topology(nc.jetstream(), [generation], replicas=settings.stream_replicas),
    )
    js = nc.jetstream()
    shared = SharedResources(settings)
    agents: list[ConsumerAgent] = []
    metrics: MetricsServer | None = None
    try:
        await ensure_topology(js, [generation], replicas=settings.stream_replicas)
        ctx = AgentContext(
            nc=nc,
            js=js,
            settings=settings,
            generation=generation,
            progress=ProgressStore(await js.key_value(PROGRESS_BUCKET), generation),
            uploads=await js.object_store(UPLOADS_BUCKET),
            shared=shared,
        )
        # Load the model and open the store before taking work, so the first message is not slow.
        needs: set[Resource] = set().union(*(a.needs for a in agent_types))
        await shared.load(needs)
        agents = [agent_type(ctx) for agent_type in agent_types]
        for agent in agents:
            await agent.start()
        workers = [(a, w) for a in agents for w in a.workers()]
        if settings.metrics_port:
            metrics = MetricsServer(settings.metrics_port, js, [w.consumer for _, w in workers], host=settings.metrics_host)
            await metrics.start()
        tasks = [asyncio.create_task(w.run(stop), name=f"{a.name}:{w.consumer.durable}") for a, w in workers]
        log.info("agents running: %s (index generation %d)", ", ".join(a.name for a in agents), generation.number)
        if started is not None:
            started.set()
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # if a worker ended on its own, stop the others too
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # a worker crashed: let the process exit non-zero
        await asyncio.gather(*tasks)
    finally:
        if metrics is not None:
            await metrics.stop()
        for agent in agents:
            await agent.close()
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
        await asyncio.to_thread(shared.close)
        await asyncio.to_thread(flush_tracing)
