"""The vector store interface shared by every adapter.

Points carry one named dense vector, :data:`TEXT_VECTOR`, compared by cosine
similarity. Payload keys written by callers: ``tenant``, ``doc_id``,
``chunk_id``, ``page``, ``bbox`` (four floats or ``None``), ``modality``,
``text``, ``filename``, ``index``. Only ``tenant`` and ``doc_id`` are
filtered on (keyword match); adapters index them where the engine supports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

TEXT_VECTOR = "text"
"""Name of the single dense vector every point carries."""

TENANT_KEY = "tenant"
DOC_ID_KEY = "doc_id"
INDEXED_KEYS = (TENANT_KEY, DOC_ID_KEY)
"""Payload keys that get a keyword index."""


class CollectionDimMismatch(ValueError):
    """The existing collection stores vectors of another dimension."""


@dataclass(frozen=True, slots=True)
class VectorPoint:
    """A point to store. ``id`` is a UUID string (engines reject other strings)."""

    id: str
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A search result: ``score`` is the cosine similarity, higher is closer.

    ``id`` is the canonical (lower-case, hyphenated) form of the UUID.
    """

    id: str
    score: float
    payload: dict[str, Any]


@runtime_checkable
class VectorStore(Protocol):
    """A tenant-partitioned store of text vectors.

    All methods are synchronous and blocking; async callers run them in a
    thread. Call :meth:`ensure_collection` before any other method. The store
    owns the engine handle it was built on (shard or client) and releases it
    in :meth:`close`; whoever created the store closes it.
    """

    def ensure_collection(self, dim: int) -> None:
        """Create the collection for ``dim``-sized vectors if missing, else open it.

        Idempotent. Raises :class:`CollectionDimMismatch` if the existing
        collection holds vectors of another dimension.
        """
        ...

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace ``points`` by id.

        When this returns the points are durable: they survive a SIGKILL of
        the process right after. Upserting an existing id replaces its vector
        and payload; it never adds a second point.
        """
        ...

    def search(self, vector: Sequence[float], *, tenant: str, limit: int) -> list[VectorHit]:
        """Return up to ``limit`` points of ``tenant`` nearest to ``vector``, best first.

        Points whose payload ``tenant`` differs are never returned.
        """
        ...

    def count(self, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact number of points matching every given payload filter (all if none)."""
        ...

    def close(self) -> None:
        """Release the engine handle. Idempotent; the store is unusable afterwards."""
        ...
