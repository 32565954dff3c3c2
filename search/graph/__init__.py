"""Knowledge graph: deterministic entity/relation extraction per chunk (`extract`), facts per indexed batch
(`facts`, published by the indexer on `graph.facts.g<gen>.<tenant>.<doc_id>.<revision>`), one networkx graph per tenant
folded from that stream (`graph`, `follower`), and expansion of a question over it (`expand`)."""

from search.graph.facts import IndexedChunk, build_facts, tombstone
from search.graph.follower import GraphFollower
from search.graph.graph import ChunkRef, GraphHit, KnowledgeGraph, expand
from search.graph.retrieval import GraphQuery
from search.graph.serving import ServingGraph

__all__ = [
    "ChunkRef", "GraphFollower", "GraphHit", "GraphQuery", "IndexedChunk", "KnowledgeGraph", "ServingGraph",
    "build_facts", "expand", "tombstone",
]  # fmt: skip
