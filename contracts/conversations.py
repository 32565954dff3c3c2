"""Conversations as records: a user's questions and answers, kept per tenant and per API key.

They live in the KV bucket `contracts.topology.CONVERSATIONS_BUCKET` (``mmrag-conversations``), two keys a
conversation, both named by the tenant and the owner (the API key's id; ``local`` with auth off):

| key | value |
|---|---|
| ``<tenant>.<owner>.<id>`` | `ConversationMeta`: title, times, turn count (what a list reads) |
| ``<tenant>.<owner>.<id>.turns`` | `ConversationTurns`: the turns, oldest first |

A list watches ``<tenant>.<owner>.*`` (one token: the metas only, never the turns). Every growth is bounded: the
turns of a conversation (`MMRAG_CONVERSATION_MAX_TURNS`), the conversations of an owner
(`MMRAG_CONVERSATIONS_PER_KEY`), the text kept of each turn (the limits below), the bucket's bytes and the age of
a conversation nobody wrote to (`CONVERSATIONS_TTL_S`, `CONVERSATIONS_MAX_BYTES`). Deleting a conversation purges
both keys: no revision of it is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import BBox, Identifier, utcnow

MAX_TITLE_CHARS = 200
MAX_QUESTION_CHARS = 4000
MAX_ANSWER_CHARS = 8000  # the text kept of an answer (longer ones are cut, with "…")
MAX_TURN_CITATIONS = 10
MAX_CITATION_TEXT_CHARS = 300
MAX_FEEDBACK_COMMENT_CHARS = 1000
OWNER_LOCAL = "local"  # the owner of every conversation when auth is off (one user: this machine's)


def meta_key(tenant: str, owner: str, conversation_id: str) -> str:
    return f"{tenant}.{owner}.{conversation_id}"


def turns_key(tenant: str, owner: str, conversation_id: str) -> str:
    return f"{meta_key(tenant, owner, conversation_id)}.turns"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TurnCitation(_Record):
    """A source the answer cited as [n]: enough to open it (document, page, region) and to show its start."""

    n: int = Field(ge=1)
    doc_id: Identifier
    filename: str
    page: int = Field(ge=1)
    bbox: BBox | None = None
    text: str = Field(default="", max_length=MAX_CITATION_TEXT_CHARS, description="the start of the cited passage")


class Feedback(_Record):
    """What the user thought of an answer: the record issue 19's evaluation reads (one per turn, the latest)."""

    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=MAX_FEEDBACK_COMMENT_CHARS)
    at: datetime = Field(default_factory=utcnow)


class Turn(_Record):
    """One question and its answer."""

    n: int = Field(ge=1, description="1 for the first turn of the conversation")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="as the user asked it")
    searched: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS,
        description="the standalone question that was searched (a follow-up resolved against the earlier turns)",
    )  # fmt: skip
    answer: str = Field(max_length=MAX_ANSWER_CHARS + 1)
    answerer: str = Field(description="what wrote the answer: an LLM provider's name, `extractive` or `abstention`")
    abstained: bool = False
    citations: list[TurnCitation] = Field(default_factory=list, max_length=MAX_TURN_CITATIONS)
    asked_at: datetime = Field(default_factory=utcnow)
    feedback: Feedback | None = None


class ConversationMeta(_Record):
    """A conversation without its turns: what a list shows."""

    schema_version: Literal[1] = 1
    id: Identifier
    owner: Identifier = Field(description="the id of the API key that created it (`local` with auth off)")
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    turns: int = Field(default=0, ge=0, description="how many turns it has")


class ConversationTurns(_Record):
    schema_version: Literal[1] = 1
    turns: list[Turn] = Field(default_factory=list)
