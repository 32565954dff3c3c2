"""Every contract model round-trips through JSON and rejects malformed payloads with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from contracts import messages as m
from contracts.schemas import all_schemas, render
from contracts.topology import (
    QUERY_CONSUMERS,
    STREAMS,
    SUBJECT_MODELS,
    IndexGeneration,
    Subjects,
    all_consumers,
    ingest_consumers,
    progress_key,
)

CHUNK = m.Chunk(
    chunk_id="d1-0", index=0, doc_id="d1", tenant="t", filename="a.pdf", page=3, bbox=(1.0, 2.0, 30.0, 40.0),
    text="hello", next_chunk_id="d1-1",
)  # fmt: skip
HIT = m.Hit(chunk_id="d1-0", doc_id="d1", filename="a.pdf", page=3, bbox=(1, 2, 3, 4), text="hello", score=0.5)
QUERY = m.QueryRequest(request_id="r1", tenant="t", query="why?", top_k=3)

EXAMPLES: list[BaseModel] = [
    m.DocumentSubmitted(
        doc_id="d1", tenant="t", filename="a.pdf", content_type="application/pdf", object_name="t/d1", size=10
    ),
    m.DocumentDeleted(doc_id="d1", tenant="t"),
    m.ChunksParsed(doc_id="d1", tenant="t", generation=1, revision=7, batch_index=0, chunks=[CHUNK]),
    m.OcrRequest(
        doc_id="d1", tenant="t", generation=1, revision=7, batch_index=3, first_index=1000, filename="a.pdf",
        kind="image", page=2, object_name="t/d1/images/abc", bbox=(0, 0, 10, 10),
        image=m.ImageRef(object_name="t/d1/images/abc", mime="image/png", width=10, height=10, caption="Fig. 1"),
    ),
    m.ChunksEmbedded(
        doc_id="d1", tenant="t", generation=1, revision=7, batch_index=1, model="mini",
        embedded_by="r-1", chunks=[m.EmbeddedChunk(**CHUNK.model_dump(), vector=[0.1, 0.2])],
    ),  # fmt: skip
    m.DocumentProgress(
        doc_id="d1", tenant="t", generation=1, revision=7, status=m.DocumentStatus.INDEXING, batches_total=2,
        batches_indexed=[0],
    ),  # fmt: skip
    QUERY,
    m.RerankRequest(request=QUERY, candidates=[HIT]),
    m.GenerateRequest(request=QUERY, hits=[HIT], abstain=False),
    m.RetrievalEvent(request_id="r1", seq=0, hits=[HIT]),
    m.TokenEvent(request_id="r1", seq=1, text="Hello "),
    m.CitationEvent(request_id="r1", seq=2, n=1, doc_id="d1", filename="a.pdf", page=3, bbox=None, text="x"),
    m.ResultsEvent(request_id="r1", seq=0, hits=[HIT]),
    m.DoneEvent(request_id="r1", seq=3, answerer="extractive"),
    m.ErrorEvent(request_id="r1", code="timeout", message="late"),
    m.DeadLetter(
        consumer="parser", subject="docs.ingest", stream="DOCS", stream_seq=4, num_delivered=1, reason="bad",
        error_type="ValidationError", payload_excerpt="{}", agent="parser",
    ),  # fmt: skip
]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_through_json(example: BaseModel) -> None:
    wire = example.model_dump_json()
    assert json.loads(wire)["schema_version"] in (1, 2, 3, 4, 5)
    assert type(example).model_validate_json(wire) == example


@pytest.mark.parametrize("example", [e for e in EXAMPLES if "Event" in type(e).__name__], ids=lambda e: type(e).__name__)
def test_answer_events_are_told_apart_by_their_event_field(example: BaseModel) -> None:
    assert m.answer_event_adapter.validate_json(example.model_dump_json()) == example


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_unknown_fields_and_versions_are_rejected(example: BaseModel) -> None:
    data = json.loads(example.model_dump_json())
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        type(example).model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError, match="schema_version"):
        type(example).model_validate({**data, "schema_version": 99})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", "json_invalid"),
        (b'{"doc_id": "has space", "filename": "a", "content_type": "application/pdf", "object_name": "o", "size": 1}', "doc_id"),
        (b'{"doc_id": "d", "filename": "a", "content_type": "image/bmp", "object_name": "o", "size": 1}', "content_type"),
        (b'{"doc_id": "d", "filename": "a", "content_type": "application/pdf", "object_name": "o", "size": -1}', "size"),
        (b'{"doc_id": "d", "content_type": "application/pdf", "object_name": "o", "size": 1}', "filename"),
    ],
)
def test_malformed_submissions_name_the_problem(payload: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        m.DocumentSubmitted.model_validate_json(payload)
    assert field in str(err.value)


def test_invariants_are_validated() -> None:
    with pytest.raises(ValidationError, match="bbox"):
        CHUNK.model_validate({**CHUNK.model_dump(), "bbox": (10, 0, 5, 5)})
    with pytest.raises(ValidationError, match="chunks"):
        m.ChunksParsed(doc_id="d", tenant="t", generation=1, revision=1, batch_index=2)  # empty, but never absent
    with pytest.raises(ValidationError, match="page"):
        m.Hit.model_validate({**HIT.model_dump(), "page": 0})
    with pytest.raises(ValidationError, match="top_k"):
        m.QueryRequest.model_validate({**QUERY.model_dump(), "top_k": 0})


def test_progress_counts_each_batch_once() -> None:
    p = m.DocumentProgress(doc_id="d", tenant="t", generation=1, revision=3, status=m.DocumentStatus.PARSING)
    p = p.with_batches({0: 3})  # published while parsing: the total is not known yet
    assert p.status is m.DocumentStatus.EMBEDDING and p.chunks_total is None
    p = p.with_indexed_batch(0, 3)
    assert (p.status, p.chunks_indexed) == (m.DocumentStatus.INDEXING, 3)
    assert p.with_indexed_batch(0, 3) is p  # a redelivered batch changes nothing
    p = p.with_batches({1: 2}, batches_total=3)  # parsing ended: batch 2 (an OCR page) is not read yet
    assert p.status is m.DocumentStatus.INDEXING and p.chunks_total is None
    p = p.with_indexed_batch(2, 0).with_indexed_batch(1, 2)  # an empty OCR batch counts as indexed
    assert (p.status, p.chunks_indexed, p.chunks_total, p.batches_indexed) == (m.DocumentStatus.INDEXED, 5, 5, [0, 1, 2])
    failed = p.model_copy(update={"status": m.DocumentStatus.FAILED})
    assert failed.with_batches({7: 1}, batches_total=8).status is m.DocumentStatus.FAILED


def test_every_subject_has_a_stream_and_every_consumer_a_stream_subject() -> None:
    def covered(subject: str) -> list[str]:
        return [s.name for s in STREAMS for pattern in s.subjects if subject.startswith(pattern.rstrip(">"))]

    for subject in SUBJECT_MODELS:
        assert len(covered(subject)) == 1, subject
    for consumer in all_consumers((IndexGeneration(1), IndexGeneration(2))):
        assert covered(consumer.filter_subject) == [consumer.stream]
    assert covered(Subjects.deadletter("parser", "t", "d")) == ["DEADLETTER"]
    assert covered(Subjects.answer("t", "r1")) == []  # answers are core NATS, never stored


def test_generations_have_their_own_consumers_collections_and_progress_keys() -> None:
    g1, g2 = IndexGeneration(1), IndexGeneration(2)
    durables_1 = {c.durable for c in ingest_consumers(g1).values()}
    durables_2 = {c.durable for c in ingest_consumers(g2).values()}
    assert not durables_1 & durables_2
    assert g1.collection("mmrag") != g2.collection("mmrag")
    assert progress_key(g1, "t", "d") != progress_key(g2, "t", "d")
    assert progress_key(g1, "t", "d") != progress_key(g1, "u", "d")  # tenant in every key
    # Query consumers serve whatever generation the alias points at: one set, not one per generation.
    assert len(all_consumers((g1, g2))) == len(durables_1) + len(durables_2) + len(QUERY_CONSUMERS)
    with pytest.raises(ValueError, match="subject token"):
        progress_key(g1, "a.b", "d")


def test_payloads_name_the_subject_tokens_they_must_travel_on() -> None:
    sub = m.DocumentSubmitted(doc_id="d1", tenant="t", filename="a", content_type="text/plain", object_name="t/x", size=1)
    assert Subjects.ingest(*sub.routing()) == "docs.ingest.t.d1"
    assert Subjects.query(Subjects.QUERY_RETRIEVE, *QUERY.routing()) == "query.retrieve.t"
    with pytest.raises(ValidationError, match="object_name must start with 't/'"):
        m.DocumentSubmitted(doc_id="d1", tenant="t", filename="a", content_type="text/plain", object_name="u/x", size=1)


def test_vectors_must_be_finite() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            m.EmbeddedChunk(**CHUNK.model_dump(), vector=[0.1, bad])


def test_exported_schemas_in_docs_are_current() -> None:
    folder = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    schemas = all_schemas()
    assert {p.name for p in folder.glob("*.json")} == set(schemas), "run `make schemas`"
    for name, schema in schemas.items():
        assert (folder / name).read_text() == render(schema), f"docs/schemas/{name} is stale: run `make schemas`"


@pytest.mark.parametrize("query", ["   ", "\x00", "what\x00", "?!"])
def test_a_query_without_words_is_rejected(query: str) -> None:
    with pytest.raises(ValidationError, match="letter or digit"):
        m.QueryRequest(request_id="r", tenant="t", query=query)


def test_asyncapi_document_is_current_and_covers_every_subject() -> None:
    import yaml

    from contracts import asyncapi

    path = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
    assert path.read_text() == asyncapi.render(), "docs/asyncapi.yaml is stale: run `make schemas`"
    doc = yaml.safe_load(path.read_text())
    assert doc["asyncapi"] == "3.0.0"
    families = {".".join(c["address"].split(".")[:2]) for c in doc["channels"].values()}
    assert set(SUBJECT_MODELS) <= families  # every JetStream subject family has a channel
    for model in SUBJECT_MODELS.values():
        assert model.__name__ in doc["components"]["messages"]
        assert model.__name__ in doc["components"]["schemas"]
    # every $ref resolves inside the document
    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert target is not None, ref


def test_an_ocr_request_cannot_point_at_another_tenants_objects() -> None:
    base = dict(doc_id="d1", tenant="t", generation=1, revision=1, batch_index=0, first_index=0, filename="a.pdf",
                kind="page", page=1, bbox=(0, 0, 1, 1))  # fmt: skip
    m.OcrRequest(**base, object_name="t/d1/pages/1.png")
    with pytest.raises(ValidationError, match="object names must start with 't/'"):
        m.OcrRequest(**base, object_name="u/d9/pages/1.png")
    ref = m.ImageRef(object_name="u/d9/images/x", mime="image/png", width=1, height=1)
    with pytest.raises(ValidationError, match="object names must start with 't/'"):
        m.OcrRequest(**{**base, "kind": "image"}, object_name="t/d1/images/x", image=ref)


def test_a_batch_cannot_smuggle_chunks_of_another_tenant_or_document() -> None:
    other = CHUNK.model_copy(update={"tenant": "victim"})
    with pytest.raises(ValidationError, match="belongs to victim/d1, not t/d1"):
        m.ChunksParsed(doc_id="d1", tenant="t", generation=1, revision=1, batch_index=0, chunks=[CHUNK, other])
    embedded = m.EmbeddedChunk(**CHUNK.model_copy(update={"doc_id": "d2"}).model_dump(), vector=[0.1])
    with pytest.raises(ValidationError, match="belongs to t/d2"):
        m.ChunksEmbedded(doc_id="d1", tenant="t", generation=1, revision=1, batch_index=0, model="m",
                         embedded_by="r", chunks=[embedded])  # fmt: skip


def test_the_locator_travels_and_messages_written_before_it_still_read() -> None:
    """v3 chunk batches, v4 embedded batches, v2 OCR requests, rerank requests and citations, v3 generate
    requests and retrieval events carry `locator`; the previous versions, written without it, still validate (a rolling upgrade, a
    stream replayed)."""
    located = CHUNK.model_copy(update={"locator": "slide 3: Results", "bbox": None})
    batch = m.ChunksParsed(doc_id="d1", tenant="t", generation=1, revision=7, batch_index=0, chunks=[located])
    wire = json.loads(batch.model_dump_json())
    assert wire["schema_version"] == 3 and wire["chunks"][0]["locator"] == "slide 3: Results"
    old = {**wire, "schema_version": 2, "chunks": [{k: v for k, v in wire["chunks"][0].items() if k != "locator"}]}
    assert m.ChunksParsed.model_validate(old).chunks[0].locator is None
    hit = HIT.model_copy(update={"locator": "Budget rows 2-40 (A2:C40)"})
    for model, version, payload in (
        (m.RerankRequest, 1, {"request": QUERY.model_dump(mode="json"), "candidates": [HIT.model_dump(mode="json")]}),
        (m.GenerateRequest, 2, {"request": QUERY.model_dump(mode="json"), "hits": [], "abstain": True}),
        (m.RetrievalEvent, 2, {"request_id": "r1", "seq": 0, "hits": [hit.model_dump(mode="json")]}),
        (m.CitationEvent, 1, {"request_id": "r1", "seq": 1, "n": 1, "doc_id": "d1", "filename": "a.xlsx", "page": 1,
                              "bbox": None, "text": "x"}),  # fmt: skip
    ):
        assert model.model_validate({**payload, "schema_version": version}).schema_version == version
        assert model.model_validate(payload).schema_version == version + 1
    assert m.Hit.model_validate_json(hit.model_dump_json()).locator == "Budget rows 2-40 (A2:C40)"


def test_messages_of_the_previous_versions_still_validate() -> None:
    """The DOCS stream keeps every submission forever and the progress KV keeps records across releases: a v1
    submission and a v2 progress record (before collections) read back with no collections; a v4 query too."""
    old_submission = {"schema_version": 1, "doc_id": "d", "tenant": "t", "filename": "a.pdf",
                      "content_type": "application/pdf", "object_name": "t/d", "size": 3}  # fmt: skip
    assert m.DocumentSubmitted.model_validate(old_submission).collections == []
    old_record = {"schema_version": 2, "doc_id": "d", "tenant": "t", "generation": 1, "revision": 4, "status": "indexed"}
    record = m.DocumentProgress.model_validate(old_record)
    assert (record.collections, record.size, record.content_type, record.warnings) == ([], None, None, [])
    old_query = {"schema_version": 4, "request_id": "r", "tenant": "t", "query": "why?", "filters": {"doc_ids": ["d"]}}
    assert m.QueryRequest.model_validate(old_query).filters.collections is None


def test_collections_are_sets_of_valid_names() -> None:
    submitted = m.DocumentSubmitted(doc_id="d", tenant="t", filename="a", content_type="text/plain", object_name="t/d",
                                    size=1, collections=["b", "a", "b"])  # fmt: skip
    assert submitted.collections == ["a", "b"]
    assert m.QueryFilters(collections=["x", "x"]).collections == ["x"]
    for bad in ([], ["has space"], ["a,b"], ["-lead"], ["x" * 41], [f"c{i}" for i in range(m.MAX_COLLECTIONS + 1)]):
        with pytest.raises(ValidationError, match="collections"):
            m.QueryFilters(collections=bad)


def test_records_and_submissions_written_before_origins_still_validate() -> None:
    """v1 submissions and v2 progress records (no source, path or hash) are still read; the fields go together."""
    old = m.DocumentSubmitted.model_validate_json(
        b'{"schema_version": 1, "doc_id": "d", "tenant": "t", "filename": "a.pdf", "content_type": "application/pdf",'
        b' "object_name": "t/d", "size": 1}'
    )
    assert old.origin() == {"source": None, "source_path": None, "sha256": None}
    record = m.DocumentProgress.model_validate_json(
        b'{"schema_version": 2, "doc_id": "d", "tenant": "t", "generation": 1, "revision": 3, "status": "indexed"}'
    )
    assert record.sha256 is None and m.DocumentProgress(doc_id="d", tenant="t", generation=1, revision=1,
                                                        status="queued").schema_version == 3  # fmt: skip
    with pytest.raises(ValidationError, match="source and source_path go together"):
        m.DocumentSubmitted(doc_id="d", tenant="t", filename="a", content_type="text/plain", object_name="t/d",
                            size=1, source="manuals")  # fmt: skip
    with pytest.raises(ValidationError, match="sha256"):
        m.DocumentSubmitted(doc_id="d", tenant="t", filename="a", content_type="text/plain", object_name="t/d",
                            size=1, sha256="ABC")  # fmt: skip
