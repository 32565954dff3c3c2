"""Hosting agents in one process: connect, bootstrap the topology, run workers, drain on stop.

`mmrag agent NAME...` and `mmrag up` both end up in `run_agents`. Agents co-located in one process
share the expensive resources (`SharedResources`): one embedding model, one vector store. In embedded
mode the vector store is Qdrant's edge engine, a local directory only one process may open, so the
indexer and the retriever must run in the same process (`mmrag up` does that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from agents.embedding import TextEmbedder
from agents.runtime.connection import connect
from agents.runtime.progress import ProgressStore
from agents.runtime.topology import ensure_topology
from agents.runtime.worker import PullWorker
from agents.settings import AgentSettings
from agents.vectorstore import VectorStore, open_vector_store
from contracts.topology import PROGRESS_BUCKET, UPLOADS_BUCKET

log = logging.getLogger(__name__)

R = TypeVar("R")


class SharedResources:
    """Loaded on first use, once per process, and closed by `run_agents`."""

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        self._embedder_lock = asyncio.Lock()
        self._store_lock = asyncio.Lock()
        self._embedder: TextEmbedder | None = None
        self._store: VectorStore | None = None
        # The vector store is used from one thread only: calls are serialised and never block the loop.
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-store")

    async def embedder(self) -> TextEmbedder:
        async with self._embedder_lock:
            if self._embedder is None:
                s = self._settings
                self._embedder = await asyncio.to_thread(
                    TextEmbedder, s.embedding_model_path, device=s.embedding_device
                )
            return self._embedder

    async def in_store(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(store, *args)` on the vector-store thread; the store is opened on first use.

        Callers call `store.ensure_collection(dim)` (idempotent) before their first upsert or search.
        """
        loop = asyncio.get_running_loop()
        async with self._store_lock:
            if self._store is None:
                s = self._settings
                self._store = await loop.run_in_executor(
                    self._store_thread,
                    lambda: open_vector_store(
                        qdrant_url=s.qdrant_url,
                        qdrant_api_key=s.qdrant_api_key,
                        edge_path=s.edge_store_path,
                        collection=s.collection,
                    ),
                )
        store = self._store
        return await loop.run_in_executor(self._store_thread, lambda: fn(store, *args))

    def close(self) -> None:
        if self._store is not None:
            self._store_thread.submit(self._store.close).result()
        self._store_thread.shutdown(wait=True)


@dataclass(frozen=True)
class AgentContext:
    """What an agent gets: connections, stores and settings. It owns none of them."""

    nc: NATS
    js: JetStreamContext
    settings: AgentSettings
    progress: ProgressStore
    uploads: ObjectStore
    shared: SharedResources


class Agent(Protocol):
    name: str

    def workers(self) -> Sequence[PullWorker[Any]]: ...


async def run_agents(
    names: Sequence[str],
    settings: AgentSettings,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Run the named agents until `stop` is set, then finish in-flight batches and drain the connection."""
    from agents.registry import build_agent  # the registry imports every agent module

    # A restarted server has lost its memory streams (QUERIES): re-bootstrap on every reconnection.
    nc = await connect(
        settings.nats_url,
        name=f"mmrag-{'+'.join(names)}-{settings.replica_id}",
        on_reconnect=lambda: ensure_topology(nc.jetstream()),
    )
    js = nc.jetstream()
    shared = SharedResources(settings)
    try:
        await ensure_topology(js)
        ctx = AgentContext(
            nc=nc,
            js=js,
            settings=settings,
            progress=ProgressStore(await js.key_value(PROGRESS_BUCKET)),
            uploads=await js.object_store(UPLOADS_BUCKET),
            shared=shared,
        )
        agents = [build_agent(name, ctx) for name in names]
        # Load the model (and open the store) before taking work, so the first message is not slow.
        if any(a.name in ("embedder", "retriever") for a in agents):
            await shared.embedder()
        if any(a.name in ("indexer", "retriever") for a in agents):
            await shared.in_store(lambda store: None)
        tasks = [asyncio.create_task(w.run(stop), name=f"{a.name}:{w.consumer.durable}") for a in agents for w in a.workers()]
        log.info("agents running: %s", ", ".join(names))
        if started is not None:
            started.set()
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # a worker crashed: let the process exit non-zero
        await asyncio.gather(*tasks)
    finally:
        if nc.is_connected:
            await nc.drain()
        await asyncio.to_thread(shared.close)
