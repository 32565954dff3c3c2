"""Hybrid search of one index alias: the dense text vector (meaning) and the sparse BM25 vector (exact words,
identifiers, error codes) are searched separately and fused with Reciprocal Rank Fusion (score = sum of
1 / (k + rank), k = 60 as in Cormack et al. 2009; note Qdrant's built-in RRF uses a different k). The fused score
is scaled so the best candidate has 1.0: ranks, not raw similarities, are comparable across the signals.

Knowledge-graph expansion (`search.graph`) and the cross-modal rankings (`search.query_images`) are more
rankings in the same fusion. A `Rewrite` (`search.expansion`) adds words of the top dense hits to the sparse
query (pseudo-relevance feedback) and weighs the dense ranking more when the sparse hits share few of the
question's words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.messages import Hit, QueryRequest, SparseTerms
from search.expansion import Rewrite, expanded_sparse, feedback_terms, fusion_weights
from search.graph import GraphQuery
from search.query_images import ImageQuery, image_ranking
from search.vectorstore import (
    SPARSE,
    TEXT_DENSE,
    CollectionNotFound,
    SearchFilter,
    SparseVector,
    VectorHit,
    VectorStore,
)


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
        collections=None if f.collections is None else frozenset(f.collections),
    )


@dataclass(frozen=True)
class PartQuery:
    """One part of a question that asks two things (`models.extractive.question_parts`), searched on its own."""

    text: str
    dense: list[float]
    sparse: SparseTerms | None


def hybrid_search(
    store: VectorStore, alias: str, dense: list[float] | None, sparse: SparseTerms | None, where: SearchFilter,
    limit: int, k: float, images: Sequence[ImageQuery] = (), graph: GraphQuery | None = None,
    cosines: dict[str, float] | None = None, rewrite: Rewrite | None = None, text: str | None = None,
    parts: Sequence[PartQuery] = (),
) -> list[VectorHit]:  # fmt: skip
    """The fused candidates; `cosines`, if given, receives the text-dense cosine of each point the dense search
    found (the reranker's absolute relevance signal: fused scores are ranks, the best always 1.0). With a
    `rewrite` and the question's `text`, the sparse query and the fusion weights follow it (`search.expansion`).

    `parts`: a question of two parts is also searched part by part (dense and sparse, same rewrite; no images or
    graph), and the question's fused ranking and each part's are taken in turn (`interleave`): the page that
    answers the second part often ranks below the twentieth candidate for the whole question (bench/quality's
    two-page questions, decision 88). A point only a part found gets the part's cosine in `cosines`.

    The alias is resolved once, and every search of the query goes to that collection: a re-index flip between
    two of them (another process re-points the alias on a Qdrant server) must not fuse two generations. That is
    one more round trip per query on a server; the embedded store answers it in memory.
    """
    for _ in range(2):  # twice: the resolved generation may be dropped right after the resolve (grace 0)
        collection = store.resolve(alias)
        if collection is None:
            return []  # nothing was ever indexed
        with contextlib.suppress(CollectionNotFound):
            fused = _search_collection(store, collection, dense, sparse, where, limit, k, images, graph, cosines,
                                       rewrite, text)  # fmt: skip
            if not parts:
                return fused
            part_cosines: dict[str, float] = {}
            rankings = [fused] + [_search_collection(store, collection, p.dense, p.sparse, where, limit, k, (), None,
                                                     part_cosines, rewrite, p.text) for p in parts]  # fmt: skip
            if cosines is not None:
                for point, cosine in part_cosines.items():
                    cosines.setdefault(point, cosine)
            return interleave(rankings, k=k, limit=limit)
    return []


def interleave(rankings: Sequence[Sequence[VectorHit]], *, k: float, limit: int) -> list[VectorHit]:
    """The rankings taken in turn (the first hit of each, then the second of each, ...), each point once: every
    part's best hits get a place near the top, which a fusion of ranks cannot promise (a point in every ranking
    outranks one part's best). Scores as `rrf`'s of the merged order, best 1.0."""
    merged: dict[str, VectorHit] = {}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if rank < len(ranking):
                merged.setdefault(ranking[rank].id, ranking[rank])
    ordered = list(merged.values())[:limit]
    return [VectorHit(h.id, (k + 1) / (k + n), h.payload) for n, h in enumerate(ordered, start=1)]


def _search_collection(
    store: VectorStore, collection: str, dense: list[float] | None, sparse: SparseTerms | None, where: SearchFilter,
    limit: int, k: float, images: Sequence[ImageQuery], graph: GraphQuery | None, cosines: dict[str, float] | None,
    rewrite: Rewrite | None = None, text: str | None = None,
) -> list[VectorHit]:  # fmt: skip
    """`hybrid_search` on one collection; raises `CollectionNotFound` (a generation dropped after the resolve)."""
    rankings, weights = [], []
    dense_hits: list[VectorHit] = []
    if dense is not None:  # None: an image query with no text (search.query_images)
        dense_hits = store.search(collection, dense, using=TEXT_DENSE, filter=where, limit=limit)
        rankings.append(dense_hits)
        weights.append(1.0)
        if cosines is not None:
            cosines.update((h.id, h.score) for h in dense_hits)
    if sparse is not None:
        if rewrite is not None and text and rewrite.feedback_docs > 0 and dense_hits:
            words = feedback_terms(text, [h.payload.text for h in dense_hits[: rewrite.feedback_docs]],
                                   [h.payload.text for h in dense_hits], rewrite.feedback_terms)  # fmt: skip
            sparse = expanded_sparse(text, words, rewrite.feedback_weight) or sparse
        query = SparseVector(tuple(sparse.indices), tuple(sparse.values))
        sparse_hits = store.search(collection, query, using=SPARSE, filter=where, limit=limit)
        rankings.append(sparse_hits)
        weights.append(1.0)
        if rewrite is not None and text and dense_hits:
            # The overlap is measured on the unexpanded question: feedback words are in the hits by construction.
            weights[0], weights[1] = fusion_weights(rewrite, text, [h.payload.text for h in sparse_hits[:10]])
    first_image = len(rankings)
    rankings += [image_ranking(store, collection, image, where, limit) for image in images]
    weights += [1.0] * len(images)
    if graph is not None and dense is not None:  # knowledge-graph expansion: one more ranking, weighted
        rankings.append(graph.ranking(store, collection, dense, where))
        weights.append(graph.weight)
    for i, image in enumerate(images, start=first_image):
        if image.min_score is not None:  # a same-picture match outweighs every other ranking together
            weights[i] = 1.0 + sum(weights) - weights[i]
    return rrf(rankings, k=k, limit=limit, weights=weights)


BROWSE_MAX_CHUNKS = 500  # what one browse answers at most (a page range of a document; its pages hold far fewer)


def browse_chunks(store: VectorStore, alias: str, where: SearchFilter) -> list[Hit]:
    """The chunks of one document's page range (`where`: its tenant, one doc id and the pages), in document order
    (page, then index), at most `BROWSE_MAX_CHUNKS`; score 0 (nothing was ranked)."""
    assert where.doc_ids is not None and len(where.doc_ids) == 1 and where.pages is not None
    [doc_id] = where.doc_ids
    collection = store.resolve(alias)
    if collection is None:
        return []
    records, offset = [], None
    with contextlib.suppress(CollectionNotFound):  # dropped since the resolve: nothing to show
        while len(records) < BROWSE_MAX_CHUNKS:
            page, offset = store.scroll(collection, tenant=where.tenant, doc_id=doc_id, pages=where.pages, limit=100,
                                        offset=offset)  # fmt: skip
            records += page
            if offset is None:
                break
    records.sort(key=lambda r: (r.payload.page, r.payload.index))
    return [to_hit(VectorHit(r.id, 0.0, r.payload)) for r in records[:BROWSE_MAX_CHUNKS]]


def to_hit(hit: VectorHit, dense_score: float | None = None) -> Hit:
    p = hit.payload
    return Hit(
        chunk_id=p.chunk_id, doc_id=p.doc_id, filename=p.filename, page=p.page, bbox=p.bbox, locator=p.locator,
        modality=p.modality, text=p.text, score=hit.score, headings=list(p.headings), image=p.image,
        dense_score=dense_score,
    )  # fmt: skip
