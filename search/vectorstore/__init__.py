"""Vector storage behind one protocol: embedded Qdrant Edge, or a Qdrant server.

The engine modules (``qdrant_edge``, ``qdrant_client``) are imported only by
the adapter that needs them, when it is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.vectorstore.base import (
    IMAGE_DENSE,
    SPARSE,
    TEXT_DENSE,
    CollectionInUse,
    CollectionNotFound,
    CollectionSchema,
    OptimizePolicy,
    PointPayload,
    SchemaMismatch,
    SearchFilter,
    SparseVector,
    VectorDimError,
    VectorHit,
    VectorPoint,
    VectorRecord,
    VectorStore,
)
from search.vectorstore.cluster import ClusterLayout

if TYPE_CHECKING:
    from search.vectorstore.client import QdrantClientStore
    from search.vectorstore.edge import EdgeShardStore

__all__ = [
    "IMAGE_DENSE",
    "SPARSE",
    "TEXT_DENSE",
    "CollectionInUse",
    "CollectionNotFound",
    "ClusterLayout",
    "CollectionSchema",
    "EdgeShardStore",
    "OptimizePolicy",
    "PointPayload",
    "QdrantClientStore",
    "SchemaMismatch",
    "SearchFilter",
    "SparseVector",
    "VectorDimError",
    "VectorHit",
    "VectorPoint",
    "VectorRecord",
    "VectorStore",
    "open_vector_store",
]


def open_vector_store(
    *,
    qdrant_url: str | None,
    qdrant_api_key: str | None,
    edge_root: Path,
    optimize_policy: OptimizePolicy | None = None,
    layout: ClusterLayout | None = None,
) -> VectorStore:
    """Build the store the settings ask for; the caller closes it.

    With ``qdrant_url`` set: a :class:`QdrantClientStore` on a new client for
    that server (the store owns and closes the client; ``optimize_policy`` is
    ignored, the server optimizes on its own; ``layout`` lays out the collections
    it creates on a Qdrant cluster). Otherwise: an
    :class:`EdgeShardStore` with its collections under ``edge_root``.
    No collection is created: call :meth:`VectorStore.create_collection` once
    at start-up (or when building a new generation).
    """
    if qdrant_url:
        from qdrant_client import QdrantClient

        from search.vectorstore.client import QdrantClientStore

        return QdrantClientStore(QdrantClient(url=qdrant_url, api_key=qdrant_api_key), layout)
    from search.vectorstore.edge import EdgeShardStore

    return EdgeShardStore(edge_root, optimize_policy)


def __getattr__(name: str) -> Any:
    """Import an adapter module lazily on first access of its class."""
    if name == "EdgeShardStore":
        from search.vectorstore.edge import EdgeShardStore

        return EdgeShardStore
    if name == "QdrantClientStore":
        from search.vectorstore.client import QdrantClientStore

        return QdrantClientStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
