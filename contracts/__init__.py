"""mmrag contracts: the messages, subjects and JetStream topology shared by every process.

Imports nothing else of the project; the bus package, `agents` and `edge_api` depend on it.
"""

from contracts.messages import *  # noqa: F403
from contracts.messages import __all__ as _messages_all  # type: ignore[attr-defined]
from contracts.topology import (
    HEADER_MSG_ID,
    HEADER_TRACEPARENT,
    LANES,
    PROGRESS_BUCKET,
    QUERY_CONSUMERS,
    REQUIRED_STREAMS,
    STREAMS,
    SUBJECT_MODELS,
    LEGACY_UPLOADS_BUCKET,
    ConsumerDef,
    IndexGeneration,
    StreamDef,
    Subjects,
    all_consumers,
    ingest_consumers,
    object_name,
    uploads_bucket,
    progress_key,
)

__all__ = [
    *_messages_all,
    "HEADER_MSG_ID",
    "HEADER_TRACEPARENT",
    "LANES",
    "PROGRESS_BUCKET",
    "QUERY_CONSUMERS",
    "REQUIRED_STREAMS",
    "STREAMS",
    "SUBJECT_MODELS",
    "LEGACY_UPLOADS_BUCKET",
    "ConsumerDef",
    "IndexGeneration",
    "StreamDef",
    "Subjects",
    "all_consumers",
    "ingest_consumers",
    "object_name",
    "uploads_bucket",
    "progress_key",
]
