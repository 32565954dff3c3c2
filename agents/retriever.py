"""retriever: `query.retrieve.<tenant>` -> hybrid search of the serving collection, filtered by tenant
-> `query.rerank.<tenant>`.

Hybrid: the dense text vector (meaning) and the sparse BM25 vector (exact words, identifiers, error codes)
are searched separately and fused with Reciprocal Rank Fusion (score = sum of 1 / (k + rank), k = 60 as in
Cormack et al. 2009; note Qdrant's built-in RRF uses a different k). The fused score is scaled so the best
candidate has 1.0: ranks, not raw similarities, are comparable across the two signals.

Knowledge-graph expansion (`search.graph`, off unless `graph_expansion`): the chunks linked to the question's
entities and to their neighbours within `graph_hops` are one more ranking in the fusion, weighted by
`graph_weight`, so a chunk that shares no word with the question but names an entity the question's entity is
related to can become a candidate. The graph is built in memory from stream GRAPH by every replica.

Cross-modal (`search.query_images`): the ``image`` vector is searched too, with a query image's vector (image ->
image) and, with CLIP, with the question's text-tower vector (text -> image); each is one more ranking in the
fusion. An image query without text searches with the text OCR reads in the image.

Conversations (`search.followup`): a question that carries its conversation's history is resolved first (by the
first LLM provider of `MMRAG_LLM_PROVIDERS` when one is configured, else by the offline rules); the standalone
question is what is searched and what the request carries on as its `query`. An ask without history gets, with an
LLM configured, a search query in the documents' words (`search_query_with_llm`), searched as one more part and
passed to the reranker (`RerankRequest.rewrites`), which keeps its best candidate (decision 90).

Model: the question is embedded with the text embedding model of the generation it searches (its record's
`embedding_model`, each model loaded once per process): the one the alias points at, whose collection is then
searched (not the alias), or the one a request names (`generation`: an evaluation of a building generation,
`search.evaluation`), whose collection is searched instead of the alias.

Wording (`search.expansion`, `query_feedback_docs`, `dense_first_overlap`): words of the top dense hits join
the sparse query, and the dense ranking weighs more when the sparse hits share few of the question's words.

Browse (mode `browse`, the document page's passages): the chunks of one document's page range, read from the
store in document order and sent straight to the answer subject as `results` (nothing to rank or rerank).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery, PermanentError
from bus.answers import AnswerEmitter
from bus.generations import GenerationStore
from bus.publish import Outgoing, publish_all
from contracts.messages import QueryMode, QueryRequest, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, IndexGeneration, Subjects, generation_of
from models.extractive import question_parts
from models.llm import ProviderChain
from models.sparse import SparseEncoder
from search.expansion import Rewrite
from search.followup import resolve, rewrite_with_llm, search_query_with_llm
from search.graph import GraphQuery, ServingGraph
from search.hybrid import PartQuery, browse_chunks, hybrid_search, search_filter, to_hit
from search.query_images import CrossModalQueries, QueryImageUnusable


LLM_QUESTIONS_IN_FLIGHT = 8  # questions a retriever handles at once when some wait for an LLM


class RetrieverAgent(ConsumerAgent[QueryRequest]):
    name = "retriever"
    model = QueryRequest
    needs = frozenset({Resource.TEXT_EMBEDDER, Resource.VECTOR_STORE, Resource.IMAGE_ENCODER})

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._sparse = SparseEncoder()
        self._graph: ServingGraph | None = None
        self._cross_modal: CrossModalQueries | None = None
        self._generations: GenerationStore | None = None
        self._models: dict[int, str | None] = {}  # generation -> its text embedding model (None: process default)
        self._llm: ProviderChain | None = None

    async def start(self) -> None:
        s = self._ctx.settings
        if s.llm_providers:  # follow-ups are rewritten, and asks get a search query, by the LLM (`search.followup`)
            self._llm = ProviderChain(s.llm_providers, connect_timeout_s=s.llm_connect_timeout_s,
                                      read_timeout_s=s.llm_read_timeout_s, max_tokens=s.llm_max_tokens,
                                      circuit_failures=s.llm_circuit_failures,
                                      circuit_cooldown_s=s.llm_circuit_cooldown_s)  # fmt: skip
        self._cross_modal = CrossModalQueries(
            self._ctx.js, self._ctx.shared.image_encoder, ocr=self._ctx.settings.query_image_ocr
        )
        await self._start_graph()

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["retriever"]]

    def fetch_batch(self) -> int:
        return 1 if self._ctx.settings.llm_providers else 4

    def concurrency(self) -> int:
        # With an LLM configured an ask waits for its search query, a follow-up for its rewrite (up to the LLM's read
        # timeout): each question is then handled on its own, so a slow provider holds that question only, not the
        # searches fetched with it or after it. Without one, batches of 4 share one embedding call.
        return LLM_QUESTIONS_IN_FLIGHT if self._ctx.settings.llm_providers else 1

    async def _start_graph(self) -> None:
        """With `graph_expansion` on, fold stream GRAPH into this replica's graph before taking queries (the
        serving generation's facts, followed across re-index flips)."""
        if self._ctx.settings.graph_expansion:
            self._graph = ServingGraph(self._ctx.js, self._ctx.generation)
            await self._graph.start()

    async def close(self) -> None:
        if self._graph is not None:
            await self._graph.close()
        if self._llm is not None:
            await self._llm.aclose()

    async def _standalone(self, request: QueryRequest) -> tuple[QueryRequest, bool]:
        """The request with its follow-up question resolved against its conversation's history (as is without), and
        whether it can be searched (False: a follow-up whose referent the conversation does not have)."""
        if not request.history or request.query is None:
            return request, True
        if self._llm is not None:
            resolution = await rewrite_with_llm(self._llm, request.query, request.history)
        else:
            resolution = resolve(request.query, request.history)
        update: dict[str, object] = {"query": resolution.question[:4000]}
        if resolution.doc_ids and request.filters.doc_ids is None:  # "the second one": that document
            update["filters"] = request.filters.model_copy(update={"doc_ids": resolution.doc_ids})
        return request.model_copy(update=update), resolution.method != "unresolved"

    async def _search_queries(self, requests: Sequence[QueryRequest], searchable: Sequence[bool]) -> dict[int, str]:
        """With an LLM configured, a search query in the documents' words for each ask typed without a conversation
        (`search.followup.search_query_with_llm`; a follow-up was already rewritten from its turns), by index; the
        asks of a batch ask at once. An ask whose LLM call fails is searched as typed."""
        if self._llm is None:
            return {}
        chain = self._llm
        wanted = [i for i, (r, ok) in enumerate(zip(requests, searchable, strict=True))
                  if ok and r.mode is QueryMode.ASK and r.query and not r.history]  # fmt: skip
        found = await asyncio.gather(*(search_query_with_llm(chain, requests[i].query or "") for i in wanted))
        return {i: query for i, query in zip(wanted, found, strict=True) if query is not None}

    def _graph_query(self, tenant: str, text: str | None) -> GraphQuery | None:
        s = self._ctx.settings
        if self._graph is None or not text:
            return None
        return GraphQuery.of(self._graph.graph, tenant, text, hops=s.graph_hops, limit=s.graph_candidates,
                             weight=s.graph_weight)  # fmt: skip

    async def _model_of(self, number: int) -> str:
        """The text embedding model of generation `number` (a generation's settings never change: read once)."""
        if number not in self._models:
            if self._generations is None:
                self._generations = await GenerationStore.open(self._ctx.js)
            record = await self._generations.get(number)
            self._models[number] = record.settings.embedding_model if record else None
        return self._models[number] or self._ctx.settings.embedding_model

    async def _serving(self) -> tuple[str, str]:
        """The collection the alias points at now (the alias itself when nothing was indexed yet) and the text
        embedding model of its generation."""
        s = self._ctx.settings
        collection = await self._ctx.shared.in_store(lambda store: store.resolve(s.collection))
        number = None if collection is None else generation_of(s.collection, collection)
        if collection is None or number is None:
            return collection or s.collection, s.embedding_model
        return collection, await self._model_of(number)

    async def handle(self, deliveries: Sequence[Delivery[QueryRequest]]) -> None:
        for d in deliveries:
            if d.payload.mode is QueryMode.BROWSE:
                await self._browse(d.payload)
        deliveries = [d for d in deliveries if d.payload.mode is not QueryMode.BROWSE]
        if not deliveries:
            return
        resolved = [await self._standalone(d.payload) for d in deliveries]
        requests = [request for request, _ in resolved]
        assert self._cross_modal is not None
        try:
            cross = [await self._cross_modal.prepare(r) for r in requests]
        except QueryImageUnusable as err:
            raise PermanentError(str(err)) from err
        s = self._ctx.settings
        # Each question is embedded with the model of the generation it searches, and that collection (not the
        # alias) is searched: a re-index to another model flipping meanwhile cannot mix the two vector spaces.
        # An evaluation of a given generation (`search.evaluation`) searches its collection.
        serving = await self._serving() if any(r.generation is None for r in requests) else None
        targets: list[tuple[str, str]] = []
        for r in requests:
            if r.generation is None:
                assert serving is not None
                targets.append(serving)
            else:
                targets.append((IndexGeneration(r.generation).collection(s.collection), await self._model_of(r.generation)))
        # A question that asks two things is searched part by part too (decision 88): its parts are embedded in
        # the same call as the question. Only a typed question: an image query's OCR text is no question.
        rewrites = await self._search_queries(requests, [ok for _, ok in resolved])
        asked: dict[int, list[str]] = {}
        for i, c in enumerate(cross):
            if c.text:
                parts = question_parts(c.text) if requests[i].query else [c.text]
                asked[i] = [c.text, *parts] if len(parts) > 1 else [c.text]
                asked[i] += [rewrites[i]] if i in rewrites else []  # one more part, in the documents' words
        vectors: dict[int, list[list[float]]] = {}
        for name in dict.fromkeys(model for _, model in targets):
            rows = [i for i in asked if targets[i][1] == name]
            if rows:
                embedder = await self._ctx.shared.text_model(name, "query")
                found = (await asyncio.to_thread(embedder.embed_queries, [t for i in rows for t in asked[i]])).tolist()
                for i in rows:
                    vectors[i], found = found[: len(asked[i])], found[len(asked[i]) :]
        rewrite = Rewrite(feedback_docs=s.query_feedback_docs, dense_first_overlap=s.dense_first_overlap)
        out = []
        for i, (d, request, modal) in enumerate(zip(deliveries, requests, cross, strict=True)):
            limit = max(s.retrieve_candidates, request.top_k)
            vector, *part_vectors = vectors.get(i) or [None]
            sparse = self._sparse.encode_query(modal.text) if modal.text else None
            parts = [PartQuery(text, v, self._sparse.encode_query(text))
                     for text, v in zip(asked.get(i, [])[1:], part_vectors, strict=True)]  # fmt: skip
            where = search_filter(request)
            collection, model_name = targets[i]
            # The graph follows the serving generation only, so an evaluation of another leaves it out.
            graph = self._graph_query(request.tenant, modal.text) if request.generation is None else None
            cosines: dict[str, float] = {}
            # An unresolved follow-up searches nothing: no candidates, so the reranker declines it.
            hits = [] if not resolved[i][1] else await self._ctx.shared.in_store(
                hybrid_search, collection, vector, sparse, where, limit, s.rrf_k, modal.images, graph, cosines,
                rewrite, modal.text, parts,
            )  # fmt: skip
            if request.query is None and modal.text:  # the reranker scores against what was searched: the OCR text
                request = request.model_copy(update={"query": modal.text})
            rerank = RerankRequest(request=request, candidates=[to_hit(h, cosines.get(h.id)) for h in hits],
                                   embedding_model=model_name, rewrites=[rewrites[i]] if i in rewrites else [])  # fmt: skip
            out.append(
                Outgoing(Subjects.query(Subjects.QUERY_RERANK, request.tenant), rerank, f"{request.request_id}:rerank",
                         d.trace_headers)
            )  # fmt: skip
        await publish_all(self._ctx.js, out)

    async def _browse(self, request: QueryRequest) -> None:
        hits = await self._ctx.shared.in_store(browse_chunks, self._ctx.settings.collection, search_filter(request))
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).results(hits)

    async def on_give_up(self, delivery: Delivery[QueryRequest], reason: str) -> None:
        request = delivery.payload
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "retrieval_failed", "retrieval failed; try again (the details are in the retriever's log)"
        )
