"""The document list (search, filters, sort, cursor paging), collections, and new revisions (PATCH collections,
re-parse) at the edge API, against a real nats-server with auth on and two tenants; the tests act as the agents
(progress records written into the KV bucket as the parser and indexer would).

Through a real `mmrag up` and a browser: tests/e2e/test_document_library.py.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bus.kv import WATCH_INACTIVE_S
from bus.progress import ProgressStore
from contracts.messages import DocumentStatus, DocumentSubmitted
from contracts.topology import DOCS_STREAM, PROGRESS_BUCKET, IndexGeneration, Subjects
from tests.bus.test_tenancy import ACME, BETA, Edge, edge_app
from tests.engine import NatsServer

STATUSES = [DocumentStatus.QUEUED, DocumentStatus.PARSING, DocumentStatus.INDEXED, DocumentStatus.FAILED]
NAMES = ["Alpha report.pdf", "beta notes.txt", "Gamma-REPORT.md", "delta.png", "epsilon report.txt", "zeta.pdf"]
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def edge(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Edge]:
    async with edge_app(nats_server, tmp_path) as app:
        yield app


async def seed(edge: Edge, tenant: str, n: int, *, deleted: int = 0) -> list[dict]:
    """`n` documents of `tenant` as the agents would record them (plus `deleted` tombstones); their fields."""
    store = ProgressStore(await edge.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
    rng = random.Random(tenant)  # each tenant its own ids
    docs = []
    for i in range(n + deleted):
        doc_id = f"{1_700_000_000_000 + i:012x}{rng.getrandbits(80):020x}"
        fields = {
            "doc_id": doc_id, "filename": f"{i:03d} {NAMES[i % len(NAMES)]}",
            "status": DocumentStatus.DELETED if i >= n else STATUSES[i % len(STATUSES)],
            "size": rng.choice([None, *range(10, 10_000, 7)]), "collections": [["a"], ["b"], ["a", "b"], []][i % 4],
            "updated_at": T0 + timedelta(seconds=rng.randrange(10_000)),
        }  # fmt: skip
        record = store.new(tenant, doc_id, i + 1, fields["status"], filename=fields["filename"], size=fields["size"],
                           collections=fields["collections"]).model_copy(update={"updated_at": fields["updated_at"]})  # fmt: skip
        await store.update(tenant, doc_id, lambda _, r=record: r)
        if i < n:
            docs.append(fields)
    return docs


async def pages(edge: Edge, who: str, query: str, limit: int) -> tuple[list[str], list[int]]:
    """Every document id the list gives for `query`, following next_cursor; and each page's total."""
    seen, totals, cursor = [], [], None
    for _ in range(1000):
        q = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = await edge.call("GET", f"/v1/documents?{q}", who)
        assert status == 200, body
        assert len(body["documents"]) <= limit
        seen += [d["doc_id"] for d in body["documents"]]
        totals.append(body["total"])
        if (cursor := body["next_cursor"]) is None:
            return seen, totals
    raise AssertionError("the cursor never ended")


SORT_KEYS = {
    "uploaded": lambda d: d["doc_id"],
    "updated": lambda d: (d["updated_at"], d["doc_id"]),
    "name": lambda d: (d["filename"].casefold(), d["doc_id"]),
    "status": lambda d: (list(DocumentStatus).index(d["status"]), d["doc_id"]),
    "size": lambda d: (-1 if d["size"] is None else d["size"], d["doc_id"]),
}


async def test_every_sort_and_order_pages_through_each_document_once(edge: Edge) -> None:
    docs = await seed(edge, ACME, 23, deleted=3)
    await seed(edge, BETA, 5)
    for sort, order in itertools.product(SORT_KEYS, ("asc", "desc")):
        expected = [d["doc_id"] for d in sorted(docs, key=SORT_KEYS[sort], reverse=order == "desc")]
        for limit in (1, 5, 23, 200):
            seen, totals = await pages(edge, "acme_reader", f"sort={sort}&order={order}", limit)
            assert seen == expected, (sort, order, limit)
            assert set(totals) == {23}
    default, _ = await pages(edge, "acme_reader", "", 50)
    assert default == sorted((d["doc_id"] for d in docs), reverse=True), "the default is newest upload first"


async def test_search_and_filters_combine_and_count_the_total(edge: Edge) -> None:
    docs = await seed(edge, ACME, 40, deleted=2)

    async def ids(query: str) -> tuple[set[str], int]:
        seen, totals = await pages(edge, "acme_reader", query, 7)
        assert len(seen) == len(set(seen)) == totals[0]
        return set(seen), totals[0]

    def where(pred) -> set[str]:  # noqa: ANN001
        return {d["doc_id"] for d in docs if pred(d)}

    assert await ids("q=REPORT") == (r := where(lambda d: "report" in d["filename"].casefold()), len(r))
    assert (await ids("q=report&status=indexed,failed"))[0] == where(
        lambda d: "report" in d["filename"].casefold() and d["status"] in ("indexed", "failed")
    )
    assert (await ids("collection=a"))[0] == where(lambda d: "a" in d["collections"])
    assert (await ids("collection=a,b&sort=name"))[0] == where(lambda d: d["collections"])
    assert (await ids("collection=b&status=queued&q=.txt"))[0] == where(
        lambda d: "b" in d["collections"] and d["status"] == "queued" and ".txt" in d["filename"]
    )
    assert await ids("q=no-such-name") == (set(), 0)
    status, body, _ = await edge.call("GET", "/v1/collections", "acme_reader")
    assert status == 200 and body == {"collections": [
        {"name": "a", "documents": len(where(lambda d: "a" in d["collections"]))},
        {"name": "b", "documents": len(where(lambda d: "b" in d["collections"]))},
    ]}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"), ("limit=201", "limit"), ("limit=x", "limit"), ("sort=pages", "sort"),
        ("order=up", "order"), ("status=deleted", "status"), ("status=,", "status"), ("collection=a%20b", "collection"),
        (f"q={'x' * 201}", "q"), ("cursor=a.b", "cursor"), ("cursor=bm90IGpzb24", "cursor"),
        (f"collection={','.join(f'c{i}' for i in range(21))}", "collection"),
    ],
)  # fmt: skip
async def test_bad_parameters_are_400_naming_the_field(edge: Edge, query: str, field: str) -> None:
    status, body, _ = await edge.call("GET", f"/v1/documents?{query}", "acme_reader")
    assert status == 400 and body["error"]["code"] == "invalid_query" and body["error"]["field"] == field, body


async def test_a_cursor_belongs_to_its_sort_and_order(edge: Edge) -> None:
    await seed(edge, ACME, 6)
    status, body, _ = await edge.call("GET", "/v1/documents?sort=name&limit=2", "acme_reader")
    cursor = body["next_cursor"]
    assert status == 200 and cursor
    for other in ("sort=name&order=desc", "sort=size", ""):
        status, body, _ = await edge.call("GET", f"/v1/documents?{other}&cursor={cursor}", "acme_reader")
        assert status == 400 and body["error"]["field"] == "cursor" and "sorted by name asc" in body["error"]["message"]


async def test_tenants_never_see_each_others_documents_or_collections(edge: Edge) -> None:
    acme = await seed(edge, ACME, 8)
    beta = await seed(edge, BETA, 12)
    seen, totals = await pages(edge, "beta_admin", "collection=a,b&sort=name", 3)
    assert set(seen) == {d["doc_id"] for d in beta if d["collections"]} and totals[0] == len(seen)
    seen, _ = await pages(edge, "acme_reader", "q=report", 50)
    assert set(seen) <= {d["doc_id"] for d in acme}
    _, acme_cols, _ = await edge.call("GET", "/v1/collections", "acme_reader")
    _, beta_cols, _ = await edge.call("GET", "/v1/collections", "beta_admin")
    assert acme_cols["collections"][0] == {"name": "a", "documents": sum("a" in d["collections"] for d in acme)}
    assert beta_cols["collections"][0] == {"name": "a", "documents": sum("a" in d["collections"] for d in beta)}
    # Another tenant's document is a 404 to every document operation, whatever the role.
    theirs = beta[0]["doc_id"]
    for method, path, kwargs in (
        ("PUT", f"/v1/documents/{theirs}/collections", {"json": {"collections": ["x"]}}),
        ("POST", f"/v1/documents/{theirs}/reparse", {}),
        ("GET", f"/v1/documents/{theirs}", {}),
    ):
        status, body, _ = await edge.call(method, path, "acme_admin", **kwargs)
        assert status == 404 and body["error"]["code"] == "not_found", (method, body)


async def upload(edge: Edge, who: str, query: str = "", form_collections: str | None = None) -> tuple[int, dict]:
    form = aiohttp.FormData()
    if form_collections is not None:
        form.add_field("collections", form_collections)
    form.add_field("file", b"the pump seal is replaced every 400 hours\n", filename="pump.txt", content_type="text/plain")
    async with edge.http.post(f"{edge.base}/v1/documents{query}", data=form, headers=edge.auth(who)) as resp:
        return resp.status, await resp.json()


async def last_submission(edge: Edge, tenant: str, doc_id: str) -> tuple[int, DocumentSubmitted]:
    msg = await edge.nc.jetstream().get_last_msg(DOCS_STREAM.name, Subjects.ingest(tenant, doc_id))
    return msg.seq, DocumentSubmitted.model_validate_json(msg.data)


async def test_collections_at_upload_then_changed_and_reparsed_as_new_revisions(edge: Edge) -> None:
    status, accepted = await upload(edge, "acme_admin", "?collections=manuals,pumps")
    assert status == 202 and accepted["collections"] == ["manuals", "pumps"], accepted
    doc_id = accepted["doc_id"]
    first_seq, submitted = await last_submission(edge, ACME, doc_id)
    assert submitted.collections == ["manuals", "pumps"]
    status, view, _ = await edge.call("GET", f"/v1/documents/{doc_id}", "acme_reader")
    assert (view["collections"], view["size"], view["content_type"], view["warnings"]) == (
        ["manuals", "pumps"], 42, "text/plain", []
    )
    status, form_accepted = await upload(edge, "acme_admin", "?duplicates=allow", form_collections="manuals")
    assert status == 202 and form_accepted["collections"] == ["manuals"]
    status, body = await upload(edge, "acme_admin", "?collections=a", form_collections="b")
    assert status == 400 and body["error"]["field"] == "collections"
    status, body = await upload(edge, "acme_admin", "?collections=not%20valid")
    assert status == 400 and body["error"]["field"] == "collections"

    # PATCH: a new submission of the stored upload with the new collections; the same ones change nothing.
    status, body, _ = await edge.call("PUT", f"/v1/documents/{doc_id}/collections", "acme_reader", json={"collections": ["x"]})
    assert status == 403, body
    status, view, _ = await edge.call("PUT", f"/v1/documents/{doc_id}/collections", "acme_admin",
                                      json={"collections": ["pumps", "archive", "pumps"]})  # fmt: skip
    assert status == 202 and view["collections"] == ["archive", "pumps"] and view["status"] == "queued", view
    seq, resubmitted = await last_submission(edge, ACME, doc_id)
    assert seq > first_seq and resubmitted.collections == ["archive", "pumps"]
    assert resubmitted.object_name == submitted.object_name and resubmitted.size == submitted.size
    status, again, _ = await edge.call("PUT", f"/v1/documents/{doc_id}/collections", "acme_admin", json={"collections": ["archive", "pumps"]})
    assert status == 200 and again == view
    assert (await last_submission(edge, ACME, doc_id))[0] == seq
    listed, _ = await pages(edge, "acme_reader", "collection=archive", 10)
    assert listed == [doc_id]
    assert (await pages(edge, "acme_reader", "collection=manuals", 10))[0] == [form_accepted["doc_id"]]
    for bad in ({"collections": ["a b"]}, {"collections": "a"}, {"tags": []}, {}):
        status, body, _ = await edge.call("PUT", f"/v1/documents/{doc_id}/collections", "acme_admin", json=bad)
        assert status == 400 and body["error"]["code"] == "invalid_body", (bad, body)

    # Re-parse: another revision, same collections.
    status, view, _ = await edge.call("POST", f"/v1/documents/{doc_id}/reparse", "acme_admin")
    assert status == 202 and view["collections"] == ["archive", "pumps"], view
    seq2, reparsed = await last_submission(edge, ACME, doc_id)
    assert seq2 > seq and reparsed.collections == ["archive", "pumps"]
    store = ProgressStore(await edge.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
    assert (await store.get(ACME, doc_id)).revision == seq2  # type: ignore[union-attr]

    # A deleted document cannot be changed or re-parsed.
    status, _, _ = await edge.call("DELETE", f"/v1/documents/{doc_id}", "acme_admin")
    assert status == 202
    for method, path, kwargs in (
        ("PUT", f"/v1/documents/{doc_id}/collections", {"json": {"collections": []}}),
        ("POST", f"/v1/documents/{doc_id}/reparse", {}),
    ):
        status, body, _ = await edge.call(method, path, "acme_admin", **kwargs)
        assert status == 404, body


async def test_warnings_of_the_progress_record_are_shown(edge: Edge) -> None:
    """What parsing noticed without failing (the progress record's `warnings`) reaches the document view and the list."""
    store = ProgressStore(await edge.nc.jetstream().key_value(PROGRESS_BUCKET), IndexGeneration(1))
    doc_id = "0" * 12 + "ab" * 10
    record = store.new(ACME, doc_id, 1, DocumentStatus.INDEXED, filename="scan.pdf",
                       warnings=["page 3: no text layer and OCR read nothing"])  # fmt: skip
    await store.update(ACME, doc_id, lambda _: record)
    status, view, _ = await edge.call("GET", f"/v1/documents/{doc_id}", "acme_reader")
    assert status == 200 and view["warnings"] == ["page 3: no text layer and OCR read nothing"], view
    status, page, _ = await edge.call("GET", "/v1/documents", "acme_reader")
    assert page["documents"][0]["warnings"] == view["warnings"]


async def test_passages_are_asked_of_this_tenants_documents_only(edge: Edge) -> None:
    """The checks before a browse query is published (the answer comes from the retriever: tests/e2e)."""
    beta = await seed(edge, BETA, 1)
    for query, field in (("page=0", "page"), ("page=x", "page"), ("pages=11", "pages"), ("pages=0", "pages")):
        status, body, _ = await edge.call("GET", f"/v1/documents/{beta[0]['doc_id']}/passages?{query}", "beta_admin")
        assert status == 400 and body["error"]["field"] == field, body
    status, body, _ = await edge.call("GET", f"/v1/documents/{beta[0]['doc_id']}/passages", "acme_admin")
    assert status == 404 and body["error"]["code"] == "not_found", body


async def test_lists_and_progress_streams_leave_no_watch_consumer_behind(edge: Edge) -> None:
    """Each list and progress stream reads the progress bucket through a watch; its consumer once stayed 5 minutes
    after the request, and past 1,000 of them (the stream's limit) every list and progress stream failed."""
    await seed(edge, ACME, 3)
    for _ in range(3):
        status, body, _ = await edge.call("GET", "/v1/documents?limit=2", "acme_reader")
        assert status == 200 and len(body["documents"]) == 2, body
        async with edge.http.get(f"{edge.base}/v1/progress", headers=edge.auth("acme_reader")) as resp:
            assert resp.status == 200
            assert await resp.content.readuntil(b"\r\n\r\n")  # one event, then the client goes away
    js = edge.nc.jetstream()
    # Gone once each stream noticed its client left (at its next keep-alive ping) and the watch's consumer had no
    # listener for WATCH_INACTIVE_S: within a minute, not the 5 minutes of before.
    async with asyncio.timeout(20 * WATCH_INACTIVE_S):
        while (await js.stream_info(f"KV_{PROGRESS_BUCKET}")).state.consumer_count:
            await asyncio.sleep(0.5)
