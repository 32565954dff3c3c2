"""generator: `query.generate` -> answer events (tokens, citations, done) on the request's reply subject.

Answers come from a chain: the LLM providers of `MMRAG_LLM_PROVIDERS` in order (`agents.llm`), then the offline
extractive answerer, which quotes the sentences of the reranked hits that best match the question, each
followed by its citation number. It needs no model and no API key and never fails, so the system always
answers. A provider that fails before its first token hands over silently; one that fails mid-answer after
some text was sent is followed by a `reset` event (discard the text so far) and the next link's whole answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from agents.lexical import overlap, sentences, terms
from agents.llm import CitationTracker, Completed, Failed, ProviderChain, Text, build_messages
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter, stream_pieces
from contracts.messages import GenerateRequest, Hit

log = logging.getLogger(__name__)
from contracts.topology import QUERY_CONSUMERS, ConsumerDef

NOTHING_FOUND = "I could not find anything about that in the ingested documents."
MAX_SENTENCES = 3


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    cited: list[Hit]  # cited[n - 1] is the hit behind "[n]"


def _units(hit: Hit) -> list[tuple[str, str]]:
    """(text to match, text to quote) of what a hit offers: its sentences; for a table, its data rows, matched
    on the row alone and quoted under the header row, so the quote reads as a one-row table."""
    if hit.modality != "table":
        return [(sentence, sentence) for sentence in sentences(hit.text)]
    rows = [line for line in hit.text.splitlines() if line.startswith("|")]
    if len(rows) >= 3 and set(rows[1]) <= set("|-: "):
        return [(row, f"{rows[0]}\n{row}") for row in rows[2:]]
    return [(row, row) for row in rows]


def extractive_answer(question: str, hits: Sequence[Hit]) -> ExtractiveAnswer:
    """Quote the best-matching sentences (or table rows) of `hits` (best first), each with its citation number.

    A sentence quoted once is not quoted again (the same text on two pages is cited once).
    """
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    query_terms = terms(question)
    # (match, -rank) orders sentences by how well they match, then by how good their hit was.
    candidates = [
        (overlap(query_terms, match), -rank, quote, hit)
        for rank, hit in enumerate(hits)
        for match, quote in _units(hit)
    ]
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    best_match = candidates[0][0] if candidates else 0.0
    chosen = []
    seen: set[str] = set()
    for c in candidates:
        key = " ".join(c[2].lower().split())
        if c[0] > 0 and c[0] >= best_match / 2 and key not in seen:
            seen.add(key)
            chosen.append(c)
        if len(chosen) == MAX_SENTENCES:
            break
    if not chosen:  # nothing matches word for word: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    parts = []
    for _, _, unit, hit in chosen:
        if hit not in cited:
            cited.append(hit)
        separator = "\n" if "\n" in unit else " "  # a table row quote keeps its lines
        parts.append(f"{unit}{separator}[{cited.index(hit) + 1}]")
    return ExtractiveAnswer("\n".join(parts) if any("\n" in p for p in parts) else " ".join(parts), cited)


async def _cite(stream: AnswerEmitter, n: int, hit: Hit) -> None:
    await stream.citation(
        n=n, doc_id=hit.doc_id, filename=hit.filename, page=hit.page, bbox=hit.bbox, text=hit.text, image=hit.image
    )


class _Attempt:
    """One link's answer as it streams: text goes out a clause at a time (the unfinished clause is held back),
    `[n]` markers are collected, and the citations follow the complete text."""

    def __init__(self, stream: AnswerEmitter, hits: Sequence[Hit]) -> None:
        self._stream = stream
        self._hits = hits
        self._held = ""
        self.citations = CitationTracker(len(hits))
        self.sent_text = False

    async def feed(self, text: str) -> None:
        self.citations.feed(text)
        *complete, self._held = list(stream_pieces(self._held + text)) or [""]
        for piece in complete:
            await self._send(piece)

    async def _send(self, piece: str) -> None:
        self.sent_text = True
        await self._stream.token(piece)

    async def finish(self) -> None:
        if self._held:
            await self._send(self._held)
            self._held = ""
        for n in self.citations.numbers:
            await _cite(self._stream, n, self._hits[n - 1])
        if self.citations.invented:
            log.info("dropped citations of sources that were not given: %s", self.citations.invented)


async def answer(
    question: str, hits: Sequence[Hit], stream: AnswerEmitter, chain: ProviderChain | None = None
) -> str:
    """Stream the answer to `question` from `hits` (best first) as events; returns the answerer's name."""
    if chain is not None and chain.providers:
        attempt = _Attempt(stream, hits)
        async for item in chain.stream(build_messages(question, hits)):
            if isinstance(item, Text):
                await attempt.feed(item.text)
            elif isinstance(item, Failed):
                if attempt.sent_text:  # the client saw part of this answer: it must discard it
                    await stream.reset(f"{item.provider} failed mid-answer; a new answer follows")
                attempt = _Attempt(stream, hits)
            elif isinstance(item, Completed):
                await attempt.finish()
                await stream.done(answerer=item.provider)
                return item.provider
    extractive = extractive_answer(question, hits)
    for piece in stream_pieces(extractive.text):
        await stream.token(piece)
    for n, hit in enumerate(extractive.cited, start=1):
        await _cite(stream, n, hit)
    await stream.done(answerer="extractive")
    return "extractive"


class GeneratorAgent(ConsumerAgent[GenerateRequest]):
    name = "generator"
    model = GenerateRequest

    _chain: ProviderChain | None = None

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["generator"]]

    async def start(self) -> None:
        self._chain = ProviderChain.from_settings(self._ctx.settings)
        names = [p.name for p in self._chain.providers]
        log.info("answering with %s", " -> ".join([*names, "extractive"]))

    async def close(self) -> None:
        if self._chain is not None:
            await self._chain.aclose()

    async def handle(self, deliveries: Sequence[Delivery[GenerateRequest]]) -> None:
        for d in deliveries:
            request = d.payload.request
            stream = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            await answer(request.query, d.payload.hits, stream, self._chain)

    async def on_give_up(self, delivery: Delivery[GenerateRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "generation_failed", "answering failed; try again (the details are in the generator's log)"
        )
