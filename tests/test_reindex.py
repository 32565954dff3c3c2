"""Re-index by replay on a real `mmrag up`: a new generation built beside the serving one, the alias flip, the
grace period, tombstones, and a re-index resumed after a SIGKILL.

Generations are told apart by their chunking: the documents are paragraphs of ~70 words, which generation 1
(254 word pieces a chunk) keeps whole (two paragraphs to a chunk where they fit), and a re-index with
`chunk_max_tokens=32` cuts into pieces of at most ~25 words. So every search answer shows which generation
it came from, and an answer mixing both would show both lengths.
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
from tests.engine import BIN, Engine, NatsServer

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
                                         "vector_quantization": True}  # fmt: skip
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


async def test_reindex_api_roles_validation_and_conflict(nats_server: NatsServer, tmp_path: Path) -> None:
    """The edge API alone (no agents): who may start and follow a re-index, bad bodies, one at a time."""
    from aiohttp.test_utils import TestServer

    from bus.generations import GenerationStore
    from bus.topology import ensure_topology
    from contracts.generations import GenerationState
    from edge_api.app import create_app
    from edge_api.keys import create_key
    from edge_api.settings import EdgeSettings

    keys_file = tmp_path / "keys.json"
    keys = {role: create_key(keys_file, "acme", role)[1] for role in ("reader", "writer", "admin", "operator")}
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_topology(nc.jetstream())
        await (await GenerationStore.open(nc.jetstream())).bootstrap(1)  # what the agents do at start
        settings = EdgeSettings(nats_url=nats_server.url, auth="on", api_keys_file=str(keys_file), api_keys="")
        async with TestServer(create_app(settings)) as server:
            base = str(server.make_url("")).rstrip("/")

            def as_(role: str) -> httpx.AsyncClient:
                return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {keys[role]}"})

            for role in ("reader", "writer", "admin"):  # a tenant's admin too: a re-index spans every tenant
                async with as_(role) as http:
                    assert (await http.post("/v1/reindex", json={})).status_code == 403
                    assert (await http.get("/v1/reindex")).status_code == 403
                    assert (await http.get("/v1/reindex/g1")).status_code == 403
            async with as_("operator") as http:
                bad = await http.post("/v1/reindex", json={"settings": {"chunk_max_tokens": 9999}})
                assert (
                    bad.status_code == 400 and bad.json()["error"]["details"][0]["field"] == "settings.chunk_max_tokens"
                )
                unknown = await http.post("/v1/reindex", json={"settings": {"embedding_model": "x"}})
                assert unknown.status_code == 400
                mode = await http.post("/v1/reindex", json={"mode": "reembed"})
                assert mode.status_code == 400 and mode.json()["error"]["details"][0]["field"] == "mode"
                ok = await http.post("/v1/reindex", json={"settings": {"chunks_per_message": 8}})
                assert ok.status_code == 202 and ok.headers["Location"] == "/v1/reindex/g2"
                assert ok.json()["settings"]["chunks_per_message"] == 8 and ok.json()["state"] == "building"
                again = await http.post("/v1/reindex", json={})
                assert again.status_code == 409 and again.json()["error"]["code"] == "reindex_running"
                assert again.json()["error"]["id"] == "g2"
                listed = (await http.get("/v1/reindex")).json()["generations"]
                assert [(g["id"], g["state"]) for g in listed] == [("g1", "serving"), ("g2", "building")]
                for missing in ("g9", "x", "g0"):
                    assert (await http.get(f"/v1/reindex/{missing}")).status_code == 404
                # Cancel: a building generation goes (the coordinator drops it), and the next re-index may start.
                cancelled = await http.delete("/v1/reindex/g2")
                assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
                assert cancelled.json()["drop_after"] == cancelled.json()["cancelled_at"]
                again = await http.delete("/v1/reindex/g2")
                assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"
                assert (await http.delete("/v1/reindex/g1")).status_code == 409  # serving: never
                assert (await http.delete("/v1/reindex/g7")).status_code == 404
                g3 = await http.post("/v1/reindex", json={"settings": {"chunks_per_message": 8}})
                assert g3.status_code == 202 and g3.json()["id"] == "g3" and g3.json()["source_generation"] == 1
                # Once g3 serves, the next re-index carries its settings forward and applies the new ones on top.
                store = await GenerationStore.open(nc.jetstream())
                await store.set_serving(3)
                await store.update(3, lambda r: r.model_copy(update={"state": GenerationState.SERVING}))
                g4 = (await http.post("/v1/reindex", json={"settings": {"vector_quantization": True}})).json()
                assert g4["id"] == "g4" and g4["source_generation"] == 3
                assert g4["settings"] == {
                    "chunk_max_tokens": None,
                    "chunks_per_message": 8,
                    "vector_quantization": True,
                }
                # The CLI cancels too (with the operator key).
                cli = await asyncio.create_subprocess_exec(
                    str(BIN / "mmrag"), "reindex", "--url", base, "--api-key", keys["operator"], "--cancel", "g4",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, errs = await asyncio.wait_for(cli.communicate(), 60)
                assert cli.returncode == 0 and out.decode().strip() == "g4  cancelled", (out, errs)
    finally:
        await nc.close()


def test_generation_settings_override_the_process_settings() -> None:
    from agents.runtime.host import generation_settings
    from agents.settings import AgentSettings
    from contracts.generations import GenerationRecord, GenerationSettings

    base = AgentSettings(chunk_max_tokens=254, chunks_per_message=32)
    record = GenerationRecord(generation=2, state="building", settings=GenerationSettings(chunk_max_tokens=64))
    applied = generation_settings(base, record)
    assert (applied.chunk_max_tokens, applied.chunks_per_message, applied.vector_quantization) == (64, 32, False)
    assert generation_settings(base, None) is base


@pytest.mark.parametrize("adapter", ["edge", "qdrant-client"])
async def test_coordinator_finishes_an_interrupted_flip_and_drops_after_grace(
    nats_server: NatsServer, tmp_path: Path, adapter: str
) -> None:
    """The coordinator's steps against a real NATS and both store adapters (Qdrant's embedded engine, and
    qdrant-client's local mode: the code path of a Qdrant server), from the states a crash can leave."""
    from datetime import timedelta

    from agents.reindexer import ReindexCoordinator
    from agents.runtime.resources import AgentContext, Resource, SharedResources
    from agents.settings import AgentSettings
    from search.vectorstore import CollectionSchema
    from bus.generations import GenerationStore, NotCancellable
    from bus.progress import ProgressStore
    from bus.topology import ensure_consumer, ensure_topology
    from contracts.generations import GenerationSettings, GenerationState
    from contracts.messages import utcnow
    from contracts.topology import UPLOADS_BUCKET

    settings = AgentSettings(nats_url=nats_server.url, data_dir=tmp_path, reindex_grace_s=3600)
    nc = await nats.connect(nats_server.url)
    shared = SharedResources(settings)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        store = await GenerationStore.open(js)
        await store.bootstrap(1)
        if adapter == "edge":
            await shared.load({Resource.VECTOR_STORE})
        else:  # what open_vector_store builds for QDRANT_URL, on qdrant-client's local mode
            from qdrant_client import QdrantClient

            from search.vectorstore import QdrantClientStore

            shared._store = QdrantClientStore(QdrantClient(location=":memory:"))
        for gen in (1, 2):
            await shared.in_store(lambda s, g=gen: s.create_collection(f"mmrag-g{g}", CollectionSchema(text_dim=4)))
        await shared.in_store(lambda s: s.set_alias("mmrag", "mmrag-g1"))
        kv = await js.key_value(PROGRESS_BUCKET)
        ctx = AgentContext(nc=nc, js=js, settings=settings, generation=IndexGeneration(1),
                           progress=ProgressStore(kv, IndexGeneration(1)), uploads=await js.object_store(UPLOADS_BUCKET),
                           shared=shared)  # fmt: skip
        coordinator = ReindexCoordinator(ctx)
        await store.start_reindex(GenerationSettings())
        # Not caught up while generation 2's consumers do not exist (no agent process started them).
        await coordinator.tick(store)
        assert (await store.get(2)).state is GenerationState.BUILDING
        assert not (await store.get(2)).progress.consumers_ready
        for consumer in ingest_consumers(IndexGeneration(2)).values():
            await ensure_consumer(js, consumer)

        # A cancelled generation never flips, and is dropped at the next tick.
        await store.cancel(2)
        await coordinator.tick(store)
        assert (await store.get(2)).state is GenerationState.DROPPED
        assert (await store.serving()).generation == 1
        assert await shared.in_store(lambda s: s.resolve("mmrag")) == "mmrag-g1"
        assert await shared.in_store(lambda s: s.resolve("mmrag-g2")) is None
        with pytest.raises(NotFoundError):
            await js.consumer_info("DOCS", "parser-g2")

        # Generation 3: once its flip has begun it cannot be cancelled.
        await store.start_reindex(GenerationSettings())
        await shared.in_store(lambda s: s.create_collection("mmrag-g3", CollectionSchema(text_dim=4)))
        for consumer in ingest_consumers(IndexGeneration(3)).values():
            await ensure_consumer(js, consumer)
        await store.update(3, lambda r: r.model_copy(update={"flipping_since": utcnow()}))
        with pytest.raises(NotCancellable):
            await store.cancel(3)

        # A crash after the serving record was written but before the states: the next tick finishes the flip.
        await store.set_serving(3)
        await coordinator.tick(store)
        g1, g3 = await store.get(1), await store.get(3)
        assert g3.state is GenerationState.SERVING and g1.state is GenerationState.RETIRED
        assert await shared.in_store(lambda s: s.resolve("mmrag")) == "mmrag-g3"
        assert (g1.drop_after - g1.retired_at) == timedelta(seconds=3600)

        # Within the grace period nothing is dropped; past it, the collection, consumers and record go.
        await coordinator.tick(store)
        assert (await store.get(1)).state is GenerationState.RETIRED
        assert await shared.in_store(lambda s: s.resolve("mmrag-g1")) == "mmrag-g1"
        await store.update(1, lambda r: r.model_copy(update={"drop_after": utcnow() - timedelta(seconds=1)}))
        await coordinator.tick(store)
        assert (await store.get(1)).state is GenerationState.DROPPED
        assert await shared.in_store(lambda s: s.resolve("mmrag-g1")) is None
        with pytest.raises(NotFoundError):
            await js.consumer_info("DOCS", "parser-g1")
    finally:
        await asyncio.to_thread(shared.close)
        await nc.close()
