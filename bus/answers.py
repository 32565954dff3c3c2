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
and releases the rest strictly in order. Events are fire-and-forget: the edge API subscribed before it
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

    def __init__(self, nc: NATS, *, tenant: str, request_id: str) -> None:
        self._nc = nc
        self.request_id = request_id
        self.subject = Subjects.answer(tenant, request_id)
        self._next_seq = FIRST_GENERATION_SEQ

    async def _send(self, event: AnswerEvent, *, flush: bool = True) -> None:
        await self._nc.publish(self.subject, event.model_dump_json().encode())
        if flush:  # each event leaves now, not when the whole answer is done
            await self._nc.flush()

    async def retrieval(self, hits: list[Hit]) -> None:
        await self._send(RetrievalEvent(request_id=self.request_id, seq=RETRIEVAL_SEQ, hits=hits))

    async def results(self, hits: list[Hit]) -> None:
        await self._send(ResultsEvent(request_id=self.request_id, seq=RETRIEVAL_SEQ, hits=hits))

    def _seq(self) -> int:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    async def token(self, text: str) -> None:
        await self._send(TokenEvent(request_id=self.request_id, seq=self._seq(), text=text))

    async def citation(self, **fields: Any) -> None:
        await self._send(CitationEvent(request_id=self.request_id, seq=self._seq(), **fields))

    async def reset(self, reason: str) -> None:
        await self._send(ResetEvent(request_id=self.request_id, seq=self._seq(), reason=reason))

    async def done(self, **fields: Any) -> None:
        await self._send(DoneEvent(request_id=self.request_id, seq=self._seq(), **fields))

    async def error(self, code: str, message: str) -> None:
        await self._send(ErrorEvent(request_id=self.request_id, code=code, message=message))


class AnswerSequencer:
    """Turns the events as they arrive (duplicated, out of order) into the stream a client must see.

    `push` returns the events that became deliverable, in seq order, each exactly once. After a terminal
    event has been delivered, everything else is ignored and `finished` is True.
    """

    def __init__(self) -> None:
        self._next = RETRIEVAL_SEQ
        self._held: dict[int, AnswerEvent] = {}
        self.finished = False
        self.dropped = 0  # duplicates and stragglers, for tests and metrics

    def push(self, event: AnswerEvent) -> list[AnswerEvent]:
        if self.finished:
            self.dropped += 1
            return []
        if isinstance(event, ErrorEvent):
            self.finished = True
            return [event]
        if event.seq < self._next or event.seq in self._held:
            self.dropped += 1
            return []
        self._held[event.seq] = event
        ready: list[AnswerEvent] = []
        while self._next in self._held:
            current = self._held.pop(self._next)
            self._next += 1
            ready.append(current)
            if current.event in TERMINAL_EVENTS:
                self.finished = True
                self.dropped += len(self._held)
                self._held.clear()
                break
        return ready


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
