"""Retrieval that survives the user's wording: the question rewritten before the sparse search, and the fusion
weighted towards meaning when the words do not match.

A user who has not read the manual asks "can I make a filled shape partly see-through?" where the page says
"opacity". BM25 cannot find a word that is not in the question; the dense search usually can. Two steps use that:

- `feedback_terms` (pseudo-relevance feedback, RM3-style): the words that characterise the top dense hits
  (frequent in them, rare among the other dense candidates) are added to the sparse query with a lower weight
  (`expanded_sparse`), so BM25 searches the manual's vocabulary too.
- `dense_first`: when no sparse hit holds much of the question's content words (`overlap` below a bound), the
  sparse ranking is mostly noise and the dense ranking weighs more in the fusion.

Both were chosen and weighed on the paraphrase set of `bench/quality` (docs/decisions.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.messages import SparseTerms
from models.lexical import STOPWORDS, terms
from models.sparse import SparseEncoder

_WORD = re.compile(r"[a-z][a-z0-9]+")


@dataclass(frozen=True)
class Rewrite:
    """How a question is searched (the retriever's settings): `feedback_docs` top dense hits lend
    `feedback_terms` words to the sparse query at `feedback_weight` (0 docs = off); the dense ranking weighs
    `dense_first_weight` when the best sparse hit holds less than `dense_first_overlap` of the question's
    content words (0 = off)."""

    feedback_docs: int = 0
    feedback_terms: int = 10
    feedback_weight: float = 0.4
    dense_first_overlap: float = 0.0
    dense_first_weight: float = 2.0


def feedback_terms(query: str, feedback: Sequence[str], background: Sequence[str], limit: int) -> list[str]:
    """Up to `limit` words of the `feedback` texts (the top dense hits), best first, that the question lacks:
    each scored by its mean share of a feedback text's words times its IDF over `background` (all dense
    candidates, feedback included), so a word every candidate has (the manual's name) adds nothing."""
    if not feedback or limit <= 0:
        return []
    asked = terms(query)
    n = len(background)
    df: Counter[str] = Counter()
    for text in background:
        df.update(set(_WORD.findall(text.lower())))
    weight: Counter[str] = Counter()
    for text in feedback:
        words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]
        if not words:
            continue
        for word, count in Counter(words).items():
            weight[word] += count / len(words)
    scored = {w: s / len(feedback) * math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w, s in weight.items()
              if df[w] > 0 and not (terms(w) & asked)}  # fmt: skip
    return sorted(scored, key=lambda w: (-scored[w], w))[:limit]


_ENCODER = SparseEncoder()  # stateless and thread-safe: one for the process


def expanded_sparse(query: str, words: Sequence[str], weight: float) -> SparseTerms | None:
    """The question's BM25 query (each term 1.0) plus `words` at `weight` each (a term of both keeps 1.0)."""
    encoder = _ENCODER
    base = encoder.encode_query(query)
    extra = encoder.encode_query(" ".join(words)) if words else None
    if extra is None:
        return base
    values = dict(zip(extra.indices, (v * weight for v in extra.values), strict=True))
    if base is not None:
        values.update(zip(base.indices, base.values, strict=True))
    indices = sorted(values)
    return SparseTerms(indices=indices, values=[values[i] for i in indices])


def overlap(query: str, texts: Sequence[str]) -> float:
    """The largest share of the question's content words that one of `texts` holds (1.0 for a question with none)."""
    asked = terms(query)
    if not asked:
        return 1.0
    return max((len(asked & terms(t)) / len(asked) for t in texts), default=0.0)


def fusion_weights(rewrite: Rewrite, query: str, sparse_texts: Sequence[str]) -> tuple[float, float]:
    """The (dense, sparse) weights of the fusion for this question: dense first when the sparse hits share
    too few of its words."""
    if rewrite.dense_first_overlap > 0 and overlap(query, sparse_texts) < rewrite.dense_first_overlap:
        return rewrite.dense_first_weight, 1.0
    return 1.0, 1.0
