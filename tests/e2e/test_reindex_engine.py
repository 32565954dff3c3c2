"""Re-index by replay on a private `mmrag up` (it flips and drops generations, and one test SIGKILLs it): a new generation built beside the serving one, the alias flip, the
grace period, tombstones, and a re-index resumed after a SIGKILL.

Generations are told apart by their chunking: the documents are paragraphs of ~70 words, which generation 1
(254 word pieces a chunk) keeps whole (two paragraphs to a chunk where they fit), and a re-index with
`chunk_max_tokens=32` cuts into pieces of at most ~25 words. So every search answer shows which generation
it came from, and an answer mixing both would show both lengths.

The re-index API and the coordinator against a nats-server: tests/bus/test_reindex.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from bus.generations import progress_records
from contracts.messages import DocumentProgress, DocumentStatus
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects, ingest_consumers
from mmrag.client import EngineError, client, reindex, reindex_events, reindex_status, search
from tests.engine import BIN, Engine

GRACE_S = 2
SMALL = 32  # chunk_max_tokens of the re-index
LONG_WORDS, SHORT_WORDS = 40, 28  # a generation-1 hit has more than LONG_WORDS, a generation-2 hit at most SHORT_WORDS

_WORDS = (
    "river stone copper lantern meadow harbor falcon orchard violet granite thunder pepper candle quartz maple "
    "saddle walnut ember glacier canyon beacon velvet marble cedar tundra anchor prairie cobalt willow summit"
).split()


def document(seed: int, marker: str) -> bytes:
    """Six paragraphs of ~70 words; `marker` (a made-up word) appears once in every paragraph."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(6):
        words = [rng.choice(_WORDS) for _ in range(70)]
        words[rng.randrange(70)] = marker
        paragraphs.append(" ".join(words).capitalize() + ".")
    return "\n\n".join(paragraphs).encode()


def generation_of(hit: dict) -> int:
    words = len(hit["text"].split())
    if words > LONG_WORDS:
        return 1
    assert words <= SHORT_WORDS, f"a hit of {words} words belongs to neither generation: {hit['text']!r}"
    return 2


async def upload(http: httpx.AsyncClient, data: bytes, name: str) -> str:
    resp = await http.post("/v1/documents", files={"file": (name, data, "text/plain")})
    assert resp.status_code == 202, resp.text
    return resp.json()["doc_id"]


async def wait_doc(http: httpx.AsyncClient, doc_id: str, wanted: str = "indexed", timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        resp = await http.get(f"/v1/documents/{doc_id}")
        if resp.status_code == 200:
            last = resp.json()
            if last["status"] == wanted:
                return last
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{doc_id} not {wanted}: {last}")


async def wait_state(http: httpx.AsyncClient, gen_id: str, states: set[str], timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    view: dict = {}
    while time.monotonic() < deadline:
        view = await reindex_status(http, gen_id)
        if view["state"] in states:
            return view
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{gen_id} not in {states}: {view}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:  # noqa: PT004 - one engine for the module, stopped at its end
    root = tmp_path_factory.mktemp("reindex")
    eng = Engine(root / "data", root / "engine.log", env={"MMRAG_REINDEX_GRACE_S": str(GRACE_S)}).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


async def test_reindex_flips_atomically_while_queries_run(engine: Engine) -> None:
    async with client(engine.url, timeout=60) as http:
        docs = [await upload(http, document(i, f"zorblax{i}"), f"doc{i}.txt") for i in range(3)]
        for doc_id in docs:
            await wait_doc(http, doc_id)
        before = await search(http, "zorblax1 river stone", top_k=5)
        assert before and {generation_of(h) for h in before} == {1}

        answers: list[set[int]] = []
        failures: list[str] = []
        flipped = asyncio.Event()

        async def query_loop() -> None:
            queries, n = 0, 0
            async with client(engine.url, timeout=60) as q:
                while not flipped.is_set() or queries < 5:
                    n += 1  # every query a different text: no answer cache could serve it
                    try:
                        hits = await search(q, f"zorblax{n % 3} copper lantern {_WORDS[n % len(_WORDS)]}", top_k=8)
                    except EngineError as err:
                        failures.append(str(err))
                        continue
                    if not hits:
                        failures.append("no hits")
                        continue
                    answers.append({generation_of(h) for h in hits})
                    if flipped.is_set():
                        queries += 1

        loop = asyncio.create_task(query_loop())
        started = await reindex(http, {"chunk_max_tokens": SMALL})
        assert started["id"] == "g2" and started["state"] == "building" and started["source_generation"] == 1
        assert started["settings"]["chunk_max_tokens"] == SMALL
        # Only one re-index at a time.
        with pytest.raises(EngineError, match="409|already being built"):
            await reindex(http, {"chunk_max_tokens": 48})
        # A document that arrives during the replay ends up in both generations.
        late = await upload(http, document(99, "quuxfrob"), "late.txt")

        events = [(kind, view) async for kind, view in reindex_events(http, "g2")]
        flipped.set()
        await loop
        assert events[-1][0] == "done" and events[-1][1]["state"] == "serving", events[-1]
        progress = events[-1][1]["progress"]
        assert progress["documents_total"] == progress["documents_done"] == 4 and progress["pending_messages"] == 0

        print(f"\nre-index of 4 documents: {len(answers)} queries answered during and after it, {len(failures)} failed")
        # Zero failed queries, each answer from one generation, and once generation 2 answered, never 1 again.
        assert failures == []
        assert all(len(a) == 1 for a in answers), answers
        order = [next(iter(a)) for a in answers]
        assert order[0] == 1 and order[-1] == 2 and order == sorted(order), order

        # The new settings are in effect: short chunks, the late document among them, status from generation 2.
        hits = await search(http, "quuxfrob", top_k=5)
        assert hits and hits[0]["doc_id"] == late and {generation_of(h) for h in hits} == {2}
        status = (await http.get(f"/v1/documents/{late}")).json()
        assert status["status"] == "indexed" and status["chunks_total"] > 6  # 6 paragraphs, cut smaller

        # The old generation is kept for the grace period, then dropped: collection, consumers, progress keys.
        old = await reindex_status(http, "g1")
        assert old["state"] in ("retired", "dropped")
        retired, drop_after = (old[k] for k in ("retired_at", "drop_after"))
        assert _seconds(drop_after) - _seconds(retired) == GRACE_S
        await wait_state(http, "g1", {"dropped"})
    assert not (engine.data_dir / "qdrant" / "mmrag-g1").exists()
    assert (engine.data_dir / "qdrant" / "mmrag-g2").exists()
    nc = await nats.connect(engine.nats_url)
    try:
        js = nc.jetstream()
        for consumer in ingest_consumers(IndexGeneration(1)).values():
            with pytest.raises(NotFoundError):
                await js.consumer_info(consumer.stream, consumer.durable)
        kv = await js.key_value(PROGRESS_BUCKET)
        assert await progress_records(kv, IndexGeneration(1)) == {}
        assert len(await progress_records(kv, IndexGeneration(2))) == 4
    finally:
        await nc.close()


async def test_deleted_document_does_not_come_back_in_a_replay(engine: Engine) -> None:
    async with client(engine.url, timeout=60) as http:
        doc = await upload(http, document(7, "snargleweft"), "gone.txt")
        await wait_doc(http, doc)
        assert (await search(http, "snargleweft", top_k=3))[0]["doc_id"] == doc
        assert (await http.delete(f"/v1/documents/{doc}")).status_code == 202

        nc = await nats.connect(engine.nats_url)
        try:  # the tombstone: the deleter purges the document's submissions from the ingest subject
            js = nc.jetstream()
            deadline = time.monotonic() + 60
            while True:
                try:
                    await js.get_last_msg(DOCS_STREAM.name, Subjects.ingest("default", doc))
                except NotFoundError:
                    break
                assert time.monotonic() < deadline, "the ingest subject of a deleted document was not purged"
                await asyncio.sleep(0.2)
            serving = (await http.get("/v1/reindex")).json()["generations"][-1]["generation"]
            # Through the CLI this time: it follows the progress events and exits 0 once the new one serves.
            cli = await asyncio.create_subprocess_exec(
                str(BIN / "mmrag"), "reindex", "--url", engine.url, "--chunk-max-tokens", str(SMALL + 8),
                "--quantization", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, errs = await asyncio.wait_for(cli.communicate(), 300)
            assert cli.returncode == 0, (out, errs)
            lines = out.decode().splitlines()
            gen_id = lines[0].split()[0]
            assert lines[-1] == f"{gen_id}  serving" and f"building from g{serving}" in lines[0], lines
            final = await reindex_status(http, gen_id)
            assert final["settings"] == {"chunk_max_tokens": SMALL + 8, "chunks_per_message": None,
                                         "vector_quantization": True, "embedding_model": "minilm"}  # fmt: skip
            kv = await js.key_value(PROGRESS_BUCKET)
            new = await progress_records(kv, IndexGeneration(final["generation"]))
        finally:
            await nc.close()
        # The generation's quantization is the new collection's.
        schema = json.loads((engine.data_dir / "qdrant" / f"mmrag-{gen_id}" / "schema.json").read_text())
        assert schema["quantization"] is True
        assert new.get(("default", doc)) is None or new[("default", doc)].status is DocumentStatus.DELETED
        assert all(h["doc_id"] != doc for h in await search(http, "snargleweft", top_k=10))
        assert (await http.get(f"/v1/documents/{doc}")).status_code == 404


async def test_reindex_resumes_after_sigkill(tmp_path: Path) -> None:
    eng = Engine(tmp_path / "data", tmp_path / "engine.log", env={"MMRAG_REINDEX_GRACE_S": "0"}).start()
    try:
        async with client(eng.url, timeout=60) as http:
            docs = [await upload(http, document(100 + i, f"plimsk{i}"), f"d{i}.txt") for i in range(8)]
            for doc_id in docs:
                await wait_doc(http, doc_id)
            nc = await nats.connect(eng.nats_url, allow_reconnect=False)
            kv = await nc.jetstream().key_value(PROGRESS_BUCKET)
            watcher = await kv.watch("g2.>", include_history=True)
            await reindex(http, {"chunk_max_tokens": SMALL})
            # Kill it in the middle: the moment the first document is rebuilt (a KV watch is pushed within
            # milliseconds; the flip needs every document and then a coordinator tick).
            done_before = {}
            while not any(p.status is DocumentStatus.INDEXED for p in done_before.values()):
                entry = await watcher.updates(timeout=120)
                if entry is not None and entry.value:
                    record = DocumentProgress.model_validate_json(entry.value)
                    done_before[(record.tenant, record.doc_id)] = record
            eng.proc.kill()  # SIGKILL `mmrag up` (its children die with it) before anything else
            killed_at = time.time()
            await nc.close()
        eng.kill()  # reap it and wait for its ports

        eng.start()
        async with client(eng.url, timeout=60) as http:
            final = await wait_state(http, "g2", {"serving"})
            assert _seconds(final["serving_since"]) > killed_at, "the replay finished before it was interrupted"
            assert final["progress"]["documents_done"] == final["progress"]["documents_total"] == 8
            hits = await search(http, "plimsk3", top_k=5)
            assert hits and {generation_of(h) for h in hits} == {2}
        nc = await nats.connect(eng.nats_url)
        try:
            kv = await nc.jetstream().key_value(PROGRESS_BUCKET)
            after = await progress_records(kv, IndexGeneration(2))
        finally:
            await nc.close()
        # Resumed, not restarted: what was finished before the kill was not built again.
        finished = {k: p for k, p in done_before.items() if p.status is DocumentStatus.INDEXED}
        assert finished and len(finished) < 8
        for key, record in finished.items():
            assert after[key].updated_at == record.updated_at, key
    finally:
        code = eng.stop()
        assert code == 0, eng.log_tail()


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
