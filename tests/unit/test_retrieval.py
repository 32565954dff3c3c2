"""Hybrid retrieval pieces as pure functions: Reciprocal Rank Fusion and the sparse encoder."""

from __future__ import annotations

import pytest

from search.hybrid import rrf
from models.sparse import SparseEncoder
from search.vectorstore import PointPayload, VectorHit
from tests.unit.test_vectorstore import SCHEMA, _edge, _memory_client, point, unit


def hit(point_id: str, score: float = 0.5) -> VectorHit:
    payload = PointPayload(tenant="t", doc_id="d", revision=1, chunk_id=point_id, index=0, page=1, modality="text",
                           text=point_id, filename="f")  # fmt: skip
    return VectorHit(point_id, score, payload)


def test_rrf_rewards_agreement_and_keeps_single_signal_hits() -> None:
    dense = [hit("a"), hit("b"), hit("c")]
    sparse = [hit("c"), hit("d")]
    fused = rrf([dense, sparse], k=60, limit=10)
    assert [h.id for h in fused][:2] == ["c", "a"]  # c is in both rankings; a is dense #1
    assert {h.id for h in fused[2:]} == {"b", "d"} and fused[2].score == fused[3].score  # #2 of one signal each
    assert fused[0].score == 1.0 and all(0 < h.score <= 1 for h in fused)
    assert [h.id for h in rrf([dense, sparse], k=60, limit=2)] == ["c", "a"]
    assert rrf([[], []], k=60, limit=5) == []


def test_sparse_vectors_match_identifiers_and_stemmed_words() -> None:
    enc = SparseEncoder()
    [doc] = enc.encode_documents(["Error E4711 occurs when the pumps overheat."])
    query = enc.encode_query("what does error E4711 mean")
    other = enc.encode_query("E4712")
    assert doc is not None and query is not None and other is not None
    assert set(query.indices) & set(doc.indices)  # the identifier and "error" are shared terms
    assert not set(other.indices) & set(doc.indices)  # a different code shares nothing
    stemmed = enc.encode_query("pump overheating")
    assert stemmed is not None and set(stemmed.indices) & set(doc.indices)
    assert enc.encode_documents(["!!! ..."]) == [None]


def test_search_before_anything_was_indexed_finds_nothing(tmp_path) -> None:
    from search.hybrid import hybrid_search as _search
    from search.vectorstore import SearchFilter, open_vector_store

    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=tmp_path)
    try:
        assert _search(store, "mmrag", [0.1] * 8, None, SearchFilter("t"), 5, 60.0) == []
    finally:
        store.close()


@pytest.mark.parametrize("factory", [_edge, _memory_client], ids=["edge", "qdrant-client"])
def test_a_flip_between_the_searches_of_one_query_never_mixes_generations(tmp_path, factory) -> None:
    """On a Qdrant server another process re-points the alias whenever it likes: here it does so right after the
    query's dense search. The query's sparse search must still read the generation its dense search read."""
    from search.hybrid import hybrid_search as _search
    from search.vectorstore import SearchFilter, SparseVector
    from contracts.messages import SparseTerms

    store = factory(tmp_path)
    try:
        for gen, name in (("chunks-g1", "old"), ("chunks-g2", "new")):
            store.create_collection(gen, SCHEMA)
            store.upsert(gen, [point(unit(0), sparse=SparseVector((7,), (1.0,)), doc_id=f"{name}-doc")])
        store.set_alias("chunks", "chunks-g1")

        class FlipsAfterTheFirstSearch:
            """The real store; its first search is followed by the flip another process would make."""

            searches: list[str] = []

            def __getattr__(self, name: str):
                return getattr(store, name)

            def search(self, collection: str, *args, **kwargs):
                found = store.search(collection, *args, **kwargs)
                self.searches.append(collection)
                if len(self.searches) == 1:
                    store.set_alias("chunks", "chunks-g2")
                return found

        query = (unit(0), SparseTerms(indices=[7], values=[1.0]), SearchFilter("a"), 10, 60.0)
        flipping = FlipsAfterTheFirstSearch()
        hits = _search(flipping, "chunks", *query)  # type: ignore[arg-type]
        assert len(flipping.searches) == 2, "a dense and a sparse search"
        assert {h.payload.doc_id for h in hits} == {"old-doc"}, "both searches read the generation resolved first"
        assert {h.payload.doc_id for h in _search(store, "chunks", *query)} == {"new-doc"}, "the next query: the new"
    finally:
        store.close()
