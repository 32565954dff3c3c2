"""Re-index without an engine: the API's roles, validation and conflicts on an edge app with auth on, a
generation's settings over the process settings, and the coordinator finishing an interrupted flip, against a
real nats-server. The replay on a real `mmrag up`: tests/e2e/test_reindex_engine.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from contracts.topology import PROGRESS_BUCKET, IndexGeneration, ingest_consumers
from tests.engine import BIN, NatsServer

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
                    "embedding_model": None,
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
    from bus.uploads import UploadBuckets

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
                           progress=ProgressStore(kv, IndexGeneration(1)), uploads=UploadBuckets(js),
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


async def test_the_first_generation_records_the_install_s_embedding_model_and_a_reindex_carries_it(
    nats_server: NatsServer,
) -> None:
    from bus.generations import GenerationStore
    from bus.topology import ensure_topology
    from contracts.generations import GenerationSettings

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        store = await GenerationStore.open(js)
        e5 = GenerationSettings(embedding_model="multilingual-e5-small")
        await store.bootstrap(1, e5)  # what the agents do at first start with MMRAG_EMBEDDING_MODEL set
        await store.bootstrap(1, GenerationSettings(embedding_model="minilm"))  # a later start with another setting
        assert (await store.get(1)).settings.embedding_model == "multilingual-e5-small"  # the index keeps its model
        carried = await store.start_reindex(GenerationSettings(chunk_max_tokens=64))
        assert carried.settings.embedding_model == "multilingual-e5-small" and carried.settings.chunk_max_tokens == 64
    finally:
        await nc.close()
