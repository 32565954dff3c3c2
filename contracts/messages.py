"""Every message that travels on a mmrag subject, as pydantic v2 models.

Invariants shared by all of them:
- JSON on the wire, one model per subject (see ``contracts.topology.SUBJECT_MODELS``).
- ``schema_version`` is on every message; a consumer rejects (dead-letters) a version it does not know.
- Unknown fields are rejected (``extra="forbid"``): a typo in a hand-written publisher is a clear validation
  error, not a silently ignored field. A new field means a new ``schema_version``.
- Large bytes never travel in messages: uploads live in the Object Store, messages carry ``object_name``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints, TypeAdapter, field_validator, model_validator

SCHEMA_VERSION = 1  # the version of every model that has not needed a second one

# Ids are used as NATS subject tokens and KV keys, so they are restricted to a safe alphabet.
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Tenant = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# A collection (a tag) a document belongs to; a search or a question can be scoped to some (`QueryFilters`).
# Commas and spaces are excluded so a list travels in one query parameter (`?collection=a,b`).
CollectionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")]
MAX_COLLECTIONS = 20  # per document, and per filter
MAX_PAGE = 2**31 - 1  # the largest page number a filter may name (an open page range ends here)
# (x0, y0, x1, y1) in PDF points, origin top-left of the page (PyMuPDF's coordinate system).
BBox = tuple[float, float, float, float]

ContentType = Literal[
    "application/pdf", "text/plain", "text/markdown", "image/png", "image/jpeg", "image/webp", "image/tiff",
    # documents/formats: web and e-books, GIF, e-mail
    "text/html", "application/epub+zip", "image/gif", "message/rfc822",
    # documents/formats: office files (DOCX, PPTX, XLSX, CSV)
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "text/csv",
]
SUPPORTED_CONTENT_TYPES: tuple[str, ...] = get_args(ContentType)
LOCATOR = (
    "where the chunk is, in words, for a document without page pictures (office files): 'slide 3: Results', "
    "'Budget rows 2-40 (A2:F40)', 'section 2: Installation > Requirements'; None for a PDF page, a text file or "
    "an image, and in messages written before this field existed"
)
# What kind of content a chunk (and so a search hit) is.
Modality = Literal["text", "table", "image"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_set(values: list[str] | None) -> list[str] | None:
    """A list read as a set: duplicates dropped, sorted (so equal sets compare, cache and store the same)."""
    return None if values is None else sorted(set(values))


class Message(BaseModel):
    """Base of every message on a subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    def routing(self) -> tuple[str, ...]:
        """The last tokens of the subject this message must travel on (e.g. its tenant); () = unchecked.

        The runtime dead-letters a message whose subject disagrees, so a publisher allowed on one tenant's
        subjects can never act on another tenant's data by writing a different tenant into the payload.
        """
        return ()


# --------------------------------------------------------------------------- ingest


# A document's origin as a synced folder or bucket names it (`mmrag sync`): the source's name, the file's path in it.
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
# 512 characters at most: a path travels in the upload's URL (`?path=`), and 512 characters of 4-byte UTF-8,
# percent-encoded, still fit aiohttp's 8,190-byte request line (a longer line is refused before any route).
MAX_SOURCE_PATH_CHARS = 512
SourcePath = Annotated[str, Field(min_length=1, max_length=MAX_SOURCE_PATH_CHARS)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


SOURCE_FIELD_DESCRIPTION = "the synced source (folder or bucket, `mmrag sync`) it belongs to"
SOURCE_PATH_DESCRIPTION = "its path inside `source`, '/'-separated"
SHA256_DESCRIPTION = "SHA-256 of the uploaded bytes, hex: what duplicate detection and `mmrag sync` compare"


def check_origin(source: str | None, source_path: str | None) -> None:
    if (source is None) != (source_path is None):
        raise ValueError("source and source_path go together: both or neither")


class DocumentSubmitted(Message):
    """`docs.ingest`: a document whose bytes are already in the uploads Object Store bucket.

    v2: its origin (source, path, hash) and `collections`, the document's collections (tags) as of this
    submission. Changing them (or re-parsing) is a new submission of the same upload (a new revision), so a
    replay (re-index) sees the latest ones. v1 messages (neither) stay valid: the stream keeps them forever."""

    schema_version: Literal[1, 2] = 2  # type: ignore[assignment]
    doc_id: Identifier
    tenant: Tenant = "default"
    filename: str = Field(min_length=1, max_length=255)
    content_type: ContentType
    object_name: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    submitted_at: datetime = Field(default_factory=utcnow)
    # v2: the document's origin (all optional: a v1 submission has none).
    source: SourceName | None = Field(default=None, description=SOURCE_FIELD_DESCRIPTION)
    source_path: SourcePath | None = Field(default=None, description=SOURCE_PATH_DESCRIPTION)
    sha256: Sha256 | None = Field(default=None, description=SHA256_DESCRIPTION)
    collections: list[CollectionName] = Field(default_factory=list, max_length=MAX_COLLECTIONS)

    @field_validator("collections")
    @classmethod
    def _collections_as_set(cls, values: list[str]) -> list[str]:
        return as_set(values) or []

    @model_validator(mode="after")
    def _object_under_tenant(self) -> DocumentSubmitted:
        check_origin(self.source, self.source_path)
        # One tenant can never point the parser at another tenant's upload.
        if not self.object_name.startswith(f"{self.tenant}/"):
            raise ValueError(f"object_name must start with '{self.tenant}/' (the document's tenant)")
        return self

    def origin(self) -> dict[str, str | None]:
        """`source`, `source_path`, `sha256`: what the document's progress record copies."""
        return {"source": self.source, "source_path": self.source_path, "sha256": self.sha256}

    def routing(self) -> tuple[str, ...]:
        return (self.tenant, self.doc_id)


class DocumentDeleted(Message):
    """`docs.delete.<tenant>.<doc_id>`: remove a document from every index generation (a tombstone)."""

    doc_id: Identifier
    tenant: Tenant
    requested_at: datetime = Field(default_factory=utcnow)

    def routing(self) -> tuple[str, ...]:
        return (self.tenant, self.doc_id)


class TableData(BaseModel):
    """The structured cells of a table chunk (the chunk's text is their markdown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table_id: str = Field(description="the table this chunk belongs to")
    group_id: str = Field(description="same for every part of a table that spans pages")
    header: list[str] = Field(default_factory=list)
    rows: list[list[str]] = Field(description="the rows in this chunk; a row is never split across chunks")


class ImageRef(BaseModel):
    """An image kept in the uploads Object Store: what an image chunk (and its search hit) points at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object_name: str = Field(min_length=1, max_length=255)
    mime: str
    width: int = Field(ge=1, description="intrinsic pixels")
    height: int = Field(ge=1)
    caption: str | None = None


class Chunk(BaseModel):
    """One retrievable unit. Never spans two pages; knows its neighbours for context expansion.

    `text` is what a user reads (and what is quoted); `headings` is the section path it sits under, which
    is embedded with it (`embed_text`) so "Installation > Requirements" content matches questions about it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: str = Field(min_length=1)
    index: int = Field(ge=0, description="0-based position of the chunk in its document")
    doc_id: Identifier
    tenant: Tenant
    filename: str
    page: int = Field(ge=1, description="1-based page number; 1 for plain text; an office file's slide, sheet or section")
    bbox: BBox | None = Field(default=None, description="region on the page, None for plain text")
    locator: str | None = Field(default=None, max_length=500, description=LOCATOR)
    modality: Modality = "text"
    text: str = Field(min_length=1)
    headings: list[str] = Field(default_factory=list)
    source: Literal["text", "ocr"] = Field(default="text", description="text layer, or OCR of a scan/image")
    table: TableData | None = None
    image: ImageRef | None = None
    prev_chunk_id: str | None = None
    next_chunk_id: str | None = None

    @property
    def embed_text(self) -> str:
        return " > ".join(self.headings) + "\n\n" + self.text if self.headings else self.text

    @field_validator("bbox")
    @classmethod
    def _ordered_bbox(cls, bbox: BBox | None) -> BBox | None:
        if bbox is not None and (bbox[0] > bbox[2] or bbox[1] > bbox[3]):
            raise ValueError("bbox must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
        return bbox


def _check_chunks(tenant: str, doc_id: str, chunks: list[Chunk]) -> None:
    """Every chunk of a batch belongs to the batch's document and tenant, and names only its tenant's images:
    the subject's tenant is checked against the batch, so the chunks must agree with it too."""
    for chunk in chunks:
        if chunk.tenant != tenant or chunk.doc_id != doc_id:
            raise ValueError(f"chunk {chunk.chunk_id!r} belongs to {chunk.tenant}/{chunk.doc_id}, not {tenant}/{doc_id}")
        if chunk.image is not None and not chunk.image.object_name.startswith(f"{tenant}/"):
            raise ValueError(f"chunk {chunk.chunk_id!r} names an image outside tenant {tenant!r}")


class _ChunkBatch(Message):
    """What `ChunksParsed` and `ChunksEmbedded` share: which batch of which document revision it is, the subject
    routing, and the rule that every chunk belongs to that document. Subclasses declare `chunks`."""

    schema_version: Literal[2, 3] = 3  # v3: chunks may carry a `locator` (v2 messages, without it, still read)
    doc_id: Identifier
    tenant: Tenant
    generation: int = Field(ge=1)
    revision: int = Field(ge=1, description="stream sequence of the docs.ingest message that was parsed")
    batch_index: int = Field(ge=0)

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)

    @model_validator(mode="after")
    def _chunks_of_this_document(self) -> _ChunkBatch:
        _check_chunks(self.tenant, self.doc_id, self.chunks)  # type: ignore[attr-defined]
        return self


class ChunksParsed(_ChunkBatch):
    """`chunks.parsed.g<gen>.<modality>.<lane>.<tenant>`: one batch of a document's chunks (a document is split
    into bounded batches, published as parsing goes). `revision` says which submission produced it; how many
    batches the document has is recorded in its progress once parsing ends.

    A batch may be empty: the OCR agent's, for a raster where nothing was readable. It still travels to the
    indexer, whose write records it and so completes the document like any other batch (event, older revision
    removed)."""

    chunks: list[Chunk] = Field(description="the batch's chunks; empty only for an OCR request that read nothing")


class OcrRequest(Message):
    """`chunks.ocr.g<gen>.<lane>.<tenant>`: one scanned page or one embedded/uploaded image to read.

    OCR is heavy, so it has its own subject and agent: it scales apart and never holds back text parsing.
    The OCR agent publishes what it reads as batch `batch_index` of the document (possibly empty).
    """

    schema_version: Literal[1, 2] = 2  # v2: `locator` (v1 messages, without it, still read)
    doc_id: Identifier
    tenant: Tenant
    generation: int = Field(ge=1)
    revision: int = Field(ge=1)
    batch_index: int = Field(ge=0)
    first_index: int = Field(ge=0, description="chunk index of the first chunk read here")
    filename: str
    kind: Literal["page", "image"]
    page: int = Field(ge=1)
    object_name: str = Field(min_length=1, max_length=255, description="the raster in the uploads bucket")
    bbox: BBox = Field(description="where the raster lies on the page, in PDF points")
    headings: list[str] = Field(default_factory=list)
    image: ImageRef | None = Field(default=None, description="for kind 'image': the image the chunk is about")
    nearby_text: str | None = None
    locator: str | None = Field(default=None, max_length=500, description="the locator of the chunks read here")

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)

    @model_validator(mode="after")
    def _objects_under_tenant(self) -> OcrRequest:
        # The OCR agent reads these objects: never another tenant's.
        prefix = f"{self.tenant}/"
        if not self.object_name.startswith(prefix) or (self.image and not self.image.object_name.startswith(prefix)):
            raise ValueError(f"object names must start with '{prefix}' (the document's tenant)")
        return self


class SparseTerms(BaseModel):
    """A sparse lexical vector: term ids (hashes) and their weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    indices: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(min_length=1)
    values: list[FiniteFloat] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> SparseTerms:
        if len(self.indices) != len(self.values) or len(set(self.indices)) != len(self.indices):
            raise ValueError("indices and values must have the same length, indices unique")
        return self


class EmbeddedChunk(Chunk):
    # NaN or infinity would poison every similarity computed with it: a payload carrying one is invalid.
    vector: list[FiniteFloat] = Field(min_length=1)
    sparse: SparseTerms | None = Field(default=None, description="BM25 term weights, for hybrid search")
    image_vector: list[FiniteFloat] | None = Field(
        default=None, min_length=1, description="image chunks: the image's vector (CLIP, or its perceptual hash)"
    )


class ChunksEmbedded(_ChunkBatch):
    """`chunks.embedded.g<gen>.<tenant>`: the same batch as `ChunksParsed`, each chunk with its dense vector
    (v3: and image chunks with their image vector)."""

    schema_version: Literal[3, 4] = 4  # type: ignore[assignment] # v4: chunks may carry a `locator`
    model: str = Field(description="embedding model that produced the vectors")
    embedded_by: str = Field(description="replica id of the embedder that did the work")
    chunks: list[EmbeddedChunk] = Field(description="the parsed batch's chunks, embedded; empty when it was empty")


class DocumentStatus(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXING = "indexing"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETED = "deleted"  # a tombstone: the status API answers 404, a replay skips the document


class DocumentProgress(Message):
    """Value of a document's key in the progress KV bucket, and the payload of `docs.indexed`.

    Batches, not counters, are recorded, so a redelivered batch is never counted twice: `batch_chunks` maps
    each batch known so far to its number of chunks (text batches as the parser publishes them, OCR batches
    when they are read), `batches_total` is known when parsing ends, and the document is `indexed` when every
    batch is. `revision` is the stream sequence of the latest docs.ingest / docs.delete message applied to
    the document: work for an older revision is stale and is dropped.

    v3: `collections`, `size` and `content_type` (copied from the revision's submission); v2 records (without
    them) stay readable.
    """

    schema_version: Literal[2, 3] = 3  # type: ignore[assignment]  # v3: the origin fields, collections, size
    doc_id: Identifier
    tenant: Tenant
    generation: int = Field(ge=1)
    revision: int = Field(ge=0)
    filename: str | None = None
    status: DocumentStatus
    pages: int | None = None
    pages_parsed: int = 0
    chunks_total: int | None = Field(default=None, description="known once every batch's size is known")
    batches_total: int | None = None
    batch_chunks: dict[int, int] = Field(default_factory=dict)
    batches_indexed: list[int] = Field(default_factory=list)
    chunks_indexed: int = 0
    error: str | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="what indexing could not do well, e.g. a page OCR could not read (the document stays indexed)",
    )
    updated_at: datetime = Field(default_factory=utcnow)
    collections: list[CollectionName] = Field(default_factory=list, max_length=MAX_COLLECTIONS)
    size: int | None = Field(default=None, ge=0, description="bytes of the upload")
    content_type: ContentType | None = Field(default=None, description="what the upload is (read from its bytes)")
    # v3: the submission's origin, copied from it (all optional: a v2 record has none).
    source: SourceName | None = Field(default=None, description=SOURCE_FIELD_DESCRIPTION)
    source_path: SourcePath | None = Field(default=None, description=SOURCE_PATH_DESCRIPTION)
    sha256: Sha256 | None = Field(default=None, description=SHA256_DESCRIPTION)

    @field_validator("collections")
    @classmethod
    def _collections_as_set(cls, values: list[str]) -> list[str]:
        return as_set(values) or []

    @model_validator(mode="after")
    def _origin(self) -> DocumentProgress:
        check_origin(self.source, self.source_path)
        return self

    def origin(self) -> dict[str, str | None]:
        return {"source": self.source, "source_path": self.source_path, "sha256": self.sha256}

    @property
    def finished(self) -> bool:
        return self.status in (DocumentStatus.FAILED, DocumentStatus.DELETED, DocumentStatus.INDEXED)

    def _derived(self, **update: object) -> DocumentProgress:
        new = self.model_copy(update={**update, "updated_at": utcnow()})
        if new.status in (DocumentStatus.FAILED, DocumentStatus.DELETED):
            return new
        known = new.batches_total is not None and len(new.batch_chunks) >= new.batches_total
        chunks_total = sum(new.batch_chunks.values()) if known else None
        if new.batches_total is not None and len(new.batches_indexed) >= new.batches_total:
            if chunks_total == 0:  # e.g. a scan of blank pages, or a drawing OCR found no words in
                return new.model_copy(update={"status": DocumentStatus.FAILED, "chunks_total": 0, "error": (
                    "no extractable text: no page has a text layer and OCR found nothing readable"
                )})  # fmt: skip
            status = DocumentStatus.INDEXED
        elif new.batches_indexed:
            status = DocumentStatus.INDEXING
        elif new.batch_chunks:
            status = DocumentStatus.EMBEDDING
        else:
            status = new.status
        return new.model_copy(update={"status": status, "chunks_total": chunks_total})

    def with_warning(self, warning: str) -> DocumentProgress:
        """This record with `warning` added once (a redelivered OCR request does not repeat it)."""
        if warning in self.warnings:
            return self
        return self.model_copy(update={"warnings": [*self.warnings, warning], "updated_at": utcnow()})

    def with_pages(self, *, pages: int, pages_parsed: int) -> DocumentProgress:
        return self._derived(pages=pages, pages_parsed=max(pages_parsed, self.pages_parsed))

    def with_batches(self, counts: dict[int, int], *, batches_total: int | None = None) -> DocumentProgress:
        """Record the sizes of batches now known (idempotent), and the number of batches once parsing ended."""
        if self.finished:
            return self
        merged = {**self.batch_chunks, **counts}
        total = batches_total if batches_total is not None else self.batches_total
        if merged == self.batch_chunks and total == self.batches_total:
            return self
        return self._derived(batch_chunks=merged, batches_total=total)

    def with_indexed_batch(self, batch_index: int, n_chunks: int) -> DocumentProgress:
        """The progress after one more batch is durably indexed (idempotent per batch)."""
        if batch_index in self.batches_indexed or self.status in (DocumentStatus.FAILED, DocumentStatus.DELETED):
            return self
        return self._derived(
            batches_indexed=sorted([*self.batches_indexed, batch_index]),
            batch_chunks={**self.batch_chunks, batch_index: n_chunks},
            chunks_indexed=self.chunks_indexed + n_chunks,
        )


# --------------------------------------------------------------------------- knowledge graph

EntityKey = Annotated[str, Field(min_length=1, max_length=100, description="normalised (case-folded) entity name")]


class GraphEntity(BaseModel):
    """An entity named in a batch: its normalised key, the surface form first seen, and how it was found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: EntityKey
    label: str = Field(min_length=1, max_length=200)
    kind: Literal["name", "acronym", "code", "quoted"]


class GraphRelation(BaseModel):
    """A weighted relation between two entities of the batch (`co_occurs` is undirected: source < target)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: EntityKey
    target: EntityKey
    kind: Literal["co_occurs", "is_a", "uses"]
    weight: FiniteFloat = Field(gt=0)


class ChunkEntities(BaseModel):
    """Which entities one indexed chunk mentions, and the vector-store point that holds the chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: str = Field(min_length=1)
    point_id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    entities: list[EntityKey] = Field(min_length=1)


class GraphFacts(Message):
    """`graph.facts.g<gen>.<tenant>.<doc_id>.<revision>`: the knowledge-graph facts of one durably indexed batch, or, with
    `deleted`, the tombstone of a deleted document (then no chunks, entities or relations).

    Every retriever replica folds the stream into the same graph. Per document only the highest `revision` seen
    counts: facts of an older revision than the document's latest facts or tombstone are ignored, so the order
    in which a replica reads them, and a replay from the start, give the same graph. Revisions are sequences
    of the DOCS stream (a submission's docs.ingest message, a tombstone's docs.delete message), so they compare.
    """

    schema_version: Literal[1] = 1
    doc_id: Identifier
    tenant: Tenant
    generation: int = Field(ge=1)
    revision: int = Field(ge=1)
    batch_index: int = Field(default=0, ge=0)
    deleted: bool = False
    chunks: list[ChunkEntities] = Field(default_factory=list)
    entities: list[GraphEntity] = Field(default_factory=list)
    relations: list[GraphRelation] = Field(default_factory=list)

    def routing(self) -> tuple[str, ...]:
        return (self.tenant, self.doc_id, str(self.revision))

    @model_validator(mode="after")
    def _consistent(self) -> GraphFacts:
        if self.deleted and (self.chunks or self.entities or self.relations):
            raise ValueError("a tombstone (deleted=true) carries no chunks, entities or relations")
        keys = {e.key for e in self.entities}
        if len(keys) != len(self.entities):
            raise ValueError("entity keys must be unique within a batch")
        named = {k for c in self.chunks for k in c.entities} | {k for r in self.relations for k in (r.source, r.target)}
        if named - keys:
            raise ValueError(f"chunks and relations name entities the batch does not declare: {sorted(named - keys)[:5]}")
        return self


# --------------------------------------------------------------------------- query


class Hit(BaseModel):
    """A retrieved chunk with its score; what search returns and what citations point to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: str
    doc_id: Identifier
    filename: str
    page: int = Field(ge=1)
    bbox: BBox | None = None
    locator: str | None = Field(default=None, description=LOCATOR)
    modality: Modality = "text"
    text: str
    score: float
    headings: list[str] = Field(default_factory=list)
    image: ImageRef | None = Field(default=None, description="the image an image hit is about")
    dense_score: float | None = Field(
        default=None,
        description="cosine of the question's and the chunk's text vectors, when the dense search found the chunk "
        "(an absolute signal for the reranker; `score` is the rank-based fused or reranked score)",
    )


MAX_FILTER_DOC_IDS = 100  # a search scoped to more documents than this is better unscoped


class QueryFilters(BaseModel):
    """What a search or a question may retrieve, beyond its tenant (which comes from the caller's identity only).

    Every field is optional; an unset field does not restrict. Lists are sets: duplicates are dropped and the
    order is canonical (sorted), so two filters that mean the same compare (and cache) the same. An empty list
    is rejected rather than read as "match nothing" or "no restriction": it is always a client bug.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    doc_ids: list[Identifier] | None = Field(
        default=None, min_length=1, max_length=MAX_FILTER_DOC_IDS, description="only these documents"
    )
    modalities: list[Modality] | None = Field(
        default=None, min_length=1, description="only chunks of these kinds (text, table, image)"
    )
    # Bounded above: an unbounded integer (a caller sent 4,300 digits) overflowed the vector store's float filter.
    page_from: int | None = Field(
        default=None, ge=1, le=MAX_PAGE, strict=True, description="first page (1-based, inclusive)"
    )
    page_to: int | None = Field(default=None, ge=1, le=MAX_PAGE, strict=True, description="last page (inclusive)")
    collections: list[CollectionName] | None = Field(
        default=None, min_length=1, max_length=MAX_COLLECTIONS,
        description="only documents in at least one of these collections",
    )  # fmt: skip

    @field_validator("doc_ids", "modalities", "collections")
    @classmethod
    def _as_set(cls, values: list[str] | None) -> list[str] | None:
        return as_set(values)

    @model_validator(mode="after")
    def _ordered_pages(self) -> QueryFilters:
        if self.page_from is not None and self.page_to is not None and self.page_from > self.page_to:
            raise ValueError(f"page_from ({self.page_from}) must be <= page_to ({self.page_to})")
        return self

    @property
    def pages(self) -> tuple[int, int] | None:
        """The inclusive page range, open ends filled in; None when no page bound is set."""
        if self.page_from is None and self.page_to is None:
            return None
        return (self.page_from or 1, self.page_to if self.page_to is not None else MAX_PAGE)


class QueryMode(StrEnum):
    ASK = "ask"  # retrieve -> rerank -> generate, events streamed to answer.<tenant>.<request_id>
    SEARCH = "search"  # retrieve -> rerank, ranked hits sent to answer.<tenant>.<request_id>
    # The chunks of one document's page range, in document order, sent by the retriever as `results` (no ranking,
    # no query text): the document page's passages.
    BROWSE = "browse"


class QueryImage(BaseModel):
    """An image to search with (`/v1/search` with an upload): its bytes wait in the query-images Object Store
    bucket (``QUERY_IMAGES_BUCKET``, short TTL) under ``<tenant>/<request_id>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object_name: str = Field(min_length=1, max_length=255)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the bytes: the same image gives the same key")
    size: int = Field(ge=1)


MAX_HISTORY_TURNS = 4  # previous turns of a conversation sent with a question: what a follow-up refers to
MAX_PRIOR_ANSWER_CHARS = 1000


class PriorTurn(BaseModel):
    """A previous turn of the conversation a question belongs to, as the follow-up resolver reads it
    (`search.followup`): the standalone question that turn searched, the start of its answer, and the documents it
    cited, in citation order ("the second one" may name the second)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=1, max_length=4000, description="the standalone question that turn searched")
    answer: str = Field(default="", max_length=MAX_PRIOR_ANSWER_CHARS, description="the start of its answer")
    doc_ids: list[Identifier] = Field(
        default_factory=list, max_length=20, description="the documents its answer cited, in citation order, once each"
    )


class QueryRequest(Message):
    """`query.retrieve.<tenant>`: what the edge API publishes for `/v1/ask` and `/v1/search`.

    There is no reply subject field: answers always go to ``Subjects.answer(tenant, request_id)``, so no
    publisher can make an agent publish anywhere else. v4: a search may carry an `image` instead of (or
    beside) its `query` text; a question (mode ask) always has its text. v5: a question of a conversation carries
    its `history`; the retriever resolves a follow-up against it and searches (and passes on as `query`) the
    standalone question; `filters.collections`, and mode `browse` (one document's page range, no text).
    """

    schema_version: Literal[4, 5] = 5  # type: ignore[assignment]  (v4 stays valid)
    request_id: Identifier
    tenant: Tenant
    query: str | None = Field(default=None, min_length=1, max_length=4000)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: QueryMode = QueryMode.ASK
    filters: QueryFilters = Field(default_factory=QueryFilters, description="restricts what may be retrieved")
    image: QueryImage | None = Field(default=None, description="search with this image (mode search only)")
    generation: int | None = Field(
        default=None, ge=1, description="search this index generation's collection instead of the serving alias "
        "(evaluations of a building generation; only the agents' evaluation runner sets it)",
    )  # fmt: skip
    history: list[PriorTurn] = Field(
        default_factory=list, max_length=MAX_HISTORY_TURNS,
        description="the previous turns of the question's conversation, oldest first (mode ask only)",
    )  # fmt: skip

    def routing(self) -> tuple[str, ...]:
        return (self.tenant,)

    @field_validator("query")
    @classmethod
    def _a_real_question(cls, query: str | None) -> str | None:
        if query is not None and ("\x00" in query or not any(ch.isalnum() for ch in query)):
            raise ValueError("query must contain a letter or digit and no NUL character")
        return query

    @model_validator(mode="after")
    def _text_or_image(self) -> QueryRequest:
        if self.mode is QueryMode.BROWSE:
            f = self.filters
            if self.image is not None or f.doc_ids is None or len(f.doc_ids) != 1 or f.pages is None:
                raise ValueError("a browse names one document (filters.doc_ids) and a page range, and no image")
            return self
        if self.query is None and self.image is None:
            raise ValueError("a request needs query text, an image, or both")
        if self.image is not None and self.mode is not QueryMode.SEARCH:
            raise ValueError("only a search (mode 'search') can carry an image")
        if self.history and self.mode is not QueryMode.ASK:
            raise ValueError("only a question (mode 'ask') can carry a conversation's history")
        if self.image is not None and self.image.object_name != f"{self.tenant}/{self.request_id}":
            raise ValueError("the query image must be stored as '<tenant>/<request_id>' (the request's own)")
        return self


class RerankRequest(Message):
    """`query.rerank`: the retriever's candidates (more than top_k) for the reranker to order."""

    schema_version: Literal[1, 2] = 2  # v2: hits may carry a `locator` (v1 messages, without it, still read)
    request: QueryRequest
    candidates: list[Hit]
    embedding_model: str | None = Field(
        default=None,
        description="the text embedding model of the generation searched (its cosines' calibration); None = the "
        "process default",
    )
    rewrites: list[Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=list,
        max_length=1,
        description="a search query the retriever searched beside the question (an LLM's, in the documents' words: "
        "search.followup.search_query_with_llm); the reranker keeps its best candidate",
    )

    def routing(self) -> tuple[str, ...]:
        return (self.request.tenant,)


class GenerateRequest(Message):
    """`query.generate`: the reranked hits, best first, cut to top_k, and the reranker's abstention decision.

    v2: `abstain` carries the decision (`search.abstention.decide`, made once by the reranker with its settings)
    instead of v1's `paraphrase` cosine, from which the generator decided again with its own threshold."""

    schema_version: Literal[2, 3] = 3  # v3: hits may carry a `locator` (v2 messages, without it, still read)
    request: QueryRequest
    hits: list[Hit]
    abstain: bool = Field(
        description="the reranker decided that nothing in `hits` answers the question: the generator says so "
        "(`done.abstained`) without running an answerer; always true when `hits` is empty",
    )

    def routing(self) -> tuple[str, ...]:
        return (self.request.tenant,)

    @model_validator(mode="after")
    def _no_hits_abstain(self) -> GenerateRequest:
        if not self.hits and not self.abstain:
            raise ValueError("abstain must be true when there are no hits (nothing can answer the question)")
        return self


# --------------------------------------------------------------------------- answer events (core NATS)


class _AnswerEventBase(Message):
    """Numbered by `bus.answers` only: seq 0 is the retrieval (or results) event, the generation's events
    follow from 1. The same request retried produces the same numbers, so the edge API drops repeats."""

    request_id: Identifier
    seq: int = Field(ge=0, description="per-request sequence number; lets the edge API order and dedupe")
    attempt: int = Field(
        default=1,
        ge=1,
        description="delivery of the generation that emitted it (a redelivered generate message numbers from 1 "
        "again; the edge API replaces an earlier attempt's events with a later one's)",
    )


class RetrievalEvent(_AnswerEventBase):
    """Seq 0 of an ask: the sources the answer is built from, i.e. the reranked hits (best first, cut to top_k)
    that the reranker hands to the generator, sent by the reranker. The name (and the SSE event `retrieval`)
    predates the reranker and is public API (the CLI, the web UI and clients read it), so it stays.
    v2: `searched`, the question that was searched (a conversation's follow-up, resolved)."""

    schema_version: Literal[1, 2, 3] = 3  # type: ignore[assignment]  # v2: searched; v3: hits may carry a `locator`
    event: Literal["retrieval"] = "retrieval"
    hits: list[Hit]
    searched: str | None = Field(
        default=None,
        description="the standalone question that was searched: the question itself, or a follow-up of a "
        "conversation resolved against its previous turns (none for an image-only search)",
    )


class TokenEvent(_AnswerEventBase):
    event: Literal["token"] = "token"
    text: str


class CitationEvent(_AnswerEventBase):
    event: Literal["citation"] = "citation"
    n: int = Field(ge=1, description="the number used in the answer text, e.g. [1]")
    doc_id: Identifier
    filename: str
    schema_version: Literal[1, 2] = 2  # v2: `locator`
    page: int = Field(ge=1)
    bbox: BBox | None
    locator: str | None = Field(default=None, description=LOCATOR)
    text: str
    image: ImageRef | None = Field(default=None, description="for an image hit: the image the citation points at")


class ResultsEvent(_AnswerEventBase):
    """The final ranked hits of a `search` request."""

    schema_version: Literal[1, 2] = 2  # v2: hits may carry a `locator`
    event: Literal["results"] = "results"
    hits: list[Hit]


class DoneEvent(_AnswerEventBase):
    event: Literal["done"] = "done"
    answerer: str = Field(description="which generator produced the answer, e.g. 'extractive'")
    abstained: bool = Field(
        default=False,
        description="true when nothing in the documents answered the question and the answer says so",
    )


class ErrorEvent(_AnswerEventBase):
    """Ends the stream as soon as it arrives, whatever is still missing (an agent that gives up on a request
    cannot know how many events were sent before it): its `seq` is None."""

    event: Literal["error"] = "error"
    seq: None = None  # type: ignore[assignment]
    code: str
    message: str


class ResetEvent(_AnswerEventBase):
    """Discard the answer text streamed so far (every `token` before this event): the model that was answering
    failed mid-answer, and a new attempt (the next provider, or the offline answerer) follows from scratch.
    Citations are only sent once an answer's text is complete, so a reset never has any to take back."""

    event: Literal["reset"] = "reset"
    reason: str = Field(description="why the text so far was discarded, for logs and curious clients")


AnswerEvent = Annotated[
    Union[RetrievalEvent, TokenEvent, CitationEvent, ResultsEvent, DoneEvent, ErrorEvent, ResetEvent],
    Field(discriminator="event"),
]
answer_event_adapter: TypeAdapter[AnswerEvent] = TypeAdapter(AnswerEvent)


# --------------------------------------------------------------------------- failures


class DeadLetter(Message):
    """`deadletter.<consumer>`: a message an agent gave up on, with why and where to find the original."""

    consumer: str
    subject: str
    stream: str | None
    stream_seq: int | None
    num_delivered: int
    reason: str
    error_type: str
    payload_excerpt: str = Field(description="first 2 KiB of the original payload, decoded leniently")
    agent: str
    failed_at: datetime = Field(default_factory=utcnow)


__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_CONTENT_TYPES",
    "AnswerEvent",
    "BBox",
    "Chunk",
    "ChunksEmbedded",
    "CollectionName",
    "ChunksParsed",
    "CitationEvent",
    "DeadLetter",
    "DocumentDeleted",
    "DocumentProgress",
    "DocumentStatus",
    "DocumentSubmitted",
    "DoneEvent",
    "EmbeddedChunk",
    "ErrorEvent",
    "GenerateRequest",
    "Hit",
    "ImageRef",
    "OcrRequest",
    "PriorTurn",
    "TableData",
    "Message",
    "Modality",
    "QueryFilters",
    "QueryImage",
    "QueryMode",
    "QueryRequest",
    "RerankRequest",
    "ResetEvent",
    "ResultsEvent",
    "SparseTerms",
    "RetrievalEvent",
    "TokenEvent",
    "answer_event_adapter",
    "utcnow",
]
