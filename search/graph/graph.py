"""The knowledge graph: `GraphFacts` folded into one networkx graph per tenant, and expansion over it.

Invariants:
- Tenants never share anything: each has its own `networkx.Graph`, chunk links and document states.
- The graph is a pure function of the set of facts applied, whatever their order: per document only the highest
  revision seen counts (facts of an older revision are ignored; newer facts or a tombstone remove the older
  revision's contribution), and a redelivered batch replaces its own contribution. So every replica that
  reads the stream builds the same graph (`fingerprint` proves it in the tests).
- Nodes are entity keys (attributes `label`, `kind`); an edge's `weight` is the sum of the weights of the
  relations between its two entities (`kinds` keeps the weight per relation kind). A node exists while a
  batch names it; an edge while a relation supports it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from dataclasses import dataclass, field

import networkx as nx

from contracts.messages import GraphFacts
from search.graph.extract import entity_keys, normalise

# Expansion: how much a hop weakens an entity, and how many neighbours of one entity are followed (strongest
# edges first), so that a hub entity cannot pull in half of the corpus.
HOP_DECAY = 0.5
MAX_NEIGHBOURS = 16
MAX_QUESTION_NGRAM = 5
# Bounds on the work of one expansion, whatever the corpus: an entity more chunks name than this says as little as
# a stop word (a product name on every page) and is not scored; at most this many entities are scored (the
# strongest first).
MAX_ENTITY_CHUNKS = 1000
MAX_SCORED_ENTITIES = 64
_EPS = 1e-9


@dataclass(frozen=True, slots=True, order=True)
class ChunkRef:
    """A chunk the graph links to an entity: its vector-store point, chunk id and document."""

    point_id: str
    chunk_id: str
    doc_id: str


@dataclass(frozen=True, slots=True)
class GraphHit:
    """A chunk proposed by graph expansion, with its graph score (higher = closer to the question's entities)."""

    ref: ChunkRef
    score: float


@dataclass(slots=True)
class _DocState:
    revision: int
    deleted: bool = False
    batches: dict[int, GraphFacts] = field(default_factory=dict)


class TenantGraph:
    """One tenant's entities, relations, chunk links and per-document revisions."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.chunks: dict[str, dict[str, ChunkRef]] = {}  # entity key -> point id -> chunk
        self.docs: dict[str, _DocState] = {}
        self._strongest: dict[str, list[str]] = {}  # cache: entity -> its MAX_NEIGHBOURS strongest neighbours

    def apply(self, facts: GraphFacts) -> bool:
        """Fold one message in; False when it was stale (an older revision than the document's latest)."""
        doc = self.docs.get(facts.doc_id)
        if doc is not None and facts.revision < doc.revision:
            return False
        if doc is None or facts.revision > doc.revision or facts.deleted:
            if doc is not None:
                for batch in doc.batches.values():
                    self._contribute(batch, -1)
            doc = self.docs[facts.doc_id] = _DocState(facts.revision, deleted=facts.deleted)
        if facts.deleted or doc.deleted:
            return True
        old = doc.batches.pop(facts.batch_index, None)
        if old is not None:
            self._contribute(old, -1)
        doc.batches[facts.batch_index] = facts
        self._contribute(facts, +1)
        return True

    def _contribute(self, facts: GraphFacts, sign: int) -> None:
        g = self.graph
        for entity in facts.entities:
            if sign > 0:
                if entity.key not in g:
                    g.add_node(entity.key, label=entity.label, kind=entity.kind, refs=0)
                g.nodes[entity.key]["refs"] += 1
        for rel in facts.relations:
            a, b = rel.source, rel.target
            self._strongest.pop(a, None)  # their strongest neighbours may change
            self._strongest.pop(b, None)
            if sign > 0:
                if not g.has_edge(a, b):
                    g.add_edge(a, b, weight=0.0, kinds={})
                data = g.edges[a, b]
                data["weight"] += rel.weight
                data["kinds"][rel.kind] = data["kinds"].get(rel.kind, 0.0) + rel.weight
            elif g.has_edge(a, b):
                data = g.edges[a, b]
                data["weight"] -= rel.weight
                data["kinds"][rel.kind] = data["kinds"].get(rel.kind, 0.0) - rel.weight
                if data["kinds"][rel.kind] <= _EPS:
                    del data["kinds"][rel.kind]
                if data["weight"] <= _EPS:
                    g.remove_edge(a, b)
        for chunk in facts.chunks:
            ref = ChunkRef(chunk.point_id, chunk.chunk_id, facts.doc_id)
            for key in chunk.entities:
                links = self.chunks.setdefault(key, {})
                if sign > 0:
                    links[ref.point_id] = ref
                else:
                    links.pop(ref.point_id, None)
                    if not links:
                        del self.chunks[key]
        if sign < 0:
            for entity in facts.entities:
                if entity.key in g:
                    g.nodes[entity.key]["refs"] -= 1
                    if g.nodes[entity.key]["refs"] <= 0:
                        g.remove_node(entity.key)

    def question_entities(self, question: str) -> set[str]:
        """Entities of the graph the question names: extracted mentions, and word n-grams that are entity keys
        (so a question typed in lower case still finds "project falcon")."""
        found = {k for k in entity_keys(question) if k in self.graph}
        words = re.findall(r"[\w.-]+", question)
        for n in range(1, MAX_QUESTION_NGRAM + 1):
            for i in range(len(words) - n + 1):
                key = normalise(" ".join(words[i : i + n]))
                if key in self.graph:
                    found.add(key)
        return found

    def strongest_neighbours(self, node: str) -> list[str]:
        """The MAX_NEIGHBOURS neighbours of an entity with the heaviest edges (ties by key), cached until one of
        its edges changes."""
        cached = self._strongest.get(node)
        if cached is None:
            edges = heapq.nsmallest(MAX_NEIGHBOURS, self.graph[node].items(), key=lambda kv: (-kv[1]["weight"], kv[0]))
            cached = self._strongest[node] = [neighbour for neighbour, _ in edges]
        return cached

    def neighbourhood(self, seeds: set[str], hops: int) -> dict[str, float]:
        """Entities within `hops` of the seeds with their strength (1 for a seed, HOP_DECAY per hop)."""
        strength = dict.fromkeys(seeds, 1.0)
        frontier = sorted(seeds)
        for _ in range(hops):
            nxt: list[str] = []
            for node in frontier:
                for neighbour in self.strongest_neighbours(node):
                    if neighbour not in strength:
                        strength[neighbour] = strength[node] * HOP_DECAY
                        nxt.append(neighbour)
            frontier = sorted(nxt)
        return strength

    def fingerprint_data(self) -> dict:
        g = self.graph
        return {
            "nodes": sorted((n, d["label"], d["kind"], d["refs"]) for n, d in g.nodes(data=True)),
            "edges": sorted(
                (min(a, b), max(a, b), round(d["weight"], 6), sorted((k, round(w, 6)) for k, w in d["kinds"].items()))
                for a, b, d in g.edges(data=True)
            ),
            "chunks": sorted((k, sorted(v)) for k, v in self.chunks.items()),
            "docs": sorted((doc_id, s.revision, s.deleted, sorted(s.batches)) for doc_id, s in self.docs.items()),
        }


class KnowledgeGraph:
    """Every tenant's graph, built from `GraphFacts` (see the module docstring for the invariants)."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantGraph] = {}
        self.applied = 0  # messages folded in (stale ones included)

    def apply(self, facts: GraphFacts) -> bool:
        self.applied += 1
        return self._tenants.setdefault(facts.tenant, TenantGraph()).apply(facts)

    def tenant(self, tenant: str) -> TenantGraph | None:
        return self._tenants.get(tenant)

    def fingerprint(self) -> str:
        """A digest of the whole graph: equal on two replicas exactly when they hold the same graph."""
        data = {t: g.fingerprint_data() for t, g in sorted(self._tenants.items())}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=list).encode()).hexdigest()


def expand(graph: KnowledgeGraph, tenant: str, question: str, *, hops: int, limit: int) -> list[GraphHit]:
    """The chunks linked to the question's entities and to their neighbours within `hops`, best first.

    A chunk's score sums, over the entities it mentions, the entity's strength (1 for an entity the question
    names, halved per hop) divided by 1 + ln(number of chunks that mention it), so a rare entity counts more
    than one that every chunk names; an entity named by more than `MAX_ENTITY_CHUNKS` chunks is not scored, and
    at most `MAX_SCORED_ENTITIES` are (the strongest). Ties are broken by point id, so the order is deterministic.
    """
    tg = graph.tenant(tenant)
    if tg is None or limit < 1:
        return []
    seeds = tg.question_entities(question)
    if not seeds:
        return []
    informative = [
        (key, strength, links)
        for key, strength in tg.neighbourhood(seeds, max(hops, 0)).items()
        if 0 < len(links := tg.chunks.get(key, {})) <= MAX_ENTITY_CHUNKS
    ]
    scores: dict[str, float] = {}  # by point id (hashing a string is cheaper than hashing a ChunkRef)
    refs: dict[str, ChunkRef] = {}
    for _key, strength, links in heapq.nsmallest(
        MAX_SCORED_ENTITIES, informative, key=lambda e: (-e[1], len(e[2]), e[0])
    ):
        weight = strength / (1.0 + math.log(len(links)))
        for point, ref in links.items():
            scores[point] = scores.get(point, 0.0) + weight
            refs[point] = ref
    ranked = heapq.nsmallest(limit, scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [GraphHit(refs[point], score) for point, score in ranked]
