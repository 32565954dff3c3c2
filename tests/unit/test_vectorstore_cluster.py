"""Collection layout on a Qdrant cluster (shards, replication factor, write consistency factor).

qdrant-client's local mode accepts these parameters and ignores them (``get_collection`` reports ``None`` for
each), so what is asserted is what the adapter sends:

- the adapter's builder (`create_collection_params`) carries the layout, and nothing for a default layout;
- the store passes them to ``create_collection`` of a real local-mode client, which then works as usual;
- from the environment to the wire: ``MMRAG_QDRANT_*`` settings with ``QDRANT_URL`` make the agents' store send
  them in the real ``PUT /collections/{name}`` request of qdrant-client, received by a loopback HTTP server
  standing in for the Qdrant server (none can be installed here) that records the request bodies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from qdrant_client import QdrantClient

from agents.runtime.resources import Resource, SharedResources
from agents.settings import AgentSettings
from search.vectorstore import (
    TEXT_DENSE,
    ClusterLayout,
    CollectionSchema,
    PointPayload,
    QdrantClientStore,
    SearchFilter,
    VectorPoint,
)
from search.vectorstore.client import create_collection_params

SCHEMA = CollectionSchema(text_dim=4, sparse=True)
LAYOUT = ClusterLayout(shard_number=6, replication_factor=3, write_consistency_factor=2)
CLUSTER_KEYS = ("shard_number", "replication_factor", "write_consistency_factor")


def test_the_layout_refuses_what_a_cluster_could_never_do() -> None:
    with pytest.raises(ValueError, match="write_consistency_factor 3 exceeds replication_factor 2"):
        ClusterLayout(replication_factor=2, write_consistency_factor=3)
    with pytest.raises(ValueError, match="exceeds replication_factor 1"):
        ClusterLayout(write_consistency_factor=2)  # the server's default replication factor is 1
    with pytest.raises(ValueError, match="shard_number must be >= 1"):
        ClusterLayout(shard_number=0)


def test_the_builder_carries_the_layout_and_nothing_for_the_default() -> None:
    params = create_collection_params(SCHEMA, LAYOUT)
    assert {k: params[k] for k in CLUSTER_KEYS} == {
        "shard_number": 6,
        "replication_factor": 3,
        "write_consistency_factor": 2,
    }
    assert params["vectors_config"][TEXT_DENSE].size == 4 and params["sparse_vectors_config"] is not None
    default = create_collection_params(SCHEMA, ClusterLayout())
    assert not set(CLUSTER_KEYS) & set(default)  # the server decides
    assert create_collection_params(SCHEMA, ClusterLayout(replication_factor=2)).get("replication_factor") == 2


class RecordingClient(QdrantClient):
    """A real local-mode client that also keeps the arguments of each ``create_collection``."""

    def __init__(self) -> None:
        super().__init__(location=":memory:")
        self.created: list[dict[str, Any]] = []

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.created.append({"name": collection_name, **kwargs})
        return super().create_collection(collection_name, **kwargs)


def test_the_store_creates_collections_with_its_layout_in_local_mode() -> None:
    client = RecordingClient()
    store = QdrantClientStore(client, LAYOUT)
    try:
        store.create_collection("mmrag-g1", SCHEMA)
        store.create_collection("mmrag-g1", SCHEMA)  # idempotent: not created twice
        [created] = client.created
        assert created["name"] == "mmrag-g1"
        assert {k: created[k] for k in CLUSTER_KEYS} == {
            "shard_number": 6,
            "replication_factor": 3,
            "write_consistency_factor": 2,
        }
        # Local mode accepted the layout; the collection works as any other.
        payload = PointPayload(
            tenant="a", doc_id="d", revision=1, chunk_id="d:1:0", index=0, page=1, bbox=None, modality="text",
            text="otters", filename="f.pdf",
        )  # fmt: skip
        store.upsert("mmrag-g1", [VectorPoint(id=str(uuid.uuid4()), payload=payload, text=[1.0, 0.0, 0.0, 0.0])])
        hits = store.search(
            "mmrag-g1", [1.0, 0.0, 0.0, 0.0], using=TEXT_DENSE, filter=SearchFilter(tenant="a"), limit=3
        )
        assert [h.payload.text for h in hits] == ["otters"]
    finally:
        store.close()


# --------------------------------------------------------------------------- settings -> the request on the wire


@pytest.fixture
async def qdrant_stand_in() -> AsyncIterator[tuple[str, list[tuple[str, str, dict]]]]:
    """Answers the REST calls qdrant-client makes to create a collection; records (method, path, JSON body)."""
    requests: list[tuple[str, str, dict]] = []

    def ok(result: object) -> web.Response:
        return web.json_response({"result": result, "status": "ok", "time": 0.0})

    async def handle(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        requests.append((request.method, request.path, body))
        path = request.path
        if path == "/":  # the client's version check
            return web.json_response({"title": "qdrant - vector search engine", "version": version("qdrant-client")})
        if path == "/aliases" or path.endswith("/aliases"):
            return ok({"aliases": []})
        if path.endswith("/exists"):
            return ok({"exists": False})
        if request.method == "PUT" and path.endswith("/index"):
            return ok({"operation_id": 1, "status": "completed"})
        if request.method == "PUT" and path.startswith("/collections/"):
            return ok(True)
        return web.json_response({"status": {"error": f"not served here: {request.method} {path}"}}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), requests


async def test_the_settings_reach_the_create_collection_request(
    qdrant_stand_in: tuple[str, list[tuple[str, str, dict]]], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    url, requests = qdrant_stand_in
    monkeypatch.setenv("QDRANT_URL", url)
    monkeypatch.setenv("MMRAG_QDRANT_SHARD_NUMBER", "6")
    monkeypatch.setenv("MMRAG_QDRANT_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("MMRAG_QDRANT_WRITE_CONSISTENCY_FACTOR", "2")
    shared = SharedResources(AgentSettings(data_dir=tmp_path))
    try:
        await shared.load({Resource.VECTOR_STORE})  # as the host does for the indexer and the retriever
        await shared.in_store(lambda store: store.create_collection("mmrag-g1", SCHEMA))
        async with asyncio.timeout(30):  # qdrant-client checks the server's version from a thread of its own:
            while not any(r[:2] == ("GET", "/") for r in requests):  # let it finish before the stand-in stops
                await asyncio.sleep(0.05)
    finally:
        shared.close()
    [(_, _, body)] = [r for r in requests if r[0] == "PUT" and r[1] == "/collections/mmrag-g1"]
    assert {k: body.get(k) for k in CLUSTER_KEYS} == {
        "shard_number": 6,
        "replication_factor": 3,
        "write_consistency_factor": 2,
    }
    assert body["vectors"][TEXT_DENSE]["size"] == 4
    assert not (tmp_path / "qdrant").exists()  # the embedded engine was not opened


async def test_an_impossible_layout_stops_the_store_at_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("MMRAG_QDRANT_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("MMRAG_QDRANT_WRITE_CONSISTENCY_FACTOR", "3")
    shared = SharedResources(AgentSettings(data_dir=tmp_path))
    try:
        with pytest.raises(ValueError, match="exceeds replication_factor 2"):
            await shared.load({Resource.VECTOR_STORE})
    finally:
        shared.close()
