"""Evaluations of a tenant's own corpus: questions with what a good answer finds, run through the query path,
and the stored report (`search.evaluation` computes, `bus.evaluations` stores, `agents.reindexer` runs).

Stored in the KV bucket `contracts.topology.EVALUATIONS_BUCKET` (``mmrag-evaluations``):

| key | value |
|---|---|
| ``rep.<tenant>.<id>`` | `EvaluationRecord`: the request, its state and progress, then the report |
| ``job.<tenant>.<id>`` | empty marker: an evaluation waiting for (or held by) a runner; deleted when it ends |

Bounds: `MAX_QUESTIONS` a run, `MAX_REPORTS_PER_TENANT` reports a tenant (the oldest finished ones go), one
evaluation queued or running per tenant at a time, texts cut to the lengths below. The questions come in a body of
at most 64 KiB (the edge API's limit), so a report of two runs stays under the bucket's `MAX_RECORD_BYTES`; should
one not, the runner stores it without the answers and sources of each question (`trimmed`).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.messages import MAX_PAGE, Identifier, Tenant, utcnow

MAX_GENERATION = 1_000_000  # far past any real count of re-indexes; bounds a caller's integer

MAX_QUESTIONS = 100
MAX_REPORTS_PER_TENANT = 20
MAX_RECORD_BYTES = 1024 * 1024  # the bucket's value size (NATS' default max payload)
REPORT_BUDGET_BYTES = 900 * 1024  # what a report may take of it: a margin for the message's headers
ANSWER_CHARS = 400  # of each answer kept in the report
TOP_HITS = 10  # sources of each answer kept in the report
EVALUATION_ID = re.compile(r"^e[0-9a-f]{12}$")
# Metrics a re-index gate may compare (all: higher is better).
GateMetric = Literal["recall", "ndcg@10", "mrr", "fact_rate"]
EvaluationOrigin = Literal["api", "reindex-gate"]


def report_key(tenant: str, evaluation_id: str) -> str:
    return f"rep.{tenant}.{evaluation_id}"


def job_key(tenant: str, evaluation_id: str) -> str:
    return f"job.{tenant}.{evaluation_id}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedSource(_Model):
    """A place a good answer is found: a document (its `doc_id` or its filename) and, optionally, a page."""

    doc: str = Field(min_length=1, max_length=200, description="the document's doc_id or its filename")
    page: int | None = Field(default=None, ge=1, le=MAX_PAGE, description="the page (1-based); null = anywhere in the document")


class EvaluationQuestion(_Model):
    """One line of a questions file (JSON Lines): the question, and what a good answer finds or says."""

    id: Identifier | None = Field(default=None, description="your name for the question (shown in the report)")
    question: str = Field(min_length=1, max_length=1000)
    expected: list[ExpectedSource] = Field(
        default_factory=list, max_length=10, description="where the answer is: recall@k, nDCG@10 and MRR"
    )
    facts: list[str] = Field(
        default_factory=list, max_length=5,
        description="strings the answer or the retrieved text must contain (case and spacing ignored): fact rate",
    )  # fmt: skip

    @model_validator(mode="after")
    def _measures_something(self) -> EvaluationQuestion:
        if not self.expected and not self.facts:
            raise ValueError("a question needs `expected` sources, `facts`, or both: otherwise it measures nothing")
        if any(not f.strip() or len(f) > 200 for f in self.facts):
            raise ValueError("each fact is 1-200 characters and not blank")
        return self


class EvaluationRequest(_Model):
    """Body of `POST /v1/evaluations`."""

    name: str | None = Field(default=None, max_length=100, description="a label for the report")
    questions: list[EvaluationQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)
    k: int = Field(default=10, ge=1, le=50, description="recall@k's k; each question retrieves max(k, 10) sources")
    generation: int | None = Field(
        default=None, ge=1, le=MAX_GENERATION, description="run against this index generation (building or serving; operator only); "
        "null = the serving one",
    )  # fmt: skip
    compare_generation: int | None = Field(
        default=None, ge=1, le=MAX_GENERATION,
        description="also run against this generation and list the questions that changed (operator only)",
    )  # fmt: skip
    compare_with: str | None = Field(
        default=None, pattern=EVALUATION_ID.pattern, description="an earlier evaluation's id: list the questions "
        "that changed since (its first run against this one's)",
    )  # fmt: skip


class EvaluationState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class HitRef(_Model):
    doc_id: str
    filename: str
    page: int


class QuestionResult(_Model):
    """How one question did in one run."""

    index: int = Field(ge=0, description="the question's line in the request (0-based)")
    id: str | None = None
    recall: float | None = Field(description="share of `expected` sources in the top k; null without `expected`")
    ndcg10: float | None = None
    rank: int | None = Field(default=None, description="rank (1-based) of the first expected source; null = none")
    facts_found: list[bool] = Field(default_factory=list, description="per fact: in the answer or retrieved text")
    abstained: bool = Field(default=False, description="the answer said it was not found in the documents")
    answer: str = Field(default="", description=f"the answer text (first {ANSWER_CHARS} characters)")
    top: list[HitRef] = Field(default_factory=list, description=f"the first {TOP_HITS} sources")
    error: str | None = Field(default=None, description="why the question got no answer (it counts as missed)")


class EvaluationMetrics(_Model):
    """Means over the questions that measure each (null: no question does)."""

    questions: int
    recall: float | None = Field(description="recall@k over questions with `expected`")
    ndcg10: float | None = Field(description="nDCG@10 over questions with `expected` (binary relevance)")
    mrr: float | None = Field(description="mean reciprocal rank of the first expected source")
    fact_rate: float | None = Field(description="share of facts found, over every fact of every question")
    abstention_rate: float = Field(description="share of questions whose answer said 'not found'")
    errors: int = Field(default=0, description="questions that got no answer (timeouts, failed queries)")

    def value(self, metric: GateMetric) -> float | None:
        return {"recall": self.recall, "ndcg@10": self.ndcg10, "mrr": self.mrr, "fact_rate": self.fact_rate}[metric]


class EvaluationRun(_Model):
    """The questions run against one index generation."""

    generation: int
    metrics: EvaluationMetrics
    results: list[QuestionResult]


class Outcome(_Model):
    """What a question's outcome is made of (a `QuestionResult` without its answer and sources)."""

    recall: float | None
    rank: int | None
    facts_found: list[bool]
    abstained: bool
    error: str | None

    @classmethod
    def of(cls, r: QuestionResult) -> Outcome:
        return cls(recall=r.recall, rank=r.rank, facts_found=r.facts_found, abstained=r.abstained, error=r.error)


class QuestionChange(_Model):
    """A question whose outcome differs between two runs (`before` = the baseline, `after` = this one)."""

    index: int
    id: str | None = None
    question: str
    verdict: Literal["better", "worse", "changed"]
    before: Outcome
    after: Outcome


class EvaluationProgress(_Model):
    done: int = 0
    total: int = 0


class EvaluationRecord(_Model):
    """An evaluation: what was asked, where it stands, and (when `done`) its report."""

    schema_version: Literal[1] = 1
    id: str = Field(pattern=EVALUATION_ID.pattern)
    tenant: Tenant
    name: str | None = None
    origin: EvaluationOrigin = "api"
    state: EvaluationState = EvaluationState.QUEUED
    k: int = 10
    generation: int | None = Field(default=None, description="the generation asked for (null = the serving one)")
    compare_generation: int | None = None
    compare_with: str | None = None
    questions: list[EvaluationQuestion]
    progress: EvaluationProgress = Field(default_factory=EvaluationProgress)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow, description="the runner's last write (a heartbeat)")
    finished_at: datetime | None = None
    runner: str | None = Field(default=None, description="the coordinator that holds it")
    error: str | None = None
    runs: list[EvaluationRun] = Field(
        default_factory=list, description="the run on `generation`, then the one on `compare_generation`"
    )
    trimmed: bool = Field(default=False, description="the answers and sources of each question were left out to "
                          "keep the report under the bucket's value size")
    changes: list[QuestionChange] = Field(
        default_factory=list, description="questions whose outcome differs from the baseline (the compared "
        "generation, or the `compare_with` evaluation)",
    )  # fmt: skip

    @property
    def finished(self) -> bool:
        return self.state in (EvaluationState.DONE, EvaluationState.FAILED)


class EvaluationGate(_Model):
    """`ReindexRequest.gate`: flip the new generation only if, on these questions of `tenant`, `metric` is not
    worse than on the serving generation by more than `tolerance`."""

    tenant: Tenant
    questions: list[EvaluationQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)
    k: int = Field(default=10, ge=1, le=50)
    metric: GateMetric = "ndcg@10"
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0, description="how much worse the new one may be")

    @model_validator(mode="after")
    def _questions_measure_the_metric(self) -> EvaluationGate:
        if self.metric == "fact_rate" and not any(q.facts for q in self.questions):
            raise ValueError("metric fact_rate needs questions with `facts`")
        if self.metric != "fact_rate" and not any(q.expected for q in self.questions):
            raise ValueError(f"metric {self.metric} needs questions with `expected` sources")
        return self


class GateOutcome(_Model):
    """What the gate decided (`GenerationRecord.gate_outcome`)."""

    state: Literal["running", "passed", "refused", "failed"]
    evaluation_id: str | None = Field(default=None, description="the comparison's report (in the gate's tenant)")
    metric: GateMetric
    serving_value: float | None = None
    new_value: float | None = None
    tolerance: float = 0.0
    reason: str = ""
    at: datetime = Field(default_factory=utcnow)
