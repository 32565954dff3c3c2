"""Graph expansion as one more ranking for the retriever's Reciprocal Rank Fusion.

`expand` proposes chunks linked to the question's entities and their neighbours; `GraphQuery.ranking` fetches
those chunks from the vector store (a search restricted to their point ids, under the request's own filter, so
tenant and filters hold and deleted points are simply absent) and orders them by graph score, ties broken by
dense similarity to the question. The retriever fuses that ranking with the dense and sparse ones, with
`weight`: chunks no lexical or dense search found can enter the candidate set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from search.graph.graph import GraphHit, KnowledgeGraph, expand
from search.vectorstore import TEXT_DENSE, SearchFilter, VectorHit, VectorStore
from search.vectorstore.base import canonical_id


@dataclass(frozen=True, slots=True)
class GraphQuery:
    """The chunks graph expansion proposes for one question, and the weight of their ranking in the fusion."""

    hits: Sequence[GraphHit]
    weight: float

    @classmethod
    def of(cls, graph: KnowledgeGraph, tenant: str, question: str, *, hops: int, limit: int, weight: float) -> GraphQuery:
        return cls(expand(graph, tenant, question, hops=hops, limit=limit), weight)

    def ranking(self, store: VectorStore, alias: str, dense: Sequence[float], where: SearchFilter) -> list[VectorHit]:
        """The proposed chunks that exist and pass `where`, best graph score first."""
        if not self.hits:
            return []
        graph_score = {canonical_id(h.ref.point_id): h.score for h in self.hits}
        ids = frozenset(graph_score) if where.ids is None else frozenset(graph_score) & where.ids
        found = store.search(alias, dense, using=TEXT_DENSE, filter=dataclasses.replace(where, ids=ids), limit=len(ids) or 1)
        dense_rank = {h.id: i for i, h in enumerate(found)}
        return sorted(found, key=lambda h: (-graph_score[h.id], dense_rank[h.id]))
