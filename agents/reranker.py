"""reranker: `query.rerank` -> ordered hits -> `query.generate` (ask) or the results event (search).

Scores the retriever's candidates with the configured scorer (`search.rerank`), sends them as the answer's
`retrieval` event (seq 0), and makes the abstention decision (`search.abstention.decide`, with this process's
`MMRAG_ABSTAIN_THRESHOLD` and `MMRAG_ABSTAIN_PARAPHRASE_COSINE`; the paraphrase cosine is measured with the text
embedder only when the score alone would decline). The decision travels on `GenerateRequest.abstain`: the
generator follows it and decides nothing itself.

A search whose request waited in the queue longer than `MMRAG_RERANK_SEARCH_QUEUE_BUDGET_S` is ranked by the
lexical scorer (`mmrag_rerank_shed` counts them): under a backlog the reranker drains it in milliseconds a
request instead of letting every later search wait for an embedding call each (decision 86). Asks are always
ranked by the configured scorer, on which abstention is calibrated.

Cosines depend on the text model that measured them: the retriever names its generation's model on the
`RerankRequest`, and the scorer of that model (its sentence embeddings, its `CosineProfile`) scores.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import GenerateRequest, Hit, QueryMode, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects
from documents import sentences
from models.embedding_models import profile
from search.abstention import decide
from search.rerank import (
    CrossEncoderScorer,
    LexicalScorer,
    Scorer,
    SentenceScorer,
    above_floor,
    build_scorer,
    rerank,
)
from telemetry.metrics import RERANK_SHED

log = logging.getLogger(__name__)


class RerankerAgent(ConsumerAgent[RerankRequest]):
    name = "reranker"
    model = RerankRequest
    needs = frozenset({Resource.TEXT_EMBEDDER})  # the paraphrase signal of abstention (`paraphrase_cosine`)

    _scorers: dict[str, Scorer]

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["reranker"]]

    def fetch_batch(self) -> int:
        return 4

    async def start(self) -> None:
        self._scorers = {}
        scorer = await self._scorer_for(None)
        await asyncio.to_thread(sentences.load)  # the sentence rules' language model, before the first question
        log.info("reranking with %s", type(scorer).__name__)

    async def _scorer_for(self, model: str | None) -> Scorer:
        """The scorer of candidates searched with text model `model` (None = the process default): sentence
        cosines with that model, cosines mapped with its profile (`models.embedding_models`). One per model."""
        s = self._ctx.settings
        name = model or s.embedding_model
        key = "cross-encoder" if s.reranker_model_path is not None else name  # it reads text: one for every model
        if key not in self._scorers:
            encoder = await self._ctx.shared.text_model(name, "query")
            self._scorers[key] = build_scorer(
                s.reranker_model_path, device=s.embedding_device, embed=encoder.embed_array,
                sentence_weight=s.rerank_sentence_weight, cosines=profile(name),
            )  # fmt: skip
        return self._scorers[key]

    async def handle(self, deliveries: Sequence[Delivery[RerankRequest]]) -> None:
        generate = []
        for d in deliveries:
            request = d.payload.request
            scorer = await self._scorer_for(d.payload.embedding_model)
            model_call = isinstance(scorer, CrossEncoderScorer | SentenceScorer)
            if model_call and request.mode is QueryMode.SEARCH and self._overdue(d):
                scorer = LexicalScorer(profile(d.payload.embedding_model or self._ctx.settings.embedding_model))
                model_call = False
                RERANK_SHED.inc()
            query = request.query or ""  # an image query with no text has no words: fused order and cosines decide
            ranking = functools.partial(rerank, query, d.payload.candidates, request.top_k, scorer=scorer,
                                        rewrites=d.payload.rewrites)  # fmt: skip
            hits = await asyncio.to_thread(ranking) if model_call else ranking()  # a model: off the event loop
            answer = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            if request.mode is QueryMode.SEARCH:
                await answer.results(above_floor(hits, self._ctx.settings.search_min_score))
            else:
                await answer.retrieval(hits, searched=request.query)  # a follow-up: as the retriever resolved it
                abstain = await self._abstain(query, hits, d.payload.embedding_model, scorer)
                generate.append(
                    Outgoing(Subjects.query(Subjects.QUERY_GENERATE, request.tenant),
                             GenerateRequest(request=request, hits=hits, abstain=abstain),
                             f"{request.request_id}:generate", d.trace_headers)
                )  # fmt: skip
        await publish_all(self._ctx.js, generate)

    def _overdue(self, delivery: Delivery[RerankRequest]) -> bool:
        """Whether the request waited in this consumer's queue (since the retriever published it) longer than
        `MMRAG_RERANK_SEARCH_QUEUE_BUDGET_S` (0: never): the reranker is behind, and a search then gets the
        lexical scorer, milliseconds instead of an embedding call, so the backlog drains (decision 86)."""
        budget = self._ctx.settings.rerank_search_queue_budget_s
        waited = (datetime.now(UTC) - delivery.msg.metadata.timestamp).total_seconds()
        return budget > 0 and waited > budget

    async def _abstain(self, query: str, hits: Sequence[Hit], model: str | None, scorer: Scorer) -> bool:
        """The abstention decision for these hits. The paraphrase signal needs the offline scorer (a
        cross-encoder reads meaning itself); measuring it embeds sentences, so it runs off the event loop. Its
        raw-cosine threshold is the model's own where its profile has one (e5), else the setting (MiniLM's)."""
        s = self._ctx.settings
        name = model or s.embedding_model
        embed = (await self._ctx.shared.text_model(name, "query")).embed_array if isinstance(scorer, LexicalScorer) else None
        paraphrase = profile(name).paraphrase
        return await asyncio.to_thread(decide, query, hits, threshold=s.abstain_threshold,
                                       paraphrase_threshold=s.abstain_paraphrase_cosine if paraphrase is None else paraphrase,
                                       embed=embed)  # fmt: skip

    async def on_give_up(self, delivery: Delivery[RerankRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "rerank_failed", "ranking the results failed; try again (the details are in the reranker's log)"
        )
