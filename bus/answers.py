"""The answer-stream protocol, both ends of it: agents emit numbered events, the edge API puts them in order.

Events of one request go to core NATS ``answer.<tenant>.<request_id>`` (a function of the request: no
publisher chooses it). Numbering is owned here and nowhere else:

- seq 0: the ``retrieval`` event of an ask, or the ``results`` event of a search (terminal);
- seq 1, 2, ...: the generation's ``token`` and ``citation`` events, then ``done`` (terminal);
- ``error`` has no seq: it ends the stream on arrival (an agent giving up cannot know what was sent);
- ``reset`` is numbered like a token: the text before it is discarded, a new attempt follows (a model that
  failed mid-answer); a client shows the text after the last reset.

A stage that is retried (a redelivered message, a batch retried one message at a time) emits the same
events under the same numbers again, so the receiving `AnswerSequencer` drops what it already delivered
and releases the rest strictly in order. A generation is not always the same twice (an LLM answers anew), so
its events carry ``attempt`` (the delivery count of the generate message): the first event of a higher attempt
makes the sequencer drop everything of the lower one and, if the client already saw some of it, insert a
``reset`` first; the new attempt's events are renumbered after it, so the client's ids only ever grow and it
never sees two answers mixed. Events are fire-and-forget: the edge API subscribed before it
published the request, and an answer nobody waits for any more needs no durability.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from nats.aio.client import Client as NATS

from contracts.messages import (
    AnswerEvent,
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    Hit,
    ResetEvent,
    ResultsEvent,
    RetrievalEvent,
    TokenEvent,
)
from contracts.topology import Subjects

RETRIEVAL_SEQ = 0
FIRST_GENERATION_SEQ = 1
TERMINAL_EVENTS = frozenset({"done", "error", "results"})


class AnswerEmitter:
    """Publishes the events of one request. Build one per stage that emits (reranker, generator)."""

    def __init__(self, nc: NATS, *, tenant: str, request_id: str, attempt: int = 1) -> None:
        self._nc = nc
        self.request_id = request_id
        self.subject = Subjects.answer(tenant, request_id)
        self.attempt = attempt  # the generate message's delivery count (generator); 1 elsewhere
        self._next_seq = FIRST_GENERATION_SEQ

    async def _send(self, event: AnswerEvent, *, flush: bool = True) -> None:
        await self._nc.publish(self.subject, event.model_dump_json().encode())
        if flush:  # each event leaves now, not when the whole answer is done
            await self._nc.flush()

    async def retrieval(self, hits: list[Hit], searched: str | None = None) -> None:
        await self._send(RetrievalEvent(request_id=self.request_id, seq=RETRIEVAL_SEQ, hits=hits, searched=searched))

    async def results(self, hits: list[Hit]) -> None:
        await self._send(ResultsEvent(request_id=self.request_id, seq=RETRIEVAL_SEQ, hits=hits))

    def _seq(self) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    async def token(self, text: str) -> None:
        await self._send(TokenEvent(request_id=self.request_id, seq=self._seq(), text=text, attempt=self.attempt))

    async def citation(self, **fields: Any) -> None:
        await self._send(CitationEvent(request_id=self.request_id, seq=self._seq(), **fields, attempt=self.attempt))

    async def reset(self, reason: str) -> None:
        await self._send(ResetEvent(request_id=self.request_id, seq=self._seq(), reason=reason, attempt=self.attempt))

    async def done(self, **fields: Any) -> None:
        await self._send(DoneEvent(request_id=self.request_id, seq=self._seq(), **fields, attempt=self.attempt))

    async def error(self, code: str, message: str) -> None:
        await self._send(ErrorEvent(request_id=self.request_id, code=code, message=message))


class AnswerSequencer:
    """Turns the events as they arrive (duplicated, out of order, from several attempts) into the stream a client
    must see.

    `push` returns the events that became deliverable, in seq order, each exactly once. Generation events (seq
    >= 1) of an attempt lower than the newest seen are dropped; when a newer attempt starts after the client got
    some of an older one, a `reset` is released first and the newer attempt's seqs are shifted to follow it.
    After a terminal event has been delivered, everything else is ignored and `finished` is True.
    """

    def __init__(self) -> None:
        self._next = RETRIEVAL_SEQ  # the next seq to release, in the current attempt's own numbering
        self._held: dict[int, AnswerEvent] = {}
        self._attempt = 1
        self._shift = 0  # added to the current attempt's generation seqs on the way out
        self.finished = False
        self.dropped = 0  # duplicates, stragglers and superseded attempts, for tests and metrics

    def push(self, event: AnswerEvent) -> list[AnswerEvent]:
        if self.finished:
            self.dropped += 1
            return []
        if isinstance(event, ErrorEvent):
            self.finished = True
            return [event]
        ready: list[AnswerEvent] = []
        if event.seq >= FIRST_GENERATION_SEQ:
            if event.attempt < self._attempt:
                self.dropped += 1
                return []
            if event.attempt > self._attempt:
                ready += self._supersede(event)
        if event.seq < self._next or event.seq in self._held:
            self.dropped += 1
            return ready
        self._held[event.seq] = event
        while self._next in self._held:
            current = self._held.pop(self._next)
            self._next += 1
            if current.seq >= FIRST_GENERATION_SEQ and self._shift:
                current = current.model_copy(update={"seq": current.seq + self._shift})
            ready.append(current)
            if current.event in TERMINAL_EVENTS:
                self.finished = True
                self.dropped += len(self._held)
                self._held.clear()
                break
        return ready

    def _supersede(self, event: AnswerEvent) -> list[AnswerEvent]:
        """A newer attempt of the generation: forget the older one; a `reset` if the client saw part of it."""
        self._attempt = event.attempt
        stale = [s for s in self._held if s >= FIRST_GENERATION_SEQ]
        for s in stale:
            del self._held[s]
        self.dropped += len(stale)
        if self._next <= FIRST_GENERATION_SEQ:  # nothing of the older attempt reached the client
            return []
        reset_seq = self._next + self._shift  # the id the client expects next
        self._shift = reset_seq + 1 - FIRST_GENERATION_SEQ
        self._next = FIRST_GENERATION_SEQ
        reason = f"the answer is being generated again (attempt {event.attempt}); discard the text so far"
        return [ResetEvent(request_id=event.request_id, seq=reset_seq, attempt=event.attempt, reason=reason)]


# A piece ends after sentence/clause punctuation (unless a citation marker like "[1]" follows, which stays
# with its sentence), after a citation marker, or at a line break.
_CLAUSE_END = re.compile(r"(?<=[.!?;:])\s+(?!\[)|(?<=\])\s+|\n+")


def stream_pieces(text: str, *, max_chars: int = 160) -> Iterator[str]:
    """Cut an answer into pieces worth one `token` event each: a sentence or clause, never a lone word.

    Whitespace is kept with the piece it follows, so joining the pieces gives back `text` exactly.
    """
    start = 0
    for match in _CLAUSE_END.finditer(text):
        if match.end() - start >= 2:
            yield from _bounded(text[start : match.end()], max_chars)
            start = match.end()
    if start < len(text):
        yield from _bounded(text[start:], max_chars)


def _bounded(piece: str, max_chars: int) -> Iterator[str]:
    """A long clause is cut at the last space before `max_chars` (or hard, if it has none)."""
    while len(piece) > max_chars:
        cut = piece.rfind(" ", 0, max_chars) + 1 or max_chars
        yield piece[:cut]
        piece = piece[cut:]
    if piece:
        yield piece
