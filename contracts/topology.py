"""Subjects, streams, durable consumers and buckets: the JetStream topology in one place.

Plain dataclasses, no NATS import: ``bus.topology`` turns these into server calls, and the edge API and
external publishers read the names from here.

Subject layout (every subject that carries tenant data names its tenant, so NATS permissions, purges and
replays can be scoped to one tenant; ingest subjects also name their index generation):

| subject | payload |
|---|---|
| ``docs.ingest.<tenant>.<doc_id>`` | `DocumentSubmitted` (replayable source of truth) |
| ``docs.delete.<tenant>.<doc_id>`` | `DocumentDeleted` (a tombstone: replays see it too) |
| ``docs.indexed.g<gen>.<tenant>.<doc_id>`` | `DocumentProgress` when a document is fully indexed (the last one kept) |
| ``chunks.parsed.g<gen>.<modality>.<lane>.<tenant>`` | `ChunksParsed` |
| ``chunks.ocr.g<gen>.<lane>.<tenant>`` | `OcrRequest` (a scanned page or an image to read) |
| ``chunks.embedded.g<gen>.<tenant>`` | `ChunksEmbedded` |
| ``graph.facts.g<gen>.<tenant>.<doc_id>.<revision>`` | `GraphFacts` (knowledge-graph facts of an indexed batch, or a tombstone) |
| ``query.retrieve.<tenant>`` / ``query.rerank.<tenant>`` / ``query.generate.<tenant>`` | query requests |
| ``answer.<tenant>.<request_id>`` (core NATS) | answer events; a function of the request, never a free field |
| ``deadletter.<durable>.<tenant>.<doc_id>`` | `DeadLetter` (``_`` for a tenant or document a poison message hides) |

A document's id is part of every subject that keeps its data after it is handled (ingest, indexed, dead letters,
graph facts), so a delete purges them by subject; CHUNKS messages are deleted once handled
(`StreamDef.consumed_once`). A document's id in its ingest subject also means "was this submission stored?" is one ``get_last_msg``
lookup (the edge API uses it to answer truthfully when a publish acknowledgement is lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from contracts import messages as m

# Tokens that end up in subjects and KV keys: no dots, no wildcards, no whitespace.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")

# Ingest lanes: documents with few chunks take the interactive lane, big ones the bulk lane, so a small
# upload is never queued behind the thousand batches of a large one (the embedder serves the interactive
# lane first).
Lane = Literal["interactive", "bulk"]
LANES: tuple[Lane, ...] = ("interactive", "bulk")


def check_token(value: str, what: str) -> str:
    if not TOKEN.match(value):
        raise ValueError(f"{what} {value!r} is not a valid subject token: use 1-64 of [A-Za-z0-9_-]")
    return value


@dataclass(frozen=True, order=True)
class IndexGeneration:
    """One build of the index: its collection, its ingest consumers and its progress keys.

    A re-index builds generation N+1 beside the serving generation N (replaying the ingest streams into
    new durable consumers and a new collection) and then points the collection alias at it.
    """

    number: int

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"index generation must be >= 1, got {self.number}")

    @property
    def token(self) -> str:
        return f"g{self.number}"

    def collection(self, alias: str) -> str:
        """The vector collection of this generation; `alias` (e.g. "mmrag") points at the serving one."""
        return f"{alias}-{self.token}"

    def durable(self, base: str) -> str:
        return f"{base}-{self.token}"


def generation_of(alias: str, collection: str) -> int | None:
    """The generation number of `collection` (``<alias>-g<N>``, `IndexGeneration.collection`); None if it is not
    one of `alias`'s generations."""
    match = re.fullmatch(re.escape(alias) + r"-g([0-9]+)", collection)
    return int(match.group(1)) if match else None


def durable_role(durable: str) -> str:
    """A durable's name without its generation suffix (``embedder-text-bulk-g3`` -> ``embedder-text-bulk``):
    what an autoscaler follows across re-indexes. Names without a suffix (the query durables) are returned as is."""
    return re.sub(r"-g[0-9]+$", "", durable)


class Subjects:
    DOCS_INGEST = "docs.ingest"
    DOCS_DELETE = "docs.delete"
    DOCS_INDEXED = "docs.indexed"
    CHUNKS_PARSED = "chunks.parsed"
    CHUNKS_OCR = "chunks.ocr"
    CHUNKS_EMBEDDED = "chunks.embedded"
    GRAPH_FACTS = "graph.facts"
    QUERY_RETRIEVE = "query.retrieve"
    QUERY_RERANK = "query.rerank"
    QUERY_GENERATE = "query.generate"
    ANSWER_PREFIX = "answer"
    DEADLETTER_PREFIX = "deadletter"

    # `"*"` in place of a token gives the wildcard pattern a consumer filters on.
    @staticmethod
    def ingest(tenant: str, doc_id: str) -> str:
        return f"{Subjects.DOCS_INGEST}.{tenant}.{doc_id}"

    @staticmethod
    def delete(tenant: str, doc_id: str) -> str:
        return f"{Subjects.DOCS_DELETE}.{tenant}.{doc_id}"

    @staticmethod
    def indexed(gen: IndexGeneration, tenant: str, doc_id: str = "*") -> str:
        """One document's completion events; the default ``*`` matches every document of the tenant."""
        return f"{Subjects.DOCS_INDEXED}.{gen.token}.{tenant}.{doc_id}"

    @staticmethod
    def parsed(gen: IndexGeneration, modality: str, lane: str, tenant: str) -> str:
        return f"{Subjects.CHUNKS_PARSED}.{gen.token}.{modality}.{lane}.{tenant}"

    @staticmethod
    def ocr(gen: IndexGeneration, lane: str, tenant: str) -> str:
        return f"{Subjects.CHUNKS_OCR}.{gen.token}.{lane}.{tenant}"

    @staticmethod
    def embedded(gen: IndexGeneration, tenant: str) -> str:
        return f"{Subjects.CHUNKS_EMBEDDED}.{gen.token}.{tenant}"

    @staticmethod
    def graph_facts(gen: IndexGeneration, tenant: str, doc_id: str, revision: int | str) -> str:
        return f"{Subjects.GRAPH_FACTS}.{gen.token}.{tenant}.{doc_id}.{revision}"

    @staticmethod
    def query(stage: str, tenant: str) -> str:
        return f"{stage}.{tenant}"

    @staticmethod
    def answer(tenant: str, request_id: str) -> str:
        """Core NATS subject that carries the answer events of one request."""
        return f"{Subjects.ANSWER_PREFIX}.{tenant}.{request_id}"

    @staticmethod
    def deadletter(durable: str, tenant: str, doc_id: str) -> str:
        """A dead letter of `durable` about a document (``_`` for what a malformed message does not say)."""
        return f"{Subjects.DEADLETTER_PREFIX}.{durable}.{tenant}.{doc_id}"

    @staticmethod
    def deadletters(durable: str) -> str:
        """Every dead letter of `durable` (a subscription or permission pattern)."""
        return f"{Subjects.DEADLETTER_PREFIX}.{durable}.>"

    @staticmethod
    def max_deliveries_advisory(stream: str, durable: str) -> str:
        """JetStream's advisory that a message of `stream` reached `durable`'s max_deliver without being settled
        (core NATS, sent by the server; JSON with ``stream_seq`` and ``deliveries``)."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"


# Which model is the payload of which subject family (the subject's first two tokens).
SUBJECT_MODELS: dict[str, type[BaseModel]] = {
    Subjects.DOCS_INGEST: m.DocumentSubmitted,
    Subjects.DOCS_DELETE: m.DocumentDeleted,
    Subjects.DOCS_INDEXED: m.DocumentProgress,
    Subjects.CHUNKS_PARSED: m.ChunksParsed,
    Subjects.CHUNKS_OCR: m.OcrRequest,
    Subjects.CHUNKS_EMBEDDED: m.ChunksEmbedded,
    Subjects.GRAPH_FACTS: m.GraphFacts,
    Subjects.QUERY_RETRIEVE: m.QueryRequest,
    Subjects.QUERY_RERANK: m.RerankRequest,
    Subjects.QUERY_GENERATE: m.GenerateRequest,
}


@dataclass(frozen=True)
class StreamDef:
    name: str
    subjects: tuple[str, ...]
    storage: Literal["file", "memory"]
    max_age_s: float = 0  # 0 = keep forever
    duplicate_window_s: float = 120
    description: str = ""
    max_bytes: int = 0  # 0 = no size bound (the replayable sources of truth: an acknowledged document is kept)
    # When a bounded stream is full: "old" drops its oldest messages, "new" refuses the publish (the caller sees it).
    discard: Literal["old", "new"] = "old"
    # Each subject has exactly one consumer, and a message is deleted once that consumer settled it (acked, or
    # dead-lettered and termed): the stream holds only work not done yet, so a document's text and vectors do not
    # outlive their processing. (Not JetStream's work-queue or interest retention: the first cannot be set on a
    # stream made with limits, and under the second a publish that precedes its consumer's creation, e.g. a new
    # generation's parser starting before its embedder, would be dropped: a lost document.)
    consumed_once: bool = False


@dataclass(frozen=True)
class ConsumerDef:
    """A durable pull consumer. Replicas of an agent share it.

    Redelivery is the server's job: `backoff_s` is JetStream's consumer ``backoff`` (delivery n waits
    ``backoff_s[n-1]`` for an ack; it replaces ack_wait). A failed message is simply not acked, and the server
    redelivers it on that schedule; a handler that works longer sends in-progress acks more often than
    ``backoff_s[0]``. Note that a NAK without delay would redeliver at once, ignoring the backoff (checked
    against nats-server 2.15), so the worker never sends one.
    """

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 5
    max_ack_pending: int = 1000
    backoff_s: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0)
    description: str = ""
    # The longest one handling may take; past it the worker cancels it and gives the message up (dead letter, the
    # agent's give-up hook tells whoever waits). A handler keeps its message alive with in-progress acks, so
    # without a budget one that never returns holds its worker's slot for good. None: no budget (ingest work,
    # bounded by its own limits: pages, a time budget per page, max_deliver).
    handler_budget_s: float | None = None

    def __post_init__(self) -> None:
        # JetStream rejects a backoff list longer than max_deliver; equal lengths waste nothing.
        if not self.backoff_s or len(self.backoff_s) > self.max_deliver:
            raise ValueError(f"{self.durable}: need 1..max_deliver backoff steps, got {self.backoff_s}")

    @property
    def heartbeat_s(self) -> float:
        """How often in-progress acks are sent while a handler works: well inside the shortest ack wait."""
        return min(self.backoff_s) / 3


# Ingest streams are the source of truth and are replayable (file storage, no max age).
DOCS_STREAM = StreamDef(
    name="DOCS",
    subjects=("docs.>",),
    storage="file",
    description="submitted and deleted documents (replayable source of truth) and indexing progress events",
)
CHUNKS_STREAM = StreamDef(
    name="CHUNKS",
    subjects=("chunks.>",),
    storage="file",
    consumed_once=True,
    description="parsed chunks, OCR requests and embedded chunks waiting for their one consumer (deleted once handled)",
)
QUERIES_STREAM = StreamDef(
    name="QUERIES",
    subjects=("query.>",),
    storage="memory",
    max_age_s=300,
    duplicate_window_s=60,
    # Callers fill it (about 40 KB an ask at top_k 50): full, a new query is refused (the edge answers 503) rather
    # than an in-flight one dropped.
    max_bytes=256 * 1024 * 1024,
    discard="new",
    description="retrieve/rerank/generate requests; short-lived",
)
DEADLETTER_STREAM = StreamDef(
    name="DEADLETTER",
    subjects=("deadletter.>",),
    storage="file",
    # Any caller can make a message fail (malformed input is dead-lettered): bounded, the oldest go first. A dead
    # letter is a diagnosis; the document it concerns is marked failed in progress, which does not expire.
    max_age_s=30 * 24 * 3600,
    max_bytes=512 * 1024 * 1024,
    discard="old",
    description="messages an agent gave up on, with the reason (30 days, 512 MiB, oldest dropped first)",
)
# Knowledge-graph facts: every retriever replica replays this stream from the start into its in-memory graph,
# so it is kept (file storage, no max age). When a revision of a document is fully indexed, or the document is
# deleted, the subjects of its older revisions are purged: the stream holds each document's current facts (or its
# tombstone), and a replay never brings old facts back.
GRAPH_STREAM = StreamDef(
    name="GRAPH",
    subjects=("graph.>",),
    storage="file",
    description="knowledge-graph facts of indexed batches and tombstones of deleted documents (retrievers replay it)",
)
STREAMS: tuple[StreamDef, ...] = (DOCS_STREAM, CHUNKS_STREAM, QUERIES_STREAM, DEADLETTER_STREAM, GRAPH_STREAM)
STREAMS_BY_NAME: dict[str, StreamDef] = {s.name: s for s in STREAMS}

# Query consumers: a user is waiting, so one quick redelivery and no more; and a budget per handling well past the
# edge API's wait for the next event (MMRAG_QUERY_TIMEOUT_S, 30 s): retrieval and reranking take milliseconds to
# seconds, an LLM's streamed answer minutes at most.
_QUERY_BACKOFF = (1.0, 2.0)
_QUERY_BUDGET_S = 60.0
_GENERATE_BUDGET_S = 300.0


def ingest_consumers(gen: IndexGeneration) -> dict[str, ConsumerDef]:
    """The durable consumers of one index generation, by role. Each generation has its own, so a replay into
    generation N+1 runs beside generation N without sharing a cursor."""
    consumers = {
        "parser": ConsumerDef(
            stream="DOCS", durable=gen.durable("parser"), filter_subject=Subjects.ingest("*", "*"), max_ack_pending=64
        ),
        "deleter": ConsumerDef(stream="DOCS", durable=gen.durable("deleter"), filter_subject=Subjects.delete("*", "*")),
        "indexer": ConsumerDef(stream="CHUNKS", durable=gen.durable("indexer"), filter_subject=Subjects.embedded(gen, "*")),
    }
    for lane in LANES:
        consumers[f"embedder-text-{lane}"] = ConsumerDef(
            stream="CHUNKS",
            durable=gen.durable(f"embedder-text-{lane}"),
            filter_subject=Subjects.parsed(gen, "text", lane, "*"),
        )
        # OCR takes seconds a page: fewer in flight per replica, and a longer first ack wait.
        consumers[f"ocr-{lane}"] = ConsumerDef(
            stream="CHUNKS",
            durable=gen.durable(f"ocr-{lane}"),
            filter_subject=Subjects.ocr(gen, lane, "*"),
            max_ack_pending=64,
            backoff_s=(15.0, 30.0, 60.0, 60.0),
        )
    return consumers


QUERY_CONSUMERS: dict[str, ConsumerDef] = {
    "retriever": ConsumerDef(
        stream="QUERIES", durable="retriever", filter_subject=Subjects.query(Subjects.QUERY_RETRIEVE, "*"),
        max_deliver=2, backoff_s=_QUERY_BACKOFF, handler_budget_s=_QUERY_BUDGET_S,
    ),
    "reranker": ConsumerDef(
        stream="QUERIES", durable="reranker", filter_subject=Subjects.query(Subjects.QUERY_RERANK, "*"),
        max_deliver=2, backoff_s=_QUERY_BACKOFF, handler_budget_s=_QUERY_BUDGET_S,
    ),
    "generator": ConsumerDef(
        stream="QUERIES", durable="generator", filter_subject=Subjects.query(Subjects.QUERY_GENERATE, "*"),
        max_deliver=2, backoff_s=_QUERY_BACKOFF, handler_budget_s=_GENERATE_BUDGET_S,
    ),
}  # fmt: skip


def all_consumers(generations: tuple[IndexGeneration, ...]) -> list[ConsumerDef]:
    return [c for gen in generations for c in ingest_consumers(gen).values()] + list(QUERY_CONSUMERS.values())


# Raw uploads (Object Store): one bucket per tenant (`uploads_bucket`); per-document progress (KV).
# `LEGACY_UPLOADS_BUCKET` is the one bucket every tenant shared before (decision 81): `bus.migrate.migrate_uploads`
# moves its objects into their tenants' buckets and then removes it.
LEGACY_UPLOADS_BUCKET = "mmrag-uploads"
PROGRESS_BUCKET = "mmrag-progress"
# Which index generation serves and how each is built (`contracts.generations`).
INDEX_BUCKET = "mmrag-index"
# Images uploaded to search with (`QueryImage`): kept only while the search runs (the edge API deletes each
# when its request ends), and never longer than QUERY_IMAGES_TTL_S whatever happens to the edge API.
QUERY_IMAGES_BUCKET = "mmrag-query-images"
QUERY_IMAGES_TTL_S = 600.0
# Conversations (`contracts.conversations`): a conversation nobody wrote to for 90 days is dropped; the bucket holds
# at most 1 GiB (a write beyond is refused: the edge API answers 507 and says to delete conversations).
CONVERSATIONS_BUCKET = "mmrag-conversations"
CONVERSATIONS_TTL_S = 90 * 24 * 3600.0
CONVERSATIONS_MAX_BYTES = 1024 * 1024 * 1024
# Evaluation reports and their job markers (`contracts.evaluation`).
EVALUATIONS_BUCKET = "mmrag-evaluations"


def uploads_bucket(tenant: str) -> str:
    """The Object Store bucket that holds tenant `tenant`'s objects (uploads, page rasters, extracted images):
    ``mmrag-uploads-<tenant>``. The one place that says so: every reader and writer goes through it.

    A tenant id is a subject token (1-64 of ``[A-Za-z0-9_-]``), which is also what a bucket name may hold, so the
    tenant id is used as it is (no mapping). One tenant per bucket is what lets a tenant's NATS credential be
    allowed its own bucket's subjects (``$O.mmrag-uploads-<tenant>.>``) and nothing of another tenant's.
    """
    return f"{LEGACY_UPLOADS_BUCKET}-{check_token(tenant, 'tenant')}"


def object_name(tenant: str, doc_id: str) -> str:
    """Where a document's bytes live in its tenant's uploads bucket (`uploads_bucket`); always under its tenant."""
    return f"{check_token(tenant, 'tenant')}/{check_token(doc_id, 'doc_id')}"


def page_raster_object(tenant: str, doc_id: str, page: int) -> str:
    """A scanned page's picture, stored by the parser for the OCR agent."""
    return f"{object_name(tenant, doc_id)}/pages/{page}.png"


def image_object(tenant: str, doc_id: str, digest: str) -> str:
    """An image extracted from a document (or an image file's own picture, digest ``original``)."""
    return f"{object_name(tenant, doc_id)}/images/{digest}"


def stored_objects_object(tenant: str, doc_id: str) -> str:
    """The list (JSON) of every object the parser stored beside a document's upload, of all its revisions: what a
    delete removes. Written before the objects it names, so none is ever unlisted."""
    return f"{object_name(tenant, doc_id)}/stored.json"


def progress_key(gen: IndexGeneration, tenant: str, doc_id: str) -> str:
    """The progress KV key of a document in one index generation."""
    return f"{gen.token}.{check_token(tenant, 'tenant')}.{check_token(doc_id, 'doc_id')}"


def bytes_key(tenant: str, sha256: str) -> str:
    """The progress-bucket key naming the tenant's document that holds these bytes (`sha.<tenant>.<sha256>`,
    written by the edge API at upload): a hint the duplicate check verifies against that document's record."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a hex SHA-256: {sha256[:80]!r}")
    return f"sha.{check_token(tenant, 'tenant')}.{sha256}"


# JetStream streams that must exist before the system is ready (buckets are streams too).
REQUIRED_STREAMS: tuple[str, ...] = (
    *(s.name for s in STREAMS),
    f"KV_{PROGRESS_BUCKET}",
    f"KV_{INDEX_BUCKET}",
    f"OBJ_{QUERY_IMAGES_BUCKET}",
    f"KV_{CONVERSATIONS_BUCKET}",
    f"KV_{EVALUATIONS_BUCKET}",
)

# Headers carried on JetStream messages.
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_TRACEPARENT = "traceparent"

# NATS' default max payload; the server may be configured higher, and the bus checks the real one.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
