"""The answer-stream protocol of `bus.answers`: numbering, ordering, dedupe, and how answers are cut."""

from __future__ import annotations

import asyncio

import nats

from bus.answers import AnswerEmitter, AnswerSequencer, stream_pieces
from contracts.messages import DoneEvent, ErrorEvent, Hit, RetrievalEvent, TokenEvent, answer_event_adapter
from contracts.topology import Subjects

HIT = Hit(chunk_id="d-0", doc_id="d", filename="f.pdf", page=1, text="x", score=0.5)


def token(seq: int, text: str = "") -> TokenEvent:
    return TokenEvent(request_id="r", seq=seq, text=text or f"t{seq} ")


def test_sequencer_delivers_each_event_once_in_order() -> None:
    seq = AnswerSequencer()
    arrivals = [
        token(2), RetrievalEvent(request_id="r", seq=0, hits=[HIT]), token(1), RetrievalEvent(request_id="r", seq=0, hits=[HIT]),
        token(2), token(1), DoneEvent(request_id="r", seq=3, answerer="x"), token(3),
    ]  # fmt: skip
    out = [e for a in arrivals for e in seq.push(a)]
    assert [e.seq for e in out] == [0, 1, 2, 3]
    assert [e.event for e in out] == ["retrieval", "token", "token", "done"]
    assert seq.finished and seq.dropped == 4


def test_sequencer_holds_events_until_the_gap_is_filled() -> None:
    seq = AnswerSequencer()
    assert seq.push(token(1)) == []
    assert seq.push(token(2)) == []
    released = seq.push(RetrievalEvent(request_id="r", seq=0, hits=[]))
    assert [e.seq for e in released] == [0, 1, 2]


def test_an_error_ends_the_stream_at_once() -> None:
    seq = AnswerSequencer()
    seq.push(RetrievalEvent(request_id="r", seq=0, hits=[]))
    assert seq.push(token(2)) == []  # waiting for 1
    out = seq.push(ErrorEvent(request_id="r", code="generation_failed", message="m"))
    assert [e.event for e in out] == ["error"]
    assert seq.finished and seq.push(token(1)) == []


def test_pieces_are_clauses_and_join_back_exactly() -> None:
    text = "The core runs at 4127 K. [1] Crews inspect it; they log deviations. [2]\nA heading\nShort"
    pieces = list(stream_pieces(text))
    assert "".join(pieces) == text
    assert pieces[0] == "The core runs at 4127 K. [1] "  # the citation marker stays with its sentence
    assert pieces[1] == "Crews inspect it; "
    assert all(len(p.split()) > 1 or p.strip() == "Short" for p in pieces)
    assert len(pieces) < len(text.split())  # not one event per word
    long = "word " * 100
    assert all(len(p) <= 160 for p in stream_pieces(long)) and "".join(stream_pieces(long)) == long


async def test_emitter_numbers_events_and_publishes_them_as_they_are_made(nc: nats.NATS) -> None:
    sub = await nc.subscribe(Subjects.answer("t", "r1"))
    emitter = AnswerEmitter(nc, tenant="t", request_id="r1")
    await emitter.retrieval([HIT])
    first = answer_event_adapter.validate_json((await sub.next_msg(timeout=2)).data)  # sent before the rest exists
    assert first.seq == 0 and first.event == "retrieval"
    await emitter.token("Hello. ")
    await emitter.citation(n=1, doc_id="d", filename="f.pdf", page=1, bbox=None, text="x")
    await emitter.done(answerer="extractive")
    rest = [answer_event_adapter.validate_json((await sub.next_msg(timeout=2)).data) for _ in range(3)]
    assert [(e.event, e.seq) for e in rest] == [("token", 1), ("citation", 2), ("done", 3)]
    # A retried stage emits the same numbers again: the sequencer drops them.
    again = AnswerEmitter(nc, tenant="t", request_id="r1")
    await again.token("Hello. ")
    dup = answer_event_adapter.validate_json((await sub.next_msg(timeout=2)).data)
    sequencer = AnswerSequencer()
    delivered = [e for ev in [first, *rest, dup] for e in sequencer.push(ev)]
    assert [e.seq for e in delivered] == [0, 1, 2, 3]
    await asyncio.sleep(0)
