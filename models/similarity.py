"""Cosines between questions and short texts (sentences, table rows) with the text embedder: the meaning signal
the offline reranker (`search.rerank.SentenceScorer`), abstention (`search.abstention.paraphrase_cosine`) and the
extractive answerer (`models.extractive`) share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Embed = Callable[[list[str]], np.ndarray]  # the text embedder: one row per text, in input order


def cosine_matrix(embed: Embed, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """cosines[i, j] between `queries[i]` and `texts[j]`, from one embedding call; shape (len(queries), 0) when
    there is no text (and no call). Clipped to [-1, 1]: rounding can pass 1 for identical texts."""
    if not texts:
        return np.zeros((len(queries), 0), dtype=np.float32)
    vectors = np.asarray(embed([*queries, *texts]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    q = len(queries)
    return np.clip(vectors[:q] @ vectors[q:].T, -1.0, 1.0)
