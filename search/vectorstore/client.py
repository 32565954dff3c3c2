"""VectorStore over ``qdrant_client``: a Qdrant server, or its local mode.

Collections are real Qdrant collections with named dense vectors (cosine), a
sparse vector with the IDF modifier, optional int8 scalar quantization and
payload indexes; aliases are real Qdrant aliases, re-pointed atomically by one
``update_collection_aliases`` request. The server resolves aliases itself, so
another process re-pointing an alias is seen by the next request.

Schemas are cached per name (collection or alias) after ``create_collection``
or the first use, so ``upsert`` and ``search`` make exactly one request each.
If another process re-points an alias to a generation with other dimensions,
the server's dimension error is raised as ``VectorDimError`` and the cached
schema is dropped, so the next call re-reads it.

Local mode (``location=":memory:"`` / ``path=``) supports all of it except
what has no effect there: payload indexes (its warning is silenced) and
quantization (accepted, not applied, and not reported back by
``get_collection``). The server optimizes on its own, so :meth:`maintain`
does nothing.

On a Qdrant cluster, a new collection is laid out by the store's
:class:`~search.vectorstore.cluster.ClusterLayout` (shards, replication
factor, write consistency factor; :func:`create_collection_params`). Local
mode accepts these parameters and ignores them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models

from search.vectorstore.base import (
    IMAGE_DENSE,
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    SPARSE,
    TEXT_DENSE,
    CollectionInUse,
    CollectionNotFound,
    CollectionSchema,
    PointPayload,
    SchemaMismatch,
    SearchFilter,
    SparseVector,
    VectorDimError,
    VectorHit,
    VectorPoint,
    VectorRecord,
    canonical_id,
    check_name,
    check_points,
    check_query,
)
from search.vectorstore.cluster import ClusterLayout


class QdrantClientStore:
    """A :class:`~search.vectorstore.base.VectorStore` on ``client``.

    Works with ``QdrantClient(url=...)`` and with the local modes. The store
    takes ownership of ``client``: :meth:`close` closes it. Writes wait for
    the server to apply them (``wait=True``), so durability is the server's
    WAL-backed acknowledgement. Thread-safe: requests to a server run
    concurrently; local mode is not thread-safe (concurrent upserts corrupt
    its arrays), so there every client call is serialised by a lock.
    """

    def __init__(self, client: QdrantClient, layout: ClusterLayout | None = None) -> None:
        self._layout = layout or ClusterLayout()
        options = getattr(client, "init_options", None) or {}
        local = options.get("location") == ":memory:" or options.get("path") is not None
        self._client: QdrantClient = _Serialized(client) if local else client  # type: ignore[assignment]
        self._schemas: dict[str, CollectionSchema] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ collections and aliases

    def create_collection(self, name: str, schema: CollectionSchema) -> None:
        """Create collection ``name`` (vectors, quantization, payload indexes); idempotent for the same vectors."""
        check_name(name)
        if name in self._alias_map():
            raise ValueError(f"{name!r} is an alias, not a collection name")
        if self._client.collection_exists(name):
            existing = self._read_schema(name)
            if not existing.same_shape(schema):
                raise SchemaMismatch(
                    f"collection {name!r} exists with {existing.describe()}, not {schema.describe()}; "
                    "create a new collection (generation) for the new schema and re-point the alias"
                )
        else:
            self._client.create_collection(name, **create_collection_params(schema, self._layout))
            existing = schema
        self._create_payload_indexes(name)
        with self._lock:
            self._schemas[name] = existing

    def drop_collection(self, name: str) -> None:
        """Delete collection ``name``; idempotent; :class:`CollectionInUse` if an alias points to it."""
        check_name(name)
        aliases = self._alias_map()
        if name in aliases:
            raise ValueError(f"{name!r} is an alias; drop_collection takes a collection name")
        users = sorted(a for a, c in aliases.items() if c == name)
        if users:
            raise CollectionInUse(
                f"collection {name!r} is in use by alias(es) {users}; point them at another collection first"
            )
        with self._lock:
            self._schemas.pop(name, None)
        if self._client.collection_exists(name):
            self._client.delete_collection(name)

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return sorted(c.name for c in self._client.get_collections().collections)

    def set_alias(self, alias: str, collection: str) -> None:
        """Create or atomically re-point ``alias`` (one ``update_collection_aliases`` request)."""
        check_name(alias, "alias")
        check_name(collection)
        aliases = self._alias_map()
        if collection in aliases:
            raise ValueError(f"{collection!r} is an alias; point {alias!r} at a collection name")
        if alias != collection and alias not in aliases and self._client.collection_exists(alias):
            raise ValueError(f"{alias!r} is a collection name and cannot also be an alias")
        if not self._client.collection_exists(collection):
            raise CollectionNotFound(f"collection {collection!r} does not exist; create_collection first")
        operations: list[models.AliasOperations] = []
        if alias in aliases:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self._client.update_collection_aliases(change_aliases_operations=operations)
        with self._lock:
            self._schemas.pop(alias, None)

    def resolve(self, name_or_alias: str) -> str | None:
        """Alias target, the name itself for a collection, or ``None``."""
        target = self._alias_map().get(name_or_alias)
        if target is not None:
            return target
        return name_or_alias if self._client.collection_exists(name_or_alias) else None

    def schema(self, collection: str) -> CollectionSchema:
        """The (cached) schema of a collection or alias target."""
        cached = self._schemas.get(collection)
        if cached is not None:
            return cached
        if not self._client.collection_exists(collection):
            raise CollectionNotFound(f"no collection or alias named {collection!r}")
        schema = self._read_schema(collection)
        with self._lock:
            self._schemas[collection] = schema
        return schema

    # ------------------------------------------------------------------ points

    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        """Validate, then insert or replace ``points``; returns once the server applied them."""
        checked = check_points(self.schema(collection), points)
        if not checked:
            return
        structs = []
        for p in checked:
            vector: dict[str, list[float] | models.SparseVector] = dict(p.dense)
            if p.sparse is not None:
                vector[SPARSE] = models.SparseVector(indices=p.sparse[0], values=p.sparse[1])
            structs.append(models.PointStruct(id=p.id, vector=vector, payload=p.payload))
        with self._dim_errors(collection):
            self._client.upsert(collection, points=structs, wait=True)

    def search(
        self,
        collection: str,
        query: Sequence[float] | SparseVector,
        *,
        using: str,
        filter: SearchFilter,
        limit: int,
    ) -> list[VectorHit]:
        """Top-``limit`` points of ``filter.tenant`` by vector ``using``, best first."""
        checked = check_query(self.schema(collection), query, using)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if filter.matches_nothing():
            return []
        vector = models.SparseVector(indices=checked[0], values=checked[1]) if isinstance(checked, tuple) else checked
        with self._dim_errors(collection):
            response = self._client.query_points(
                collection,
                query=vector,
                using=using,
                query_filter=_search_filter(filter),
                limit=limit,
                with_payload=True,
            )
        return [VectorHit(str(p.id), float(p.score), PointPayload.from_stored(p.payload)) for p in response.points]

    def delete(self, collection: str, *, tenant: str, doc_id: str, keep_revision: int | None = None) -> None:
        """Delete a document's points (other revisions only, with ``keep_revision``); applied on return."""
        self.schema(collection)  # CollectionNotFound rather than the engine's error
        must: list[models.Condition] = [_match("tenant", tenant), _match("doc_id", doc_id)]
        must_not: list[models.Condition] | None = (
            None if keep_revision is None else [_match("revision", keep_revision)]
        )
        self._client.delete(
            collection,
            points_selector=models.FilterSelector(filter=models.Filter(must=must, must_not=must_not)),
            wait=True,
        )

    def scroll(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        doc_id: str | None = None,
        limit: int = 100,
        offset: str | None = None,
        pages: tuple[int, int] | None = None,
    ) -> tuple[list[VectorRecord], str | None]:
        """One page in id order and the next page's offset (``None`` after the last page)."""
        self.schema(collection)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        records, next_offset = self._client.scroll(
            collection,
            scroll_filter=_payload_filter(tenant=tenant, doc_id=doc_id, pages=pages),
            limit=limit,
            offset=None if offset is None else canonical_id(offset),
            with_payload=True,
        )
        page = [VectorRecord(str(r.id), PointPayload.from_stored(r.payload)) for r in records]
        return page, None if next_offset is None else str(next_offset)

    def count(self, collection: str, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact count of points matching the given payload filters."""
        self.schema(collection)
        result = self._client.count(
            collection, count_filter=_payload_filter(tenant=tenant, doc_id=doc_id), exact=True
        )
        return result.count

    def maintain(self) -> list[str]:
        """Nothing to do: Qdrant builds its indexes on its own."""
        return []

    def close(self) -> None:
        """Close the owned client. Idempotent."""
        self._client.close()

    # ------------------------------------------------------------------ internals

    def _alias_map(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self._client.get_aliases().aliases}

    def _read_schema(self, name: str) -> CollectionSchema:
        config = self._client.get_collection(name).config
        params = config.params
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        text, image = vectors.get(TEXT_DENSE), vectors.get(IMAGE_DENSE)
        if text is None:
            raise SchemaMismatch(
                f"collection {name!r} has no {TEXT_DENSE!r} vector (vectors: {sorted(vectors)}); "
                "it was not created by this store"
            )
        return CollectionSchema(
            text_dim=text.size,
            image_dim=None if image is None else image.size,
            sparse=SPARSE in (params.sparse_vectors or {}),
            quantization=config.quantization_config is not None,
        )

    def _create_payload_indexes(self, name: str) -> None:
        with warnings.catch_warnings():
            # Local mode accepts the call but warns that payload indexes have no effect there.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for key in KEYWORD_INDEXES:
                schema = (
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
                    if key == "tenant"
                    else models.PayloadSchemaType.KEYWORD
                )
                self._client.create_payload_index(name, key, schema, wait=True)
            for key in INTEGER_INDEXES:
                self._client.create_payload_index(name, key, models.PayloadSchemaType.INTEGER, wait=True)

    def _dim_errors(self, collection: str) -> _DimErrors:
        return _DimErrors(self, collection)


def create_collection_params(schema: CollectionSchema, layout: ClusterLayout) -> dict[str, Any]:
    """The keyword arguments of ``QdrantClient.create_collection`` (after the name) for ``schema`` on ``layout``:
    named cosine vectors, the IDF sparse vector, int8 quantization, and the layout's cluster parameters."""
    vectors = {TEXT_DENSE: models.VectorParams(size=schema.text_dim, distance=models.Distance.COSINE)}
    if schema.image_dim is not None:
        vectors[IMAGE_DENSE] = models.VectorParams(size=schema.image_dim, distance=models.Distance.COSINE)
    return {
        "vectors_config": vectors,
        "sparse_vectors_config": (
            {SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)} if schema.sparse else None
        ),
        "quantization_config": (
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
            if schema.quantization
            else None
        ),
        **layout.create_params(),
    }


class _Serialized:
    """Proxy that runs every method of a local-mode client under one lock."""

    def __init__(self, client: QdrantClient) -> None:
        self._target = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str):  # noqa: ANN204
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self._lock:
                return attr(*args, **kwargs)

        return locked


class _DimErrors:
    """Turn the engine's dimension error (alias re-pointed elsewhere) into ``VectorDimError``; forget the schema."""

    def __init__(self, store: QdrantClientStore, collection: str) -> None:
        self._store, self._collection = store, collection

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        if exc is not None and "dimension error" in str(exc).lower():
            with self._store._lock:
                self._store._schemas.pop(self._collection, None)
            raise VectorDimError(
                f"collection {self._collection!r} expects other vector dimensions than its cached schema "
                "(was the alias re-pointed?); re-embed for the current schema"
            ) from exc
        return False


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _payload_filter(
    *, tenant: str | None, doc_id: str | None, pages: tuple[int, int] | None = None
) -> models.Filter | None:
    must: list[models.Condition] = [
        _match(key, value) for key, value in (("tenant", tenant), ("doc_id", doc_id)) if value is not None
    ]
    if pages is not None:
        must.append(models.FieldCondition(key="page", range=models.Range(gte=pages[0], lte=pages[1])))
    return models.Filter(must=must) if must else None


def _search_filter(f: SearchFilter) -> models.Filter:
    must: list[models.Condition] = [_match("tenant", f.tenant)]
    if f.doc_ids is not None:
        must.append(models.FieldCondition(key="doc_id", match=models.MatchAny(any=sorted(f.doc_ids))))
    if f.modalities is not None:
        must.append(models.FieldCondition(key="modality", match=models.MatchAny(any=sorted(f.modalities))))
    if f.collections is not None:  # an array field: matches when any of its values is in the set
        must.append(models.FieldCondition(key="collections", match=models.MatchAny(any=sorted(f.collections))))
    if f.pages is not None:
        must.append(models.FieldCondition(key="page", range=models.Range(gte=f.pages[0], lte=f.pages[1])))
    if f.ids is not None:
        must.append(models.HasIdCondition(has_id=sorted(f.ids)))
    return models.Filter(must=must)
