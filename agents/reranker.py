"""reranker: `query.rerank` -> ordered hits -> `query.generate` (ask) or the results event (search).

Every candidate gets a relevance score in [0, 1] that means the same thing for every query and modality, so
that one threshold can tell "nothing here answers it" (`abstains`, used by the generator) and a table row, an
image's OCR text and a paragraph compete on one scale. Two scorers:

- `CrossEncoderScorer`: a sentence-transformers `CrossEncoder` checkpoint (`MMRAG_RERANKER_MODEL_PATH`), its
  logit through a sigmoid. For deployments that have one; none ships in a package here.
- `LexicalScorer` (the offline default): a blend of the dense cosine the retriever measured (`Hit.dense_score`,
  an absolute signal, mapped to [0, 1]) and lexical evidence computed inside the candidate set: query-term
  coverage weighted by IDF over the candidates (a word every candidate has decides nothing), the same for the
  best single sentence or table row (proximity: the fact sits in one place), and exact identifiers (error
  codes, part numbers, function names): a candidate missing every identifier of the question keeps 30% of its score.
  Chosen and weighed on the quality bench (`bench/quality`, docs/decisions.md).

Abstention reads two signals and declines only when both are weak: the best score, and (offline scorer only) the
question's `paraphrase_cosine`, the best cosine between the question and one sentence of the top hits, which the
agent measures with the text embedder only when the score alone would decline and hands on with the hits.

Ordering: by score; ties by the retriever's fused rank. Images are not crowded out: when the top `top_k` hold no
image hit but a candidate image scores at least `IMAGE_SHARE` of the best, it takes the last place.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from agents.lexical import contains_identifier, identifiers, terms, units
from agents.runtime.agent import ConsumerAgent
from agents.runtime.resources import Resource
from agents.runtime.worker import Delivery
from bus.answers import AnswerEmitter
from bus.publish import Outgoing, publish_all
from contracts.messages import GenerateRequest, Hit, QueryMode, RerankRequest
from contracts.topology import QUERY_CONSUMERS, ConsumerDef, Subjects

log = logging.getLogger(__name__)

# LexicalScorer weights (sum 1): dense cosine, IDF coverage of the whole chunk, of its best sentence or row.
DENSE_WEIGHT = 0.4
CHUNK_WEIGHT = 0.36
UNIT_WEIGHT = 0.24
# The cosine of all-MiniLM-L6-v2 between a question and a chunk that answers it lies mostly in 0.35..0.75 and
# rarely above 0.8; unrelated text stays below 0.2. Mapped linearly to [0, 1] between these two points.
COSINE_FLOOR = 0.1
COSINE_CEILING = 0.8
MISSING_IDENTIFIER_FACTOR = 0.3  # a candidate that has none of the question's identifiers
IMAGE_SHARE = 0.7  # an image hit at least this share of the best score keeps a place in the top k
# At most this many sentences/rows are embedded for `paraphrase_cosine`, the best-ranked hits' first (a page of a
# ledger has 15 rows): bounds the query's extra embedding work to one small batch.
PARAPHRASE_MAX_UNITS = 32


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
    """The offline scorer (see the module docstring). Stateless and cheap: well under a millisecond a candidate."""

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
            dense = hit.score if cosine is None else (cosine - COSINE_FLOOR) / (COSINE_CEILING - COSINE_FLOOR)
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


def build_scorer(model_path: Path | None, *, device: str = "cpu") -> Scorer:
    """The cross-encoder when a checkpoint is configured, else the offline scorer."""
    if model_path is None:
        return LexicalScorer()
    return CrossEncoderScorer(model_path, device=device)


def rerank(query: str, candidates: Sequence[Hit], top_k: int, *, scorer: Scorer | None = None) -> list[Hit]:
    """The best `top_k` candidates (given best first by the retriever), best first, with scores in [0, 1]."""
    scores = (scorer or LexicalScorer()).scores(query, candidates)
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))  # ties: the retriever's order
    ranked = [candidates[i].model_copy(update={"score": min(max(scores[i], 0.0), 1.0)}) for i in order]
    top = ranked[:top_k]
    if top and all(h.modality != "image" for h in top):
        image = next((h for h in ranked[top_k:] if h.modality == "image"), None)
        if image is not None and image.score >= IMAGE_SHARE * top[0].score:
            top[-1] = image
    return top


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
    vectors = np.asarray(embed([query, *texts]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return min(max(float((vectors[1:] @ vectors[0]).max()), -1.0), 1.0)  # rounding can pass 1 for an exact match


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


class RerankerAgent(ConsumerAgent[RerankRequest]):
    name = "reranker"
    model = RerankRequest
    needs = frozenset({Resource.TEXT_EMBEDDER})  # the paraphrase signal of abstention (`paraphrase_cosine`)

    _scorer: Scorer | None = None

    def consumer_defs(self) -> Sequence[ConsumerDef]:
        return [QUERY_CONSUMERS["reranker"]]

    def fetch_batch(self) -> int:
        return 4

    async def start(self) -> None:
        s = self._ctx.settings
        self._scorer = build_scorer(s.reranker_model_path, device=s.embedding_device)
        log.info("reranking with %s", type(self._scorer).__name__)

    async def handle(self, deliveries: Sequence[Delivery[RerankRequest]]) -> None:
        generate = []
        for d in deliveries:
            request = d.payload.request
            query = request.query or ""  # an image query with no text has no words: fused order and cosines decide
            if isinstance(self._scorer, CrossEncoderScorer):  # a model: off the event loop
                hits = await asyncio.to_thread(rerank, query, d.payload.candidates, request.top_k, scorer=self._scorer)
            else:
                hits = rerank(query, d.payload.candidates, request.top_k, scorer=self._scorer)
            answer = AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id)
            if request.mode is QueryMode.SEARCH:
                await answer.results(hits)
            else:
                await answer.retrieval(hits)
                paraphrase = await self._paraphrase(query, hits)
                generate.append(
                    Outgoing(Subjects.query(Subjects.QUERY_GENERATE, request.tenant),
                             GenerateRequest(request=request, hits=hits, paraphrase=paraphrase),
                             f"{request.request_id}:generate", d.trace_headers)
                )  # fmt: skip
        await publish_all(self._ctx.js, generate)

    async def _paraphrase(self, query: str, hits: Sequence[Hit]) -> float | None:
        """The question's `paraphrase_cosine`, measured only where it can change the decision: the offline scorer
        (a cross-encoder reads meaning itself), the signal on, and the best score alone below the threshold."""
        s = self._ctx.settings
        if (not isinstance(self._scorer, LexicalScorer) or s.abstain_paraphrase_cosine <= 0
                or not abstains(hits, s.abstain_threshold)):  # fmt: skip
            return None
        return await asyncio.to_thread(paraphrase_cosine, query, hits, self._ctx.shared.embedder.embed_array)

    async def on_give_up(self, delivery: Delivery[RerankRequest], reason: str) -> None:
        request = delivery.payload.request
        await AnswerEmitter(self._ctx.nc, tenant=request.tenant, request_id=request.request_id).error(
            "rerank_failed", "ranking the results failed; try again (the details are in the reranker's log)"
        )
