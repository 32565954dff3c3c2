"""Abstention: whether the reranked hits answer the question at all ("not found in your documents").

The one place this is decided (`decide`), called by the reranker agent only; the generator reads the outcome from
`GenerateRequest.abstain` and has no threshold of its own, so two processes can never disagree. It reads two
signals and declines only when both are weak: the best reranked score, and (offline scorer only) the question's
`paraphrase_cosine`, the best cosine between the question and one sentence of the top hits, measured with the
text embedder only when the score alone would decline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from contracts.messages import Hit
from models.lexical import contains_identifier, identifiers, units
from models.similarity import cosine_matrix

# At most this many sentences/rows are embedded for `paraphrase_cosine`, the best-ranked hits' first (a page of a
# ledger has 15 rows): bounds the query's extra embedding work to one small batch.
PARAPHRASE_MAX_UNITS = 32


def paraphrase_cosine(query: str, hits: Sequence[Hit], embed: Callable[[list[str]], np.ndarray]) -> float | None:
    """The best cosine between `query` and one sentence or table row (`units`, the first `PARAPHRASE_MAX_UNITS`)
    of `hits`, counting only hits that hold every identifier of the question (an embedding barely tells E-150 from E-105, so a code nobody has is
    never rescued); None when no unit qualifies. `embed` is the text embedder (rows in input order).

    The semantic half of abstention: the reranked score is mostly lexical, so a question reworded away from the
    document's words scores low although one sentence says what it asks in other words."""
    wanted = identifiers(query)
    texts = [m for h in hits if all(contains_identifier(" ".join([*h.headings, h.text]), i) for i in wanted)
             for m, _ in units(h.text, h.modality)][:PARAPHRASE_MAX_UNITS]  # fmt: skip
    if not query.strip() or not texts:
        return None
    return float(cosine_matrix(embed, [query], texts)[0].max())


def abstains(hits: Sequence[Hit], threshold: float, *, paraphrase: float | None = None,
             paraphrase_threshold: float = 0.0) -> bool:  # fmt: skip
    """Whether nothing in `hits` (reranked) answers the question: no hit, or both signals weak: the best score
    is below `threshold` and the question's `paraphrase_cosine` (None: not measured) is below
    `paraphrase_threshold` (0 = that signal is off)."""
    if not hits:
        return True
    if hits[0].score >= threshold:
        return False
    return not (paraphrase_threshold > 0 and paraphrase is not None and paraphrase >= paraphrase_threshold)


def decide(query: str, hits: Sequence[Hit], *, threshold: float, paraphrase_threshold: float = 0.0,
           embed: Callable[[list[str]], np.ndarray] | None = None) -> bool:  # fmt: skip
    """The abstention decision, made once, by the reranker, and carried to the generator on
    `GenerateRequest.abstain`: whether nothing in `hits` (reranked, best first) answers `query`.

    The question's `paraphrase_cosine` is measured (with `embed`, the text embedder) only where it can change the
    outcome: the best score alone below `threshold`, the signal on (`paraphrase_threshold` > 0) and an embedder
    given (None: a cross-encoder scored the hits, and it reads meaning itself)."""
    if not abstains(hits, threshold):
        return False
    if not hits or embed is None or paraphrase_threshold <= 0:
        return True
    paraphrase = paraphrase_cosine(query, hits, embed)
    return abstains(hits, threshold, paraphrase=paraphrase, paraphrase_threshold=paraphrase_threshold)
