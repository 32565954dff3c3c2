"""mmrag contracts: the messages, subjects and JetStream topology shared by every process.

Imports nothing else of the project; `agents` and `edge_api` both depend on it.
"""

from contracts.messages import *  # noqa: F403
from contracts.messages import __all__ as _messages_all  # type: ignore[attr-defined]
from contracts.topology import (
    CONSUMERS,
    HEADER_MSG_ID,
    PROGRESS_BUCKET,
    REQUIRED_STREAMS,
    STREAMS,
    SUBJECT_MODELS,
    UPLOADS_BUCKET,
    ConsumerDef,
    StreamDef,
    Subjects,
)

__all__ = [
    *_messages_all,
    "CONSUMERS",
    "HEADER_MSG_ID",
    "PROGRESS_BUCKET",
    "REQUIRED_STREAMS",
    "STREAMS",
    "SUBJECT_MODELS",
    "UPLOADS_BUCKET",
    "ConsumerDef",
    "StreamDef",
    "Subjects",
]
