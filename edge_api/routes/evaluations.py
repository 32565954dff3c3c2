"""Evaluations of the tenant's own corpus (the `admin` role of the tenant): questions with the sources and facts a
good answer finds, run through the query path; the report (recall@k, nDCG@10, MRR, fact rate, abstention, per
question, and what changed against a baseline) is stored and listed.

- ``POST /v1/evaluations`` (body `contracts.evaluation.EvaluationRequest`): stores the evaluation ``queued`` and
  answers 202 with its record and ``Location``; a re-index coordinator (`agents.reindexer`) runs it and writes its
  progress. Naming a ``generation`` or ``compare_generation`` (a building one: what a re-index would serve) is
  the operator's, as the re-index is. 409 ``evaluation_running`` while the tenant has one queued or running.
- ``GET /v1/evaluations``: the tenant's evaluations, newest first (without questions and per-question results).
- ``GET /v1/evaluations/{id}``: one, whole: follow ``state`` and ``progress`` until ``done`` or ``failed``.

Like the re-index routes, the edge API only writes and reads records (`bus.evaluations`); the agents ask.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bus.evaluations import EvaluationRunning, EvaluationStore, new_evaluation_id
from contracts.evaluation import (
    MAX_QUESTIONS,
    MAX_REPORTS_PER_TENANT,
    EvaluationMetrics,
    EvaluationOrigin,
    EvaluationProgress,
    EvaluationRecord,
    EvaluationRequest,
    EvaluationState,
)
from edge_api.bodies import JSON_BODY_ERRORS, read_body
from edge_api.errors import ApiError
from edge_api.identity import identity_of, tenant_of
from edge_api.keys import ROLE_RANK
from edge_api.operations import ERR_503, Err, Json, Operation, Reply
from edge_api.state import SETTINGS, backbone

EVALUATIONS_PATH = "/v1/evaluations"
EVALUATION_PATH = "/v1/evaluations/{id}"


class EvaluationSummary(BaseModel):
    """An evaluation in a list: its state and headline metrics (one per run)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None
    origin: EvaluationOrigin
    state: EvaluationState
    questions: int
    progress: EvaluationProgress
    generations: list[int] = Field(description="the generation of each run (the first is the evaluated one)")
    metrics: list[EvaluationMetrics] = Field(description="per run, in the order of `generations`")
    changed: int = Field(description="questions whose outcome changed against the baseline")
    created_at: datetime
    finished_at: datetime | None
    error: str | None


class EvaluationList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evaluations: list[EvaluationSummary]


def summary(r: EvaluationRecord) -> EvaluationSummary:
    return EvaluationSummary(
        id=r.id, name=r.name, origin=r.origin, state=r.state, questions=len(r.questions), progress=r.progress,
        generations=[run.generation for run in r.runs], metrics=[run.metrics for run in r.runs],
        changed=len(r.changes), created_at=r.created_at, finished_at=r.finished_at, error=r.error,
    )  # fmt: skip


def _operator(request: web.Request) -> bool:
    if request.app[SETTINGS].auth == "off":
        return True
    identity = identity_of(request)
    return identity is not None and ROLE_RANK[identity.role] >= ROLE_RANK["operator"]


async def start_evaluation(request: web.Request) -> Reply:
    bb = backbone(request)
    js = bb.jetstream()
    body = await read_body(request, EvaluationRequest)
    tenant = tenant_of(request)
    named = [g for g in (body.generation, body.compare_generation) if g is not None]
    if named and not _operator(request):
        raise ApiError(403, "forbidden", "evaluating a given index generation (`generation`, `compare_generation`) "
                       "needs an operator key, as a re-index does; leave them out to evaluate the serving index")  # fmt: skip
    generations = await bb.generations()
    serving = await generations.serving()
    for number in named:
        record = await generations.get(number)
        if (serving is None or number != serving.generation) and (record is None or not record.active):
            raise ApiError(409, "generation_unavailable", f"generation g{number} is not serving or building; "
                           "see GET /v1/reindex for the generations")  # fmt: skip
    store = await EvaluationStore.open(js)
    if body.compare_with is not None and await store.get(tenant, body.compare_with) is None:
        raise ApiError(404, "not_found", f"no evaluation {body.compare_with!r} to compare with in this tenant")
    record = EvaluationRecord(
        id=new_evaluation_id(), tenant=tenant, name=body.name, k=body.k, generation=body.generation,
        compare_generation=body.compare_generation, compare_with=body.compare_with, questions=body.questions,
    )  # fmt: skip
    try:
        await store.create(record)
    except EvaluationRunning as err:
        raise ApiError(409, "evaluation_running", f"{err}: one evaluation at a time per tenant; follow it at "
                       f"{EVALUATIONS_PATH}/{err.record.id}", id=err.record.id) from None  # fmt: skip
    return Reply(record, status=202, headers={"Location": f"{EVALUATIONS_PATH}/{record.id}"})


async def list_evaluations(request: web.Request) -> EvaluationList:
    store = await EvaluationStore.open(backbone(request).jetstream())
    return EvaluationList(evaluations=[summary(r) for r in await store.list(tenant_of(request))])


async def get_evaluation(request: web.Request) -> EvaluationRecord:
    store = await EvaluationStore.open(backbone(request).jetstream())
    raw = request.match_info["id"]
    record = await store.get(tenant_of(request), raw)
    if record is None:
        raise ApiError(404, "not_found", f"no evaluation {raw[:20]!r} in this tenant (ids look like e0123456789ab)")
    return record


EVAL_ID = {
    "name": "id", "in": "path", "required": True, "description": "the `id` the start answered with",
    "schema": {"type": "string", "minLength": 1},
}  # fmt: skip

OPERATIONS = (
    Operation(
        "POST", EVALUATIONS_PATH, start_evaluation, "startEvaluation", "evaluations",
        "Evaluate your corpus with your questions", role="admin",
        description=f"Runs each question (at most {MAX_QUESTIONS}; the body at most 64 KiB) as an ask against the "
        "serving index, or the given `generation` (operator), and reports recall@k, nDCG@10, MRR, fact rate and "
        "abstention rate, per question too; with `compare_generation` or `compare_with` also the questions whose "
        f"outcome changed. Runs in the background: follow `Location`. A tenant keeps its {MAX_REPORTS_PER_TENANT} "
        "latest reports.",
        request={"application/json": EvaluationRequest},
        responses={
            202: Json("queued; follow it at `Location`", EvaluationRecord),
            **JSON_BODY_ERRORS,
            400: Err("`invalid_body`: a question without `expected` or `facts`, too many questions, a bad field"),
            403: Err("`forbidden`: not an admin of the tenant, or `generation`/`compare_generation` without an "
                     "operator key"),
            404: Err("`not_found`: `compare_with` names no evaluation of this tenant"),
            409: Err("`evaluation_running`: one is queued or running (`id`); `generation_unavailable`: a named "
                     "generation is not serving or building"),
            503: ERR_503,
        },
    ),
    Operation(
        "GET", EVALUATIONS_PATH, list_evaluations, "listEvaluations", "evaluations", "Your evaluations",
        role="admin", responses={200: Json("newest first", EvaluationList), 503: ERR_503},
    ),
    Operation(
        "GET", EVALUATION_PATH, get_evaluation, "getEvaluation", "evaluations", "One evaluation and its report",
        role="admin", parameters=(EVAL_ID,),
        responses={
            200: Json("its state, progress and (once `done`) its runs and changes", EvaluationRecord),
            404: Err("`not_found`: no such evaluation in this tenant"),
            503: ERR_503,
        },
    ),
)  # fmt: skip
