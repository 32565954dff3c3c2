"""Evaluations on the shared engine (`POST/GET /v1/evaluations`, `mmrag eval`): a corpus with a known ground truth,
the report's recall, facts and abstention, storage and listing, tenant isolation, roles, the questions that
changed between two runs, and the CLI. Two generations and the gated re-index: tests/e2e/test_evaluation_gate.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import new_tenant
from tests.engine import BIN, TenantEngine, upload_bytes, wait_status

# Each document: one made-up word no other document has, and one sentence that is a fact.
CORPUS = {
    "pumps.txt": "The quorvane pump moves coolant through the loop. The quorvane pump runs at 1450 rpm in normal duty.",
    "valves.txt": "The blentic valve closes when the pressure drops. The blentic valve opens at 42 kPa of inlet "
    "pressure.",
    "fans.txt": "The zephrant fan cools the cabinet from below. The zephrant fan draws 0.8 A at full speed.",
}
QUESTIONS = [
    {"id": "pump", "question": "quorvane pump speed", "expected": [{"doc": "pumps.txt", "page": 1}],
     "facts": ["1450 rpm"]},
    {"id": "valve", "question": "when does the blentic valve open", "expected": [{"doc": "valves.txt"}],
     "facts": ["42 kPa"]},
    {"id": "fan", "question": "zephrant fan current", "expected": [{"doc": "fans.txt"}]},
    # Expected in a document this tenant does not have: never found (recall 0), its fact never said.
    {"id": "absent", "question": "glimmerwick heater setting", "expected": [{"doc": "heaters.txt"}],
     "facts": ["glimmerwick heater runs at 230 V"]},
]  # fmt: skip


async def wait_report(http: aiohttp.ClientSession, url: str, evaluation_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    record: dict = {}
    while time.monotonic() < deadline:
        async with http.get(f"{url}/v1/evaluations/{evaluation_id}") as resp:
            assert resp.status == 200, await resp.text()
            record = await resp.json()
        if record["state"] in ("done", "failed"):
            return record
        await asyncio.sleep(0.3)
    raise TimeoutError(f"evaluation {evaluation_id} not finished in {timeout_s}s: {record.get('state')}")


async def start(http: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with http.post(f"{url}/v1/evaluations", json=body) as resp:
        assert resp.status == 202, await resp.text()
        assert resp.headers["Location"].startswith("/v1/evaluations/e")
        return await resp.json()


async def upload_corpus(engine: TenantEngine, corpus: dict[str, str]) -> dict[str, str]:
    async with aiohttp.ClientSession(headers=engine.headers) as http:
        ids = {}
        for name, text in corpus.items():
            resp = await upload_bytes(http, engine.url, text.encode(), name, "text/plain")
            assert resp.status == 202
            ids[name] = (await resp.json())["doc_id"]
        for doc_id in ids.values():
            await wait_status(http, engine.url, doc_id, {"indexed"})
        return ids


@pytest.fixture(scope="module")
def admin(shared_engine) -> TenantEngine:  # noqa: ANN001
    tenant = new_tenant(shared_engine, "evaluations", role="admin")
    asyncio.run(upload_corpus(tenant, CORPUS))
    return tenant


@pytest.fixture
def engine(admin: TenantEngine) -> TenantEngine:
    """The `http` fixture sends the admin tenant's key."""
    return admin


async def wait_gone(http: aiohttp.ClientSession, url: str, filename: str, query: str, timeout_s: float = 60) -> None:
    """Until a search finds nothing of `filename` (the indexer removed its points); each query differs (no cache)."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        n += 1
        async with http.post(f"{url}/v1/search", json={"query": f"{query} {n}", "top_k": 10}) as resp:
            hits = (await resp.json())["hits"]
        if all(h["filename"] != filename for h in hits):
            return
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{filename} still found after {timeout_s}s")


async def test_an_evaluation_reports_the_expected_recall_and_facts_and_is_stored(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    admin = engine
    queued = await start(http, admin.url, {"name": "ground truth", "k": 1, "questions": QUESTIONS})
    assert queued["state"] == "queued" and queued["tenant"] == admin.tenant
    report = await wait_report(http, admin.url, queued["id"])
    assert report["state"] == "done", report["error"]
    [run] = report["runs"]
    m = run["metrics"]
    # Three of four questions find their document first (its made-up word decides); the fourth cannot.
    assert m["recall"] == pytest.approx(0.75), run["results"]
    assert m["mrr"] == pytest.approx(0.75) and m["ndcg10"] == pytest.approx(0.75)
    assert m["fact_rate"] == pytest.approx(2 / 3)  # 1450 rpm and 42 kPa, never the absent heater's
    assert m["errors"] == 0 and m["questions"] == 4
    by_id = {r["id"]: r for r in run["results"]}
    assert by_id["pump"]["top"][0]["filename"] == "pumps.txt" and by_id["pump"]["facts_found"] == [True]
    assert by_id["absent"]["recall"] == 0.0 and by_id["absent"]["rank"] is None
    assert report["progress"] == {"done": 4, "total": 4}

    async with http.get(f"{admin.url}/v1/evaluations") as resp:
        listed = (await resp.json())["evaluations"]
    mine = next(e for e in listed if e["id"] == queued["id"])
    assert mine["name"] == "ground truth" and mine["state"] == "done" and mine["metrics"][0] == m


async def test_reports_belong_to_their_tenant_and_need_an_admin(
    engine: TenantEngine, shared_engine, http: aiohttp.ClientSession  # noqa: ANN001
) -> None:
    admin = engine
    queued = await start(http, admin.url, {"questions": QUESTIONS[:1]})
    await wait_report(http, admin.url, queued["id"])
    other = new_tenant(shared_engine, "evaluations-other", role="admin")
    async with aiohttp.ClientSession(headers=other.headers) as them:
        async with them.get(f"{admin.url}/v1/evaluations/{queued['id']}") as resp:
            assert resp.status == 404
        async with them.get(f"{admin.url}/v1/evaluations") as resp:
            assert (await resp.json())["evaluations"] == []
        # Their run sees only their (empty) corpus: the first tenant's documents are never found.
        report = await wait_report(them, admin.url, (await start(them, admin.url, {"questions": QUESTIONS[:1]}))["id"])
        assert report["runs"][0]["metrics"]["recall"] == 0.0
    writer = new_tenant(shared_engine, "evaluations-writer", role="writer")
    async with aiohttp.ClientSession(headers=writer.headers) as w:
        async with w.post(f"{admin.url}/v1/evaluations", json={"questions": QUESTIONS[:1]}) as resp:
            assert resp.status == 403
    async with http.post(f"{admin.url}/v1/evaluations", json={"questions": QUESTIONS[:1], "generation": 1}) as resp:
        body = await resp.json()
        assert resp.status == 403 and "operator" in body["error"]["message"], body
    async with http.post(f"{admin.url}/v1/evaluations", json={"questions": [{"question": "why?"}]}) as resp:
        assert resp.status == 400 and "measures nothing" in await resp.text()


async def test_a_second_run_lists_the_questions_that_changed(shared_engine) -> None:  # noqa: ANN001
    tenant = new_tenant(shared_engine, "evaluations-changes", role="admin")
    ids = await upload_corpus(tenant, {"pumps.txt": CORPUS["pumps.txt"], "fans.txt": CORPUS["fans.txt"]})
    questions = [QUESTIONS[0], QUESTIONS[2]]
    async with aiohttp.ClientSession(headers=tenant.headers) as h:
        first = await wait_report(h, tenant.url, (await start(h, tenant.url, {"k": 1, "questions": questions}))["id"])
        assert first["runs"][0]["metrics"]["recall"] == 1.0 and first["changes"] == []
        async with h.delete(f"{tenant.url}/v1/documents/{ids['fans.txt']}") as resp:
            assert resp.status in (200, 202)
        await wait_gone(h, tenant.url, "fans.txt", "zephrant fan current")
        body = {"k": 1, "questions": questions, "compare_with": first["id"]}
        second = await wait_report(h, tenant.url, (await start(h, tenant.url, body))["id"])
    assert second["runs"][0]["metrics"]["recall"] == 0.5
    [change] = second["changes"]
    assert (change["id"], change["verdict"]) == ("fan", "worse")
    assert change["before"]["rank"] == 1 and change["after"]["rank"] is None


def test_mmrag_eval_prints_the_report_and_names_a_bad_line(admin: TenantEngine, tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text("# my questions\n" + "\n".join(json.dumps(q) for q in QUESTIONS[:3]) + "\n")
    env = {**os.environ, **admin.client_env}
    done = subprocess.run([str(BIN / "mmrag"), "eval", str(questions), "--url", admin.url, "--k", "1"],
                          capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.strip().startswith("g1 "))
    assert row.split()[1:4] == ["1.000", "1.000", "1.000"], done.stdout  # recall@1, nDCG@10, MRR

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps({"question": "no truth"}) + "\n")
    failed = subprocess.run([str(BIN / "mmrag"), "eval", str(bad), "--url", admin.url],
                            capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert failed.returncode == 1 and "bad.jsonl:2" in failed.stderr and "measures nothing" in failed.stderr
    assert "Traceback" not in failed.stderr
