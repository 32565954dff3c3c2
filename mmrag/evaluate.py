"""`mmrag eval`: read a questions file, run the evaluation on the engine, print its report."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.evaluation import MAX_QUESTIONS, EvaluationQuestion

POLL_S = 1.0


class QuestionsFileError(ValueError):
    pass


def read_questions(path: Path) -> list[dict[str, Any]]:
    """The questions of a JSON Lines file (blank lines and lines starting with # skipped), each checked against
    `EvaluationQuestion`; `QuestionsFileError` names the line and what is wrong."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise QuestionsFileError(f"cannot read {path}: {e.strerror or e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            question = EvaluationQuestion.model_validate_json(line)
        except ValidationError as e:
            problem = e.errors(include_url=False)[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise QuestionsFileError(f"{path}:{n}: {where + ': ' if where else ''}{problem['msg']} (each line: "
                                     '{"question": ..., "expected": [{"doc": ..., "page": ...}], "facts": [...]})') from None  # fmt: skip
        out.append(question.model_dump(exclude_none=True, exclude_defaults=True))
    if not out:
        raise QuestionsFileError(f"{path} holds no question")
    if len(out) > MAX_QUESTIONS:
        raise QuestionsFileError(f"{path} holds {len(out)} questions; an evaluation takes at most {MAX_QUESTIONS}")
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(record: dict[str, Any]) -> str:
    """The report as text: one metrics row per run, then the changed questions, then the missed ones."""
    lines = [f"evaluation {record['id']}  {record['state']}  {len(record['questions'])} questions  k={record['k']}"]
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    header = f"{'generation':>10}  {'recall@k':>8}  {'nDCG@10':>8}  {'MRR':>6}  {'facts':>6}  {'abstain':>7}  errors"
    if record["runs"]:
        lines.append(header)
    for run in record["runs"]:
        m = run["metrics"]
        lines.append(f"{'g' + str(run['generation']):>10}  {_pct(m['recall']):>8}  {_pct(m['ndcg10']):>8}  "
                     f"{_pct(m['mrr']):>6}  {_pct(m['fact_rate']):>6}  {_pct(m['abstention_rate']):>7}  {m['errors']}")  # fmt: skip
    if record["changes"]:
        lines.append(f"changed ({len(record['changes'])}):")
        for c in record["changes"]:
            b, a = c["before"], c["after"]
            lines.append(f"  {c['verdict']:>7}  #{c['index']} {c['id'] or ''} {c['question'][:70]!r}: rank "
                         f"{b['rank']} -> {a['rank']}, facts {sum(b['facts_found'])} -> {sum(a['facts_found'])}, "
                         f"abstained {b['abstained']} -> {a['abstained']}")  # fmt: skip
    if record["runs"]:
        missed = [r for r in record["runs"][0]["results"] if r["error"] or r["recall"] == 0.0
                  or (r["facts_found"] and not all(r["facts_found"]))]  # fmt: skip
        if missed:
            lines.append(f"missed on g{record['runs'][0]['generation']} ({len(missed)}):")
            for r in missed:
                q = record["questions"][r["index"]]
                why = r["error"] or ("no expected source in the top k" if r["recall"] == 0.0 else "a fact not found")
                lines.append(f"  #{r['index']} {r['id'] or ''} {q['question'][:70]!r}: {why}")
    return "\n".join(lines)


async def run_eval(http: Any, body: dict[str, Any], *, wait: bool, as_json: bool) -> int:
    from mmrag.client import evaluate, evaluation

    record = await evaluate(http, body)
    print(f"{record['id']}  queued  ({len(body['questions'])} questions)", file=sys.stderr, flush=True)
    if not wait:
        print(record["id"])
        return 0
    shown = None
    while record["state"] not in ("done", "failed"):
        await asyncio.sleep(POLL_S)
        record = await evaluation(http, record["id"])
        p = record["progress"]
        if (p["done"], p["total"]) != shown and p["total"]:
            shown = (p["done"], p["total"])
            print(f"{record['id']}  {record['state']}  {p['done']}/{p['total']}", file=sys.stderr, flush=True)
    print(json.dumps(record, indent=2) if as_json else render(record))
    return 0 if record["state"] == "done" else 1
