"""Duplicates, revisions and moves at the edge API against a real nats-server (no agent: the tests read what the
edge stored). The same bytes in another tenant, and the whole `mmrag sync` loop: tests/e2e/test_sync_engine.py."""

from __future__ import annotations

import hashlib
import json

from contracts.messages import DocumentStatus, DocumentSubmitted
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, Subjects, object_name, uploads_bucket
from tests.bus.test_edge_api import TENANT, Edge, assert_error, call, edge, multipart, start_edge, uploads_state

__all__ = ["edge", "start_edge"]  # fixtures


async def post(edge: Edge, data: bytes, filename: str = "notes.txt", **params: str) -> tuple[int, dict]:
    return await call(edge, "POST", "/v1/documents", data=multipart(data, filename), params=params)


async def put(edge: Edge, doc_id: str, data: bytes, **params: str) -> tuple[int, dict]:
    return await call(edge, "PUT", f"/v1/documents/{doc_id}", data=multipart(data, "notes.txt"), params=params)


async def submissions(edge: Edge, doc_id: str) -> int:
    info = await edge.js.stream_info(DOCS_STREAM.name, subjects_filter=Subjects.ingest(TENANT, doc_id))
    return sum((info.state.subjects or {}).values())


async def test_the_same_bytes_twice_are_a_409_naming_the_document_and_nothing_is_stored(edge: Edge) -> None:
    data = b"pump P-101 seal interval: 4000 hours\n"
    status, first = await post(edge, data, "pumps.txt")
    assert status == 202, first
    assert first["sha256"] == hashlib.sha256(data).hexdigest() and first["source"] is None
    before = await uploads_state(edge)
    status, body = await post(edge, data, "copy of pumps.txt")  # whatever the filename
    err = assert_error(status, body, 409, "duplicate")
    assert err["doc_id"] == first["doc_id"]
    assert first["doc_id"] in err["message"] and "'pumps.txt'" in err["message"] and "duplicates=allow" in err["message"]
    assert await uploads_state(edge) == before, "the duplicate's bytes stayed in the uploads bucket"
    status, listed = await call(edge, "GET", "/v1/documents")
    assert [d["doc_id"] for d in listed["documents"]] == [first["doc_id"]]

    status, again = await post(edge, data, "pumps.txt", duplicates="allow")  # asked for explicitly
    assert status == 202 and again["doc_id"] != first["doc_id"], again
    status, body = await post(edge, data, duplicates="maybe")
    assert assert_error(status, body, 400, "invalid_query")["field"] == "duplicates"


async def test_a_deleted_document_is_no_duplicate(edge: Edge) -> None:
    data = b"delete me, then upload me again\n"
    status, first = await post(edge, data)
    assert status == 202
    assert (await call(edge, "DELETE", f"/v1/documents/{first['doc_id']}"))[0] == 202
    status, second = await post(edge, data)
    assert status == 202 and second["doc_id"] != first["doc_id"], second


async def test_put_of_the_same_bytes_is_a_no_op_and_of_other_bytes_a_new_revision(edge: Edge) -> None:
    status, first = await post(edge, b"version one\n", source="manuals", path="guide/a.txt")
    assert status == 202 and (first["source"], first["source_path"]) == ("manuals", "guide/a.txt"), first
    doc_id = first["doc_id"]
    store = await edge.progress()
    revision_1 = (await store.get(TENANT, doc_id)).revision  # type: ignore[union-attr]

    status, same = await put(edge, doc_id, b"version one\n")
    assert status == 200 and same["status"] == "unchanged" and same["doc_id"] == doc_id, same
    assert await submissions(edge, doc_id) == 1

    status, second = await put(edge, doc_id, b"version two\n")
    assert status == 202 and second["status"] == "queued" and second["doc_id"] == doc_id, second
    assert (second["source"], second["source_path"]) == ("manuals", "guide/a.txt")  # kept from the document
    assert await submissions(edge, doc_id) == 2
    msg = await edge.js.get_last_msg(DOCS_STREAM.name, Subjects.ingest(TENANT, doc_id))
    submitted = DocumentSubmitted.model_validate_json(msg.data)
    assert submitted.sha256 == hashlib.sha256(b"version two\n").hexdigest() and submitted.source_path == "guide/a.txt"
    record = await store.get(TENANT, doc_id)
    assert record is not None and record.status == DocumentStatus.QUEUED
    assert record.revision == msg.seq > revision_1 and record.sha256 == submitted.sha256
    uploads = await edge.js.object_store(uploads_bucket(TENANT))
    assert (await uploads.get(object_name(TENANT, doc_id))).data == b"version two\n"
    # The replaced object's chunks are gone: the bucket holds this object's chunk and meta, and nothing else.
    assert (await edge.js.stream_info(f"OBJ_{uploads_bucket(TENANT)}")).state.messages == 2

    status, body = await put(edge, "01a0000000000000000000000000dead", b"x\n")
    assert_error(status, body, 404, "not_found")
    assert (await call(edge, "DELETE", f"/v1/documents/{doc_id}"))[0] == 202
    status, body = await put(edge, doc_id, b"version three\n")
    assert_error(status, body, 404, "not_found")


async def test_patch_moves_a_document_and_the_list_filters_by_source(edge: Edge) -> None:
    status, a = await post(edge, b"alpha\n", source="manuals", path="a.txt")
    assert status == 202
    status, b = await post(edge, b"beta\n", source="notes", path="b.txt")
    assert status == 202
    status, c = await post(edge, b"gamma\n")
    assert status == 202

    status, moved = await call(edge, "PATCH", f"/v1/documents/{a['doc_id']}",
                               json={"source": "manuals", "source_path": "renamed/a.txt"})  # fmt: skip
    assert status == 200 and moved["source_path"] == "renamed/a.txt" and moved["filename"] == "notes.txt", moved
    assert await submissions(edge, a["doc_id"]) == 1  # nothing submitted again

    status, page = await call(edge, "GET", "/v1/documents", params={"source": "manuals"})
    assert status == 200 and [(d["doc_id"], d["source_path"]) for d in page["documents"]] == [(a["doc_id"], "renamed/a.txt")]
    status, page = await call(edge, "GET", "/v1/documents")
    views = {d["doc_id"]: d for d in page["documents"]}
    assert set(views) == {a["doc_id"], b["doc_id"], c["doc_id"]}
    assert views[c["doc_id"]]["source"] is None and views[c["doc_id"]]["sha256"] == hashlib.sha256(b"gamma\n").hexdigest()

    status, body = await call(edge, "GET", "/v1/documents", params={"source": "../etc"})
    assert assert_error(status, body, 400, "invalid_query")["field"] == "source"
    status, body = await call(edge, "PATCH", f"/v1/documents/{a['doc_id']}", json={"source_path": "x"})
    assert_error(status, body, 400, "invalid_body")
    status, body = await call(edge, "PATCH", "/v1/documents/01a0000000000000000000000000dead",
                              json={"source": "manuals", "source_path": "x"})  # fmt: skip
    assert_error(status, body, 404, "not_found")


async def test_source_and_path_go_together_and_are_checked(edge: Edge) -> None:
    before = await uploads_state(edge)
    for params, field in (({"source": "manuals"}, "path"), ({"path": "a.txt"}, "source"),
                          ({"source": "no/slash", "path": "a.txt"}, "source"),
                          ({"source": "manuals", "path": "x" * 513}, "path")):  # fmt: skip
        status, body = await post(edge, b"never stored\n", **params)
        assert assert_error(status, body, 400, "invalid_query")["field"] == field, params
    assert await uploads_state(edge) == before
    # The longest path, in 4-byte characters, still fits aiohttp's request line once percent-encoded (12 bytes each).
    status, body = await post(edge, b"a long path\n", source="manuals", path="\U0001d11e" * 512)
    assert status == 202 and body["source_path"] == "\U0001d11e" * 512, body


async def test_a_revision_of_a_record_written_before_origins_keeps_working(edge: Edge) -> None:
    """A v2 progress record (written before documents had an origin) is still read, and its document revised."""
    status, first = await post(edge, b"old world\n")
    assert status == 202
    doc_id = first["doc_id"]
    kv = await edge.js.key_value(PROGRESS_BUCKET)
    store = await edge.progress()
    key = store.key(TENANT, doc_id)
    old = (await store.get(TENANT, doc_id)).model_dump(mode="json", exclude={"source", "source_path", "sha256"})  # type: ignore[union-attr]
    await kv.put(key, json.dumps({**old, "schema_version": 2}).encode())
    status, view = await call(edge, "GET", f"/v1/documents/{doc_id}")
    assert status == 200 and view["sha256"] is None, view
    status, same_bytes = await put(edge, doc_id, b"old world\n")  # no hash to compare: a new revision
    assert status == 202 and same_bytes["status"] == "queued", same_bytes


async def test_of_identical_uploads_at_the_same_moment_one_is_stored(edge: Edge) -> None:
    """The bytes are claimed by one compare-and-set: concurrent uploads of one file give one document."""
    import asyncio

    data = b"uploaded five times at once\n"
    answers = await asyncio.gather(*(post(edge, data, f"copy{n}.txt") for n in range(5)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202, 409, 409, 409, 409], answers
    kept = next(body["doc_id"] for status, body in answers if status == 202)
    assert all(body["error"]["doc_id"] == kept for status, body in answers if status == 409)
    status, page = await call(edge, "GET", "/v1/documents")
    assert [d["doc_id"] for d in page["documents"]] == [kept]


async def test_bytes_a_document_no_longer_has_are_free_again(edge: Edge) -> None:
    status, first = await post(edge, b"first words\n")
    assert status == 202
    status, _ = await put(edge, first["doc_id"], b"second words\n")  # a revision: the first bytes are let go
    assert status == 202
    status, again = await post(edge, b"first words\n")
    assert status == 202 and again["doc_id"] != first["doc_id"], again
    status, body = await post(edge, b"second words\n")  # the revision's bytes are held
    assert assert_error(status, body, 409, "duplicate")["doc_id"] == first["doc_id"]


async def test_a_new_revision_is_drawn_from_its_own_bytes_not_the_cached_ones(edge: Edge) -> None:
    """A PUT replaces the stored original: the page picture (cached per revision) and its ETag follow it."""
    import io

    from PIL import Image

    def png(width: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, 40), "white").save(out, format="PNG")
        return out.getvalue()

    async def page(doc_id: str) -> tuple[str, str]:
        async with edge.http.get(f"{edge.base}/v1/documents/{doc_id}/pages/1") as resp:
            assert resp.status == 200, await resp.text()
            return resp.headers["X-Page-Width"], resp.headers["ETag"]

    async with edge.http.post(f"{edge.base}/v1/documents", data=multipart(png(120), "scan.png", "image/png")) as resp:
        assert resp.status == 202, await resp.text()
        doc_id = (await resp.json())["doc_id"]
    width, etag = await page(doc_id)
    assert width == "120"
    async with edge.http.put(f"{edge.base}/v1/documents/{doc_id}", data=multipart(png(200), "scan.png", "image/png")) as resp:
        assert resp.status == 202, await resp.text()
    new_width, new_etag = await page(doc_id)
    assert new_width == "200" and new_etag != etag
