"""generator: `query.generate` -> answer events (tokens, citations, done) on the request's reply subject.

When the reranker's best score is below `MMRAG_ABSTAIN_THRESHOLD`, nothing answers: the answer says the question
was not found in the documents and `done` carries `abstained: true`. Otherwise answers come from a chain: the
LLM providers of `MMRAG_LLM_PROVIDERS` in order (`agents.llm`), then the offline extractive answerer, which
quotes the units of the reranked hits that hold what is asked (sentences; a table's matching row under its
header; an image's caption and OCR text), each followed by its citation number. It needs no model and no API
key and never fails, so the system always answers. A provider that fails before its first token hands over silently; one that fails mid-answer after
some text was sent is followed by a `reset` event (discard the text so far) and the next link's whole answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from agents.lexical import contains_identifier, identifiers, terms, units
from agents.llm import CitationTracker, Completed, Failed, ProviderChain, Text, build_messages
from agents.reranker import abstains
from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter, stream_pieces
from contracts.messages import GenerateRequest, Hit
from contracts.topology import QUERY_CONSUMERS, ConsumerDef

log = logging.getLogger(__name__)

NOTHING_FOUND = "I could not find anything about that in the ingested documents."
NOT_FOUND = "Not found in your documents: none of the passages I retrieved answers this question."
ABSTAINED = "abstention"  # done.answerer when no answerer ran because nothing matched
MAX_QUOTES = 3
RELATED_SHARE = 0.6  # a further quote must score at least this share of the best one
RANK_WEIGHT = 0.25  # how much the reranker's score of a unit's hit adds to the unit's own match
MISSING_IDENTIFIER_FACTOR = 0.3  # a unit of a hit without any of the question's identifiers
IDENTIFIER_WEIGHT = 3.0  # an identifier of the question weighs this many times its rarest word


@dataclass(frozen=True)
class ExtractiveAnswer:
    text: str
    cited: list[Hit]  # cited[n - 1] is the hit behind "[n]"


def _quotable(hit: Hit) -> list[tuple[str, str]]:
    """(text to match, text to quote) units of a hit: sentences; a table's rows under its header; for an image,
    its whole text (caption and OCR lines) as one quote, the lines joined by " / "."""
    if hit.modality == "image":
        lines = [line.strip() for line in hit.text.splitlines() if line.strip()]
        return [(hit.text, " / ".join(lines))] if lines else []
    return units(hit.text, hit.modality)


def extractive_answer(question: str, hits: Sequence[Hit]) -> ExtractiveAnswer:
    """Quote the units (sentences, table rows, image text) of `hits` (reranked, best first) that hold what the
    question asks, each followed by its citation number.

    A unit's score: the IDF-weighted share of the question's words it contains (IDF over the units; an
    identifier weighs `IDENTIFIER_WEIGHT` times the rarest word; a unit of a hit that has none of the question's
    identifiers keeps 30%), plus
    `RANK_WEIGHT` times its hit's score. The best unit is quoted, then up to two more that match, score at
    least `RELATED_SHARE` of it and come from a hit scored at least `RELATED_SHARE` of the best hit. A unit quoted once
    is not quoted again (the same text on two pages is cited once). With no unit matching a word of the
    question, the best hit's first unit is offered as the closest passage.
    """
    if not hits:
        return ExtractiveAnswer(NOTHING_FOUND, [])
    wanted = identifiers(question)
    asked = terms(question) - {t for i in wanted for t in terms(i)}
    candidates = [(rank, hit, match, quote) for rank, hit in enumerate(hits) for match, quote in _quotable(hit)]
    unit_terms = [terms(c[2]) for c in candidates]
    n = len(candidates)
    weights = {t: math.log(1 + (n - (df := sum(t in u for u in unit_terms)) + 0.5) / (df + 0.5)) for t in asked}
    # An identifier weighs three times the rarest word: the unit that names the error code answers "what does E-103
    # mean" better than the heading that holds "error" and "code".
    id_weight = IDENTIFIER_WEIGHT * max(weights.values(), default=1.0)
    total = sum(weights.values()) + id_weight * len(wanted)
    about = [not wanted or any(contains_identifier(h.text, i) for i in wanted) for h in hits]
    scored = []
    for (rank, hit, match, quote), have in zip(candidates, unit_terms, strict=True):
        named = sum(contains_identifier(match, i) for i in wanted)
        coverage = (sum(w for t, w in weights.items() if t in have) + id_weight * named) / total if total else 0.0
        if not about[rank]:  # the hit is not about the identifiers asked for
            coverage *= MISSING_IDENTIFIER_FACTOR
        scored.append((coverage + RANK_WEIGHT * max(hit.score, 0.0), -rank, coverage > 0, quote, hit))
    scored.sort(key=lambda c: (c[0], c[1]), reverse=True)
    best = scored[0][0] if scored else 0.0
    top_hit = max(hits[0].score, 0.0)
    chosen = []
    seen: set[str] = set()
    for c in scored:
        key = " ".join(c[3].lower().split())
        related = not chosen or (c[0] >= RELATED_SHARE * best and c[4].score >= RELATED_SHARE * top_hit)
        if c[2] and related and key not in seen:
            seen.add(key)
            chosen.append(c)
        if len(chosen) == MAX_QUOTES:
            break
    if not chosen:  # nothing matches word for word: offer the best passage as it is
        return ExtractiveAnswer(f"The closest passage I found: {hits[0].text} [1]", [hits[0]])
    cited: list[Hit] = []
    parts = []
    for *_, quote, hit in chosen:
        if hit not in cited:
            cited.append(hit)
        separator = "\n" if "\n" in quote else " "  # a table row quote keeps its lines
        parts.append(f"{quote}{separator}[{cited.index(hit) + 1}]")
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
    question: str,
    hits: Sequence[Hit],
    stream: AnswerEmitter,
    chain: ProviderChain | None = None,
    *,
    abstain_threshold: float = 0.0,
    paraphrase: float | None = None,
    paraphrase_threshold: float = 0.0,
) -> str:
    """Stream the answer to `question` from `hits` (reranked, best first) as events; returns the answerer's name.

    When the reranker says nothing matches (`abstains`: no hit, or the best score below `abstain_threshold` and
    the question's `paraphrase` cosine, when measured, below `paraphrase_threshold`), no answerer runs: the
    answer is `NOT_FOUND`, with no citation, and `done` carries `abstained: true`.
    """
    if abstains(hits, abstain_threshold, paraphrase=paraphrase, paraphrase_threshold=paraphrase_threshold):
        for piece in stream_pieces(NOT_FOUND):
            await stream.token(piece)
        await stream.done(answerer=ABSTAINED, abstained=True)
        return ABSTAINED
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
            # A redelivery numbers its events from 1 again: `attempt` lets the edge API replace what an earlier
            # delivery streamed (an LLM does not answer the same twice) instead of mixing the two.
            stream = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id,
                                   attempt=d.num_delivered)  # fmt: skip
            s = self._ctx.settings
            await answer(request.query or "", d.payload.hits, stream, self._chain,
                         abstain_threshold=s.abstain_threshold, paraphrase=d.payload.paraphrase,
                         paraphrase_threshold=s.abstain_paraphrase_cosine)  # fmt: skip

    async def on_give_up(self, delivery: Delivery[GenerateRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "generation_failed", "answering failed; try again (the details are in the generator's log)"
        )
