"""What an agent process provides to its agents: connections, stores, and the expensive shared resources.

Agents co-located in one process share one embedding model and one vector store (`SharedResources`). In
embedded mode the vector store is Qdrant's edge engine, a local directory only one process may open, so
the indexer and the retriever must run in the same process (`mmrag up` does that).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from agents.runtime.units import warm
from agents.runtime.work_pool import WorkPool
from agents.settings import AgentSettings
from bus.progress import ProgressStore
from bus.uploads import UploadBuckets
from contracts.topology import IndexGeneration
from models.embedding import TextEmbedder
from models.embedding_models import EmbeddingModels, TextEncoder
from models.image_vectors import ImageEncoder, load_image_encoder
from search.vectorstore import ClusterLayout, VectorStore, open_vector_store

R = TypeVar("R")


def text_embedder(s: AgentSettings) -> TextEmbedder:
    """The embedding model the settings describe (exports and caches the ONNX model on first use)."""
    return TextEmbedder(
        s.embedding_model_path, device=s.embedding_device, backend=s.embedding_backend, quantize=s.embedding_quantize,
        cache_dir=s.embedding_cache_dir, batch_size=s.embedding_batch_size, threads=s.embedding_threads,
    )  # fmt: skip


class Resource(Enum):
    """What an agent may declare in `needs`; the host loads each once per process, before work starts."""

    TEXT_EMBEDDER = "text embedding model"
    IMAGE_ENCODER = "image vector encoder"  # CLIP when configured, else the perceptual hash (models.image_vectors)
    VECTOR_STORE = "vector store"
    WORK_POOL = "worker processes for CPU-heavy stages"  # parsing and OCR (agents.runtime.work_pool)


class SharedResources:
    """Loaded once per process by the host (`load`), and closed by it."""

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings
        # Every text model this process uses, each loaded once on first use (an index generation may use another
        # model than the process default: `contracts.generations.GenerationSettings.embedding_model`).
        self.text_models = EmbeddingModels(settings.embedding_model, lambda: text_embedder(settings))
        self._embedder: TextEncoder | None = None
        self._image_encoder: ImageEncoder | None = None
        self._store: VectorStore | None = None
        self._work_pool: WorkPool | None = None
        # The vector store is used from one thread only: calls are serialised and never block the loop.
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-store")

    async def load(self, needs: set[Resource]) -> None:
        s = self._settings
        if Resource.TEXT_EMBEDDER in needs and self._embedder is None:
            self._embedder = await asyncio.to_thread(self.text_models.get, s.embedding_model)
        if Resource.IMAGE_ENCODER in needs and self._image_encoder is None:
            self._image_encoder = await asyncio.to_thread(
                load_image_encoder, s.clip_model, device=s.embedding_device, batch_size=s.embedding_batch_size
            )
        if Resource.WORK_POOL in needs and self._work_pool is None:
            self._work_pool = WorkPool(s.work_processes or os.cpu_count() or 1)
            self._work_pool.start(warm)
        if Resource.VECTOR_STORE in needs and self._store is None:
            loop = asyncio.get_running_loop()
            self._store = await loop.run_in_executor(
                self._store_thread,
                lambda: open_vector_store(
                    qdrant_url=s.qdrant_url, qdrant_api_key=s.qdrant_api_key, edge_root=s.edge_store_path,
                    layout=ClusterLayout(
                        shard_number=s.qdrant_shard_number, replication_factor=s.qdrant_replication_factor,
                        write_consistency_factor=s.qdrant_write_consistency_factor,
                    ),
                ),  # fmt: skip
            )

    async def text_model(self, model: str | None, role: str = "query") -> TextEncoder:
        """The text model `model` (None = the process default), loaded off the event loop on first use."""
        return await asyncio.to_thread(self.text_models.get, model, role)

    @property
    def embedder(self) -> TextEncoder:
        """The process default text model (loaded by `load`)."""
        if self._embedder is None:
            raise RuntimeError("the text embedder was not loaded: declare Resource.TEXT_EMBEDDER in the agent's needs")
        return self._embedder

    @property
    def image_encoder(self) -> ImageEncoder:
        if self._image_encoder is None:
            raise RuntimeError("the image encoder was not loaded: declare Resource.IMAGE_ENCODER in the agent's needs")
        return self._image_encoder

    @property
    def work_pool(self) -> WorkPool:
        if self._work_pool is None:
            raise RuntimeError("the work pool was not started: declare Resource.WORK_POOL in the agent's needs")
        return self._work_pool

    async def in_store(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(store, *args)` on the vector-store thread."""
        store = self._store
        if store is None:
            raise RuntimeError("the vector store was not opened: declare Resource.VECTOR_STORE in the agent's needs")
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, lambda: fn(store, *args))

    def close(self) -> None:
        if self._work_pool is not None:
            self._work_pool.close()
        if self._store is not None:
            self._store_thread.submit(self._store.close).result()
        self._store_thread.shutdown(wait=True)


@dataclass(frozen=True)
class AgentContext:
    """What an agent gets: connections, stores and settings. It owns none of them."""

    nc: NATS
    js: JetStreamContext
    settings: AgentSettings
    generation: IndexGeneration
    progress: ProgressStore
    uploads: UploadBuckets  # each tenant's uploads bucket (`bus.uploads`)
    shared: SharedResources
