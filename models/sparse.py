"""Sparse lexical vectors (BM25) for hybrid search: exact words, identifiers and error codes count.

Qdrant's own BM25 model (`qdrant_edge.Bm25`, Rust, no model files, English stemming and stopwords) gives
each chunk term-frequency weights saturated by k and normalised by length; the collection's sparse vector
applies IDF at query time (`Modifier.Idf`), so this side needs no corpus statistics and stays stateless.
Queries weigh each distinct term 1.0. The same model must encode documents and queries.
"""

from __future__ import annotations

from qdrant_edge import Bm25, Bm25Config

from contracts.messages import SparseTerms

# Chunks are cut at 254 word pieces, about 170 words of prose: BM25's length normalisation centres there.
AVG_CHUNK_WORDS = 170.0


class SparseEncoder:
    """Thread-safe and cheap to build; `encode_documents` for chunks, `encode_query` for questions."""

    def __init__(self) -> None:
        self._model = Bm25(Bm25Config(avg_len=AVG_CHUNK_WORDS))

    def encode_documents(self, texts: list[str]) -> list[SparseTerms | None]:
        """One vector per text; None for a text with no indexable term (e.g. only punctuation)."""
        return [_terms(self._model.embed_document(text)) for text in texts]

    def encode_query(self, text: str) -> SparseTerms | None:
        return _terms(self._model.embed_query(text))


def _terms(vector) -> SparseTerms | None:  # qdrant_edge.SparseVector
    if not vector.indices:
        return None
    return SparseTerms(indices=list(vector.indices), values=list(vector.values))
