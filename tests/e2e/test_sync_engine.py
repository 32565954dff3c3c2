"""`mmrag sync DIR` and `mmrag ingest DIR` on a real engine, and duplicate uploads across tenants.

The sync test edits, deletes, renames and adds files between syncs; after each sync the engine's list of the
source equals the folder (paths and SHA-256), search finds the new content and nothing of removed or replaced
content, and at the end the vector store (opened once the engine has stopped) holds exactly the points of the
documents the folder has. It runs on an engine of its own, which it stops to read the store. The duplicate,
folder-ingest and S3 (moto's S3 server, in this process) tests use tenants of the shared engine. Plans without an
engine: tests/unit/test_sync_plan.py; the edge's duplicate, revision and move routes: tests/bus/test_edge_documents_origin.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import pytest

from contracts.topology import IndexGeneration
from mmrag import client as api
from tests.e2e.conftest import new_tenant
from tests.engine import Engine, TenantEngine
from tests.unit.test_cli import mmrag

SOURCE = "handbook"
FACTS = {
    "a.md": "# Pumps\n\nThe seal of pump P-101 is replaced every 4000 operating hours.\n",
    "b.md": "# Herons\n\nThe heron census on the north lake counted 311 grey herons.\n",
    "sub/c.md": "# Otters\n\nThe sea otter raft in Monterey Bay counts 212 otters.\n",
    "e.md": "# Bridges\n\nThe Tamar bridge carries 16000 vehicles on a weekday.\n",
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sync(engine: Engine, folder: Path, *more: str) -> str:
    done = mmrag("sync", str(folder), "--url", engine.url, "--source", SOURCE, "--exclude", "*.bin", *more,
                 timeout=300, env=engine.client_env)  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


async def listed(engine: Engine) -> dict[str, dict]:
    """The source's documents by path (each path once)."""
    async with api.client(engine.url) as http:
        docs = [d async for d in api.documents(http, source=SOURCE)]
    by_path = {d["source_path"]: d for d in docs}
    assert len(by_path) == len(docs), f"a path twice: {docs}"
    return by_path


async def hits_of(engine: Engine, query: str, doc_id: str | None = None) -> list[dict]:
    async with api.client(engine.url) as http:
        return await api.search(http, query, top_k=10, where=api.filters(doc_ids=[doc_id] if doc_id else None))


async def assert_equal(engine: Engine, files: dict[str, str]) -> dict[str, dict]:
    docs = await listed(engine)
    assert {p: d["sha256"] for p, d in docs.items()} == {p: sha(t) for p, t in files.items()}
    assert all(d["status"] == "indexed" for d in docs.values()), docs
    return docs


async def gone(engine: Engine, query: str, doc_id: str, text: str, timeout_s: float = 60) -> None:
    """No hit of `doc_id` says `text` (a delete removes points in the background: wait for it)."""
    deadline = time.monotonic() + timeout_s
    while any(text in h["text"] for h in await hits_of(engine, query, doc_id)):
        assert time.monotonic() < deadline, f"{text!r} of {doc_id} is still found after {timeout_s}s"
        await asyncio.sleep(0.5)


async def test_sync_keeps_the_index_equal_to_the_folder(private_engine: Engine, tmp_path: Path) -> None:
    engine, folder = private_engine, tmp_path / "handbook"
    files = dict(FACTS)
    write(folder, files)
    (folder / "blob.bin").write_bytes(bytes(range(256)))  # excluded by the pattern, never sent

    out = sync(engine, folder)
    assert out.splitlines()[-1] == f"sync {SOURCE}: 4 added, 0 updated, 0 moved, 0 deleted, 0 unchanged, 0 failed (0 skipped, 0 duplicates)"
    first = await assert_equal(engine, files)
    hits = await hits_of(engine, "How many herons did the census count?")
    assert hits and hits[0]["doc_id"] == first["b.md"]["doc_id"] and "311 grey herons" in hits[0]["text"]

    # Between two syncs: an edit, a delete, a rename (same bytes) and a new file.
    files["a.md"] = "# Pumps\n\nThe seal of pump P-101 is replaced every 2500 operating hours since the audit.\n"
    files["d.md"] = "# Lighthouses\n\nThe Eddystone lighthouse light is visible for 22 nautical miles.\n"
    files["sub/renamed.md"] = files.pop("sub/c.md")
    del files["b.md"]
    write(folder, files)
    (folder / "b.md").unlink()
    (folder / "sub" / "c.md").unlink()

    dry = sync(engine, folder, "--dry-run")
    a_id, b_id, c_id = first["a.md"]["doc_id"], first["b.md"]["doc_id"], first["sub/c.md"]["doc_id"]
    assert f"would delete   b.md  {b_id}" in dry and f"would move     sub/c.md -> sub/renamed.md  {c_id}" in dry
    assert f"would update   a.md  {a_id}" in dry and "would add      d.md" in dry
    assert dry.splitlines()[-1] == (f"sync {SOURCE} (dry run, nothing changed): 1 to add, 1 to update, 1 to move, "
                                    "1 to delete, 1 unchanged (0 skipped)")  # fmt: skip
    assert await listed(engine) == first, "the dry run changed the engine's documents"

    out = sync(engine, folder)
    assert out.splitlines()[-1] == f"sync {SOURCE}: 1 added, 1 updated, 1 moved, 1 deleted, 1 unchanged, 0 failed (0 skipped, 0 duplicates)"
    second = await assert_equal(engine, files)
    assert second["a.md"]["doc_id"] == a_id, "an edited file must stay the same document (a new revision)"
    assert second["sub/renamed.md"]["doc_id"] == c_id and second["sub/renamed.md"]["updated_at"] != first["sub/c.md"]["updated_at"]
    assert second["sub/renamed.md"]["chunks_indexed"] == first["sub/c.md"]["chunks_indexed"]  # not indexed again
    assert second["e.md"] == first["e.md"]  # untouched
    assert "moved     sub/c.md -> sub/renamed.md" in out and f"deleted   b.md  {b_id}" in out

    hits = await hits_of(engine, "How often is the seal of pump P-101 replaced?")
    assert hits and hits[0]["doc_id"] == a_id and "2500 operating hours" in hits[0]["text"]
    await gone(engine, "How often is the seal of pump P-101 replaced?", a_id, "4000")  # the old revision
    await gone(engine, "How many herons did the census count?", b_id, "herons")  # the deleted file
    assert not await hits_of(engine, "grey herons census north lake", b_id)
    hits = await hits_of(engine, "How far is the Eddystone light visible?")
    assert hits and hits[0]["doc_id"] == second["d.md"]["doc_id"]
    async with api.client(engine.url) as http:
        with pytest.raises(api.EngineError) as deleted:
            await api.status(http, b_id)
    assert deleted.value.status == 404

    out = sync(engine, folder)  # nothing changed: nothing is sent
    assert out.splitlines() == [f"sync {SOURCE}: 0 added, 0 updated, 0 moved, 0 deleted, 4 unchanged, 0 failed (0 skipped, 0 duplicates)"]
    assert await listed(engine) == second

    # The vector store holds the points of the folder's documents, and of nothing else.
    assert engine.stop() == 0, engine.log_tail()
    from search.vectorstore import open_vector_store

    store = open_vector_store(qdrant_url=None, qdrant_api_key=None, edge_root=engine.data_dir / "qdrant")
    try:
        collection = IndexGeneration(1).collection("mmrag")
        points = {p: store.count(collection, doc_id=d["doc_id"]) for p, d in second.items()}
        assert store.count(collection, doc_id=b_id) == 0
        assert store.count(collection) == sum(points.values())
    finally:
        store.close()
    assert points == {p: d["chunks_total"] for p, d in second.items()}  # a.md: the new revision's points only


async def test_duplicates_are_found_per_tenant_and_say_nothing_of_other_tenants(shared_engine: Engine) -> None:
    data = b"# Kilns\n\nThe kiln at the Leach pottery fires to 1300 degrees Celsius.\n"
    ours, theirs = new_tenant(shared_engine, "dup-ours"), new_tenant(shared_engine, "dup-theirs")

    async def upload(tenant: TenantEngine, name: str, **params: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=tenant.url, headers=tenant.headers, trust_env=False) as http:
            return await http.post("/v1/documents", params=params, files={"file": (name, data, "text/markdown")})

    first = await upload(ours, "kilns.md")
    assert first.status_code == 202, first.text
    doc_id = first.json()["doc_id"]
    again = await upload(ours, "kilns-copy.md")  # same bytes, another name, same tenant
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "duplicate" and error["doc_id"] == doc_id and "not stored again" in error["message"]

    other = await upload(theirs, "kilns.md")  # the same bytes in another tenant: a document of its own
    assert other.status_code == 202, other.text
    assert other.json()["doc_id"] != doc_id and doc_id not in other.text
    third = await upload(theirs, "kilns.md")
    assert third.status_code == 409 and third.json()["error"]["doc_id"] == other.json()["doc_id"]
    assert doc_id not in third.text, "a duplicate answer named another tenant's document"

    async with api.client(ours.url, api_key=ours.key) as http:
        assert [d["doc_id"] async for d in api.documents(http)] == [doc_id]  # flaked once: bus.kv.current_values


def test_ingest_of_a_folder_skips_what_it_cannot_read_and_reports_duplicates(engine: TenantEngine, tmp_path: Path) -> None:
    write(tmp_path, {"a.md": "# Rivers\n\nThe Severn bore reaches 2 metres.\n", "notes/b.txt": "Mooring fees rose 5%.\n",
                     "notes/again.txt": "Mooring fees rose 5%.\n", "drafts/x.md": "draft\n"})  # fmt: skip
    (tmp_path / "notes" / "scan.pdf").write_text("not really a pdf\n")
    done = mmrag("ingest", str(tmp_path), "--url", engine.url, "--exclude", "drafts/", timeout=300, env=engine.client_env)
    assert done.returncode == 1, "a skipped file means not everything went in"
    rows = [line.split("  ") for line in done.stdout.splitlines()]
    assert [r[1] for r in rows] == [str(tmp_path / p) for p in ("a.md", "notes/again.txt", "notes/b.txt")]
    assert rows[2][0] == rows[1][0] and rows[2][2] == "already indexed (same bytes)"
    assert f"skipped {tmp_path / 'notes/scan.pdf'}: 'scan.pdf' is not a PDF" in " ".join(done.stderr.split())
    assert "ingest: 2 uploaded, 1 already indexed, 1 skipped, 0 failed" in done.stderr

    again = mmrag("ingest", str(tmp_path), "--url", engine.url, "--include", "*.md", "--exclude", "drafts/",
                  timeout=120, env=engine.client_env)  # fmt: skip
    assert again.returncode == 0, again.stderr  # everything selected is in the index
    assert again.stdout == f"{rows[0][0]}  {tmp_path / 'a.md'}  already indexed (same bytes)\n"


def test_sync_of_an_s3_prefix_follows_its_objects(engine: TenantEngine) -> None:
    """The same loop on an S3-compatible server (moto's, a real HTTP S3 API in this process), for one prefix."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.engine import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")  # fmt: skip
        s3.create_bucket(Bucket="docs")
        files = dict(FACTS)
        for rel, text in files.items():
            s3.put_object(Bucket="docs", Key=f"handbook/{rel}", Body=text.encode())
        s3.put_object(Bucket="docs", Key="elsewhere/x.md", Body=b"# Outside the prefix\n")
        env = {**engine.client_env, **aws}

        def sync_s3(*more: str) -> str:
            done = mmrag("sync", "s3://docs/handbook", "--url", engine.url, *more, timeout=300, env=env)
            assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
            return done.stdout

        async def by_path() -> dict[str, str]:
            async with api.client(engine.url, api_key=engine.key) as http:
                return {d["source_path"]: d["sha256"] async for d in api.documents(http, source="handbook")}

        assert sync_s3().splitlines()[-1].startswith("sync handbook: 4 added, 0 updated, 0 moved, 0 deleted")
        assert asyncio.run(by_path()) == {p: sha(t) for p, t in files.items()}

        files["a.md"] = "# Pumps\n\nThe seal of pump P-101 is replaced every 2500 operating hours since the audit.\n"
        files["d.md"] = "# Lighthouses\n\nThe Eddystone lighthouse light is visible for 22 nautical miles.\n"
        files["sub/renamed.md"] = files.pop("sub/c.md")
        del files["b.md"]
        for rel in ("a.md", "d.md", "sub/renamed.md"):
            s3.put_object(Bucket="docs", Key=f"handbook/{rel}", Body=files[rel].encode())
        s3.delete_objects(Bucket="docs", Delete={"Objects": [{"Key": "handbook/b.md"}, {"Key": "handbook/sub/c.md"}]})

        out = sync_s3()
        assert out.splitlines()[-1] == ("sync handbook: 1 added, 1 updated, 1 moved, 1 deleted, 1 unchanged, 0 failed "
                                        "(0 skipped, 0 duplicates)")  # fmt: skip
        assert asyncio.run(by_path()) == {p: sha(t) for p, t in files.items()}

        missing = mmrag("sync", "s3://no-such-bucket/x", "--url", engine.url, timeout=60, env=env)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr
        assert "s3://no-such-bucket/x" in missing.stderr and "NoSuchBucket" in missing.stderr, missing.stderr
    finally:
        server.stop()
