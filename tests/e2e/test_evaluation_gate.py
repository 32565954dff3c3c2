"""Evaluations across index generations and the gated re-index, on a private `mmrag up` (re-indexes flip what every
tenant searches): a generation made worse for real is evaluated against the serving one and refused, and a
generation that is not worse flips.

Worse for real: each document holds long sentences (the facts the questions expect, ~30 words each). Generation 1
chunks by 254 word pieces and keeps each sentence whole; a re-index with `chunk_max_tokens=16` cuts every one of
them into pieces, so neither a retrieved chunk nor the extractive answer can hold a whole fact any more: its fact
rate falls from 1 to 0. The serving generation keeps answering throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from mmrag.client import cancel_reindex, client, reindex, reindex_events, reindex_status
from tests.e2e.test_evaluations import wait_report
from tests.e2e.test_reindex_engine import upload, wait_doc, wait_state
from tests.engine import BIN, Engine

FACTS = {
    "boiler.txt": "The kelvarine boiler must be flushed with demineralised water every ninety days and the flushing "
    "valve has to stay open for at least twelve minutes before the pump is restarted by hand.",
    "crane.txt": "The tollmark crane may lift no more than four tonnes when the outrigger pads rest on soft ground "
    "and the operator must lower the boom to thirty degrees before any slewing movement begins.",
    "mixer.txt": "The brindle mixer drum turns clockwise while loading and counter clockwise while discharging and "
    "the water dosing pump stops automatically once the drum has reached its rated fill level.",
}
QUESTIONS = [
    {"id": "boiler", "question": "how often is the kelvarine boiler flushed", "expected": [{"doc": "boiler.txt"}],
     "facts": [FACTS["boiler.txt"]]},
    {"id": "crane", "question": "tollmark crane load on soft ground", "expected": [{"doc": "crane.txt"}],
     "facts": [FACTS["crane.txt"]]},
    {"id": "mixer", "question": "brindle mixer drum direction", "expected": [{"doc": "mixer.txt"}],
     "facts": [FACTS["mixer.txt"]]},
]  # fmt: skip
GATE = {"tenant": "default", "questions": QUESTIONS, "metric": "fact_rate", "tolerance": 0.1}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:  # noqa: PT004 - one engine for the module, stopped at its end
    root = tmp_path_factory.mktemp("evaluation-gate")
    eng = Engine(root / "data", root / "engine.log", env={"MMRAG_REINDEX_GRACE_S": "1"}).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


async def evaluate(http: httpx.AsyncClient, body: dict) -> dict:
    resp = await http.post("/v1/evaluations", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


async def report(engine: Engine, evaluation_id: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await wait_report(session, engine.url, evaluation_id, timeout_s=240)


async def test_a_worse_generation_is_refused_and_a_not_worse_one_flips(engine: Engine, tmp_path: Path) -> None:
    async with client(engine.url, timeout=60) as http:
        for name, fact in FACTS.items():
            filler = f"This part belongs to the {name.split('.')[0]} manual."
            await wait_doc(http, await upload(http, f"{filler}\n\n{fact}\n\n{filler}".encode(), name))
        baseline = await report(engine, (await evaluate(http, {"questions": QUESTIONS}))["id"])
        assert baseline["runs"][0]["metrics"]["fact_rate"] == 1.0, baseline["runs"][0]["results"]

        # Tiny chunks: worse for real. The gate refuses; g2 stays building, unflipped, and its stream ends.
        started = await reindex(http, {"chunk_max_tokens": 16}, GATE)
        gen = started["id"]
        assert started["gate"]["metric"] == "fact_rate"
        events = [(kind, view) async for kind, view in reindex_events(http, gen)]
        kind, final = events[-1]
        assert kind == "done" and final["state"] == "building", final
        outcome = final["gate_outcome"]
        assert outcome["state"] == "refused", outcome
        assert outcome["serving_value"] == 1.0 and outcome["new_value"] < 0.5, outcome
        assert f"DELETE /v1/reindex/{gen}" in outcome["reason"]
        generations = (await http.get("/v1/reindex")).json()["generations"]
        assert [g["state"] for g in generations] == ["serving", "building"]

        # The gate's report compares the two generations; the questions it lost are listed as worse.
        gate_report = (await http.get(f"/v1/evaluations/{outcome['evaluation_id']}")).json()
        assert gate_report["origin"] == "reindex-gate"
        assert [r["generation"] for r in gate_report["runs"]] == [2, 1]
        assert {c["id"] for c in gate_report["changes"] if c["verdict"] == "worse"} == {"boiler", "crane", "mixer"}

        # An evaluation of the building generation against the serving one, asked for by hand.
        body = {"questions": QUESTIONS, "generation": 2, "compare_generation": 1}
        compared = await report(engine, (await evaluate(http, body))["id"])
        new, old = (run["metrics"] for run in compared["runs"])
        assert old["fact_rate"] == 1.0 and new["fact_rate"] < 0.5
        assert len(compared["changes"]) == 3

        # Still serving g1's whole sentences meanwhile.
        hits = (await http.post("/v1/search", json={"query": "kelvarine boiler flushed", "top_k": 3})).json()["hits"]
        assert FACTS["boiler.txt"] in hits[0]["text"]

        assert (await cancel_reindex(http, gen))["state"] == "cancelled"
        await wait_state(http, gen, {"dropped"})

    # Not worse (the serving settings, carried forward): the gate passes and the generation flips (the CLI).
    questions = tmp_path / "gate.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    done = subprocess.run(
        [str(BIN / "mmrag"), "reindex", "--url", engine.url, "--chunk-max-tokens", "254", "--gate", str(questions),
         "--gate-metric", "fact_rate"],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serving" in done.stdout and "gate passed: fact_rate 1.000 on g3 vs 1.000" in done.stdout, done.stdout
    async with client(engine.url, timeout=60) as http:
        view = await reindex_status(http, "g3")
        assert view["state"] == "serving" and view["gate_outcome"]["state"] == "passed"
