"""retriever: `query.retrieve.<tenant>` -> hybrid search of the serving collection, filtered by tenant
-> `query.rerank.<tenant>`.

Hybrid: the dense text vector (meaning) and the sparse BM25 vector (exact words, identifiers, error codes)
are searched separately and fused with Reciprocal Rank Fusion (score = sum of 1 / (k + rank), k = 60 as in
Cormack et al. 2009; note Qdrant's built-in RRF uses a different k). The fused score is scaled so the best
candidate has 1.0: ranks, not raw similarities, are comparable across the two signals.

Knowledge-graph expansion (`agents.graph`, off unless `graph_expansion`): the chunks linked to the question's
entities and to their neighbours within `graph_hops` are one more ranking in the fusion, weighted by
`graph_weight`, so a chunk that shares no word with the question but names an entity the question's entity is
related to can become a candidate. The graph is built in memory from stream GRAPH by every replica.

Cross-modal (`agents.query_images`): the ``image`` vector is searched too, with a query image's vector (image ->
image) and, with CLIP, with the question's text-tower vector (text -> image); each is one more ranking in the
fusion. An image query without text searches with the text OCR reads in the image.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from agents.query_images import CrossModalQueries, ImageQuery, image_ranking
from agents.graph import GraphQuery, ServingGraph
from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from agents.sparse import SparseEncoder
from agents.vectorstore import SPARSE, TEXT_DENSE, CollectionNotFound, SearchFilter, SparseVector, VectorHit, VectorStore
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import Hit, QueryRequest, RerankRequest, SparseTerms
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects


def rrf(
    rankings: Sequence[Sequence[VectorHit]], *, k: float, limit: int, weights: Sequence[float] | None = None
) -> list[VectorHit]:
    """Reciprocal Rank Fusion of several rankings (each weighted, 1 by default); scores scaled to (0, 1], best first."""
    scores: dict[str, float] = {}
    first_seen: dict[str, VectorHit] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (k + rank)
            first_seen.setdefault(hit.id, hit)
    if not scores:
        return []
    best = max(scores.values())
    ordered = sorted(scores, key=lambda i: scores[i], reverse=True)[:limit]
    return [VectorHit(i, scores[i] / best, first_seen[i].payload) for i in ordered]


def search_filter(request: QueryRequest) -> SearchFilter:
    """The store filter of a request: its tenant (from the subject the request came on, checked by the runtime)
    and the request's own filters. Every vector searched for the request uses it."""
    f = request.filters
    return SearchFilter(
        tenant=request.tenant,
        doc_ids=None if f.doc_ids is None else frozenset(f.doc_ids),
        modalities=None if f.modalities is None else frozenset(f.modalities),
        pages=f.pages,
    )


def _search(
    store: VectorStore, alias: str, dense: list[float] | None, sparse: SparseTerms | None, where: SearchFilter,
    limit: int, k: float, images: Sequence[ImageQuery] = (), graph: GraphQuery | None = None,
    cosines: dict[str, float] | None = None,
) -> list[VectorHit]:  # fmt: skip
    """The fused candidates; `cosines`, if given, receives the text-dense cosine of each point the dense search
    found (the reranker's absolute relevance signal: fused scores are ranks, the best always 1.0).

    The alias is resolved once, and every search of the query goes to that collection: a re-index flip between
    two of them (another process re-points the alias on a Qdrant server) must not fuse two generations. That is
    one more round trip per query on a server; the embedded store answers it in memory.
    """
    for _ in range(2):  # twice: the resolved generation may be dropped right after the resolve (grace 0)
        collection = store.resolve(alias)
        if collection is None:
            return []  # nothing was ever indexed
        with contextlib.suppress(CollectionNotFound):
            return _search_collection(store, collection, dense, sparse, where, limit, k, images, graph, cosines)
    return []


def _search_collection(
    store: VectorStore, collection: str, dense: list[float] | None, sparse: SparseTerms | None, where: SearchFilter,
    limit: int, k: float, images: Sequence[ImageQuery], graph: GraphQuery | None, cosines: dict[str, float] | None,
) -> list[VectorHit]:  # fmt: skip
    """`_search` on one collection; raises `CollectionNotFound` (a generation dropped after the resolve)."""
    rankings = []
    if dense is not None:  # None: an image query with no text (agents.query_images)
        rankings.append(store.search(collection, dense, using=TEXT_DENSE, filter=where, limit=limit))
        if cosines is not None:
            cosines.update((h.id, h.score) for h in rankings[-1])
    if sparse is not None:
        query = SparseVector(tuple(sparse.indices), tuple(sparse.values))
        rankings.append(store.search(collection, query, using=SPARSE, filter=where, limit=limit))
    first_image = len(rankings)
    rankings += [image_ranking(store, collection, image, where, limit) for image in images]
    weights = [1.0] * len(rankings)
    if graph is not None and dense is not None:  # knowledge-graph expansion: one more ranking, weighted
        rankings.append(graph.ranking(store, collection, dense, where))
        weights.append(graph.weight)
    for i, image in enumerate(images, start=first_image):
        if image.min_score is not None:  # a same-picture match outweighs every other ranking together
            weights[i] = 1.0 + sum(weights) - weights[i]
    return rrf(rankings, k=k, limit=limit, weights=weights)


def to_hit(hit: VectorHit, dense_score: float | None = None) -> Hit:
    p = hit.payload
    return Hit(
        chunk_id=p.chunk_id, doc_id=p.doc_id, filename=p.filename, page=p.page, bbox=p.bbox,
        modality=p.modality, text=p.text, score=hit.score, headings=list(p.headings), image=p.image,
        dense_score=dense_score,
    )  # fmt: skip


class RetrieverAgent(ConsumerAgent[QueryRequest]):
    name = "retriever"
    model = QueryRequest
    needs = frozenset({Resource.TEXT_EMBEDDER, Resource.VECTOR_STORE, Resource.IMAGE_ENCODER})

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self._sparse = SparseEncoder()
        self._graph: ServingGraph | None = None
        self._cross_modal: CrossModalQueries | None = None

    async def start(self) -> None:
        self._cross_modal = CrossModalQueries(
            self._ctx.js, self._ctx.shared.image_encoder, ocr=self._ctx.settings.query_image_ocr
        )
        await self._start_graph()

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["retriever"]]

    def fetch_batch(self) -> int:
        return 4

    async def _start_graph(self) -> None:
        """With `graph_expansion` on, fold stream GRAPH into this replica's graph before taking queries (the
        serving generation's facts, followed across re-index flips)."""
        if self._ctx.settings.graph_expansion:
            self._graph = ServingGraph(self._ctx.js, self._ctx.generation)
            await self._graph.start()

    async def close(self) -> None:
        if self._graph is not None:
            await self._graph.close()

    def _graph_query(self, tenant: str, text: str | None) -> GraphQuery | None:
        s = self._ctx.settings
        if self._graph is None or not text:
            return None
        return GraphQuery.of(self._graph.graph, tenant, text, hops=s.graph_hops, limit=s.graph_candidates,
                             weight=s.graph_weight)  # fmt: skip

    async def handle(self, deliveries: Sequence[Delivery[QueryRequest]]) -> None:
        embedder = self._ctx.shared.embedder
        requests = [d.payload for d in deliveries]
        assert self._cross_modal is not None
        cross = [await self._cross_modal.prepare(r) for r in requests]
        embedded = iter(await asyncio.to_thread(embedder.embed, [c.text for c in cross if c.text]))
        s = self._ctx.settings
        out = []
        for d, request, modal in zip(deliveries, requests, cross, strict=True):
            limit = max(s.retrieve_candidates, request.top_k)
            vector = next(embedded) if modal.text else None
            sparse = self._sparse.encode_query(modal.text) if modal.text else None
            where = search_filter(request)
            graph = self._graph_query(request.tenant, modal.text)
            cosines: dict[str, float] = {}
            hits = await self._ctx.shared.in_store(
                _search, s.collection, vector, sparse, where, limit, s.rrf_k, modal.images, graph, cosines
            )
            if request.query is None and modal.text:  # the reranker scores against what was searched: the OCR text
                request = request.model_copy(update={"query": modal.text})
            rerank = RerankRequest(request=request, candidates=[to_hit(h, cosines.get(h.id)) for h in hits])
            out.append(
                Outgoing(Subjects.query(Subjects.QUERY_RERANK, request.tenant), rerank, f"{request.request_id}:rerank",
                         d.trace_headers)
            )  # fmt: skip
        await publish_all(self._ctx.js, out)

    async def on_give_up(self, delivery: Delivery[QueryRequest], reason: str) -> None:
        request = delivery.payload
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "retrieval_failed", "retrieval failed; try again (the details are in the retriever's log)"
        )
