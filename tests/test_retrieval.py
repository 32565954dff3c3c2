"""Hybrid retrieval pieces as pure functions: Reciprocal Rank Fusion and the sparse encoder."""

from __future__ import annotations

from agents.retriever import rrf
from agents.sparse import SparseEncoder
from agents.vectorstore import PointPayload, VectorHit


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
    from agents.retriever import _search
    from agents.vectorstore import SearchFilter, open_vector_store

    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=tmp_path)
    try:
        assert _search(store, "mmrag", [0.1] * 8, None, SearchFilter("t"), 5, 60.0) == []
    finally:
        store.close()
