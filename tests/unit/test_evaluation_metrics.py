"""The evaluation metrics (`search.evaluation`): recall@k, nDCG@10, MRR, fact rate, abstention, and the questions
that changed between two runs; the bench's retrieval metrics are these."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from contracts.evaluation import EvaluationGate, EvaluationQuestion, EvaluationRecord, EvaluationRun, ExpectedSource
from contracts.messages import Hit
from search.evaluation import Observed, changes, fact_found, fit, ranking_metrics, score, summarize


def hit(doc: str, page: int = 1, text: str = "", filename: str | None = None) -> Hit:
    return Hit(chunk_id=f"{doc}-{page}-{text[:5]}", doc_id=doc, filename=filename or f"{doc}.pdf", page=page,
               text=text or "words", score=1.0)  # fmt: skip


def q(expected=(), facts=()) -> EvaluationQuestion:  # noqa: ANN001
    return EvaluationQuestion(question="where?", expected=[ExpectedSource(doc=d, page=p) for d, p in expected],
                              facts=list(facts))  # fmt: skip


def test_ranking_metrics_count_each_source_once() -> None:
    # hits on: -, A, A, B, -  (2 expected sources)
    recall, ndcg, rank = ranking_metrics([None, "a", "a", "b", None], expected=2, k=3)
    assert recall == 0.5  # only A in the top 3
    assert rank == 2
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ranking_metrics([None, None], expected=1, k=10) == (0.0, 0.0, None)
    assert ranking_metrics(["a"], expected=1, k=10) == (1.0, 1.0, 1)


def test_a_source_is_a_doc_id_or_a_filename_with_an_optional_page() -> None:
    question = q(expected=[("manual.pdf", 3), ("d2", None)])
    seen = Observed(hits=[hit("d1", 2, filename="manual.pdf"), hit("d1", 3, filename="manual.pdf"), hit("d2", 9)])
    result = score(0, question, seen, k=10)
    assert (result.recall, result.rank) == (1.0, 2)
    assert score(0, question, seen, k=1).recall == 0.0


def test_facts_are_found_in_the_answer_or_the_retrieved_text_ignoring_case_and_spacing() -> None:
    question = q(facts=["Torque  is 12 Nm", "blue wire", "red wire"])
    seen = Observed(hits=[hit("d", text="connect the Blue\nwire first")], answer="The torque is 12 nm.")
    assert score(0, question, seen, k=5).facts_found == [True, True, False]
    assert fact_found("a  B", "x A b y") and not fact_found("ab", "a b")


def test_summary_means_over_the_questions_that_measure_each() -> None:
    r1 = score(0, q(expected=[("d", 1)]), Observed(hits=[hit("x"), hit("d")]), k=10)
    r2 = score(1, q(facts=["yes"]), Observed(answer="not found", abstained=True), k=10)
    r3 = score(2, q(expected=[("d", 1)], facts=["z"]), Observed(error="timeout: no answer"), k=10)
    m = summarize([r1, r2, r3])
    assert m.questions == 3 and m.errors == 1
    assert m.recall == 0.5 and m.mrr == pytest.approx(0.25)  # r1 finds it at rank 2, r3 misses
    assert m.fact_rate == 0.0 and m.abstention_rate == pytest.approx(1 / 3)
    assert m.value("ndcg@10") == m.ndcg10


def test_changes_name_better_and_worse_questions_and_skip_equal_ones() -> None:
    questions = [q(expected=[("d", 1)]), q(expected=[("d", 1)]), q(facts=["x"])]
    good, bad = Observed(hits=[hit("d")]), Observed(hits=[hit("e")])
    before = [score(0, questions[0], good, 10), score(1, questions[1], bad, 10), score(2, questions[2], bad, 10)]
    after = [score(0, questions[0], bad, 10), score(1, questions[1], good, 10), score(2, questions[2], bad, 10)]
    found = changes(questions, before, after)
    assert [(c.index, c.verdict) for c in found] == [(0, "worse"), (1, "better")]
    assert changes(questions, [None, *before[1:]], after)[0].index == 1  # a question new since: not compared


def test_questions_and_gates_refuse_what_measures_nothing() -> None:
    with pytest.raises(ValidationError, match="measures nothing"):
        EvaluationQuestion(question="why?")
    with pytest.raises(ValidationError, match="fact_rate needs"):
        EvaluationGate(tenant="t", questions=[q(expected=[("d", 1)])], metric="fact_rate")


def test_a_report_over_its_budget_is_stored_without_answers_and_sources() -> None:
    question = q(expected=[("d", 1)])
    result = score(0, question, Observed(hits=[hit("d")] * 10, answer="x" * 400), k=10)
    run = EvaluationRun(generation=1, metrics=summarize([result]), results=[result])
    record = EvaluationRecord(id="e" + "0" * 12, tenant="t", questions=[question], runs=[run])
    assert fit(record) is record
    small = fit(record, budget=len(record.model_dump_json()) - 1)
    assert small.trimmed and small.runs[0].results[0].answer == "" and small.runs[0].results[0].top == []
    assert small.runs[0].metrics == run.metrics and small.runs[0].results[0].rank == 1
