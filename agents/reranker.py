"""reranker: `query.rerank` -> ordered hits -> `query.generate` (ask) or the results event (search).

Scores the retriever's candidates with the configured scorer (`search.rerank`), sends them as the answer's
`retrieval` event (seq 0), and makes the abstention decision (`search.abstention.decide`, with this process's
`MMRAG_ABSTAIN_THRESHOLD` and `MMRAG_ABSTAIN_PARAPHRASE_COSINE`; the paraphrase cosine is measured with the text
embedder only when the score alone would decline). The decision travels on `GenerateRequest.abstain`: the
generator follows it and decides nothing itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import GenerateRequest, Hit, QueryMode, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects
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

log = logging.getLogger(__name__)


class RerankerAgent(ConsumerAgent[RerankRequest]):
    name = "reranker"
    model = RerankRequest
    needs = frozenset({Resource.TEXT_EMBEDDER})  # the paraphrase signal of abstention (`paraphrase_cosine`)

    _scorer: Scorer | None = None

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["reranker"]]

    def fetch_batch(self) -> int:
        return 4

    async def start(self) -> None:
        s = self._ctx.settings
        self._scorer = build_scorer(s.reranker_model_path, device=s.embedding_device,
                                    embed=self._ctx.shared.embedder.embed_array, sentence_weight=s.rerank_sentence_weight)  # fmt: skip
        log.info("reranking with %s", type(self._scorer).__name__)

    async def handle(self, deliveries: Sequence[Delivery[RerankRequest]]) -> None:
        generate = []
        for d in deliveries:
            request = d.payload.request
            query = request.query or ""  # an image query with no text has no words: fused order and cosines decide
            if isinstance(self._scorer, CrossEncoderScorer | SentenceScorer):  # a model: off the event loop
                hits = await asyncio.to_thread(rerank, query, d.payload.candidates, request.top_k, scorer=self._scorer)
            else:
                hits = rerank(query, d.payload.candidates, request.top_k, scorer=self._scorer)
            answer = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            if request.mode is QueryMode.SEARCH:
                await answer.results(above_floor(hits, self._ctx.settings.search_min_score))
            else:
                await answer.retrieval(hits, searched=request.query)  # a follow-up: as the retriever resolved it
                abstain = await self._abstain(query, hits)
                generate.append(
                    Outgoing(Subjects.query(Subjects.QUERY_GENERATE, request.tenant),
                             GenerateRequest(request=request, hits=hits, abstain=abstain),
                             f"{request.request_id}:generate", d.trace_headers)
                )  # fmt: skip
        await publish_all(self._ctx.js, generate)

    async def _abstain(self, query: str, hits: Sequence[Hit]) -> bool:
        """The abstention decision for these hits. The paraphrase signal needs the offline scorer (a
        cross-encoder reads meaning itself); measuring it embeds sentences, so it runs off the event loop."""
        s = self._ctx.settings
        embed = self._ctx.shared.embedder.embed_array if isinstance(self._scorer, LexicalScorer) else None
        return await asyncio.to_thread(decide, query, hits, threshold=s.abstain_threshold,
                                       paraphrase_threshold=s.abstain_paraphrase_cosine, embed=embed)  # fmt: skip

    async def on_give_up(self, delivery: Delivery[RerankRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "rerank_failed", "ranking the results failed; try again (the details are in the reranker's log)"
        )
