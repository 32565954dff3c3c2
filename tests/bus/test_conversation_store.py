"""`bus.conversations.ConversationStore` on a real nats-server, in the bucket `bus.topology` creates: concurrent
answers never lose a turn, the bounds hold, owners are kept apart, a delete leaves no value behind."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import NotFoundError

from bus.conversations import ConversationLimit, ConversationStore
from bus.topology import ensure_topology
from contracts.conversations import Turn, meta_key, turns_key
from contracts.topology import CONVERSATIONS_BUCKET


@pytest.fixture
async def store(nc) -> ConversationStore:
    js = nc.jetstream()
    await ensure_topology(js)
    return ConversationStore(await js.key_value(CONVERSATIONS_BUCKET), max_turns=12, max_per_owner=2)


def turn(question: str) -> Turn:
    return Turn(n=1, question=question, searched=question, answer="an answer", answerer="extractive")


async def test_answers_finishing_together_each_get_their_own_turn(store: ConversationStore) -> None:
    meta = await store.create("t", "k_a")
    added = await asyncio.gather(*(store.append("t", "k_a", meta.id, turn(f"q{i}")) for i in range(10)))
    assert sorted(t.n for t in added) == list(range(1, 11))
    found = await store.get("t", "k_a", meta.id)
    assert found is not None and [t.n for t in found.turns] == list(range(1, 11))
    assert {t.question for t in found.turns} == {f"q{i}" for i in range(10)}
    assert found.meta.turns == 10 and found.meta.title == found.turns[0].question  # named after its first question

    replaced = await store.append("t", "k_a", meta.id, turn("again"), replace_last=True)
    assert replaced.n == 10
    await store.append("t", "k_a", meta.id, turn("q11"))
    await store.append("t", "k_a", meta.id, turn("q12"))
    with pytest.raises(ConversationLimit, match="MMRAG_CONVERSATION_MAX_TURNS"):
        await store.append("t", "k_a", meta.id, turn("q13"))


async def test_owners_are_apart_and_bounded_and_a_delete_purges(store: ConversationStore, nc) -> None:
    mine = await store.create("t", "k_a", "mine")
    await store.create("t", "k_a")
    with pytest.raises(ConversationLimit, match="MMRAG_CONVERSATIONS_PER_KEY"):
        await store.create("t", "k_a")
    theirs = await store.create("t", "k_b", "theirs")
    await store.create("u", "k_a", "other tenant, same key id")

    assert {m.id for m in await store.list("t", "k_b")} == {theirs.id}
    assert await store.get("t", "k_b", mine.id) is None  # another owner's id is not found under one's own
    assert len(await store.list("t", None)) == 3  # every owner of tenant t (what the admin lists), not tenant u
    found = await store.find("t", mine.id)
    assert found is not None and found.meta.owner == "k_a"
    assert await store.find("u", mine.id) is None

    await store.append("t", "k_a", mine.id, turn("q"))
    assert await store.delete("t", "k_a", mine.id) and not await store.delete("t", "k_a", mine.id)
    js = nc.jetstream()
    for key in (meta_key("t", "k_a", mine.id), turns_key("t", "k_a", mine.id)):
        try:
            last = await js.get_last_msg(f"KV_{CONVERSATIONS_BUCKET}", f"$KV.{CONVERSATIONS_BUCKET}.{key}")
        except NotFoundError:
            continue
        assert not last.data, "a purge leaves only an empty marker"
    assert await store.get("t", "k_a", mine.id) is None
    await store.create("t", "k_a")  # the deleted one no longer counts
