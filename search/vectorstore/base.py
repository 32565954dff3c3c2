"""The vector store interface shared by every adapter (vector store v2).

A *collection* is one index generation. It is created once with a
:class:`CollectionSchema` that declares its named vectors:

* :data:`TEXT_DENSE` (``"text"``): dense text vector, cosine; always declared.
* :data:`IMAGE_DENSE` (``"image"``): dense image vector (CLIP), cosine; declared
  when ``schema.image_dim`` is set.
* :data:`SPARSE` (``"sparse"``): sparse lexical vector (BM25-style term
  weights), scored with the IDF modifier; declared when ``schema.sparse``.

Readers and writers normally address a collection through an *alias* (e.g.
``"chunks"``): the indexer builds a new generation, points the alias at it
(an atomic switch) and drops the old generation.

Every point carries a typed :class:`PointPayload`. Payload indexes exist for
``tenant``, ``doc_id``, ``modality``, ``collections`` (keyword) and ``page``, ``revision``
(integer) wherever the engine supports them.

Errors are typed so callers can tell permanent from transient failures:

* :class:`VectorDimError`: a point or query does not fit the schema (wrong
  length, non-finite value, vector the schema does not declare). Permanent:
  retrying the same input fails the same way. Raised before anything is written.
* :class:`SchemaMismatch`: a collection exists with another schema.
* :class:`CollectionNotFound`: no collection or alias of that name.
* :class:`CollectionInUse`: refusing to drop a collection an alias points to.

Anything else an adapter raises (connection errors, engine I/O errors) is
transient or a bug.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from contracts.messages import ImageRef, TableData

TEXT_DENSE = "text"
"""Name of the dense text vector (e.g. 384-d MiniLM), cosine. Every schema declares it."""
IMAGE_DENSE = "image"
"""Name of the dense image vector (CLIP), cosine. Declared when ``CollectionSchema.image_dim`` is set."""
SPARSE = "sparse"
"""Name of the sparse lexical vector (term index -> weight), scored with IDF where the engine has it."""

VECTOR_NAMES = (TEXT_DENSE, IMAGE_DENSE, SPARSE)

KEYWORD_INDEXES = ("tenant", "doc_id", "modality", "collections")
"""Payload fields with a keyword index (``tenant`` is marked as the tenant key where the engine supports it)."""
INTEGER_INDEXES = ("page", "revision")
"""Payload fields with an integer index."""

Modality = Literal["text", "table", "image"]


# ----------------------------------------------------------------------------- errors


class SchemaMismatch(ValueError):
    """A collection of that name exists with another schema (vector names or dimensions)."""


class VectorDimError(ValueError):
    """A vector does not fit the collection's schema: wrong length, NaN/inf, or an undeclared vector.

    Permanent: the same input always fails. Raised before anything is written,
    so a failed batch leaves the collection unchanged.
    """


class CollectionNotFound(KeyError):
    """No collection (or alias) of that name exists."""

    def __str__(self) -> str:  # KeyError's default str() is the repr of its argument
        return str(self.args[0]) if self.args else "collection not found"


class CollectionInUse(ValueError):
    """The collection cannot be dropped because an alias points to it."""


# ----------------------------------------------------------------------------- schema and points


@dataclass(frozen=True, slots=True)
class CollectionSchema:
    """What a collection stores. Fixed at creation.

    ``quantization`` asks for int8 scalar quantization of the dense vectors where
    the engine supports it. It is a storage setting, not part of the data's
    shape: re-creating a collection with another ``quantization`` value keeps
    the existing setting and does not raise :class:`SchemaMismatch`.
    """

    text_dim: int
    image_dim: int | None = None
    sparse: bool = True
    quantization: bool = False

    def __post_init__(self) -> None:
        for name, dim in (("text_dim", self.text_dim), ("image_dim", self.image_dim)):
            if dim is None and name == "image_dim":
                continue
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ValueError(f"CollectionSchema.{name} must be a positive int, got {dim!r}")

    def same_shape(self, other: CollectionSchema) -> bool:
        """Whether ``other`` declares the same vectors with the same dimensions (ignores ``quantization``)."""
        return (self.text_dim, self.image_dim, self.sparse) == (other.text_dim, other.image_dim, other.sparse)

    def describe(self) -> str:
        parts = [f"{TEXT_DENSE}={self.text_dim}-d"]
        parts.append(f"{IMAGE_DENSE}={self.image_dim}-d" if self.image_dim else f"no {IMAGE_DENSE} vector")
        parts.append(SPARSE if self.sparse else f"no {SPARSE} vector")
        return ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "text_dim": self.text_dim,
            "image_dim": self.image_dim,
            "sparse": self.sparse,
            "quantization": self.quantization,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> CollectionSchema:
        return cls(
            text_dim=int(data["text_dim"]),  # type: ignore[arg-type]
            image_dim=None if data.get("image_dim") is None else int(data["image_dim"]),  # type: ignore[arg-type]
            sparse=bool(data.get("sparse", True)),
            quantization=bool(data.get("quantization", False)),
        )


class PointPayload(BaseModel):
    """The payload of every stored point.

    Frozen and strict about unknown fields when *written* (``extra="forbid"``),
    so a typo never reaches the index. New fields must be optional with a
    default, so points written before they existed still read back. Adapters
    read stored payloads with :meth:`from_stored`, which ignores fields this
    version does not know (written by a newer version), so a rollback still reads.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    doc_id: str
    revision: int
    """Which submission of the document wrote this point (see ``VectorStore.delete``'s ``keep_revision``)."""
    chunk_id: str
    index: int
    page: int
    bbox: tuple[float, float, float, float] | None = None
    locator: str | None = None
    """Where the chunk is, in words, for an office file (``Chunk.locator``)."""
    modality: Modality
    text: str
    filename: str
    headings: tuple[str, ...] = ()
    """The section path the chunk sits under."""
    source: Literal["text", "ocr"] = "text"
    image: ImageRef | None = None
    """For an image chunk: the image in the uploads Object Store (what a citation shows)."""
    table: TableData | None = None
    """For a table chunk: its cells."""
    collections: tuple[str, ...] = ()
    """The collections (tags) of the document revision that wrote the point (a search may be scoped to some)."""

    def to_stored(self) -> dict[str, object]:
        """The JSON-able dict the engines store."""
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, stored: dict[str, object] | None) -> PointPayload:
        """Rebuild a payload read from an engine, ignoring fields this version does not know."""
        known = cls.model_fields
        return cls.model_validate({k: v for k, v in (stored or {}).items() if k in known})


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Sparse vector: ``values[i]`` is the weight of term ``indices[i]``. Indices are unique, ``0 <= i < 2**32``."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", tuple(self.indices))
        object.__setattr__(self, "values", tuple(self.values))

    @classmethod
    def from_dict(cls, weights: dict[int, float]) -> SparseVector:
        """Build from ``{term_index: weight}``."""
        items = sorted(weights.items())
        return cls(tuple(i for i, _ in items), tuple(float(w) for _, w in items))


@dataclass(frozen=True, slots=True)
class VectorPoint:
    """A point to store: a UUID ``id`` (canonicalised), its payload, and the vectors it has.

    At least one vector must be set; each must be declared by the collection's schema.
    """

    id: str
    payload: PointPayload
    text: Sequence[float] | None = None
    image: Sequence[float] | None = None
    sparse: SparseVector | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", canonical_id(self.id))
        if not isinstance(self.payload, PointPayload):
            raise TypeError(f"VectorPoint.payload must be a PointPayload, got {type(self.payload).__name__}")


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A search result. ``score``: higher is closer (cosine similarity for dense, IDF-weighted dot for sparse)."""

    id: str
    score: float
    payload: PointPayload


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """A stored point as :meth:`VectorStore.scroll` returns it (no score)."""

    id: str
    payload: PointPayload


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Which points a search may return. ``tenant`` is required and always applied.

    ``doc_ids`` / ``modalities``: keep only points whose value is in the set
    (an empty set matches nothing). ``collections``: keep only points in at least one of them. ``pages``: inclusive ``(first, last)`` range. ``ids``: keep only these
    point ids (knowledge-graph expansion ranks the chunks it proposes this way).
    """

    tenant: str
    doc_ids: frozenset[str] | None = None
    modalities: frozenset[Modality] | None = None
    pages: tuple[int, int] | None = None
    ids: frozenset[str] | None = None
    collections: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ValueError("SearchFilter.tenant must be a non-empty string: every search is scoped to one tenant")
        for name in ("doc_ids", "modalities", "ids", "collections"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise TypeError(f"SearchFilter.{name} must be a collection of strings, not one string")
                object.__setattr__(self, name, frozenset(value))
        if self.ids is not None:
            object.__setattr__(self, "ids", frozenset(canonical_id(i) for i in self.ids))
        if self.pages is not None:
            first, last = self.pages
            object.__setattr__(self, "pages", (int(first), int(last)))

    def matches_nothing(self) -> bool:
        return (
            (self.doc_ids is not None and not self.doc_ids)
            or (self.modalities is not None and not self.modalities)
            or (self.ids is not None and not self.ids)
            or (self.collections is not None and not self.collections)
        )


@dataclass(frozen=True, slots=True)
class OptimizePolicy:
    """When the embedded engine builds its HNSW index (:meth:`VectorStore.maintain`).

    A collection is optimized when at least ``min_points`` points were written
    since its last build and none were written for ``idle_seconds``.
    ``indexing_threshold_kb`` is the engine's own threshold: segments smaller
    than this many KB of vectors are left unindexed (searched by full scan,
    which is fast for small segments); ``None`` keeps the engine default
    (10 000 KB, about 6 500 384-d vectors). ``segment_number`` is the
    engine's target number of segments: with the engine default (one per
    CPU, so 2 on 2 cores) each build merges new points into the big indexed
    segment and re-indexes all of it (20 000 indexed + 8 000 new: 9.0 s);
    with 8, a build indexes mostly the new points (4.3 s). ``enabled=False``
    never builds. Adapters whose engine optimizes on its own (a Qdrant
    server) ignore the policy.
    """

    min_points: int = 5_000
    idle_seconds: float = 30.0
    indexing_threshold_kb: int | None = None
    segment_number: int | None = 8
    enabled: bool = True


# ----------------------------------------------------------------------------- validation


def canonical_id(point_id: object) -> str:
    """The lower-case hyphenated form of a UUID; ``ValueError`` for anything else."""
    try:
        return str(point_id if isinstance(point_id, uuid.UUID) else uuid.UUID(str(point_id)))
    except ValueError:
        raise ValueError(f"point id must be a UUID string, got {point_id!r}") from None


def check_dense(vector: Sequence[float], *, name: str, dim: int | None, what: str) -> list[float]:
    """Return ``vector`` as a list of floats, or raise :class:`VectorDimError`."""
    if dim is None:
        raise VectorDimError(f"{what}: the collection declares no {name!r} vector; drop it or use a schema with one")
    values = [float(x) for x in vector]
    if len(values) != dim:
        raise VectorDimError(
            f"{what}: {name!r} vector has {len(values)} values, the collection expects {dim}; "
            "embed with the model the collection was created for"
        )
    if not all(math.isfinite(x) for x in values):
        raise VectorDimError(f"{what}: {name!r} vector contains NaN or infinity; these are never stored")
    return values


def check_sparse(vector: SparseVector, *, declared: bool, what: str) -> tuple[list[int], list[float]]:
    """Return ``(indices, values)`` lists, or raise :class:`VectorDimError`."""
    if not declared:
        raise VectorDimError(f"{what}: the collection declares no {SPARSE!r} vector")
    if not isinstance(vector, SparseVector):
        raise VectorDimError(f"{what}: {SPARSE!r} vector must be a SparseVector, got {type(vector).__name__}")
    indices, values = [int(i) for i in vector.indices], [float(v) for v in vector.values]
    if len(indices) != len(values):
        raise VectorDimError(f"{what}: sparse vector has {len(indices)} indices but {len(values)} values")
    if len(set(indices)) != len(indices):
        raise VectorDimError(f"{what}: sparse vector has duplicate indices; sum their weights first")
    if any(i < 0 or i >= 2**32 for i in indices):
        raise VectorDimError(f"{what}: sparse vector indices must be in [0, 2**32)")
    if not all(math.isfinite(v) for v in values):
        raise VectorDimError(f"{what}: sparse vector contains NaN or infinity; these are never stored")
    return indices, values


@dataclass(frozen=True, slots=True)
class CheckedPoint:
    """A point validated against a schema: plain lists ready for an engine."""

    id: str
    payload: dict[str, object]
    dense: dict[str, list[float]] = field(default_factory=dict)
    sparse: tuple[list[int], list[float]] | None = None


def check_points(schema: CollectionSchema, points: Iterable[VectorPoint]) -> list[CheckedPoint]:
    """Validate every point (all before any write); raise :class:`VectorDimError` on the first bad one."""
    checked = []
    for point in points:
        what = f"point {point.id}"
        dense: dict[str, list[float]] = {}
        if point.text is not None:
            dense[TEXT_DENSE] = check_dense(point.text, name=TEXT_DENSE, dim=schema.text_dim, what=what)
        if point.image is not None:
            dense[IMAGE_DENSE] = check_dense(point.image, name=IMAGE_DENSE, dim=schema.image_dim, what=what)
        sparse = None
        if point.sparse is not None:
            sparse = check_sparse(point.sparse, declared=schema.sparse, what=what)
        if not dense and sparse is None:
            raise VectorDimError(f"{what}: has no vector; set text, image or sparse")
        checked.append(CheckedPoint(point.id, point.payload.to_stored(), dense, sparse))
    return checked


def check_query(
    schema: CollectionSchema, query: Sequence[float] | SparseVector, using: str
) -> list[float] | tuple[list[int], list[float]]:
    """Validate a query against the vector it searches; :class:`VectorDimError` if it does not fit."""
    if using == SPARSE:
        if not isinstance(query, SparseVector):
            raise VectorDimError(f"query using {SPARSE!r} must be a SparseVector")
        return check_sparse(query, declared=schema.sparse, what="query")
    if using not in (TEXT_DENSE, IMAGE_DENSE):
        raise ValueError(f"using must be one of {VECTOR_NAMES}, got {using!r}")
    if isinstance(query, SparseVector):
        raise VectorDimError(f"query using {using!r} must be a dense vector, got a SparseVector")
    dim = schema.text_dim if using == TEXT_DENSE else schema.image_dim
    return check_dense(query, name=using, dim=dim, what="query")


def check_name(name: str, what: str = "collection") -> str:
    """Collection and alias names: 1-64 of ``[A-Za-z0-9_.-]``, starting with a letter or digit."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 64
        or not name[0].isascii()
        or not name[0].isalnum()
        or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    ):
        raise ValueError(f"{what} name must be 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit, got {name!r}")
    return name


# ----------------------------------------------------------------------------- protocol


@runtime_checkable
class VectorStore(Protocol):
    """Tenant-partitioned vector storage over named collections and aliases.

    All methods are synchronous and blocking; async callers run them in a
    thread. Every adapter may be shared between threads. The store owns the
    engine handles it opens and releases them in :meth:`close`; whoever
    created the store closes it.

    Create each collection once (at start-up or when building a generation)
    with :meth:`create_collection`; the point methods then check nothing on
    the server but use the schema cached at creation/first use. ``collection``
    arguments of point methods may name a collection or an alias.
    """

    def create_collection(self, name: str, schema: CollectionSchema) -> None:
        """Create collection ``name`` with ``schema``, with its payload indexes.

        Idempotent when it exists with the same vectors; raises
        :class:`SchemaMismatch` when it exists with others, and ``ValueError``
        when ``name`` is an alias.
        """
        ...

    def drop_collection(self, name: str) -> None:
        """Delete collection ``name`` and its points. Idempotent (no error when missing).

        Raises :class:`CollectionInUse` when an alias points to it: re-point the alias first.
        """
        ...

    def list_collections(self) -> list[str]:
        """Names of all collections (not aliases), sorted."""
        ...

    def set_alias(self, alias: str, collection: str) -> None:
        """Create ``alias`` for ``collection`` or atomically re-point it.

        Raises :class:`CollectionNotFound` if ``collection`` does not exist,
        ``ValueError`` if ``alias`` is the name of a collection.
        """
        ...

    def resolve(self, name_or_alias: str) -> str | None:
        """The collection an alias points to, the name itself for a collection, ``None`` if neither."""
        ...

    def schema(self, collection: str) -> CollectionSchema:
        """The schema of a collection (or of the one an alias points to); :class:`CollectionNotFound` if none."""
        ...

    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        """Insert or replace ``points`` by id.

        Validates every point first (:class:`VectorDimError`: nothing is
        written). When this returns the points are durable: they survive a
        SIGKILL of the process right after. Upserting an existing id replaces
        all its vectors and its payload; it never adds a second point.
        """
        ...

    def search(
        self,
        collection: str,
        query: Sequence[float] | SparseVector,
        *,
        using: str,
        filter: SearchFilter,
        limit: int,
    ) -> list[VectorHit]:
        """Up to ``limit`` points matching ``filter`` nearest to ``query`` by vector ``using``, best first.

        Points of another tenant are never returned. A query that does not fit
        the schema raises :class:`VectorDimError`.
        """
        ...

    def delete(self, collection: str, *, tenant: str, doc_id: str, keep_revision: int | None = None) -> None:
        """Delete the points of one document; durable on return.

        With ``keep_revision``, delete only points whose ``revision`` differs
        (a re-submitted document replacing its previous points).
        """
        ...

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
        """One page of matching points in a stable order (by id), and the offset of the next page or ``None``.

        Pass the returned offset back to get the next page; pages cover every
        matching point exactly once if nothing is written meanwhile. ``pages``: only
        points whose page is in this inclusive range (a document page's chunks).
        """
        ...

    def count(self, collection: str, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact number of points matching every given payload filter (all if none)."""
        ...

    def maintain(self) -> list[str]:
        """Run the index-build policy; returns the collections whose index was built.

        Cheap no-op when nothing is due. May block for as long as an index build
        takes (see the adapter's documentation).
        """
        ...

    def close(self) -> None:
        """Release the engine handles. Idempotent; the store is unusable afterwards."""
        ...
