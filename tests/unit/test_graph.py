"""Knowledge graph: extraction with known ground truth, the facts contract, the graph's revision rules and expansion.
The follower on a real nats-server: tests/bus/test_graph_follower.py; graph expansion end to end through the real
agents: tests/e2e/test_graph_agents.py."""

from __future__ import annotations

import itertools
import uuid

import pytest
from pydantic import ValidationError

from search.graph import IndexedChunk, KnowledgeGraph, build_facts, expand, tombstone
from search.graph.extract import entity_keys, extract, mentions, normalise
from contracts.messages import (
    GraphFacts,
)
from contracts.topology import IndexGeneration, Subjects

GEN = IndexGeneration(1)


def pid(n: int) -> str:
    return str(uuid.UUID(int=n))


def facts(doc: str, revision: int, texts: list[str], *, tenant: str = "t", batch: int = 0, first: int = 0) -> GraphFacts:
    chunks = [IndexedChunk(f"{doc}-c{first + i}", pid(hash((tenant, doc, revision, first + i)) % 2**64), text)
              for i, text in enumerate(texts)]  # fmt: skip
    return build_facts(tenant=tenant, doc_id=doc, generation=1, revision=revision, batch_index=batch, chunks=chunks)


# --------------------------------------------------------------------------- extraction (ground truth)


def test_extraction_finds_names_acronyms_identifiers_codes_and_quoted_terms() -> None:
    text = (
        "Project Falcon is led by Dana Smith of the Bank of England. "
        "The indexer calls bus.topology.ensure_topology() and raises E1234 when NATS JetStream is down, e.g. on "
        "restart. The PullWorker reads max_ack_pending; see \"cold start\" and `fetch_batch`. PDFs cost 4.2 s."
    )
    found = {m.key: m.kind for m in mentions(text)}
    assert found == {
        "project falcon": "name", "dana smith": "name", "bank of england": "name",
        "bus.topology.ensure_topology": "code", "ensure_topology": "code", "e1234": "code",
        "nats jetstream": "name", "nats": "acronym", "jetstream": "code", "pullworker": "code",
        "max_ack_pending": "code", "cold start": "quoted", "fetch_batch": "code", "pdf": "acronym",
    }  # fmt: skip


def test_what_is_not_an_entity() -> None:
    # Sentence-initial capitals, function words, numbers, "e.g." and shouted warnings name nothing.
    assert entity_keys("Who approved the budget? The budget of 4.2 million, e.g. for travel, was approved.") == set()
    assert entity_keys("WARNING: DO NOT OPEN THE PUMP HOUSING WHILE IT RUNS") == set()
    assert entity_keys("Dana approved it.") == set()  # one capitalised word opening a sentence
    assert entity_keys("It was approved by Dana.") == {"dana"}


def test_mentions_are_normalised_to_one_key() -> None:
    assert normalise("Dana Smith's") == normalise("DANA   SMITH") == normalise("“dana smith”") == "dana smith"
    e = extract("Dana Smith's team met. Later the team of Dana Smith left.")
    assert list(e.entities) == ["dana smith"] and e.entities["dana smith"] == ("Dana Smith", "name")


def test_relations_are_weighted_sentence_co_occurrence_plus_typed_patterns() -> None:
    e = extract(
        "Dana Smith leads Project Falcon. Project Falcon hired Dana Smith in Berlin. "
        "The PullWorker uses NatsClient. Qdrant stores vectors, and Ada Lovelace is a Countess of Lovelace."
    )
    assert e.relations[("dana smith", "project falcon", "co_occurs")] == 2.0  # two sentences
    assert e.relations[("berlin", "dana smith", "co_occurs")] == 1.0
    assert e.relations[("pullworker", "natsclient", "uses")] == 2.0  # typed relations are directed
    assert e.relations[("ada lovelace", "countess of lovelace", "is_a")] == 2.0
    assert ("berlin", "pullworker", "co_occurs") not in e.relations  # different sentences


def test_extraction_is_deterministic_and_bounded() -> None:
    crowded = " ".join(f"Name{i} Person{i}" for i in range(40)) + "."
    e1, e2 = extract(crowded), extract(crowded)
    assert e1.entities == e2.entities and e1.relations == e2.relations
    assert len(e1.relations) <= 12 * 11 // 2  # pairs only among the first 12 entities of a sentence


# --------------------------------------------------------------------------- contract


def test_facts_contract_rejects_inconsistent_messages() -> None:
    f = facts("a", 3, ["Project Falcon is led by Dana Smith."])
    assert [c.entities for c in f.chunks] == [["project falcon", "dana smith"]]
    assert Subjects.graph_facts(GEN, *f.routing()) == "graph.facts.g1.t.a.3"
    with pytest.raises(ValidationError, match="tombstone"):
        GraphFacts(doc_id="a", tenant="t", generation=1, revision=4, deleted=True, chunks=f.chunks)
    with pytest.raises(ValidationError, match="does not declare"):
        GraphFacts.model_validate({**f.model_dump(), "entities": f.entities[:1]})
    assert facts("a", 3, ["nothing here at all."]).chunks == []  # a chunk that names no entity is left out


def test_facts_of_a_crowded_batch_fit_a_nats_message() -> None:
    def chunk(c: int) -> str:  # 1,000 characters of identifiers, 12 a sentence: 66 pairs per sentence
        return ". ".join(", ".join(f"c{c}_s{s}_i{i}" for i in range(12)) for s in range(20))[:1000]

    f = facts("big", 1, [chunk(c) for c in range(32)])
    assert len(f.relations) == 2000 and len(f.entities) > 1000  # the strongest relations are kept
    assert len(f.model_dump_json()) < 1024 * 1024 // 2


# --------------------------------------------------------------------------- graph and expansion

FALCON = ["Project Falcon is led by Dana Smith."]
BUDGET = ["Dana Smith approved the budget of 4.2 million."]


def falcon_graph() -> tuple[KnowledgeGraph, GraphFacts, GraphFacts]:
    g = KnowledgeGraph()
    a, b = facts("a", 1, FALCON), facts("b", 2, BUDGET)
    g.apply(a)
    g.apply(b)
    return g, a, b


def test_expansion_reaches_a_chunk_only_linked_through_an_entity() -> None:
    g, a, b = falcon_graph()
    question = "Who approved the budget for Project Falcon?"
    [only] = expand(g, "t", question, hops=0, limit=10)
    assert only.ref.chunk_id == "a-c0"  # hops=0: the chunks naming the question's entity
    hits = expand(g, "t", question, hops=1, limit=10)
    assert [h.ref.chunk_id for h in hits] == ["a-c0", "b-c0"]  # B via Dana Smith, ranked below A
    assert hits[0].score > hits[1].score > 0
    assert [h.ref.chunk_id for h in expand(g, "t", question.lower(), hops=1, limit=10)] == ["a-c0", "b-c0"]
    assert expand(g, "t", "What is the weather like?", hops=2, limit=10) == []
    assert expand(g, "other-tenant", question, hops=2, limit=10) == []  # tenants share nothing
    assert len(expand(g, "t", question, hops=1, limit=1)) == 1


def test_revisions_replace_and_tombstones_remove_whatever_the_order() -> None:
    a1, a2 = facts("a", 1, FALCON), facts("a", 5, ["Project Falcon moved to Oslo."])
    b = facts("b", 2, BUDGET)
    dead_b = tombstone(tenant="t", doc_id="b", generation=1, revision=9)
    stream = [a1, b, a2, dead_b, facts("c", 3, ["Dana Smith met Ada Lovelace."], tenant="u")]
    prints = set()
    for order in itertools.permutations(stream):
        g = KnowledgeGraph()
        for message in order:
            g.apply(message)
        prints.add(g.fingerprint())
    assert len(prints) == 1  # the same graph whatever the order
    g = KnowledgeGraph()
    for message in stream:
        g.apply(message)
    t = g.tenant("t")
    assert t is not None
    assert set(t.graph.nodes) == {"project falcon", "oslo"}  # revision 1's Dana Smith and document b are gone
    assert [h.ref.chunk_id for h in expand(g, "t", "Who approved the budget of Dana Smith?", hops=2, limit=9)] == []
    assert g.apply(b) is False  # facts older than the tombstone never come back
    before = g.fingerprint()
    g.apply(a2)  # a redelivered batch changes nothing
    assert g.fingerprint() == before


def test_graph_ranking_stays_inside_the_requests_tenant_and_filters(tmp_path) -> None:
    """The chunks expansion proposes are fetched under the request's filter: another tenant's point that the
    graph names (a forged or stale fact) is never returned, nor a filtered-out document or a deleted point."""
    from search.graph import GraphQuery
    from search.vectorstore import CollectionSchema, PointPayload, SearchFilter, VectorPoint, open_vector_store

    g, a, b = falcon_graph()
    points = {c.chunk_id: c.point_id for f in (a, b) for c in f.chunks}
    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=tmp_path)
    try:
        store.create_collection("c", CollectionSchema(text_dim=2))
        stored = [("a-c0", "t", "a", [1.0, 0.0]), ("b-c0", "u", "b", [0.9, 0.1])]  # b's point lies in tenant u
        store.upsert("c", [VectorPoint(id=points[cid], text=vec, payload=PointPayload(
            tenant=tenant, doc_id=doc, revision=1, chunk_id=cid, index=0, page=1, modality="text", text=cid,
            filename="f")) for cid, tenant, doc, vec in stored])  # fmt: skip
        query = GraphQuery.of(g, "t", "Who approved the budget for Project Falcon?", hops=1, limit=5, weight=1.0)
        assert [h.ref.chunk_id for h in query.hits] == ["a-c0", "b-c0"]
        assert [h.payload.chunk_id for h in query.ranking(store, "c", [1.0, 0.0], SearchFilter(tenant="t"))] == ["a-c0"]
        only_b = SearchFilter(tenant="t", doc_ids=frozenset({"b"}))
        assert query.ranking(store, "c", [1.0, 0.0], only_b) == []
        store.delete("c", tenant="t", doc_id="a")
        assert query.ranking(store, "c", [1.0, 0.0], SearchFilter(tenant="t")) == []
    finally:
        store.close()


def test_expansion_skips_hub_entities_and_sees_changed_neighbours(monkeypatch) -> None:
    import search.graph.graph as graph_module

    g = KnowledgeGraph()
    g.apply(facts("a", 1, ["Acme Pumps made it with Dana Smith.", "Acme Pumps made it.", "Acme Pumps sold it."]))
    monkeypatch.setattr(graph_module, "MAX_ENTITY_CHUNKS", 2)  # Acme Pumps is named by 3 chunks: a hub now
    assert [h.ref.chunk_id for h in expand(g, "t", "Did Acme Pumps hire Dana Smith?", hops=0, limit=9)] == ["a-c0"]
    monkeypatch.undo()
    assert [h.ref.chunk_id for h in expand(g, "t", "Dana Smith?", hops=1, limit=1)] == ["a-c0"]
    assert g.tenant("t").strongest_neighbours("dana smith") == ["acme pumps"]  # type: ignore[union-attr]
    g.apply(facts("a", 2, ["Dana Smith joined Orbit Labs."]))  # the cached neighbours change with the graph
    assert g.tenant("t").strongest_neighbours("dana smith") == ["orbit labs"]  # type: ignore[union-attr]
