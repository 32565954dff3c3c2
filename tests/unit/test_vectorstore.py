"""Contract tests for every VectorStore adapter, plus Edge persistence, crash durability and index policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import qdrant_client
from qdrant_client import QdrantClient

from search.vectorstore import (
    IMAGE_DENSE,
    SPARSE,
    TEXT_DENSE,
    CollectionInUse,
    CollectionNotFound,
    CollectionSchema,
    EdgeShardStore,
    OptimizePolicy,
    PointPayload,
    QdrantClientStore,
    SchemaMismatch,
    SearchFilter,
    SparseVector,
    VectorDimError,
    VectorPoint,
    VectorStore,
    open_vector_store,
)

DIM = 8
IMAGE_DIM = 4
SCHEMA = CollectionSchema(text_dim=DIM, image_dim=IMAGE_DIM, sparse=True)
GEN = "chunks-g1"
REPO_ROOT = Path(__file__).resolve().parents[2]


def unit(axis: int, tilt: float = 0.0, dim: int = DIM) -> list[float]:
    """A vector along ``axis``, tilted by ``tilt`` towards the next axis."""
    vector = [0.0] * dim
    vector[axis] = 1.0
    vector[(axis + 1) % dim] = tilt
    return vector


def payload(
    *,
    tenant: str = "a",
    doc_id: str = "doc-1",
    index: int = 0,
    revision: int = 1,
    page: int = 1,
    modality: str = "text",
    bbox: tuple[float, float, float, float] | None = (0.0, 10.5, 100.0, 20.25),
    text: str | None = None,
    collections: tuple[str, ...] = (),
) -> PointPayload:
    return PointPayload(
        tenant=tenant,
        doc_id=doc_id,
        revision=revision,
        chunk_id=f"{doc_id}:{revision}:{index}",
        index=index,
        page=page,
        bbox=bbox,
        modality=modality,
        text=f"chunk {index}" if text is None else text,
        filename="report.pdf",
        collections=collections,
    )


def point(vector: list[float] | None = None, **kwargs) -> VectorPoint:
    image = kwargs.pop("image", None)
    sparse = kwargs.pop("sparse", None)
    return VectorPoint(id=str(uuid.uuid4()), payload=payload(**kwargs), text=vector, image=image, sparse=sparse)


def tenant_a(**kwargs) -> SearchFilter:
    return SearchFilter(tenant="a", **kwargs)


def _edge(tmp_path: Path) -> VectorStore:
    return EdgeShardStore(tmp_path / "edge")


def _memory_client(tmp_path: Path) -> VectorStore:
    return QdrantClientStore(QdrantClient(location=":memory:"))


@pytest.fixture(params=[_edge, _memory_client], ids=["edge", "qdrant-client"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    factory: Callable[[Path], VectorStore] = request.param
    opened = factory(tmp_path)
    opened.create_collection(GEN, SCHEMA)
    yield opened
    opened.close()


# ----------------------------------------------------------------------------- contract: both adapters


def test_adapters_satisfy_protocol(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


def test_search_returns_nearest_first_with_payload(store: VectorStore) -> None:
    near, mid, far = point(unit(0, 0.1)), point(unit(0, 1.0), index=1), point(unit(3), index=2, bbox=None)
    store.upsert(GEN, [far, near, mid])

    hits = store.search(GEN, unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=3)

    assert [hit.id for hit in hits] == [near.id, mid.id, far.id]
    assert hits[0].payload == near.payload
    assert hits[2].payload == far.payload and hits[2].payload.bbox is None
    assert isinstance(hits[0].payload.bbox, tuple)
    assert hits[0].score == pytest.approx(1 / (1 + 0.1**2) ** 0.5, abs=1e-4)
    assert hits[0].score > hits[1].score > hits[2].score
    assert hits[2].score == pytest.approx(0.0, abs=1e-4)


def test_search_respects_limit(store: VectorStore) -> None:
    store.upsert(GEN, [point(unit(i), index=i) for i in range(5)])

    assert len(store.search(GEN, unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=2)) == 2


def test_image_vector_is_searched_by_name(store: VectorStore) -> None:
    picture = point(None, image=unit(2, dim=IMAGE_DIM), modality="image")
    text_only = point(unit(2), index=1)
    store.upsert(GEN, [picture, text_only])

    hits = store.search(GEN, unit(2, dim=IMAGE_DIM), using=IMAGE_DENSE, filter=tenant_a(), limit=5)

    assert [hit.id for hit in hits] == [picture.id]
    assert hits[0].payload.modality == "image"


def test_upserting_same_ids_replaces(store: VectorStore) -> None:
    points = [point(unit(i), index=i, sparse=SparseVector((7,), (1.0,))) for i in range(4)]
    store.upsert(GEN, points)
    moved = VectorPoint(points[0].id, points[0].payload.model_copy(update={"text": "new"}), text=unit(5))
    store.upsert(GEN, [moved, *points[1:]])

    assert store.count(GEN) == 4
    hits = store.search(GEN, unit(5), using=TEXT_DENSE, filter=tenant_a(), limit=1)
    assert hits[0].id == points[0].id
    assert hits[0].payload.text == "new"
    sparse_hits = store.search(GEN, SparseVector((7,), (1.0,)), using=SPARSE, filter=tenant_a(), limit=10)
    assert sorted(hit.id for hit in sparse_hits) == sorted(p.id for p in points[1:])


def test_search_never_returns_other_tenant(store: VectorStore) -> None:
    other = point(unit(0), tenant="b")
    own = point(unit(0, 2.0), tenant="a")
    store.upsert(GEN, [other, own])

    hits = store.search(GEN, unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=10)

    assert [hit.id for hit in hits] == [own.id]
    assert [h.id for h in store.search(GEN, unit(0), using=TEXT_DENSE, filter=SearchFilter("b"), limit=10)] == [
        other.id
    ]
    assert store.search(GEN, unit(0), using=TEXT_DENSE, filter=SearchFilter("nobody"), limit=10) == []


def test_search_filter_requires_a_tenant() -> None:
    with pytest.raises(ValueError, match="tenant"):
        SearchFilter(tenant="")


def test_search_filters_doc_ids_modalities_and_pages(store: VectorStore) -> None:
    d1 = point(unit(0), doc_id="d1", page=1)
    d2 = point(unit(0, 0.1), doc_id="d2", page=2, modality="table")
    d3 = point(unit(0, 0.2), doc_id="d3", page=3)
    store.upsert(GEN, [d1, d2, d3])

    def ids(f: SearchFilter) -> set[str]:
        return {h.id for h in store.search(GEN, unit(0), using=TEXT_DENSE, filter=f, limit=10)}

    assert ids(tenant_a(doc_ids={"d1", "d3"})) == {d1.id, d3.id}
    assert ids(tenant_a(doc_ids=["d2"])) == {d2.id}
    assert ids(tenant_a(doc_ids=set())) == set()
    assert ids(tenant_a(modalities={"table"})) == {d2.id}
    assert ids(tenant_a(modalities={"text"}, pages=(2, 3))) == {d3.id}
    assert ids(SearchFilter("b", doc_ids={"d1"})) == set()


def test_search_filters_combine_and_apply_to_every_vector(store: VectorStore) -> None:
    """Filters are ANDed with each other and the tenant, for the dense and the sparse vector alike; page ranges
    are inclusive at both ends and may be open-ended (the retriever fills an open end with 2**31 - 1)."""
    terms = SparseVector((5,), (1.0,))
    points = {
        (doc, page, modality): point(unit(0, 0.01 * page), doc_id=doc, page=page, modality=modality, sparse=terms)
        for doc in ("d1", "d2") for page in (1, 3, 5, 7) for modality in ("text", "table")
    }  # fmt: skip
    other_tenant = point(unit(0), tenant="b", doc_id="d1", page=3, sparse=terms)
    store.upsert(GEN, [*points.values(), other_tenant])

    def keys(f: SearchFilter) -> set[tuple[str, int, str]]:
        dense = store.search(GEN, unit(0), using=TEXT_DENSE, filter=f, limit=50)
        sparse = store.search(GEN, terms, using=SPARSE, filter=f, limit=50)
        assert {h.id for h in dense} == {h.id for h in sparse}, "dense and sparse disagree on the filter"
        assert other_tenant.id not in {h.id for h in dense}
        return {(h.payload.doc_id, h.payload.page, h.payload.modality) for h in dense}

    assert keys(tenant_a(doc_ids={"d2"}, modalities={"table"}, pages=(3, 5))) == {("d2", 3, "table"), ("d2", 5, "table")}
    assert keys(tenant_a(pages=(7, 7))) == {(d, 7, m) for d in ("d1", "d2") for m in ("text", "table")}
    assert keys(tenant_a(pages=(5, 2**31 - 1), doc_ids={"d1"}, modalities={"text"})) == {("d1", 5, "text"), ("d1", 7, "text")}
    assert keys(tenant_a(pages=(1, 2))) == {(d, 1, m) for d in ("d1", "d2") for m in ("text", "table")}
    assert keys(tenant_a(pages=(8, 9))) == set()
    assert keys(tenant_a(modalities={"image"})) == set()
    assert keys(tenant_a(doc_ids={"d1", "d2"}, modalities={"text", "table", "image"})) == set(points)
    their = store.search(GEN, terms, using=SPARSE, filter=SearchFilter("b", doc_ids={"d1"}, pages=(3, 3)), limit=50)
    assert [h.id for h in their] == [other_tenant.id]


def test_search_filters_collections_on_every_vector(store: VectorStore) -> None:
    """A document's collections are an array in its points' payloads: a filter keeps the points in at least one of
    the named collections, on the dense and the sparse vector alike, ANDed with the tenant and the other filters."""
    terms = SparseVector((5,), (1.0,))
    legal = point(unit(0), doc_id="d1", collections=("legal",), sparse=terms)
    both = point(unit(0, 0.1), doc_id="d2", collections=("finance", "legal"), sparse=terms)
    finance_table = point(unit(0, 0.2), doc_id="d3", modality="table", collections=("finance",), sparse=terms)
    untagged = point(unit(0, 0.3), doc_id="d4", sparse=terms)
    theirs = point(unit(0), tenant="b", doc_id="d1", collections=("legal",), sparse=terms)
    store.upsert(GEN, [legal, both, finance_table, untagged, theirs])

    def ids(f: SearchFilter) -> set[str]:
        dense = {h.id for h in store.search(GEN, unit(0), using=TEXT_DENSE, filter=f, limit=10)}
        sparse = {h.id for h in store.search(GEN, terms, using=SPARSE, filter=f, limit=10)}
        assert dense == sparse, "dense and sparse disagree on the collections filter"
        return dense

    assert ids(tenant_a(collections={"legal"})) == {legal.id, both.id}
    assert ids(tenant_a(collections={"finance"})) == {both.id, finance_table.id}
    assert ids(tenant_a(collections={"legal", "finance"})) == {legal.id, both.id, finance_table.id}
    assert ids(tenant_a(collections={"finance"}, modalities={"text"})) == {both.id}
    assert ids(tenant_a(collections={"hr"})) == set()
    assert ids(tenant_a(collections=set())) == set()
    assert ids(tenant_a()) == {legal.id, both.id, finance_table.id, untagged.id}
    assert ids(SearchFilter("b", collections={"legal"})) == {theirs.id}
    [hit] = store.search(GEN, unit(0), using=TEXT_DENSE, filter=tenant_a(doc_ids={"d2"}), limit=1)
    assert hit.payload.collections == ("finance", "legal")


def test_sparse_search_matches_terms(store: VectorStore) -> None:
    hit = point(unit(0), sparse=SparseVector((5,), (1.0,)))
    other = point(unit(1), index=1, sparse=SparseVector((9, 11), (0.5, 2.0)), tenant="b")
    store.upsert(GEN, [hit, other])

    found = store.search(GEN, SparseVector((5,), (1.0,)), using=SPARSE, filter=tenant_a(), limit=5)
    assert [h.id for h in found] == [hit.id]
    assert found[0].score > 0
    assert found[0].payload == hit.payload
    assert store.search(GEN, SparseVector((9,), (1.0,)), using=SPARSE, filter=tenant_a(), limit=5) == []


def test_count_filters(store: VectorStore) -> None:
    store.upsert(
        GEN,
        [point(unit(0), doc_id="d1", index=i) for i in range(3)]
        + [point(unit(1), doc_id="d2", index=i) for i in range(2)]
        + [point(unit(2), tenant="b", doc_id="d1")],
    )

    assert store.count(GEN) == 6
    assert store.count(GEN, doc_id="d1") == 4
    assert store.count(GEN, doc_id="d2") == 2
    assert store.count(GEN, tenant="a") == 5
    assert store.count(GEN, tenant="a", doc_id="d1") == 3
    assert store.count(GEN, tenant="b", doc_id="d2") == 0


def test_scroll_filters_a_page_range_of_one_document(store: VectorStore) -> None:
    """The document page lists a document's passages page by page: scroll by tenant, document and pages."""
    mine = [point(unit(0), doc_id="d1", page=p, index=i) for i, p in enumerate((1, 2, 2, 3, 5))]
    store.upsert(GEN, [*mine, point(unit(0), doc_id="d2", page=2), point(unit(0), tenant="b", doc_id="d1", page=2)])

    def indexes(pages: tuple[int, int]) -> list[int]:
        records, _ = store.scroll(GEN, tenant="a", doc_id="d1", pages=pages, limit=50)
        return sorted(r.payload.index for r in records)

    assert indexes((2, 2)) == [1, 2]
    assert indexes((2, 5)) == [1, 2, 3, 4]
    assert indexes((4, 4)) == []
    assert indexes((1, 2**31 - 1)) == [0, 1, 2, 3, 4]


def test_delete_document(store: VectorStore) -> None:
    store.upsert(
        GEN,
        [point(unit(0), doc_id="d1", index=i) for i in range(3)]
        + [point(unit(1), doc_id="d2")]
        + [point(unit(2), doc_id="d1", tenant="b")],
    )

    store.delete(GEN, tenant="a", doc_id="d1")

    assert store.count(GEN, tenant="a", doc_id="d1") == 0
    assert store.count(GEN, tenant="a", doc_id="d2") == 1
    assert store.count(GEN, tenant="b", doc_id="d1") == 1
    store.delete(GEN, tenant="a", doc_id="d1")  # nothing left: no error
    assert store.count(GEN) == 2


def test_delete_keeps_the_given_revision(store: VectorStore) -> None:
    old = [point(unit(0), doc_id="d1", revision=1, index=i) for i in range(3)]
    new = [point(unit(1), doc_id="d1", revision=2, index=i) for i in range(2)]
    store.upsert(GEN, old + new + [point(unit(0), doc_id="d2", revision=1)])

    store.delete(GEN, tenant="a", doc_id="d1", keep_revision=2)

    records, _ = store.scroll(GEN, tenant="a", doc_id="d1")
    assert sorted(r.id for r in records) == sorted(p.id for p in new)
    assert store.count(GEN, doc_id="d2") == 1


def test_scroll_pages_through_everything_once(store: VectorStore) -> None:
    points = [point(unit(i % DIM), index=i) for i in range(23)] + [point(unit(0), tenant="b")]
    store.upsert(GEN, points)

    seen: list[str] = []
    offset: str | None = None
    pages = 0
    while True:
        records, offset = store.scroll(GEN, tenant="a", limit=5, offset=offset)
        pages += 1
        assert len(records) <= 5
        seen.extend(r.id for r in records)
        if offset is None:
            break
        assert pages < 10, "scroll does not terminate"

    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == {p.id for p in points if p.payload.tenant == "a"}
    by_id = {p.id: p.payload for p in points}
    first, _ = store.scroll(GEN, limit=1)
    assert first[0].payload == by_id[first[0].id]


def test_alias_create_repoint_resolve_and_search(store: VectorStore) -> None:
    old = point(unit(0), text="old generation")
    store.upsert(GEN, [old])
    store.set_alias("chunks", GEN)

    assert store.resolve("chunks") == GEN
    assert store.resolve(GEN) == GEN
    assert store.resolve("missing") is None
    assert store.schema("chunks") == store.schema(GEN)
    hits = store.search("chunks", unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=5)
    assert [h.payload.text for h in hits] == ["old generation"]

    store.create_collection("chunks-g2", SCHEMA)
    new = point(unit(0), text="new generation")
    store.upsert("chunks-g2", [new])
    store.set_alias("chunks", "chunks-g2")

    assert store.resolve("chunks") == "chunks-g2"
    hits = store.search("chunks", unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=5)
    assert [h.payload.text for h in hits] == ["new generation"]
    store.upsert("chunks", [point(unit(1), index=1)])
    assert store.count("chunks-g2") == 2
    assert store.count(GEN) == 1


def test_alias_must_point_at_an_existing_collection(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        store.set_alias("chunks", "no-such-generation")
    store.create_collection("chunks-g2", SCHEMA)
    with pytest.raises(ValueError, match="collection name"):
        store.set_alias("chunks-g2", GEN)
    assert store.resolve("chunks") is None


def test_drop_collection(store: VectorStore) -> None:
    store.create_collection("chunks-g2", SCHEMA)
    store.upsert("chunks-g2", [point(unit(0))])
    assert store.list_collections() == sorted([GEN, "chunks-g2"])

    store.drop_collection("chunks-g2")
    store.drop_collection("chunks-g2")  # idempotent

    assert store.list_collections() == [GEN]
    assert store.resolve("chunks-g2") is None
    with pytest.raises(CollectionNotFound):
        store.count("chunks-g2")
    store.create_collection("chunks-g2", SCHEMA)  # the name can be reused, empty
    assert store.count("chunks-g2") == 0


def test_refuses_to_drop_an_aliased_collection(store: VectorStore) -> None:
    store.upsert(GEN, [point(unit(0))])
    store.set_alias("chunks", GEN)

    with pytest.raises(CollectionInUse, match="chunks"):
        store.drop_collection(GEN)

    assert store.count("chunks") == 1
    store.create_collection("chunks-g2", SCHEMA)
    store.set_alias("chunks", "chunks-g2")
    store.drop_collection(GEN)
    assert store.list_collections() == ["chunks-g2"]


def test_create_collection_is_idempotent_and_checks_schema(store: VectorStore) -> None:
    store.upsert(GEN, [point(unit(0))])
    store.create_collection(GEN, SCHEMA)

    with pytest.raises(SchemaMismatch) as err:
        store.create_collection(GEN, CollectionSchema(text_dim=DIM + 1, image_dim=IMAGE_DIM))
    assert GEN in str(err.value) and str(DIM + 1) in str(err.value) and str(DIM) in str(err.value)
    assert "/" not in str(err.value)
    with pytest.raises(SchemaMismatch):
        store.create_collection(GEN, CollectionSchema(text_dim=DIM, image_dim=None))
    assert store.count(GEN) == 1
    assert store.schema(GEN) == SCHEMA


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"text": [1.0] * (DIM - 1)}, id="short-text"),
        pytest.param({"text": [float("nan")] + [0.0] * (DIM - 1)}, id="nan-text"),
        pytest.param({"text": [float("inf")] + [0.0] * (DIM - 1)}, id="inf-text"),
        pytest.param({"image": [1.0] * (IMAGE_DIM + 1)}, id="long-image"),
        pytest.param({"sparse": SparseVector((1, 2), (1.0, float("nan")))}, id="nan-sparse"),
        pytest.param({"sparse": SparseVector((1, 1), (1.0, 1.0))}, id="duplicate-sparse-index"),
        pytest.param({}, id="no-vector"),
    ],
)
def test_bad_points_raise_vector_dim_error_and_write_nothing(store: VectorStore, bad: dict) -> None:
    good = point(unit(0))
    wrong = VectorPoint(str(uuid.uuid4()), payload(index=1), **bad)

    with pytest.raises(VectorDimError):
        store.upsert(GEN, [good, wrong])

    assert store.count(GEN) == 0


def test_bad_queries_raise_vector_dim_error(store: VectorStore) -> None:
    with pytest.raises(VectorDimError, match=str(DIM)):
        store.search(GEN, [1.0] * (DIM + 1), using=TEXT_DENSE, filter=tenant_a(), limit=1)
    with pytest.raises(VectorDimError):
        store.search(GEN, [float("nan")] * DIM, using=TEXT_DENSE, filter=tenant_a(), limit=1)
    with pytest.raises(VectorDimError):
        store.search(GEN, unit(0), using=SPARSE, filter=tenant_a(), limit=1)


def test_undeclared_vectors_are_rejected(store: VectorStore) -> None:
    store.create_collection("text-only", CollectionSchema(text_dim=DIM, sparse=False))

    with pytest.raises(VectorDimError, match=IMAGE_DENSE):
        store.upsert("text-only", [point(unit(0), image=unit(0, dim=IMAGE_DIM))])
    with pytest.raises(VectorDimError, match=SPARSE):
        store.upsert("text-only", [point(unit(0), sparse=SparseVector((1,), (1.0,)))])
    assert store.count("text-only") == 0


def test_unknown_collection_raises_collection_not_found(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound, match="nope"):
        store.upsert("nope", [point(unit(0))])
    with pytest.raises(CollectionNotFound):
        store.search("nope", unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=1)


def test_payload_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="extra"):
        PointPayload(**payload().model_dump(), image_object="x.png")


def test_payload_read_back_ignores_fields_of_newer_versions() -> None:
    stored = {**payload().to_stored(), "image_object": "tenant-a/x.png"}

    assert PointPayload.from_stored(stored) == payload()


def test_concurrent_upserts_and_searches(store: VectorStore) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                store.upsert(GEN, [point(unit((worker + i) % DIM), doc_id=f"w{worker}", index=i)])
                store.search(GEN, unit(worker), using=TEXT_DENSE, filter=tenant_a(), limit=3)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert store.count(GEN) == 40
    assert all(store.count(GEN, doc_id=f"w{w}") == 10 for w in range(4))


def test_maintain_is_a_no_op_on_a_fresh_store(store: VectorStore) -> None:
    store.upsert(GEN, [point(unit(0))])
    assert store.maintain() == []
    assert store.count(GEN) == 1


# ----------------------------------------------------------------------------- edge only


def test_edge_every_filtered_field_has_a_payload_index(tmp_path: Path) -> None:
    """A filter on an unindexed field would scan every point of the tenant: each field SearchFilter can
    filter on is indexed (keyword for ids and modality, integer for the page range)."""
    store = EdgeShardStore(tmp_path / "edge")
    store.create_collection(GEN, SCHEMA)
    indexed = store.shard_info(GEN).payload_schema
    store.close()
    assert {"tenant", "doc_id", "modality", "collections", "page"} <= set(indexed)


def test_edge_reopen_keeps_points_schema_and_aliases(tmp_path: Path) -> None:
    points = [point(unit(i % DIM, tilt=i / 20), index=i, sparse=SparseVector((i,), (1.0,))) for i in range(20)]
    first = EdgeShardStore(tmp_path / "edge")
    first.create_collection(GEN, SCHEMA)
    first.upsert(GEN, points)
    first.set_alias("chunks", GEN)
    first.close()

    reopened = EdgeShardStore(tmp_path / "edge")
    try:
        assert reopened.resolve("chunks") == GEN
        assert reopened.list_collections() == [GEN]
        assert reopened.schema("chunks") == SCHEMA
        assert reopened.count("chunks") == 20
        hits = reopened.search("chunks", points[3].text, using=TEXT_DENSE, filter=tenant_a(), limit=1)
        assert hits[0].payload == points[3].payload
        sparse = reopened.search("chunks", SparseVector((4,), (1.0,)), using=SPARSE, filter=tenant_a(), limit=1)
        assert [h.id for h in sparse] == [points[4].id]
    finally:
        reopened.close()


def test_edge_reopen_with_other_dim_raises(tmp_path: Path) -> None:
    first = EdgeShardStore(tmp_path / "edge")
    first.create_collection(GEN, SCHEMA)
    first.close()

    second = EdgeShardStore(tmp_path / "edge")
    try:
        with pytest.raises(SchemaMismatch, match=GEN):
            second.create_collection(GEN, CollectionSchema(text_dim=DIM * 2))
    finally:
        second.close()


def test_edge_alias_file_is_replaced_atomically(tmp_path: Path) -> None:
    store = EdgeShardStore(tmp_path / "edge")
    try:
        store.create_collection(GEN, SCHEMA)
        store.set_alias("chunks", GEN)
        store.set_alias("other", GEN)
        assert json.loads((tmp_path / "edge" / "aliases.json").read_text()) == {"chunks": GEN, "other": GEN}
        assert [p.name for p in (tmp_path / "edge").iterdir() if p.name.endswith(".tmp")] == []
    finally:
        store.close()


def test_edge_upsert_survives_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    child_code = textwrap.dedent(
        f"""
        import sys, time, uuid
        from pathlib import Path
        from search.vectorstore import CollectionSchema, EdgeShardStore, PointPayload, VectorPoint

        store = EdgeShardStore(Path({str(root)!r}))
        store.create_collection("g1", CollectionSchema(text_dim={DIM}))
        store.set_alias("chunks", "g1")
        store.upsert("chunks", [
            VectorPoint(
                str(uuid.uuid4()),
                PointPayload(tenant="a", doc_id="d", revision=1, chunk_id=str(i), index=i, page=1,
                             bbox=None, modality="text", text="t", filename="f.pdf"),
                text=[1.0] + [i / 50] * {DIM - 1},
            )
            for i in range(50)
        ])
        print("UPSERTED", flush=True)
        time.sleep(120)
        """
    )
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    command = [sys.executable, "-c", child_code]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "UPSERTED"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    reopened = EdgeShardStore(root)
    try:
        assert reopened.resolve("chunks") == "g1"
        assert reopened.count("chunks") == 50
        assert reopened.count("chunks", tenant="a") == 50
    finally:
        reopened.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_edge_optimize_policy_builds_index_once_enough_points_are_idle(tmp_path: Path) -> None:
    clock = FakeClock()
    policy = OptimizePolicy(min_points=300, idle_seconds=30, indexing_threshold_kb=1)
    store = EdgeShardStore(tmp_path / "edge", policy, clock=clock)
    try:
        store.create_collection(GEN, CollectionSchema(text_dim=DIM, sparse=False))
        store.upsert(GEN, [point([float(i + 1)] + [float(i % 7)] * (DIM - 1), index=i) for i in range(200)])
        assert store.maintain() == []  # below min_points
        store.upsert(GEN, [point(unit(i % DIM, tilt=i / 400), index=i) for i in range(200)])
        assert store.maintain() == []  # enough points, but written just now
        assert store.shard_info(GEN).indexed_vectors_count == 0

        clock.now += 31
        assert store.maintain() == [GEN]

        info = store.shard_info(GEN)
        assert info.points_count == 400
        assert info.indexed_vectors_count >= 400
        assert store.maintain() == []  # nothing written since the build
        hits = store.search(GEN, unit(3), using=TEXT_DENSE, filter=tenant_a(), limit=3)
        assert len(hits) == 3
    finally:
        store.close()


def test_edge_optimize_policy_leaves_a_tiny_collection_alone(tmp_path: Path) -> None:
    clock = FakeClock()
    store = EdgeShardStore(tmp_path / "edge", OptimizePolicy(min_points=100, idle_seconds=0), clock=clock)
    try:
        store.create_collection(GEN, SCHEMA)
        for round_ in range(3):
            store.upsert(GEN, [point(unit(i % DIM), index=i) for i in range(10)])
            clock.now += 60
            assert store.maintain() == [], f"round {round_}"
        assert store.shard_info(GEN).indexed_vectors_count == 0
    finally:
        store.close()


def test_edge_optimize_policy_counts_unindexed_points_after_reopen(tmp_path: Path) -> None:
    policy = OptimizePolicy(min_points=50, idle_seconds=0, indexing_threshold_kb=1)
    first = EdgeShardStore(tmp_path / "edge", OptimizePolicy(enabled=False))
    first.create_collection(GEN, CollectionSchema(text_dim=DIM, sparse=False))
    first.upsert(GEN, [point(unit(i % DIM, tilt=i / 100), index=i) for i in range(100)])
    assert first.maintain() == []
    first.close()

    reopened = EdgeShardStore(tmp_path / "edge", policy)
    try:
        reopened.count(GEN)  # opens the collection
        assert reopened.maintain() == [GEN]
        assert reopened.shard_info(GEN).indexed_vectors_count >= 100
    finally:
        reopened.close()


# ----------------------------------------------------------------------------- factory


def test_factory_opens_edge_without_url(tmp_path: Path) -> None:
    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=tmp_path)
    try:
        assert isinstance(store, EdgeShardStore)
        store.create_collection("c", SCHEMA)
        assert (tmp_path / "c" / "shard" / "segments").is_dir()
    finally:
        store.close()


def test_factory_opens_client_for_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict[str, object]] = []

    def fake_client(**kwargs: object) -> QdrantClient:
        created.append(kwargs)
        return QdrantClient(location=":memory:")

    monkeypatch.setattr(qdrant_client, "QdrantClient", fake_client)
    store = open_vector_store(qdrant_url="http://qdrant:6333", qdrant_api_key="k", edge_root=tmp_path)
    try:
        assert isinstance(store, QdrantClientStore)
        assert created == [{"url": "http://qdrant:6333", "api_key": "k"}]
        store.create_collection("c", SCHEMA)
        assert not (tmp_path / "c").exists()
    finally:
        store.close()


def test_client_hot_path_makes_no_existence_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    client = QdrantClient(location=":memory:")
    store = QdrantClientStore(client)
    try:
        store.create_collection(GEN, SCHEMA)
        calls: list[str] = []
        for name in ("collection_exists", "get_collection", "get_aliases", "get_collections"):
            original = getattr(client, name)

            def spy(*args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(client, name, spy)

        store.upsert(GEN, [point(unit(0))])
        store.search(GEN, unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=1)
        store.count(GEN)
        assert calls == []

        store.set_alias("chunks", GEN)
        calls.clear()
        store.search("chunks", unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=1)  # first use: reads the schema
        assert calls
        calls.clear()
        store.upsert("chunks", [point(unit(1))])
        store.search("chunks", unit(0), using=TEXT_DENSE, filter=tenant_a(), limit=1)
        assert calls == []
    finally:
        store.close()


def test_edge_index_build_runs_in_a_child_and_the_process_keeps_running(tmp_path: Path) -> None:
    """The engine holds the GIL while it builds: in this process a heartbeat thread would not tick at all.
    Built in a child process, the heartbeat keeps ticking and the index is there after the build."""
    import random
    import threading
    import time

    clock = FakeClock()
    policy = OptimizePolicy(min_points=1000, idle_seconds=1, indexing_threshold_kb=1)
    store = EdgeShardStore(tmp_path / "edge", policy, clock=clock)
    dim = 64
    rng = random.Random(7)
    try:
        store.create_collection(GEN, CollectionSchema(text_dim=dim, sparse=False))
        for start in range(0, 20_000, 2_000):
            store.upsert(GEN, [
                VectorPoint(str(uuid.uuid4()), PointPayload(tenant="a", doc_id="d", revision=1, chunk_id=f"c{i}",
                            index=i, page=1, modality="text", text="t", filename="f"),
                            text=[rng.uniform(-1, 1) for _ in range(dim)])
                for i in range(start, start + 2_000)
            ])  # fmt: skip
        clock.now += 5
        ticks, stop = [], threading.Event()

        def heartbeat() -> None:
            while not stop.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0.01)

        beat = threading.Thread(target=heartbeat)
        beat.start()
        started = time.perf_counter()
        built = store.maintain()
        elapsed = time.perf_counter() - started
        stop.set()
        beat.join()
        assert built == [GEN]
        during = [t for t in ticks if started <= t <= started + elapsed]
        assert len(during) >= 0.5 * elapsed / 0.01, (len(during), elapsed)  # the thread was never frozen
        assert store.shard_info(GEN).indexed_vectors_count >= 20_000
        assert len(store.search(GEN, [0.1] * dim, using=TEXT_DENSE, filter=tenant_a(), limit=5)) == 5
    finally:
        store.close()


def test_edge_index_build_child_refuses_to_build_for_an_engine_that_is_gone(tmp_path: Path) -> None:
    """The child arms its own parent-death signal after exec (no `preexec_fn`, which can deadlock between fork and
    exec in a process full of threads) and then checks the engine that started it is still its parent: a build
    for an engine that died before the signal was armed would hold the shard's lock as an orphan."""
    import subprocess
    import sys

    from search.vectorstore.edge import _OPTIMIZE_CHILD

    not_my_parent = 1  # init: never this test's process
    result = subprocess.run([sys.executable, "-c", _OPTIMIZE_CHILD, str(tmp_path / "missing"), str(not_my_parent)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "is gone" in result.stderr, result
    assert not (tmp_path / "missing").exists()  # it stopped before opening (and locking) anything
