"""Turn a batch of indexed chunks into one `GraphFacts` message (the indexer publishes it).

Each chunk's text, with its section headings, goes through the deterministic extractor
(`search.graph.extract`); chunks that name no entity are left out of the facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts.messages import ChunkEntities, GraphEntity, GraphFacts, GraphRelation
from search.graph.extract import RelationKind, extract

# Bounds that keep one facts message well under NATS' 1 MiB payload whatever the chunks contain (the extractor
# bounds the pairs per sentence; a batch keeps its strongest relations).
MAX_ENTITIES_PER_CHUNK = 48
MAX_RELATIONS_PER_BATCH = 2000


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """What the facts need of a chunk: its id, the point that stores it, and the text to read."""

    chunk_id: str
    point_id: str
    text: str


def build_facts(
    *, tenant: str, doc_id: str, generation: int, revision: int, batch_index: int, chunks: Sequence[IndexedChunk]
) -> GraphFacts:
    """The facts of one batch (possibly with no chunks, when no chunk names an entity)."""
    labels: dict[str, GraphEntity] = {}
    relations: dict[tuple[str, str, RelationKind], float] = {}
    chunk_entities = []
    for chunk in chunks:
        found = extract(chunk.text)
        keys = list(found.entities)[:MAX_ENTITIES_PER_CHUNK]
        if not keys:
            continue
        kept = set(keys)
        for key in keys:
            label, kind = found.entities[key]
            labels.setdefault(key, GraphEntity(key=key, label=label[:200], kind=kind))
        for (a, b, kind), weight in found.relations.items():
            if a in kept and b in kept:
                relations[(a, b, kind)] = relations.get((a, b, kind), 0.0) + weight
        chunk_entities.append(ChunkEntities(chunk_id=chunk.chunk_id, point_id=chunk.point_id, entities=keys))
    strongest = sorted(relations.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_RELATIONS_PER_BATCH]
    return GraphFacts(
        doc_id=doc_id, tenant=tenant, generation=generation, revision=revision, batch_index=batch_index,
        chunks=chunk_entities, entities=sorted(labels.values(), key=lambda e: e.key),
        relations=[GraphRelation(source=a, target=b, kind=k, weight=w) for (a, b, k), w in sorted(strongest)],
    )  # fmt: skip


def tombstone(*, tenant: str, doc_id: str, generation: int, revision: int) -> GraphFacts:
    """The facts that remove a deleted document from every replica's graph (`revision`: the delete's sequence)."""
    return GraphFacts(doc_id=doc_id, tenant=tenant, generation=generation, revision=revision, deleted=True)
