"""The conversations bucket (`contracts.conversations`): create, list, read, rename, delete, append a turn, feedback.

Every read-modify-write is a compare-and-set on one key (`bus.kv.compare_and_set`), so two answers finishing at
once never lose a turn. A conversation is its owner's: every call names the tenant and the owner, and the keys
are made from them (`contracts.conversations.meta_key`), so a caller can only reach another owner's conversation
through `find`, which the edge API offers to a tenant's admin only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from bus.kv import current_values
from contracts.conversations import (
    ConversationMeta,
    ConversationTurns,
    Feedback,
    Turn,
    meta_key,
    turns_key,
)
from contracts.messages import utcnow

M = TypeVar("M", bound=BaseModel)


class ConversationNotFound(LookupError):
    pass


class ConversationLimit(Exception):
    """A bound was reached (`what`: ``turns`` or ``conversations``); the message says what to do."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what


class StorageFull(Exception):
    """The bucket's byte bound (`CONVERSATIONS_MAX_BYTES`) refused a write."""


@dataclass(frozen=True)
class Conversation:
    meta: ConversationMeta
    turns: list[Turn]


def _full(err: APIError) -> bool:
    # JSStreamStoreFailedError "maximum bytes exceeded" (10077) / resources exceeded (10047, 10028)
    return err.err_code in (10028, 10047, 10077) or "maximum bytes" in str(err.description or "").lower()


class ConversationStore:
    def __init__(self, kv: KeyValue, *, max_turns: int, max_per_owner: int) -> None:
        self._kv = kv
        self.max_turns = max_turns
        self.max_per_owner = max_per_owner

    async def _read(self, key: str, model: type[M]) -> tuple[M, int] | None:
        try:
            entry = await self._kv.get(key)
        except NotFoundError:  # never written, or purged (KeyDeletedError)
            return None
        if not entry.value:
            return None
        return model.model_validate_json(entry.value), entry.revision or 0

    async def _write(self, key: str, value: BaseModel, revision: int | None) -> None:
        data = value.model_dump_json().encode()
        try:
            if revision is None:
                await self._kv.create(key, data)
            else:
                await self._kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            raise
        except APIError as err:
            if _full(err):
                raise StorageFull("the conversations bucket is full: delete conversations") from err
            raise

    async def _change(self, key: str, model: type[M], change: Callable[[M], M]) -> M:
        """Apply `change` to the record at `key` atomically (re-read and retried on a conflict)."""
        for _ in range(50):
            found = await self._read(key, model)
            if found is None:
                raise ConversationNotFound(key)
            current, revision = found
            new = change(current)
            try:
                await self._write(key, new, revision)
            except KeyWrongLastSequenceError:
                continue
            return new
        raise RuntimeError(f"{key} kept changing under 50 attempts")

    async def list(self, tenant: str, owner: str | None) -> list[ConversationMeta]:
        """The conversations of `owner` (None: of every owner of the tenant), the most recently used first."""
        pattern = f"{tenant}.{owner or '*'}.*"
        metas = [ConversationMeta.model_validate_json(v) for _, v in await current_values(self._kv, pattern)]
        return sorted(metas, key=lambda m: m.updated_at, reverse=True)

    async def create(self, tenant: str, owner: str, title: str | None = None) -> ConversationMeta:
        # Counted, then created: two creates racing may both pass at the limit. Bounded all the same (by the
        # number of concurrent requests one key may make), and simpler than a counter key.
        if len(await self.list(tenant, owner)) >= self.max_per_owner:
            raise ConversationLimit(
                "conversations",
                f"this API key already has {self.max_per_owner} conversations (MMRAG_CONVERSATIONS_PER_KEY): delete "
                "one (DELETE /v1/conversations/{id}) before starting another",
            )
        meta = ConversationMeta(id=uuid.uuid4().hex, owner=owner, title=title or "New conversation")
        await self._write(turns_key(tenant, owner, meta.id), ConversationTurns(), None)
        await self._write(meta_key(tenant, owner, meta.id), meta, None)
        return meta

    async def get(self, tenant: str, owner: str, conversation_id: str) -> Conversation | None:
        meta = await self._read(meta_key(tenant, owner, conversation_id), ConversationMeta)
        if meta is None:
            return None
        turns = await self._read(turns_key(tenant, owner, conversation_id), ConversationTurns)
        return Conversation(meta[0], turns[0].turns if turns else [])

    async def find(self, tenant: str, conversation_id: str) -> Conversation | None:
        """A conversation of any owner of the tenant (for the tenant's admin)."""
        for key, _ in await current_values(self._kv, f"{tenant}.*.{conversation_id}"):
            return await self.get(tenant, key.split(".")[1], conversation_id)
        return None

    async def rename(self, tenant: str, owner: str, conversation_id: str, title: str) -> ConversationMeta:
        try:
            return await self._change(
                meta_key(tenant, owner, conversation_id), ConversationMeta,
                lambda m: m.model_copy(update={"title": title, "updated_at": utcnow()}),
            )  # fmt: skip
        except ConversationNotFound:
            raise ConversationNotFound(conversation_id) from None

    async def delete(self, tenant: str, owner: str, conversation_id: str) -> bool:
        """Purge both keys (every revision of them); False when there was no such conversation."""
        key = meta_key(tenant, owner, conversation_id)
        if await self._read(key, ConversationMeta) is None:
            return False
        await self._kv.purge(key)
        await self._kv.purge(turns_key(tenant, owner, conversation_id))
        return True

    async def append(self, tenant: str, owner: str, conversation_id: str, turn: Turn, *, replace_last: bool = False
                     ) -> Turn:  # fmt: skip
        """Add `turn` as the next turn (numbered here), or in place of the last one (`replace_last`: a regenerated
        answer). `ConversationLimit` past `max_turns`, `ConversationNotFound` when the conversation is gone."""
        numbered: list[Turn] = []

        def add(record: ConversationTurns) -> ConversationTurns:
            kept = record.turns[:-1] if replace_last and record.turns else record.turns
            if len(kept) >= self.max_turns:
                raise ConversationLimit("turns", self.turn_limit_message())
            numbered[:] = [turn.model_copy(update={"n": len(kept) + 1})]
            return ConversationTurns(turns=[*kept, *numbered])

        record = await self._change(turns_key(tenant, owner, conversation_id), ConversationTurns, add)
        title_from = record.turns[0].question if len(record.turns) == 1 else None
        await self._touch(tenant, owner, conversation_id, len(record.turns), title_from, numbered[0].asked_at)
        return numbered[0]

    def turn_limit_message(self) -> str:
        return (
            f"this conversation has reached its {self.max_turns} turns (MMRAG_CONVERSATION_MAX_TURNS): start a new "
            "conversation (POST /v1/conversations)"
        )

    async def _touch(self, tenant: str, owner: str, conversation_id: str, turns: int, first_question: str | None,
                     at: datetime) -> None:  # fmt: skip
        def update(meta: ConversationMeta) -> ConversationMeta:
            # Touches of answers finishing together land in any order: a count never goes back (turns are only
            # added or replaced), so the latest touch cannot undo a later turn's count.
            fields: dict[str, object] = {"turns": max(turns, meta.turns), "updated_at": max(at, meta.updated_at)}
            if first_question is not None and meta.title == "New conversation":  # named after its first question
                fields["title"] = first_question[:80]
            return meta.model_copy(update=fields)

        await self._change(meta_key(tenant, owner, conversation_id), ConversationMeta, update)

    async def set_feedback(self, tenant: str, owner: str, conversation_id: str, n: int, feedback: Feedback) -> Turn:
        """Store `feedback` on turn `n` (replacing earlier feedback). `ConversationNotFound` names the turn."""
        changed: list[Turn] = []

        def give(record: ConversationTurns) -> ConversationTurns:
            if not 1 <= n <= len(record.turns):
                raise ConversationNotFound(f"turn {n}")
            turns = list(record.turns)
            turns[n - 1] = turns[n - 1].model_copy(update={"feedback": feedback})
            changed[:] = [turns[n - 1]]
            return ConversationTurns(turns=turns)

        await self._change(turns_key(tenant, owner, conversation_id), ConversationTurns, give)
        return changed[0]
