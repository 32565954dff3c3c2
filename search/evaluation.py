"""Evaluation of a corpus by its own questions: the metrics (one implementation: `bench/quality` imports them),
the runner that asks each question through the real query path, and the comparison of two runs.

Metrics, per question, from the sources an ask retrieved (its `retrieval` event, best first) and its answer:

- recall@k: the share of the question's expected sources (a document, or a page of it) found in the top k;
- nDCG@10: binary relevance, a source counted once (the first hit on it), ideal = every expected source first;
- MRR: 1 / rank of the first hit on an expected source (0 when none is in the retrieved list);
- fact rate: the share of expected facts found (case and runs of spaces ignored) in the answer or retrieved text;
- abstention: the answer said it was not found in the documents (`done.abstained`).

A report's means are over the questions that measure each (recall, nDCG, MRR: those with `expected`), the fact
rate over every fact. A question that got no answer (timeout, failed query) counts as missed everywhere.

Hook for answer feedback (the conversations work): a rated conversation turn becomes an `EvaluationQuestion`
(the question, `expected` = the cited sources of a turn rated good) and joins a questions file or a request;
nothing here needs to change for it. That conversion is not built (docs/decisions.md, decision on evaluations).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from bus.answers import AnswerSequencer
from bus.publish import Outgoing, publish
from contracts.evaluation import (
    ANSWER_CHARS,
    REPORT_BUDGET_BYTES,
    TOP_HITS,
    EvaluationMetrics,
    EvaluationQuestion,
    EvaluationRecord,
    EvaluationRun,
    HitRef,
    Outcome,
    QuestionChange,
    QuestionResult,
)
from contracts.messages import (
    DoneEvent,
    ErrorEvent,
    Hit,
    QueryMode,
    QueryRequest,
    ResetEvent,
    RetrievalEvent,
    TokenEvent,
    answer_event_adapter,
)
from contracts.topology import Subjects

log = logging.getLogger(__name__)

NDCG_AT = 10
QUESTION_TIMEOUT_S = 60.0  # no answer event for this long: the question counts as missed
CONCURRENCY = 2  # questions in flight at once (the query path is shared with the tenant's users)

# -- metrics ------------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def fact_found(fact: str, text: str) -> bool:
    """The expected fact appears in `text` (case and runs of whitespace ignored)."""
    return normalize(fact) in normalize(text)


def ranking_metrics(relevant: Sequence[str | None], expected: int, k: int) -> tuple[float, float, int | None]:
    """(recall@k, nDCG@10, rank of the first relevant) of a ranking.

    `relevant[i]` names the expected source the i-th hit is on (None: on none); `expected` is how many expected
    sources there are. A source counts once, at its first hit."""
    seen: set[str] = set()
    gains: list[float] = []
    found_at_k: set[str] = set()
    for i, source in enumerate(relevant):
        new = source is not None and source not in seen
        gains.append(1.0 if new else 0.0)
        if source is not None:
            seen.add(source)
            if i < k:
                found_at_k.add(source)
    first = next((i for i, s in enumerate(relevant) if s is not None), None)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:NDCG_AT]))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(expected, NDCG_AT)))
    recall = len(found_at_k) / expected if expected else 0.0
    return recall, (dcg / ideal if ideal else 0.0), None if first is None else first + 1


def matched_source(question: EvaluationQuestion, hit: Hit) -> str | None:
    """Which expected source of the question `hit` is on (a key), or None."""
    for i, e in enumerate(question.expected):
        if e.doc in (hit.doc_id, hit.filename) and (e.page is None or e.page == hit.page):
            return str(i)
    return None


@dataclass
class Observed:
    """What one ask gave: its sources (best first), its answer text, whether it abstained, or an error."""

    hits: list[Hit] = field(default_factory=list)
    answer: str = ""
    abstained: bool = False
    error: str | None = None


def score(index: int, question: EvaluationQuestion, seen: Observed, k: int) -> QuestionResult:
    recall = ndcg = rank = None
    if question.expected:
        recall, ndcg, rank = ranking_metrics([matched_source(question, h) for h in seen.hits],
                                             len(question.expected), k)  # fmt: skip
    text = " ".join([seen.answer, *(h.text for h in seen.hits[:k])])
    return QuestionResult(
        index=index, id=question.id, recall=recall, ndcg10=ndcg, rank=rank,
        facts_found=[seen.error is None and fact_found(f, text) for f in question.facts],
        abstained=seen.abstained, answer=seen.answer[:ANSWER_CHARS],
        top=[HitRef(doc_id=h.doc_id, filename=h.filename[:100], page=h.page) for h in seen.hits[:TOP_HITS]],
        error=seen.error,
    )  # fmt: skip


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: Sequence[QuestionResult]) -> EvaluationMetrics:
    ranked = [r for r in results if r.recall is not None]
    facts = [f for r in results for f in r.facts_found]
    return EvaluationMetrics(
        questions=len(results),
        recall=_mean([r.recall for r in ranked if r.recall is not None]),
        ndcg10=_mean([r.ndcg10 or 0.0 for r in ranked]),
        mrr=_mean([1.0 / r.rank if r.rank else 0.0 for r in ranked]),
        fact_rate=_mean([1.0 if f else 0.0 for f in facts]),
        abstention_rate=_mean([1.0 if r.abstained else 0.0 for r in results]) or 0.0,
        errors=sum(1 for r in results if r.error is not None),
    )


def fit(record: EvaluationRecord, budget: int = REPORT_BUDGET_BYTES) -> EvaluationRecord:
    """The report as stored: whole if its JSON fits `budget`, else without each question's answer and sources
    (metrics and outcomes kept, `trimmed` set)."""
    if len(record.model_dump_json()) <= budget:
        return record
    runs = [run.model_copy(update={"results": [r.model_copy(update={"answer": "", "top": []}) for r in run.results]})
            for run in record.runs]  # fmt: skip
    return record.model_copy(update={"runs": runs, "trimmed": True})


def _standing(r: QuestionResult) -> tuple[float, float, int]:
    """How good a question's outcome is, to say whether a change is better or worse: first the expected
    sources found and the facts found, then how high the first source ranks (a plain abstention says nothing)."""
    return (r.recall or 0.0, sum(r.facts_found), -(r.rank or 10_000))


def changes(questions: Sequence[EvaluationQuestion], before: Sequence[QuestionResult | None],
            after: Sequence[QuestionResult]) -> list[QuestionChange]:  # fmt: skip
    """The questions whose outcome (sources found, first rank, facts, abstention, error) differs; a question
    without a `before` (not in the baseline) is not compared."""
    out = []
    for q, b, a in zip(questions, before, after, strict=False):
        if b is None:
            continue
        outcome_b = (b.recall, b.rank, b.facts_found, b.abstained, b.error is None)
        outcome_a = (a.recall, a.rank, a.facts_found, a.abstained, a.error is None)
        if outcome_a == outcome_b:
            continue
        sa, sb = _standing(a), _standing(b)
        verdict = "better" if sa > sb else "worse" if sa < sb else "changed"
        out.append(QuestionChange(index=a.index, id=q.id, question=q.question, verdict=verdict,
                                  before=Outcome.of(b), after=Outcome.of(a)))  # fmt: skip
    return out


# -- the runner ----------------------------------------------------------------------------------------------------

Ask = Callable[[EvaluationQuestion], Awaitable[Observed]]


async def run_questions(questions: Sequence[EvaluationQuestion], ask: Ask, k: int, generation: int,
                        on_progress: Callable[[int], Awaitable[None]] | None = None) -> EvaluationRun:  # fmt: skip
    """Ask every question (`CONCURRENCY` at once), score each, summarize."""
    results: list[QuestionResult | None] = [None] * len(questions)
    done = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int, q: EvaluationQuestion) -> None:
        nonlocal done
        async with gate:
            results[i] = score(i, q, await ask(q), k)
        done += 1
        if on_progress is not None:
            await on_progress(done)

    await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    final = [r for r in results if r is not None]
    return EvaluationRun(generation=generation, metrics=summarize(final), results=final)


class BusAsker:
    """Asks through the agents like `POST /v1/ask` does (publish on ``query.retrieve.<tenant>``, read the events
    from ``answer.<tenant>.<request_id>``), optionally against one index generation."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, tenant: str, *, top_k: int,
                 generation: int | None = None, timeout_s: float = QUESTION_TIMEOUT_S) -> None:  # fmt: skip
        self._nc, self._js = nc, js
        self._tenant, self._top_k, self._generation, self._timeout_s = tenant, top_k, generation, timeout_s

    async def __call__(self, question: EvaluationQuestion) -> Observed:
        rid = uuid.uuid4().hex
        sub = await self._nc.subscribe(Subjects.answer(self._tenant, rid))
        seen = Observed()
        try:
            request = QueryRequest(request_id=rid, tenant=self._tenant, query=question.question, top_k=self._top_k,
                                   mode=QueryMode.ASK, generation=self._generation)  # fmt: skip
            await publish(self._js, Outgoing(Subjects.query(Subjects.QUERY_RETRIEVE, self._tenant), request, msg_id=rid))
            sequencer = AnswerSequencer()
            while not sequencer.finished:
                msg = await sub.next_msg(timeout=self._timeout_s)
                try:
                    event = answer_event_adapter.validate_json(msg.data)
                except ValueError:
                    continue
                for e in sequencer.push(event):
                    if isinstance(e, RetrievalEvent):
                        seen.hits = list(e.hits)
                    elif isinstance(e, TokenEvent):
                        seen.answer += e.text
                    elif isinstance(e, ResetEvent):
                        seen.answer = ""
                    elif isinstance(e, DoneEvent):
                        seen.abstained = e.abstained
                    elif isinstance(e, ErrorEvent):
                        seen.error = f"{e.code}: {e.message}"
        except nats.errors.TimeoutError:
            seen.error = f"timeout: no answer event within {self._timeout_s:.0f} s"
        except ValueError as err:  # a question the query contract refuses (e.g. no letter or digit)
            seen.error = f"invalid question: {err}"
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                log.debug("evaluation: unsubscribe failed", exc_info=True)
        if seen.error is not None:
            seen.hits, seen.answer = [], ""
        return seen
