"""Conversations: a user's questions and answers, kept so a follow-up can be asked and the history read again.

- ``GET /v1/conversations``: the caller's conversations, most recently used first. A tenant's admin may pass
  ``owner=<key id>`` (another key's) or ``owner=*`` (every key's of the tenant); anyone else gets 403.
- ``POST /v1/conversations`` (``{"title"}`` optional): a new, empty conversation (201).
- ``GET /v1/conversations/{id}``: one, with its turns (question, searched question, answer, citations,
  feedback). The owner's; a tenant's admin may read any of the tenant's.
- ``PATCH /v1/conversations/{id}`` (``{"title"}``): rename. ``DELETE``: delete it and its turns (204).
- ``PUT /v1/conversations/{id}/turns/{n}/feedback`` (``{"rating": "up"|"down", "comment"}``): the user's
  verdict on turn n's answer, stored with the turn.
- ``GET /v1/feedback``: the rated turns (the caller's; an admin's ``owner=`` as for the list), newest
  conversation first; ``GET /v1/feedback/questions``: the turns rated up as the questions of
  ``POST /v1/evaluations`` (the searched question, the pages its answer cited as `expected`): what users liked
  becomes what a re-index is checked against.

Questions are asked with ``POST /v1/ask`` and its ``conversation_id`` (`edge_api.routes.queries`), which adds
the answer as the next turn. Who owns a conversation: the API key that created it (`Identity.key_id`); with
auth off, the one local user. Only the owner changes a conversation: an admin reads, never writes, another's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bus.conversations import Conversation, ConversationLimit, ConversationNotFound, ConversationStore, StorageFull
from contracts.conversations import (
    MAX_FEEDBACK_COMMENT_CHARS,
    MAX_TITLE_CHARS,
    OWNER_LOCAL,
    ConversationMeta,
    Feedback,
    Turn,
)
from contracts.evaluation import MAX_QUESTIONS, EvaluationQuestion, ExpectedSource
from contracts.topology import TOKEN
from edge_api.bodies import JSON_BODY_ERRORS, Text, read_body
from edge_api.errors import ApiError
from edge_api.identity import identity_of, tenant_of
from edge_api.keys import ROLE_RANK
from edge_api.operations import ERR_503, Empty, Err, Json, Operation, Reply
from edge_api.state import backbone

CONVERSATIONS_PATH = "/v1/conversations"
CONVERSATION_PATH = "/v1/conversations/{id}"
FEEDBACK_PATH = "/v1/conversations/{id}/turns/{n}/feedback"
FEEDBACK_EXPORT_PATH = "/v1/feedback"
FEEDBACK_QUESTIONS_PATH = "/v1/feedback/questions"
ALL_OWNERS = "*"
T = TypeVar("T")
MAX_EXPORTED_TURNS = 1000  # a response's bound: the newest conversations' rated turns first


class ConversationSummary(BaseModel):
    """A conversation without its turns."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="use it as `conversation_id` of /v1/ask and in /v1/conversations/{id}")
    title: str
    owner: str = Field(description="the id of the API key that owns it (`local` with auth off)")
    created_at: datetime
    updated_at: datetime = Field(description="when it was created, renamed or last answered")
    turn_count: int


class ConversationList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversations: list[ConversationSummary] = Field(description="most recently used first")


class ConversationDetail(ConversationSummary):
    """A conversation with its turns, oldest first."""

    turns: list[Turn]


Title = Annotated[Text, Field(max_length=MAX_TITLE_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class CreateConversation(_Body):
    title: Title | None = Field(default=None, description="default: the first question, once asked")


class RenameConversation(_Body):
    title: Title


class FeedbackBody(_Body):
    rating: Literal["up", "down"]
    comment: Annotated[Text, Field(max_length=MAX_FEEDBACK_COMMENT_CHARS)] | None = None


class RatedTurn(BaseModel):
    """A turn that has feedback, with the conversation it belongs to."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str
    owner: str = Field(description="the id of the API key that owns the conversation")
    turn: Turn


class FeedbackExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: list[RatedTurn] = Field(description="newest conversation first, oldest turn first within one")
    truncated: bool = Field(description=f"more rated turns exist than the {MAX_EXPORTED_TURNS} a response holds")


class FeedbackQuestions(BaseModel):
    """The well-rated turns as evaluation questions: `questions` is the body `POST /v1/evaluations` takes."""

    model_config = ConfigDict(extra="forbid")

    questions: list[EvaluationQuestion] = Field(
        description="one per turn rated `up` that cited sources and did not abstain: the searched question, the "
        "cited pages as `expected`; newest first"
    )
    truncated: bool = Field(description=f"more such turns exist than the {MAX_QUESTIONS} an evaluation takes")


def as_question(conversation_id: str, turn: Turn) -> EvaluationQuestion | None:
    """A turn rated `up` as an evaluation question (None for any other turn): what was searched, and where its
    answer was found (each cited document page once)."""
    if turn.feedback is None or turn.feedback.rating != "up" or turn.abstained or not turn.citations:
        return None
    pages = dict.fromkeys((c.doc_id, c.page) for c in turn.citations)
    expected = [ExpectedSource(doc=doc, page=page) for doc, page in list(pages)[:10]]
    return EvaluationQuestion(id=f"{conversation_id[:56]}-{turn.n}", question=turn.searched[:1000], expected=expected)


def summary(meta: ConversationMeta) -> ConversationSummary:
    return ConversationSummary(id=meta.id, title=meta.title, owner=meta.owner, created_at=meta.created_at,
                               updated_at=meta.updated_at, turn_count=meta.turns)  # fmt: skip


def detail(conversation: Conversation) -> ConversationDetail:
    return ConversationDetail(**summary(conversation.meta).model_dump(), turns=conversation.turns)


def owner_of(request: web.Request) -> str:
    """Who owns what this request creates: its API key (with auth off, the one local user)."""
    identity = identity_of(request)
    return identity.key_id if identity is not None else OWNER_LOCAL


def _is_admin(request: web.Request) -> bool:
    identity = identity_of(request)
    return identity is None or ROLE_RANK[identity.role] >= ROLE_RANK["admin"]  # auth off: the local admin


def not_found(conversation_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no conversation {conversation_id[:64]!r} of this API key "
                    "(GET /v1/conversations lists them)")  # fmt: skip


def _conversation_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not TOKEN.match(raw):
        raise not_found(raw)
    return raw


def limit_error(err: ConversationLimit) -> ApiError:
    code = "conversation_full" if err.what == "turns" else "too_many_conversations"
    return ApiError(409, code, str(err))


def storage_full() -> ApiError:
    return ApiError(507, "storage_full", "the conversations storage is full: delete conversations you no longer need")


async def store_of(request: web.Request) -> ConversationStore:
    return await backbone(request).conversations()


def _owner_asked(request: web.Request) -> str | None:
    """The `owner` query parameter: the caller's key by default; another key's id, or `*` (None: every key of the
    tenant), for the tenant's admin only."""
    owner = request.query.get("owner", owner_of(request))
    if owner != owner_of(request):
        if not _is_admin(request):
            raise ApiError(403, "forbidden", "only the tenant's admin may read another API key's conversations")
        if owner != ALL_OWNERS and not TOKEN.match(owner or ""):
            raise ApiError(400, "invalid_query", "owner must be an API key id or '*'", field="owner")
    return None if owner == ALL_OWNERS else owner


async def list_conversations(request: web.Request) -> ConversationList:
    store = await store_of(request)
    metas = await store.list(tenant_of(request), _owner_asked(request))
    return ConversationList(conversations=[summary(m) for m in metas])


async def _rated(request: web.Request, keep: Callable[[ConversationMeta, Turn], T | None], bound: int) -> tuple[list[T], bool]:
    """`keep(conversation, turn)` of the rated turns in the `owner`'s conversations (most recently used first,
    turns oldest first) where it is not None, at most `bound`, and whether there were more."""
    store = await store_of(request)
    tenant = tenant_of(request)
    kept: list[T] = []
    for meta in await store.list(tenant, _owner_asked(request)):
        found = await store.get(tenant, meta.owner, meta.id)  # its owner is listed: no search across keys
        for turn in found.turns if found is not None else []:
            item = keep(meta, turn) if turn.feedback is not None else None
            if item is None:
                continue
            if len(kept) == bound:
                return kept, True
            kept.append(item)
    return kept, False


async def export_feedback(request: web.Request) -> FeedbackExport:
    turns, truncated = await _rated(
        request, lambda meta, turn: RatedTurn(conversation_id=meta.id, owner=meta.owner, turn=turn), MAX_EXPORTED_TURNS
    )
    return FeedbackExport(turns=turns, truncated=truncated)


async def feedback_questions(request: web.Request) -> FeedbackQuestions:
    questions, truncated = await _rated(request, lambda meta, turn: as_question(meta.id, turn), MAX_QUESTIONS)
    return FeedbackQuestions(questions=questions, truncated=truncated)


async def create_conversation(request: web.Request) -> Reply:
    store = await store_of(request)
    body = await read_body(request, CreateConversation)
    try:
        meta = await store.create(tenant_of(request), owner_of(request), body.title)
    except ConversationLimit as err:
        raise limit_error(err) from None
    except StorageFull:
        raise storage_full() from None
    return Reply(detail(Conversation(meta, [])), status=201, headers={"Location": f"{CONVERSATIONS_PATH}/{meta.id}"})


async def get_conversation(request: web.Request) -> ConversationDetail:
    store = await store_of(request)
    conversation_id, tenant = _conversation_id(request), tenant_of(request)
    found = await store.get(tenant, owner_of(request), conversation_id)
    if found is None and _is_admin(request):
        found = await store.find(tenant, conversation_id)
    if found is None:
        raise not_found(conversation_id)
    return detail(found)


async def rename_conversation(request: web.Request) -> ConversationSummary:
    store = await store_of(request)
    conversation_id = _conversation_id(request)
    body = await read_body(request, RenameConversation)
    try:
        meta = await store.rename(tenant_of(request), owner_of(request), conversation_id, body.title)
    except ConversationNotFound:
        raise not_found(conversation_id) from None
    return summary(meta)


async def delete_conversation(request: web.Request) -> web.Response:
    store = await store_of(request)
    conversation_id = _conversation_id(request)
    if not await store.delete(tenant_of(request), owner_of(request), conversation_id):
        raise not_found(conversation_id)
    return web.Response(status=204)


async def give_feedback(request: web.Request) -> Turn:
    store = await store_of(request)
    conversation_id = _conversation_id(request)
    raw_n = request.match_info["n"]
    n = int(raw_n) if raw_n.isdigit() and len(raw_n) < 6 else 0
    body = await read_body(request, FeedbackBody)
    try:
        return await store.set_feedback(tenant_of(request), owner_of(request), conversation_id, n,
                                        Feedback(rating=body.rating, comment=body.comment))  # fmt: skip
    except ConversationNotFound as err:
        if str(err).startswith("turn"):
            raise ApiError(404, "not_found", f"conversation {conversation_id} has no turn {raw_n[:10]!r}") from None
        raise not_found(conversation_id) from None


CONVERSATION_ID = {
    "name": "id", "in": "path", "required": True, "description": "the `id` the create answered with",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip
TURN_N = {
    "name": "n", "in": "path", "required": True, "description": "the turn's `n` (1 for the first)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 50},
}  # fmt: skip
ERR_404 = Err("`not_found`: no such conversation of this API key (unknown, deleted, or another key's)")

OWNER = {
    "name": "owner", "in": "query", "required": False,
    "description": "admin only: another API key's id, or `*` for every key of the tenant",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip

OPERATIONS = (
    Operation(
        "GET", CONVERSATIONS_PATH, list_conversations, "listConversations", "conversations",
        "Your conversations, most recently used first", role="reader",
        parameters=(OWNER,),
        responses={
            200: Json("the conversations (without their turns)", ConversationList),
            400: Err("`invalid_query`: `owner` is neither an API key id nor `*`"),
            403: Err("`forbidden`: `owner` names another key and the caller is not the tenant's admin"),
            503: ERR_503,
        },
    ),
    Operation(
        "POST", CONVERSATIONS_PATH, create_conversation, "createConversation", "conversations",
        "Start a conversation", role="reader",
        description="Ask in it with `POST /v1/ask` and its `conversation_id`; each answer becomes a turn.",
        request={"application/json": CreateConversation},
        responses={
            201: Json("the new conversation, at `Location`", ConversationDetail),
            **JSON_BODY_ERRORS,
            409: Err("`too_many_conversations`: the key keeps `MMRAG_CONVERSATIONS_PER_KEY` already: delete one"),
            503: ERR_503,
            507: Err("`storage_full`: the conversations bucket is full"),
        },
    ),
    Operation(
        "GET", CONVERSATION_PATH, get_conversation, "getConversation", "conversations",
        "A conversation with its turns", role="reader", parameters=(CONVERSATION_ID,),
        description="The caller's own; a tenant's admin may read any conversation of the tenant.",
        responses={200: Json("the conversation and its turns, oldest first", ConversationDetail), 404: ERR_404,
                   503: ERR_503},
    ),
    Operation(
        "PATCH", CONVERSATION_PATH, rename_conversation, "renameConversation", "conversations",
        "Rename a conversation", role="reader", parameters=(CONVERSATION_ID,),
        request={"application/json": RenameConversation},
        responses={200: Json("renamed", ConversationSummary), **JSON_BODY_ERRORS, 404: ERR_404, 503: ERR_503},
    ),
    Operation(
        "DELETE", CONVERSATION_PATH, delete_conversation, "deleteConversation", "conversations",
        "Delete a conversation and its turns", role="reader", parameters=(CONVERSATION_ID,),
        description="Purges it from the bucket at once: no copy of its turns is kept.",
        responses={204: Empty("deleted"), 404: ERR_404, 503: ERR_503},
    ),
    Operation(
        "PUT", FEEDBACK_PATH, give_feedback, "giveFeedback", "conversations",
        "Rate an answer (thumbs up or down, optional comment)", role="reader", parameters=(CONVERSATION_ID, TURN_N),
        description="Stored with the turn (replacing earlier feedback): `{rating, comment, at}`, read back by "
        "`GET /v1/conversations/{id}` and by evaluation.",
        request={"application/json": FeedbackBody},
        responses={200: Json("the turn, with its feedback", Turn), **JSON_BODY_ERRORS,
                   404: Err("`not_found`: no such conversation of this API key, or no such turn"), 503: ERR_503},
    ),
    Operation(
        "GET", FEEDBACK_EXPORT_PATH, export_feedback, "exportFeedback", "conversations",
        "The rated answers", role="reader", parameters=(OWNER,),
        description="Every turn that has feedback, with its conversation: newest conversation first.",
        responses={
            200: Json("the rated turns", FeedbackExport),
            400: Err("`invalid_query`: `owner` is neither an API key id nor `*`"),
            403: Err("`forbidden`: `owner` names another key and the caller is not the tenant's admin"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", FEEDBACK_QUESTIONS_PATH, feedback_questions, "feedbackQuestions", "conversations",
        "The answers rated up, as evaluation questions", role="reader", parameters=(OWNER,),
        description="Feedback exported for evaluation: the body this answers is what `POST /v1/evaluations` takes "
        "(add a `name`), so the answers users liked check the next re-index (`mmrag reindex --gate`).",
        responses={
            200: Json("the questions", FeedbackQuestions),
            400: Err("`invalid_query`: `owner` is neither an API key id nor `*`"),
            403: Err("`forbidden`: `owner` names another key and the caller is not the tenant's admin"),
            503: ERR_503,
        },
    ),
)  # fmt: skip
