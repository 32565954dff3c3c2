"""`mmrag sync`'s comparison of a folder with the engine's list (`mmrag.sync.plan`), and the folder walk of
`mmrag ingest DIR` / `mmrag sync DIR` (`mmrag.files.select`). Against a real engine: tests/e2e/test_sync_engine.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmrag.files import LocalFile, select
from mmrag.sync import Indexed, check_source_name, default_source_name, plan


def local(path: str, content: str) -> LocalFile:
    return LocalFile(path, Path("/nowhere") / path, len(content), hashlib.sha256(content.encode()).hexdigest())


def indexed(doc_id: str, path: str, content: str) -> Indexed:
    return Indexed(doc_id, path, hashlib.sha256(content.encode()).hexdigest(), "indexed")


def test_each_kind_of_change_is_told_apart() -> None:
    folder = [local("same.md", "A"), local("edited.md", "B2"), local("new-name.md", "C"), local("added.md", "D")]
    engine = [indexed("01", "same.md", "A"), indexed("02", "edited.md", "B1"), indexed("03", "old-name.md", "C"),
              indexed("04", "removed.md", "E")]  # fmt: skip
    todo = plan(folder, engine)
    assert [(f.path, d.doc_id) for f, d in todo.unchanged] == [("same.md", "01")]
    assert [(f.path, d.doc_id) for f, d in todo.updated] == [("edited.md", "02")]  # the same doc id: a revision
    assert [(d.path, f.path, d.doc_id) for f, d in todo.moved] == [("old-name.md", "new-name.md", "03")]
    assert [f.path for f in todo.added] == ["added.md"]
    assert [d.doc_id for d in todo.deleted] == ["04"]


def test_a_rename_to_changed_bytes_is_a_delete_and_an_add() -> None:
    todo = plan([local("b.md", "new")], [indexed("01", "a.md", "old")])
    assert not todo.moved and [f.path for f in todo.added] == ["b.md"] and [d.doc_id for d in todo.deleted] == ["01"]


def test_copies_of_one_file_move_one_document_and_add_the_rest() -> None:
    todo = plan([local("x/a.md", "A"), local("y/a.md", "A")], [indexed("01", "a.md", "A")])
    assert [(f.path, d.doc_id) for f, d in todo.moved] == [("x/a.md", "01")]
    assert [f.path for f in todo.added] == ["y/a.md"] and not todo.deleted  # the engine then reports the duplicate


def test_two_documents_at_one_path_keep_the_newest() -> None:
    """Two machines added the same file at once: one document stays (the newest id), the other goes."""
    todo = plan([local("a.md", "A")], [indexed("01aa", "a.md", "A"), indexed("01bb", "a.md", "A")])
    assert [d.doc_id for f, d in todo.unchanged] == ["01bb"] and [d.doc_id for d in todo.deleted] == ["01aa"]


def test_nothing_to_do_when_equal_and_everything_goes_when_the_folder_is_empty() -> None:
    same = plan([local("a.md", "A")], [indexed("01", "a.md", "A")])
    assert (same.added, same.updated, same.moved, same.deleted) == ([], [], [], [])
    empty = plan([], [indexed("01", "a.md", "A"), indexed("02", "b.md", "B")])
    assert [d.doc_id for d in empty.deleted] == ["01", "02"]


def test_source_names() -> None:
    assert default_source_name(Path("/data/My Manuals (2026)")) == "My-Manuals-2026"
    assert check_source_name("manuals.v2") == "manuals.v2"
    with pytest.raises(ValueError, match="--source '../x'"):
        check_source_name("../x")


def test_folder_walk_filters_sniffs_and_hashes(tmp_path: Path) -> None:
    (tmp_path / "sub" / "drafts").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.md").write_text("# A\n")
    (tmp_path / "sub" / "b.txt").write_text("bee\n")
    (tmp_path / "sub" / "drafts" / "c.md").write_text("draft\n")
    (tmp_path / "sub" / "fake.pdf").write_text("not a pdf\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    (tmp_path / ".hidden.md").write_text("hidden\n")
    (tmp_path / ".git" / "HEAD").write_text("ref\n")

    everything = select(tmp_path)
    assert [f.path for f in everything.files] == ["a.md", "sub/b.txt", "sub/drafts/c.md"]
    assert everything.files[0].sha256 == hashlib.sha256(b"# A\n").hexdigest() and everything.files[0].size == 4
    reasons = {s.path: s.reason for s in everything.skipped}
    assert set(reasons) == {"blob.bin", "empty.txt", "sub/fake.pdf"}
    assert "is not a PDF" in reasons["sub/fake.pdf"] and reasons["empty.txt"] == "empty file"
    assert all("\n" not in r for r in reasons.values())

    assert [f.path for f in select(tmp_path, include=["*.md"]).files] == ["a.md", "sub/drafts/c.md"]
    assert [f.path for f in select(tmp_path, exclude=["drafts/"]).files] == ["a.md", "sub/b.txt"]
    assert [f.path for f in select(tmp_path, include=["sub/"], exclude=["*.md"]).files] == ["sub/b.txt"]


def test_s3_urls() -> None:
    from mmrag import s3

    assert s3.parse("s3://docs") == ("docs", "")
    assert s3.parse("s3://docs/handbook/2026/") == ("docs", "handbook/2026/")
    assert s3.default_source_name("s3://docs/handbook/2026") == "2026" and s3.default_source_name("s3://docs") == "docs"
    with pytest.raises(s3.S3Error, match="not an S3 URL: write s3://BUCKET"):
        s3.parse("s3://Not_A_Bucket/x")


async def test_an_unchanged_file_whose_ingest_failed_is_reported_each_time_and_not_sent() -> None:
    from mmrag.sync import apply

    broken = Indexed("01", "scan.pdf", hashlib.sha256(b"A").hexdigest(), "failed", "encrypted PDF: remove the password")
    todo = plan([local("scan.pdf", "A")], [broken])
    said, warned = [], []
    out = await apply(None, "src", todo, said.append, warned.append)  # type: ignore[arg-type] - nothing is sent
    assert (out.unchanged, out.failed, said) == (1, 1, [])
    assert warned == ["failed    scan.pdf: encrypted PDF: remove the password (document 01; change the file or delete "
                      "the document to try again)"]  # fmt: skip


def test_the_cli_refuses_what_it_cannot_sync_in_one_line(tmp_path: Path) -> None:
    from tests.unit.test_cli import mmrag, one_line

    url = ("--url", "http://127.0.0.1:9")  # never reached: the arguments are refused first
    missing = mmrag("sync", str(tmp_path / "nowhere"), *url)
    assert missing.returncode == 1
    assert one_line(missing.stderr) == f"error: {tmp_path / 'nowhere'} is not a folder (nor an s3:// URL)"
    bad = mmrag("sync", str(tmp_path), "--source", "a/b", *url)
    assert bad.returncode == 1 and "--source 'a/b': use 1-64 letters" in one_line(bad.stderr)
    bucket = mmrag("sync", "s3://Bad_Bucket", *url)
    assert bucket.returncode == 1 and "not an S3 URL: write s3://BUCKET or s3://BUCKET/PREFIX" in one_line(bucket.stderr)
