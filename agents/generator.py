"""generator: `query.generate` -> answer events (tokens, citations, done) on `answer.<tenant>.<request_id>`.

When the reranker decided to abstain (`GenerateRequest.abstain`: the generator has no threshold of its own),
nothing answers: the answer says the question was not found in the documents and `done` carries
`abstained: true`. Otherwise answers come from a chain: the
LLM providers of `MMRAG_LLM_PROVIDERS` in order (`models.llm`), then the offline extractive answerer, which
quotes the units of the reranked hits that hold what is asked, by meaning and words (sentences; a table's
matching row under its header; an image's caption and OCR text; one for each part of a two-part question),
each followed by its citation number. It needs no API key and never fails, so the system always answers; it
embeds the units with the process's text model (loaded on its first use, shared with the reranker where both
run in one process). A provider that fails before its first token hands over silently; one that fails mid-answer after
some text was sent is followed by a `reset` event (discard the text so far) and the next link's whole answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from agents.runtime.agent import ConsumerAgent
from agents.runtime.worker import Delivery
from agents.settings import AgentSettings
from bus.answers import AnswerEmitter, stream_pieces
from contracts.messages import GenerateRequest, Hit
from contracts.topology import QUERY_CONSUMERS, ConsumerDef
from documents import sentences
from models.embedding_models import CosineProfile, profile
from models.extractive import extractive_answer
from models.llm import (
    MAX_PICTURE_BYTES,
    MAX_PICTURES,
    CitationTracker,
    Completed,
    Failed,
    Picture,
    ProviderChain,
    Text,
    build_messages,
)
from models.similarity import Embed

log = logging.getLogger(__name__)

NOT_FOUND = "Not found in your documents: none of the passages I retrieved answers this question."
ABSTAINED = "abstention"  # done.answerer when no answerer ran because nothing matched


async def _cite(stream: AnswerEmitter, n: int, hit: Hit) -> None:
    await stream.citation(
        n=n, doc_id=hit.doc_id, filename=hit.filename, page=hit.page, bbox=hit.bbox, locator=hit.locator,
        text=hit.text, image=hit.image,
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
    abstain: bool = False,
    embed: Embed | None = None,
    cosines: CosineProfile | None = None,
    pictures: Mapping[int, Picture] | None = None,
) -> str:
    """Stream the answer to `question` from `hits` (reranked, best first) as events; returns the answerer's name.

    When the reranker decided that nothing matches (`abstain`, from `GenerateRequest.abstain`), no answerer
    runs: the answer is `NOT_FOUND`, with no citation, and `done` carries `abstained: true`. `embed`: the text
    embedder the extractive answerer reads meaning with (None: by words only; `cosines`: its model's profile,
    default MiniLM's); it runs off the event loop. `pictures`: the image hits' pictures by source number, sent
    to the providers that read images (`LLMProvider.vision`) with the same prompt.
    """
    if abstain:
        for piece in stream_pieces(NOT_FOUND):
            await stream.token(piece)
        await stream.done(answerer=ABSTAINED, abstained=True)
        return ABSTAINED
    if chain is not None and chain.providers:
        attempt = _Attempt(stream, hits)
        vision = build_messages(question, hits, pictures) if pictures else None
        async for item in chain.stream(build_messages(question, hits), vision_messages=vision):
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
    extractive = await asyncio.to_thread(extractive_answer, question, hits, embed=embed, cosines=cosines)
    for piece in stream_pieces(extractive.text):
        await stream.token(piece)
    for n, hit in enumerate(extractive.cited, start=1):
        await _cite(stream, n, hit)
    await stream.done(answerer="extractive")
    return "extractive"


def provider_chain(settings: AgentSettings) -> ProviderChain:
    """The LLM providers the settings name, in their order, with the settings' timeouts, answer length and circuit
    breakers."""
    return ProviderChain(
        settings.llm_providers,
        connect_timeout_s=settings.llm_connect_timeout_s,
        read_timeout_s=settings.llm_read_timeout_s,
        max_tokens=settings.llm_max_tokens,
        circuit_failures=settings.llm_circuit_failures,
        circuit_cooldown_s=settings.llm_circuit_cooldown_s,
    )


class GeneratorAgent(ConsumerAgent[GenerateRequest]):
    name = "generator"
    model = GenerateRequest

    _chain: ProviderChain | None = None
    _vision = False  # a provider of the chain reads images: image hits' pictures are fetched for it

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["generator"]]

    def concurrency(self) -> int:
        # One at a time, a hanging provider made the k-th waiting question wait k read timeouts (found by
        # bench/reliability.py: past the edge API's query timeout, they were lost).
        return self._ctx.settings.generator_questions_in_flight

    async def start(self) -> None:
        self._chain = provider_chain(self._ctx.settings)
        self._vision = any(p.vision for p in self._chain.providers)
        await asyncio.to_thread(sentences.load)  # the sentence rules' language model, before the first question
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
            pictures = await self._pictures(request.tenant, d.payload.hits) if self._vision else None
            await answer(request.query or "", d.payload.hits, stream, self._chain, abstain=d.payload.abstain,
                         embed=self._embed, cosines=profile(self._ctx.settings.embedding_model),
                         pictures=pictures)  # fmt: skip

    async def _pictures(self, tenant: str, hits: Sequence[Hit]) -> dict[int, Picture]:
        """The stored pictures of the first `MAX_PICTURES` image hits, by source number, for a provider that reads
        images; a picture over `MAX_PICTURE_BYTES` or that cannot be read is left to its caption and OCR text."""
        out: dict[int, Picture] = {}
        for n, hit in enumerate(hits, start=1):
            if len(out) == MAX_PICTURES:
                break
            if hit.modality != "image" or hit.image is None:
                continue
            try:
                store = await self._ctx.uploads.store(tenant)
                if (await store.get_info(hit.image.object_name)).size > MAX_PICTURE_BYTES:
                    continue
                data = (await store.get(hit.image.object_name)).data or b""
            except Exception:  # a deleted document's image, the bus briefly away: answer from the text
                log.warning("picture %s of source [%d] unreadable; sent as text only", hit.image.object_name, n,
                            exc_info=True)  # fmt: skip
                continue
            if data:
                out[n] = Picture(hit.image.mime, data)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        """The process default text model (loaded on the first extractive answer, in its thread), as `Embed`."""
        return self._ctx.shared.text_models.get(None, "query").embed_array(texts)

    async def on_give_up(self, delivery: Delivery[GenerateRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "generation_failed", "answering failed; try again (the details are in the generator's log)"
        )
