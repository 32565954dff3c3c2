"""Hosting agents in one process: connect, bootstrap the topology, load resources, run workers, drain.

`mmrag agent NAME...` and `mmrag up` both end up in `run_agents`, with the agent classes to run. The process
serves Prometheus metrics on `AgentSettings.metrics_port` (`agents.runtime.metrics_server`) while it runs.

Index generations: the ingest agents (`ConsumerAgent.per_generation`) run once per *active* generation, the
serving one and one a re-index is building, each with its own context (generation, progress keys) and its
own settings: the process settings with the generation's overrides (`contracts.generations`) applied. Which
generations are active is read from the `mmrag-index` bucket every `GENERATION_POLL_S`, so a re-index
started through the edge API reaches every agent process (replicas and ones started later included), and a
retired generation's workers stop (finishing their in-flight batches). The other agents run once.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors

from agents.runtime.agent import ConsumerAgent
from agents.runtime.loop_watchdog import LoopWatchdog
from agents.runtime.metrics_server import MetricsServer
from agents.runtime.resources import AgentContext, Resource, SharedResources
from agents.settings import AgentSettings
from bus.connection import connect
from bus.generations import GenerationStore
from bus.progress import ProgressStore
from bus.migrate import migrate_uploads
from bus.topology import ensure_consumer, ensure_topology
from bus.uploads import UploadBuckets
from contracts.generations import GenerationRecord, GenerationSettings
from contracts.topology import PROGRESS_BUCKET, ConsumerDef, IndexGeneration
from telemetry.logs import configure_logging, logging_configured
from telemetry.tracing import configure_tracing, flush_tracing

log = logging.getLogger(__name__)

GENERATION_POLL_S = 1.0


async def _run_workers(agents: Sequence[ConsumerAgent], stop: asyncio.Event) -> None:
    """Start the agents, run their workers until `stop` (or one crashes: raised), then close the agents."""
    try:
        for agent in agents:
            await agent.start()
        tasks = [
            asyncio.create_task(w.run(stop), name=f"{a.name}:{w.consumer.durable}") for a in agents for w in a.workers()
        ]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # if a worker ended on its own, stop the others too
        await stopped
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # a worker crashed: let the process exit non-zero
        await asyncio.gather(*tasks)
    finally:
        for agent in agents:
            await agent.close()


@dataclass
class _GenerationRun:
    """The ingest agents of one generation, running until `stop`."""

    generation: IndexGeneration
    stop: asyncio.Event
    task: asyncio.Task[None]
    consumers: list[ConsumerDef]


def generation_settings(settings: AgentSettings, record: GenerationRecord | None) -> AgentSettings:
    """The process settings with a generation's overrides applied (validated like the environment)."""
    if record is None or not record.settings.overrides():
        return settings
    return settings.model_validate({**settings.model_dump(), **record.settings.overrides()})


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
    names = "+".join(a.name for a in agent_types)
    per_generation = [a for a in agent_types if a.per_generation]
    once = [a for a in agent_types if not a.per_generation]
    if settings.log_format or not logging_configured():  # keeps the level `mmrag agent` chose
        configure_logging(logging.getLogger().level if logging_configured() else logging.INFO, settings.log_format)
    configure_tracing(f"mmrag-{names}", endpoint=settings.otel_endpoint, sample_ratio=settings.otel_sample_ratio)
    # A stuck process must say where it is stuck: on its own (the watchdog) and on request (kill -USR1).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    watchdog = LoopWatchdog()
    runs: dict[int, _GenerationRun] = {}
    # A restarted server has lost its memory streams (QUERIES): re-bootstrap on every reconnection.
    user, password = settings.nats_credentials()
    nc = await connect(
        settings.nats_url,
        name=f"mmrag-{names}-{settings.replica_id}",
        user=user,
        password=password,
        on_reconnect=lambda: ensure_topology(
            nc.jetstream(), [r.generation for r in runs.values()], replicas=settings.stream_replicas
        ),
    )
    js = nc.jetstream()
    shared = SharedResources(settings)
    metrics: MetricsServer | None = None
    base_stop = asyncio.Event()
    base_task: asyncio.Task[None] | None = None
    try:
        watchdog.start()
        await ensure_topology(js, [], replicas=settings.stream_replicas)
        generations = await GenerationStore.open(js)
        serving = await generations.bootstrap(
            settings.index_generation, GenerationSettings(embedding_model=settings.embedding_model)
        )
        progress_kv = await js.key_value(PROGRESS_BUCKET)
        if any(a.name == "indexer" for a in agent_types):  # the shared bucket of earlier releases (decision 81)
            await migrate_uploads(js)
        uploads = UploadBuckets(js)  # each tenant's bucket, bound on first use and shared by every agent here

        def context(gen: IndexGeneration, gen_settings: AgentSettings) -> AgentContext:
            return AgentContext(
                nc=nc, js=js, settings=gen_settings, generation=gen, progress=ProgressStore(progress_kv, gen),
                uploads=uploads, shared=shared,
            )  # fmt: skip

        # Load the model and open the store before taking work, so the first message is not slow.
        needs: set[Resource] = set().union(*(a.needs for a in agent_types))
        await shared.load(needs)
        base_agents = [t(context(IndexGeneration(serving.generation), settings)) for t in once]
        base_consumers = [w.consumer for a in base_agents for w in a.workers()]
        if settings.metrics_port:
            metrics = MetricsServer(settings.metrics_port, js, base_consumers, host=settings.metrics_host)
            await metrics.start()

        async def start_run(record: GenerationRecord) -> None:
            gen = record.index_generation
            gen_settings = generation_settings(settings, record)
            agents = [t(context(gen, gen_settings)) for t in per_generation]
            consumers = [w.consumer for a in agents for w in a.workers()]
            for consumer in consumers:
                await ensure_consumer(js, consumer)
            run_stop = asyncio.Event()
            task = asyncio.create_task(_run_workers(agents, run_stop), name=f"generation-{gen.number}")
            runs[gen.number] = _GenerationRun(gen, run_stop, task, consumers)
            log.info("index generation %d: %s running (%s)", gen.number, ", ".join(a.name for a in agents),
                     record.settings.overrides() or "process settings")  # fmt: skip

        async def stop_run(number: int) -> None:
            run = runs.pop(number)
            run.stop.set()
            await run.task
            log.info("index generation %d: no longer active, its ingest agents stopped", number)

        async def reconcile() -> None:
            """Run exactly the active generations' ingest agents."""
            records = {r.generation: r for r in await generations.all()}
            current = await generations.serving()
            wanted = {n for n, r in records.items() if r.active}
            if current is not None:
                wanted.add(current.generation)
            for number in sorted(wanted - runs.keys()):
                record = records.get(number) or GenerationRecord(generation=number, state="serving")
                await start_run(record)
            for number in sorted(runs.keys() - wanted):
                await stop_run(number)
            if metrics is not None:
                metrics.set_consumers([*base_consumers, *(c for r in runs.values() for c in r.consumers)])

        if per_generation:
            await reconcile()
        base_task = asyncio.create_task(_run_workers(base_agents, base_stop), name="agents")
        log.info("agents running: %s (serving index generation %d)", names, serving.generation)
        if started is not None:
            started.set()
        stopped = asyncio.create_task(stop.wait())
        while not stop.is_set():
            watched = [stopped, base_task, *(r.task for r in runs.values())]
            await asyncio.wait(watched, timeout=GENERATION_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            for task in (base_task, *(r.task for r in runs.values())):
                if task.done():
                    task.result()  # a worker crashed: raise, so the process exits non-zero
                    stop.set()  # a worker ended on its own: stop the others too
            if per_generation and not stop.is_set():
                try:
                    await reconcile()
                except (nats.errors.Error, TimeoutError) as err:  # NATS unreachable for a while: keep what runs
                    log.warning("index generations not re-read: %r", err)
    finally:
        stop.set()
        base_stop.set()
        for run in runs.values():
            run.stop.set()
        pending = [t for t in (base_task, *(r.task for r in runs.values())) if t is not None]
        await asyncio.gather(*pending, return_exceptions=True)  # a crash was raised above already
        if metrics is not None:
            await metrics.stop()
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
        await asyncio.to_thread(shared.close)
        await asyncio.to_thread(flush_tracing)
        await watchdog.stop()
