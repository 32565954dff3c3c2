"""Contract tests for every VectorStore adapter, plus Edge persistence and crash durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import qdrant_client
from qdrant_client import QdrantClient

from agents.vectorstore import (
    CollectionDimMismatch,
    EdgeShardStore,
    QdrantClientStore,
    VectorPoint,
    VectorStore,
    open_vector_store,
)

DIM = 8
REPO_ROOT = Path(__file__).resolve().parents[1]


def unit(axis: int, tilt: float = 0.0) -> list[float]:
    """A vector along ``axis``, tilted by ``tilt`` towards the next axis."""
    vector = [0.0] * DIM
    vector[axis] = 1.0
    vector[(axis + 1) % DIM] = tilt
    return vector


def point(
    vector: list[float], *, tenant: str = "a", doc_id: str = "doc-1", index: int = 0
) -> VectorPoint:
    payload = {
        "tenant": tenant,
        "doc_id": doc_id,
        "chunk_id": f"{doc_id}:{index}",
        "page": 1,
        "bbox": [0.0, 10.5, 100.0, 20.25],
        "modality": "text",
        "text": f"chunk {index}",
        "filename": "report.pdf",
        "index": index,
    }
    return VectorPoint(id=str(uuid.uuid4()), vector=vector, payload=payload)


def _edge(tmp_path: Path) -> VectorStore:
    return EdgeShardStore(tmp_path / "shard")


def _memory_client(tmp_path: Path) -> VectorStore:
    return QdrantClientStore(QdrantClient(location=":memory:"), "chunks")


@pytest.fixture(params=[_edge, _memory_client], ids=["edge", "qdrant-client"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    factory: Callable[[Path], VectorStore] = request.param
    opened = factory(tmp_path)
    opened.ensure_collection(DIM)
    yield opened
    opened.close()


def test_adapters_satisfy_protocol(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


def test_search_returns_nearest_first_with_payload(store: VectorStore) -> None:
    near, mid, far = point(unit(0, 0.1)), point(unit(0, 1.0), index=1), point(unit(3), index=2)
    store.upsert([far, near, mid])

    hits = store.search(unit(0), tenant="a", limit=3)

    assert [hit.id for hit in hits] == [near.id, mid.id, far.id]
    assert hits[0].payload == near.payload
    assert hits[0].score == pytest.approx(1 / (1 + 0.1**2) ** 0.5, abs=1e-4)
    assert hits[0].score > hits[1].score > hits[2].score
    assert hits[2].score == pytest.approx(0.0, abs=1e-4)


def test_search_respects_limit(store: VectorStore) -> None:
    store.upsert([point(unit(i)) for i in range(5)])

    assert len(store.search(unit(0), tenant="a", limit=2)) == 2


def test_upserting_same_ids_replaces(store: VectorStore) -> None:
    points = [point(unit(i), index=i) for i in range(4)]
    store.upsert(points)
    moved = VectorPoint(points[0].id, unit(5), {**points[0].payload, "text": "new"})
    store.upsert([moved, *points[1:]])

    assert store.count() == 4
    hits = store.search(unit(5), tenant="a", limit=1)
    assert hits[0].id == points[0].id
    assert hits[0].payload["text"] == "new"


def test_search_never_returns_other_tenant(store: VectorStore) -> None:
    other = point(unit(0), tenant="b")
    own = point(unit(0, 2.0), tenant="a")
    store.upsert([other, own])

    hits = store.search(unit(0), tenant="a", limit=10)

    assert [hit.id for hit in hits] == [own.id]
    assert [hit.id for hit in store.search(unit(0), tenant="b", limit=10)] == [other.id]
    assert store.search(unit(0), tenant="nobody", limit=10) == []


def test_count_filters(store: VectorStore) -> None:
    store.upsert(
        [point(unit(0), doc_id="d1", index=i) for i in range(3)]
        + [point(unit(1), doc_id="d2", index=i) for i in range(2)]
        + [point(unit(2), tenant="b", doc_id="d1")]
    )

    assert store.count() == 6
    assert store.count(doc_id="d1") == 4
    assert store.count(doc_id="d2") == 2
    assert store.count(tenant="a") == 5
    assert store.count(tenant="a", doc_id="d1") == 3
    assert store.count(tenant="b", doc_id="d2") == 0


def test_ensure_collection_is_idempotent_and_checks_dim(store: VectorStore) -> None:
    store.upsert([point(unit(0))])
    store.ensure_collection(DIM)

    with pytest.raises(CollectionDimMismatch):
        store.ensure_collection(DIM + 1)
    assert store.count() == 1


def test_edge_reopen_keeps_points(tmp_path: Path) -> None:
    points = [point(unit(i % DIM, tilt=i / 20), index=i) for i in range(20)]
    first = EdgeShardStore(tmp_path / "shard")
    first.ensure_collection(DIM)
    first.upsert(points)
    first.close()

    reopened = EdgeShardStore(tmp_path / "shard")
    reopened.ensure_collection(DIM)
    try:
        assert reopened.count() == 20
        hits = reopened.search(points[3].vector, tenant="a", limit=1)
        assert hits[0].payload == points[3].payload
    finally:
        reopened.close()


def test_edge_reopen_with_other_dim_raises(tmp_path: Path) -> None:
    first = EdgeShardStore(tmp_path / "shard")
    first.ensure_collection(DIM)
    first.close()

    with pytest.raises(CollectionDimMismatch):
        EdgeShardStore(tmp_path / "shard").ensure_collection(DIM * 2)


def test_edge_upsert_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    child_code = textwrap.dedent(
        f"""
        import sys, time, uuid
        from pathlib import Path
        from agents.vectorstore import EdgeShardStore, VectorPoint

        store = EdgeShardStore(Path({str(path)!r}))
        store.ensure_collection({DIM})
        store.upsert([
            VectorPoint(str(uuid.uuid4()), [1.0] + [i / 50] * {DIM - 1}, {{"tenant": "a"}})
            for i in range(50)
        ])
        print("UPSERTED", flush=True)
        time.sleep(120)
        """
    )
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    command = [sys.executable, "-c", child_code]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "UPSERTED"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    reopened = EdgeShardStore(path)
    reopened.ensure_collection(DIM)
    try:
        assert reopened.count() == 50
        assert reopened.count(tenant="a") == 50
    finally:
        reopened.close()


def test_factory_opens_edge_without_url(tmp_path: Path) -> None:
    store = open_vector_store(
        qdrant_url=None, qdrant_api_key=None, edge_path=tmp_path, collection="c"
    )
    try:
        assert isinstance(store, EdgeShardStore)
        store.ensure_collection(DIM)
        assert (tmp_path / "c" / "segments").is_dir()
    finally:
        store.close()


def test_factory_opens_client_for_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict[str, object]] = []

    def fake_client(**kwargs: object) -> QdrantClient:
        created.append(kwargs)
        return QdrantClient(location=":memory:")

    monkeypatch.setattr(qdrant_client, "QdrantClient", fake_client)
    store = open_vector_store(
        qdrant_url="http://qdrant:6333", qdrant_api_key="k", edge_path=tmp_path, collection="c"
    )
    try:
        assert isinstance(store, QdrantClientStore)
        assert created == [{"url": "http://qdrant:6333", "api_key": "k"}]
        store.ensure_collection(DIM)
        assert not (tmp_path / "c").exists()
    finally:
        store.close()
