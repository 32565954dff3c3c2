"""API keys and tenants on a real `mmrag up --auth`: the shared engine of the end-to-end tier (tests/e2e/conftest.py)
is one. The edge API with auth on against a bare nats-server: tests/bus/test_auth.py.
"""

from __future__ import annotations

import subprocess

import aiohttp

from edge_api.keys import KEY_PREFIX
from mmrag import client as engine_client
from tests.engine import BIN, Engine, upload_bytes, wait_status
from tests.factories import make_pdf


async def test_mmrag_up_with_auth_prints_one_key_and_requires_it(shared_engine: Engine) -> None:
    """`mmrag up --auth` on loopback: the operator key it printed at start works, no key is 401, the key file holds no key."""
    eng = shared_engine
    printed = eng.log_path.read_text().split("mmrag is up")[0]  # what it printed while starting
    keys = [w for w in printed.split() if w.startswith(KEY_PREFIX)]
    assert len(keys) == 1, printed
    assert keys[0] not in (eng.data_dir / "api-keys.json").read_text()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{eng.url}/v1/documents") as resp:
            assert resp.status == 401, await resp.text()
        async with http.get(f"{eng.url}/v1/documents", headers={"Authorization": f"Bearer {keys[0]}"}) as resp:
            assert resp.status == 200, await resp.text()


async def test_two_tenants_on_a_real_engine_never_see_each_others_documents(shared_engine: Engine) -> None:
    """End to end through every agent: tenant A's key never gets tenant B's data back from search, ask, status,
    list or delete (the agents filter by the tenant the edge API put on the subject)."""
    eng = shared_engine
    keys = {}
    for tenant in ("alpha", "beta"):
        made = subprocess.run(
            [str(BIN / "mmrag"), "keys", "create", "--tenant", tenant, "--role", "writer",
             "--file", str(eng.data_dir / "api-keys.json")], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        keys[tenant] = next(w for w in made.stdout.split() if w.startswith(KEY_PREFIX))
    facts = {"alpha": "The alpha vault code is 4401.", "beta": "The beta vault code is 9917."}
    docs = {}
    async with aiohttp.ClientSession() as http:
        for tenant, fact in facts.items():
            http.headers["Authorization"] = f"Bearer {keys[tenant]}"
            resp = await upload_bytes(http, eng.url, make_pdf([fact]), f"{tenant}.pdf")
            assert resp.status == 202, await resp.text()
            docs[tenant] = (await resp.json())["doc_id"]
            assert (await wait_status(http, eng.url, docs[tenant], {"indexed", "failed"}))["status"] == "indexed"
        http.headers["Authorization"] = f"Bearer {keys['alpha']}"
        async with http.post(f"{eng.url}/v1/search", json={"query": "What is the beta vault code?", "top_k": 10}) as resp:
            hits = (await resp.json())["hits"]
        assert hits and {h["doc_id"] for h in hits} == {docs["alpha"]}  # only alpha's own document
        async with http.get(f"{eng.url}/v1/documents") as resp:
            assert [d["doc_id"] for d in (await resp.json())["documents"]] == [docs["alpha"]]
        async with http.get(f"{eng.url}/v1/documents/{docs['beta']}") as resp:
            assert resp.status == 404
        async with http.delete(f"{eng.url}/v1/documents/{docs['beta']}") as resp:
            assert resp.status == 404
    async with engine_client.client(eng.url, api_key=keys["alpha"]) as http2:
        events = [e async for e in engine_client.ask_events(http2, "What is the beta vault code?", 5)]
    text = "".join(d["text"] for k, d in events if k == "token")
    assert "9917" not in text and {d["doc_id"] for k, d in events if k == "citation"} <= {docs["alpha"]}
    # Beta still sees its own document: nothing of it was deleted by alpha.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys['beta']}"}) as http:
        async with http.get(f"{eng.url}/v1/documents/{docs['beta']}") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "indexed"
