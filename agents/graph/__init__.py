"""Knowledge graph: deterministic entity/relation extraction per chunk (`extract`), facts per indexed batch
(`facts`, published by the indexer on `graph.facts.g<gen>.<tenant>.<doc_id>.<revision>`), one networkx graph per tenant
folded from that stream (`graph`, `follower`), and expansion of a question over it (`expand`)."""

from agents.graph.facts import IndexedChunk, build_facts, tombstone
from agents.graph.follower import GraphFollower
from agents.graph.graph import ChunkRef, GraphHit, KnowledgeGraph, expand
from agents.graph.retrieval import GraphQuery
from agents.graph.serving import ServingGraph

__all__ = [
    "ChunkRef", "GraphFollower", "GraphHit", "GraphQuery", "IndexedChunk", "KnowledgeGraph", "ServingGraph",
    "build_facts", "expand", "tombstone",
]  # fmt: skip
