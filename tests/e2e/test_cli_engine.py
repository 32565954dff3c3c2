"""The `mmrag` console script against the shared `mmrag up` (a tenant of its own): ingest, search, documents, delete.

Against a stub of the edge API: tests/unit/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.engine import TenantEngine
from tests.unit.test_cli import mmrag, one_line


def test_search_documents_delete_against_the_engine(engine: TenantEngine, tmp_path: Path) -> None:
    key = engine.client_env
    doc = tmp_path / "otters.md"
    doc.write_text("# Otters\n\nThe sea otter raft in Monterey Bay counts 212 otters.\n")
    ingest = mmrag("ingest", str(doc), "--url", engine.url, timeout=180, env=key)
    assert ingest.returncode == 0, ingest.stderr
    doc_id = ingest.stdout.split()[0]

    search = mmrag("search", "How many otters are in the raft?", "--url", engine.url, "--top-k", "3", env=key)
    assert search.returncode == 0, search.stderr
    first = search.stdout.splitlines()[0]
    assert "otters.md  section Otters" in first and "212 otters" in first  # its locator, in place of a page

    listing = mmrag("documents", "--url", engine.url, "--limit", "1", env=key)  # one per page: follows next_cursor
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert doc_id in rows and "indexed" in rows[doc_id] and rows[doc_id].endswith("otters.md")

    delete = mmrag("delete", doc_id, "--url", engine.url, env=key)
    assert delete.returncode == 0, delete.stderr
    assert delete.stdout == f"{doc_id}  deleted\n"
    again = mmrag("delete", doc_id, "--url", engine.url, env=key)
    assert again.returncode == 1
    assert one_line(again.stderr) == f"error: {doc_id}: HTTP 404: no document '{doc_id}'"
    listing = mmrag("documents", "--url", engine.url, env=key)
    assert listing.returncode == 0 and doc_id not in listing.stdout
