"""Subjects, streams, durable consumers and buckets: the JetStream topology in one place.

Plain dataclasses, no NATS import: ``agents.runtime.topology`` turns these into server calls, and the
edge API and external publishers read the names from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from contracts import messages as m


class Subjects:
    DOCS_INGEST = "docs.ingest"
    DOCS_INDEXED = "docs.indexed"
    CHUNKS_PARSED_TEXT = "chunks.parsed.text"
    CHUNKS_EMBEDDED = "chunks.embedded"
    QUERY_RETRIEVE = "query.retrieve"
    QUERY_RERANK = "query.rerank"
    QUERY_GENERATE = "query.generate"
    ANSWER_PREFIX = "answer"
    DEADLETTER_PREFIX = "deadletter"

    @staticmethod
    def answer(request_id: str) -> str:
        """Core NATS subject that carries the answer events of one request."""
        return f"{Subjects.ANSWER_PREFIX}.{request_id}"

    @staticmethod
    def deadletter(consumer: str) -> str:
        return f"{Subjects.DEADLETTER_PREFIX}.{consumer}"


# Which model is the payload of which subject. Answer subjects are core NATS, one per request.
SUBJECT_MODELS: dict[str, type[BaseModel]] = {
    Subjects.DOCS_INGEST: m.DocumentSubmitted,
    Subjects.DOCS_INDEXED: m.DocumentProgress,
    Subjects.CHUNKS_PARSED_TEXT: m.ChunksParsed,
    Subjects.CHUNKS_EMBEDDED: m.ChunksEmbedded,
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


@dataclass(frozen=True)
class ConsumerDef:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 60
    max_deliver: int = 5
    max_ack_pending: int = 1000
    # NAK delays grow from backoff_base_s, doubling per delivery, capped at backoff_max_s.
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    description: str = ""


# Ingest streams are the source of truth and are replayable (file storage, no max age).
DOCS_STREAM = StreamDef(
    name="DOCS",
    subjects=("docs.>",),
    storage="file",
    description="submitted documents (replayable source of truth) and indexing progress events",
)
CHUNKS_STREAM = StreamDef(
    name="CHUNKS",
    subjects=("chunks.>",),
    storage="file",
    description="parsed and embedded chunks (replay from here re-embeds or re-indexes)",
)
QUERIES_STREAM = StreamDef(
    name="QUERIES",
    subjects=("query.>",),
    storage="memory",
    max_age_s=300,
    duplicate_window_s=60,
    description="retrieve/rerank/generate requests; short-lived",
)
DEADLETTER_STREAM = StreamDef(
    name="DEADLETTER",
    subjects=("deadletter.>",),
    storage="file",
    description="messages an agent gave up on, with the reason",
)
STREAMS: tuple[StreamDef, ...] = (DOCS_STREAM, CHUNKS_STREAM, QUERIES_STREAM, DEADLETTER_STREAM)


@dataclass(frozen=True)
class AgentConsumers:
    """The durable pull consumer of each agent kind; N replicas of an agent share it."""

    parser: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="DOCS", durable="parser", filter_subject=Subjects.DOCS_INGEST, ack_wait_s=30, max_ack_pending=64
        )
    )
    embedder: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="CHUNKS", durable="embedder-text", filter_subject=Subjects.CHUNKS_PARSED_TEXT, ack_wait_s=30
        )
    )
    indexer: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="CHUNKS", durable="indexer", filter_subject=Subjects.CHUNKS_EMBEDDED, ack_wait_s=30
        )
    )
    # Query consumers: a user is waiting, so few redeliveries and short backoff.
    retriever: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="QUERIES", durable="retriever", filter_subject=Subjects.QUERY_RETRIEVE,
            ack_wait_s=30, max_deliver=2, backoff_base_s=0.2, backoff_max_s=1,
        )
    )  # fmt: skip
    reranker: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="QUERIES", durable="reranker", filter_subject=Subjects.QUERY_RERANK,
            ack_wait_s=30, max_deliver=2, backoff_base_s=0.2, backoff_max_s=1,
        )
    )  # fmt: skip
    generator: ConsumerDef = field(
        default_factory=lambda: ConsumerDef(
            stream="QUERIES", durable="generator", filter_subject=Subjects.QUERY_GENERATE,
            ack_wait_s=60, max_deliver=2, backoff_base_s=0.2, backoff_max_s=1,
        )
    )  # fmt: skip

    def all(self) -> dict[str, ConsumerDef]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


CONSUMERS = AgentConsumers()

# Raw uploads (Object Store) and per-document progress (KV).
UPLOADS_BUCKET = "mmrag-uploads"
PROGRESS_BUCKET = "mmrag-progress"

# JetStream streams that must exist before the system is ready (buckets are streams too).
REQUIRED_STREAMS: tuple[str, ...] = (
    *(s.name for s in STREAMS),
    f"OBJ_{UPLOADS_BUCKET}",
    f"KV_{PROGRESS_BUCKET}",
)

# Headers carried on JetStream messages.
HEADER_MSG_ID = "Nats-Msg-Id"
