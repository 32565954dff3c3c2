"""LLM answering: an OpenAI-compatible streaming client, the ordered provider chain, the prompt and citations.

The generator (`agents.generator`) drives it; the offline extractive answerer stays the chain's last link.
"""

from models.llm.chain import FALLBACKS, Completed, Failed, ProviderChain, Text
from models.llm.client import ProviderError, stream_chat
from models.llm.prompt import (
    MAX_PICTURE_BYTES,
    MAX_PICTURES,
    SYSTEM_PROMPT,
    CitationTracker,
    Picture,
    build_messages,
    format_source,
)

__all__ = [
    "FALLBACKS",
    "MAX_PICTURES",
    "MAX_PICTURE_BYTES",
    "SYSTEM_PROMPT",
    "CitationTracker",
    "Completed",
    "Failed",
    "Picture",
    "ProviderChain",
    "ProviderError",
    "Text",
    "build_messages",
    "format_source",
    "stream_chat",
]
