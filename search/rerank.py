"""Reranking: a relevance score in [0, 1] per candidate that means the same thing for every query and modality,
so that one threshold can tell "nothing here answers it" (`search.abstention`) and a table row, an image's OCR
text and a paragraph compete on one scale. Two scorers:

- `CrossEncoderScorer`: a sentence-transformers `CrossEncoder` checkpoint (`MMRAG_RERANKER_MODEL_PATH`), its
  logit through a sigmoid. For deployments that have one; none ships in a package here.
- `SentenceScorer` (the offline default when the reranker has the text embedder): the `LexicalScorer` score
  blended with the best cosine between the question and one sentence (or table row, or the headings) of the
  candidate, so a passage that says what is asked in other words rises although it shares few of its words.
- `LexicalScorer` (the offline scorer without a model): a blend of the dense cosine the retriever measured (`Hit.dense_score`,
  an absolute signal, mapped to [0, 1]) and lexical evidence computed inside the candidate set: query-term
  coverage weighted by IDF over the candidates (a word every candidate has decides nothing), the same for the
  best single sentence or table row (proximity: the fact sits in one place), and exact identifiers (error
  codes, part numbers, function names): a candidate missing every identifier of the question keeps 30% of its score.
  Chosen and weighed on the quality bench (`bench/quality`, docs/decisions.md).

Ordering (`rerank`): by score; ties by the retriever's fused rank. Images are not crowded out: when the top
`top_k` (two or more) hold no image hit but a candidate image scores at least `IMAGE_SHARE` of the best, it takes
the last place; with one place the best hit keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from contracts.messages import Hit
from models.embedding_models import CosineProfile, profile
from models.extractive import question_parts
from models.lexical import contains_identifier, identifiers, terms, units
from models.similarity import cosine_matrix

# LexicalScorer weights (sum 1): dense cosine, IDF coverage of the whole chunk, of its best sentence or row.
DENSE_WEIGHT = 0.4
CHUNK_WEIGHT = 0.36
UNIT_WEIGHT = 0.24
# A dense cosine is mapped linearly to [0, 1] between the floor and ceiling of its model's `CosineProfile`
# (models.embedding_models): all-MiniLM-L6-v2's answering cosines lie mostly in 0.35..0.75 (0.1..0.8),
# multilingual-e5-small's in a narrow band near 0.85.
MISSING_IDENTIFIER_FACTOR = 0.3  # a candidate that has none of the question's identifiers
IMAGE_SHARE = 0.7  # an image hit at least this share of the best score keeps a place in the top k


class Scorer(Protocol):
    def scores(self, query: str, candidates: Sequence[Hit]) -> list[float]:
        """One relevance score in [0, 1] per candidate, in the candidates' order."""
        ...


def _idf(query_terms: set[str], docs: Sequence[set[str]]) -> dict[str, float]:
    """BM25's IDF over the candidate set, kept positive: ln(1 + (N - df + 0.5) / (df + 0.5))."""
    n = len(docs)
    return {t: math.log(1 + (n - (df := sum(t in d for d in docs)) + 0.5) / (df + 0.5)) for t in query_terms}


def _coverage(weights: dict[str, float], have: set[str]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in have) / total if total else 0.0


class LexicalScorer:
    """The offline scorer (see the module docstring). Stateless and cheap: well under a millisecond a candidate.
    `cosines`: the profile of the model that measured the candidates' dense cosines (default MiniLM's)."""

    def __init__(self, cosines: CosineProfile | None = None) -> None:
        self.cosines = cosines or profile(None)

    def scores(self, query: str, candidates: Sequence[Hit]) -> list[float]:
        if not candidates:
            return []
        wanted = identifiers(query)
        # The identifiers name the subject; the other words say what is asked about it. A chunk that only
        # names the subject ("the P-200 manual" for "warranty of the P-200") does not answer, so coverage
        # counts the other words; identifiers act through the factor below.
        asked = terms(query) - {t for i in wanted for t in terms(i)}
        texts = [" ".join([*h.headings, h.text]) for h in candidates]
        chunk_terms = [terms(t) for t in texts]
        weights = _idf(asked, chunk_terms)
        known = [h.dense_score for h in candidates if h.dense_score is not None]
        # A candidate only the sparse search found ranked below every dense hit: its cosine is at most theirs.
        unseen = min(known) if known else None
        out = []
        for hit, text, have in zip(candidates, texts, chunk_terms, strict=True):
            cosine = hit.dense_score if hit.dense_score is not None else unseen
            dense = hit.score if cosine is None else self.cosines.scale(cosine)
            if asked:
                chunk_cov = _coverage(weights, have)
                unit_cov = max((_coverage(weights, terms(m)) for m, _ in units(hit.text, hit.modality)), default=0.0)
            else:  # the question is its identifiers: having them is full coverage
                chunk_cov = unit_cov = 1.0
            score = DENSE_WEIGHT * min(max(dense, 0.0), 1.0) + CHUNK_WEIGHT * chunk_cov + UNIT_WEIGHT * unit_cov
            if wanted and not any(contains_identifier(text, i) for i in wanted):
                score *= MISSING_IDENTIFIER_FACTOR
            out.append(score)
        return out


# SentenceScorer: the units (sentences, rows, the headings; at most SENTENCE_UNITS, the first ones) of the first
# SENTENCE_CANDIDATES candidates are embedded: at most 130 short texts, one embedding call a query.
SENTENCE_UNITS = 12
SENTENCE_CANDIDATES = 10


class SentenceScorer(LexicalScorer):
    """(1 - `weight`) x the lexical score + `weight` x the best question-sentence cosine of the candidate (mapped
    like the dense cosine), for the first `candidates` candidates (the retriever's best); the others get their
    chunk cosine in its place. `embed` is the text embedder (rows in input order). One embedding call a query."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], *, weight: float,
                 candidates: int = SENTENCE_CANDIDATES, cosines: CosineProfile | None = None) -> None:  # fmt: skip
        super().__init__(cosines)
        if not 0 < weight <= 1:
            raise ValueError(f"the sentence weight must lie in (0, 1], not {weight}: 0 means the lexical scorer")
        self.embed = embed
        self.weight = weight
        self.candidates = candidates

    def sentence_cosines(self, query: str, candidates: Sequence[Hit]) -> list[float | None]:
        """The best cosine between `query` and one unit of each candidate; None past `self.candidates`."""
        spans, texts = [], []
        for hit in candidates[: self.candidates]:
            own = [m for m, _ in units(hit.text, hit.modality)][:SENTENCE_UNITS]
            if hit.headings:
                own.append(" ".join(hit.headings))
            spans.append((len(texts), len(texts) + len(own)))
            texts += own
        out: list[float | None] = [None] * len(candidates)
        if not texts or not query.strip():
            return out
        cosines = cosine_matrix(self.embed, [query], texts)[0]
        for i, (start, end) in enumerate(spans):
            out[i] = float(cosines[start:end].max()) if end > start else None
        return out

    def scores(self, query: str, candidates: Sequence[Hit]) -> list[float]:
        lexical = super().scores(query, candidates)
        sentence = self.sentence_cosines(query, candidates)
        wanted = identifiers(query)
        out = []
        for hit, score, cosine in zip(candidates, lexical, sentence, strict=True):
            best = cosine if cosine is not None else hit.dense_score
            mapped = 0.0 if best is None else self.cosines.scale(best)
            if wanted and not any(contains_identifier(" ".join([*hit.headings, hit.text]), i) for i in wanted):
                mapped *= MISSING_IDENTIFIER_FACTOR  # an embedding barely tells E-150 from E-105: the code decides
            out.append((1 - self.weight) * score + self.weight * mapped)
        return out


class CrossEncoderScorer:
    """A sentence-transformers CrossEncoder checkpoint (one relevance logit per pair), scores = sigmoid(logit)."""

    def __init__(self, model_path: Path, *, device: str = "cpu", max_length: int = 512) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(model_path), device=device, max_length=max_length)

    def scores(self, query: str, candidates: Sequence[Hit]) -> list[float]:
        if not candidates:
            return []
        pairs = [(query, " ".join([*h.headings, h.text])) for h in candidates]
        logits = self.model.predict(pairs, activation_fn=_identity, convert_to_numpy=True, show_progress_bar=False)
        return [1.0 / (1.0 + math.exp(-float(x))) for x in logits.reshape(-1)]


def _identity(x):  # noqa: ANN001, ANN202 - torch tensor in, same out: the sigmoid is applied above, once
    return x


def build_scorer(
    model_path: Path | None, *, device: str = "cpu", embed: Callable[[list[str]], np.ndarray] | None = None,
    sentence_weight: float = 0.0, cosines: CosineProfile | None = None,
) -> Scorer:  # fmt: skip
    """The cross-encoder when a checkpoint is configured; else the sentence scorer when an embedder is given and
    `sentence_weight` > 0; else the lexical scorer. `cosines`: the profile of `embed`'s model (and of the
    retriever's dense cosines)."""
    if model_path is not None:
        return CrossEncoderScorer(model_path, device=device)
    if embed is not None and sentence_weight > 0:
        return SentenceScorer(embed, weight=sentence_weight, cosines=cosines)
    return LexicalScorer(cosines)


def rerank(
    query: str,
    candidates: Sequence[Hit],
    top_k: int,
    *,
    scorer: Scorer | None = None,
    parts: bool = True,
    rewrites: Sequence[str] = (),
) -> list[Hit]:
    """The best `top_k` candidates (given best first by the retriever), best first, with scores in [0, 1]. A
    question of two or three parts keeps each part's best candidate among them (`parts=False`: not; decision 88),
    and so does each of `rewrites`, the search queries the retriever searched beside the question (an LLM's, in the
    documents' words: `search.followup.search_query_with_llm`)."""
    scorer = scorer or LexicalScorer()
    scores = scorer.scores(query, candidates)
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))  # ties: the retriever's order
    ranked = [candidates[i].model_copy(update={"score": min(max(scores[i], 0.0), 1.0)}) for i in order]
    top = _each_part_kept(query, candidates, ranked, top_k, scorer, rewrites) if parts else ranked[:top_k]
    if len(top) > 1 and all(h.modality != "image" for h in top):  # the best hit's place is never given away
        image = next((h for h in ranked[top_k:] if h.modality == "image"), None)
        if image is not None and image.score >= IMAGE_SHARE * top[0].score:
            top[-1] = image
    return top


def _each_part_kept(
    query: str, candidates: Sequence[Hit], ranked: list[Hit], top_k: int, scorer: Scorer, rewrites: Sequence[str] = ()
) -> list[Hit]:
    """The first `top_k` of `ranked` (scored against the whole question), where the best candidate of each part of
    a two-part question (`models.extractive.question_parts`, scored against that part alone, and scored so if that
    is higher) takes the place of the last hit that is neither the best nor another part's: ranked by the whole
    question, the page that answers only the second part often stays below the top 5, and the answer then says
    half of what was asked. A rewrite of the question is one more part: the page it found in the documents' own
    words keeps a place."""
    asked = question_parts(query)
    asked = [*asked, *rewrites] if rewrites else asked
    top = ranked[:top_k]
    if len(asked) == 1 or top_k <= len(asked) or len(ranked) <= top_k:
        return top
    kept = {top[0].chunk_id}
    by_id = {h.chunk_id: h for h in ranked}
    # The retriever's first candidates, where each part's own best hits are (`search.hybrid.interleave`): the
    # sentence scorer reads no further, and past them a candidate's stand-in is its cosine with the whole question.
    first = candidates[:SENTENCE_CANDIDATES]
    for part in asked:
        part_scores = scorer.scores(part, first)
        i = max(range(len(first)), key=lambda i: (part_scores[i], -i))
        found = by_id[first[i].chunk_id]
        # Its score says how well it answers the part it is kept for (the search's relevance floor reads it).
        best = found.model_copy(update={"score": max(found.score, min(max(part_scores[i], 0.0), 1.0))})
        at = next((j for j, h in enumerate(top) if h.chunk_id == best.chunk_id), None)
        if at is None:
            at = max(j for j, h in enumerate(top) if h.chunk_id not in kept)
        top[at] = best
        kept.add(best.chunk_id)
    return sorted(top, key=lambda h: -h.score)


def above_floor(hits: Sequence[Hit], floor: float) -> list[Hit]:
    """The reranked `hits` that score at least `floor` (0 keeps all): a search shows what is relevant, not
    `top_k` hits whatever their score."""
    return [h for h in hits if h.score >= floor]
