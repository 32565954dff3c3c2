"""VectorStore over ``qdrant_client``: a Qdrant server, or its local mode."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from agents.vectorstore.base import (
    DOC_ID_KEY,
    INDEXED_KEYS,
    TENANT_KEY,
    TEXT_VECTOR,
    CollectionDimMismatch,
    VectorHit,
    VectorPoint,
)


class QdrantClientStore:
    """A :class:`~agents.vectorstore.base.VectorStore` in one collection of ``client``.

    Works with ``QdrantClient(url=...)`` and with the local modes
    (``location=":memory:"``, ``path=...``). The store takes ownership of
    ``client``: :meth:`close` closes it. Upserts wait for the server to apply
    them, so durability is the server's (WAL-backed) acknowledgement.
    """

    def __init__(self, client: QdrantClient, collection: str) -> None:
        self._client = client
        self._collection = collection

    def ensure_collection(self, dim: int) -> None:
        """Create the collection with a cosine ``text`` vector of ``dim`` if missing.

        Also makes sure ``tenant`` and ``doc_id`` have keyword indexes. Raises
        :class:`CollectionDimMismatch` if the collection has no ``text`` vector
        of size ``dim``.
        """
        if self._client.collection_exists(self._collection):
            vectors = self._client.get_collection(self._collection).config.params.vectors
            params = vectors.get(TEXT_VECTOR) if isinstance(vectors, dict) else None
            if params is None or params.size != dim:
                raise CollectionDimMismatch(
                    f"collection {self._collection!r} has vectors {vectors!r}, "
                    f"expected '{TEXT_VECTOR}' of size {dim}"
                )
        else:
            self._client.create_collection(
                self._collection,
                vectors_config={
                    TEXT_VECTOR: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                },
            )
        with warnings.catch_warnings():
            # Local mode accepts the call but warns that indexes have no effect there.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for key in INDEXED_KEYS:
                self._client.create_payload_index(
                    self._collection, key, models.PayloadSchemaType.KEYWORD, wait=True
                )

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace ``points``; returns once the server has applied them."""
        if not points:
            return
        self._client.upsert(
            self._collection,
            points=[
                models.PointStruct(id=p.id, vector={TEXT_VECTOR: list(p.vector)}, payload=p.payload)
                for p in points
            ],
            wait=True,
        )

    def search(self, vector: Sequence[float], *, tenant: str, limit: int) -> list[VectorHit]:
        """Cosine top-``limit`` among ``tenant``'s points, best first."""
        response = self._client.query_points(
            self._collection,
            query=list(vector),
            using=TEXT_VECTOR,
            query_filter=_filter(tenant=tenant, doc_id=None),
            limit=limit,
            with_payload=True,
        )
        return [VectorHit(str(p.id), p.score, p.payload or {}) for p in response.points]

    def count(self, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact count of points matching the given payload filters."""
        result = self._client.count(
            self._collection, count_filter=_filter(tenant=tenant, doc_id=doc_id), exact=True
        )
        return result.count

    def close(self) -> None:
        """Close the owned client. Idempotent."""
        self._client.close()


def _filter(*, tenant: str | None, doc_id: str | None) -> models.Filter | None:
    conditions: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in ((TENANT_KEY, tenant), (DOC_ID_KEY, doc_id))
        if value is not None
    ]
    return models.Filter(must=conditions) if conditions else None
