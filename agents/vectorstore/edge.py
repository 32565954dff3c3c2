"""VectorStore over an embedded Qdrant Edge shard (``qdrant_edge``), no server."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchValue,
    PayloadSchemaType,
    Point,
    Query,
    QueryRequest,
    UpdateOperation,
)

from agents.vectorstore.base import (
    DOC_ID_KEY,
    INDEXED_KEYS,
    TENANT_KEY,
    TEXT_VECTOR,
    CollectionDimMismatch,
    VectorHit,
    VectorPoint,
)


class EdgeShardStore:
    """A :class:`~agents.vectorstore.base.VectorStore` kept in one shard directory.

    The shard is opened (or created) by :meth:`ensure_collection` and held
    exclusively: a second store on the same path, in this or another process,
    fails to open until :meth:`close` (or the holder's death) releases it.
    Each :meth:`upsert` flushes before returning, so acknowledged points
    survive a crash. Calls are serialised by a lock, so the store may be
    shared between threads.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._shard: EdgeShard | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    def ensure_collection(self, dim: int) -> None:
        """Open the shard at ``path`` (creating it if empty) for ``dim``-sized vectors.

        Raises :class:`CollectionDimMismatch` if it holds another dimension.
        """
        with self._lock:
            if self._shard is not None:
                if dim != self._dim:
                    raise CollectionDimMismatch(
                        f"edge shard {self._path} is open with dim={self._dim}, not {dim}"
                    )
                return
            config = EdgeConfig(
                vectors={TEXT_VECTOR: EdgeVectorParams(size=dim, distance=Distance.Cosine)}
            )
            if self._path.exists() and any(self._path.iterdir()):
                shard = _load(self._path, config, dim)
            else:
                shard = EdgeShard.create(str(self._path), config)
            for key in INDEXED_KEYS:  # idempotent: re-creating an index is a no-op
                shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Keyword))
            shard.flush()
            self._shard, self._dim = shard, dim

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace ``points`` and flush them to disk before returning."""
        if not points:
            return
        batch = [
            Point(id=p.id, vector={TEXT_VECTOR: list(p.vector)}, payload=p.payload) for p in points
        ]
        with self._lock:
            shard = self._open_shard()
            shard.update(UpdateOperation.upsert_points(batch))
            shard.flush()

    def search(self, vector: Sequence[float], *, tenant: str, limit: int) -> list[VectorHit]:
        """Cosine top-``limit`` among ``tenant``'s points, best first."""
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(list(vector), using=TEXT_VECTOR),
            filter=_filter(tenant=tenant, doc_id=None),
            with_payload=True,
        )
        with self._lock:
            scored = self._open_shard().query(request)
        return [VectorHit(str(p.id), p.score, p.payload or {}) for p in scored]

    def count(self, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact count of points matching the given payload filters."""
        request = CountRequest(exact=True, filter=_filter(tenant=tenant, doc_id=doc_id))
        with self._lock:
            return self._open_shard().count(request)

    def close(self) -> None:
        """Close the shard and release its lock on ``path``. Idempotent."""
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None

    def _open_shard(self) -> EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"edge shard {self._path} is not open: call ensure_collection first")
        return self._shard


def _load(path: Path, config: EdgeConfig, dim: int) -> EdgeShard:
    """Load an existing shard, turning the engine's config mismatch into a typed error."""
    try:
        return EdgeShard.load(str(path), config)
    except Exception as exc:  # the engine raises bare Exception
        if "incompatible" in str(exc).lower():
            raise CollectionDimMismatch(
                f"edge shard {path} does not hold {dim}-dim cosine '{TEXT_VECTOR}' vectors: {exc}"
            ) from exc
        raise


def _filter(*, tenant: str | None, doc_id: str | None) -> Filter | None:
    conditions = [
        FieldCondition(key=key, match=MatchValue(value))
        for key, value in ((TENANT_KEY, tenant), (DOC_ID_KEY, doc_id))
        if value is not None
    ]
    return Filter(must=conditions) if conditions else None
