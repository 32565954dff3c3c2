"""`mmrag sync DIR`: make a tenant's documents of one source equal to a folder (decision 72).

The state lives on the server: each document uploaded by a sync carries `source` (the source's name, by default
the folder's), `source_path` (its path in the folder) and `sha256` (of its bytes), and `GET /v1/documents?source=`
lists them. A sync compares that list with the folder, so any machine syncing the same folder under the same
source name sees the same state; nothing is kept locally. What the comparison decides (`plan`):

- a path in both, same SHA-256: unchanged (nothing sent);
- a path in both, other bytes: updated, a new revision of the same document (`PUT`, the doc id stays);
- a path gone whose bytes are now at a new path: moved (`PATCH`: source path only, nothing indexed again);
- a new path: added (`POST`); a path gone: deleted (`DELETE`, the engine's one delete path: points, upload,
  graph facts);
- several documents at one path (two machines added the same file at once): the newest stays, the others go;
- an unchanged file whose document failed to ingest is not sent again (the same bytes fail the same way) but
  counts as failed in every sync until the file changes.

The folder is what `--include`/`--exclude` select: a file they leave out counts as absent (its document goes).
`--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mmrag.client import EngineError, EngineUnreachable, delete, documents, duplicate_of, move, replace, upload
from mmrag.files import LocalFile, Skipped

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def default_source_name(folder: Path | str) -> str:
    """A folder's own name (or the name given), made a valid source name (letters, digits, '.', '_', '-'; 64 at
    most)."""
    raw = folder.resolve().name if isinstance(folder, Path) else folder
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:64]
    return name or "folder"


def check_source_name(name: str) -> str:
    if not _SOURCE_NAME.match(name):
        raise ValueError(f"--source {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Indexed:
    """A document of the source as the engine lists it."""

    doc_id: str
    path: str
    sha256: str | None
    status: str
    error: str | None = None

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Indexed:
        return cls(view["doc_id"], view["source_path"], view.get("sha256"), view["status"], view.get("error"))


@dataclass
class Plan:
    added: list[LocalFile] = field(default_factory=list)
    updated: list[tuple[LocalFile, Indexed]] = field(default_factory=list)
    moved: list[tuple[LocalFile, Indexed]] = field(default_factory=list)
    deleted: list[Indexed] = field(default_factory=list)
    unchanged: list[tuple[LocalFile, Indexed]] = field(default_factory=list)


def plan(local: list[LocalFile], indexed: list[Indexed]) -> Plan:
    """What to do so that the source's documents equal `local` (see the module's docstring)."""
    result = Plan()
    by_path: dict[str, list[Indexed]] = defaultdict(list)
    for doc in indexed:
        by_path[doc.path].append(doc)
    current: dict[str, Indexed] = {}
    for path, docs in by_path.items():
        newest, *older = sorted(docs, key=lambda d: d.doc_id, reverse=True)  # doc ids sort by submission time
        current[path] = newest
        result.deleted.extend(older)
    new_files = []
    for f in local:
        doc = current.pop(f.path, None)
        if doc is None:
            new_files.append(f)
        elif doc.sha256 == f.sha256:
            result.unchanged.append((f, doc))
        else:
            result.updated.append((f, doc))
    gone_by_hash: dict[str | None, list[Indexed]] = defaultdict(list)
    for doc in sorted(current.values(), key=lambda d: d.path):
        gone_by_hash[doc.sha256].append(doc)
    for f in new_files:
        candidates = gone_by_hash.get(f.sha256)
        if candidates:
            result.moved.append((f, candidates.pop(0)))
        else:
            result.added.append(f)
    result.deleted.extend(d for docs in gone_by_hash.values() for d in docs)
    return result


@dataclass
class Outcome:
    """What a sync did: the documents to follow until indexed, and the counts of its summary."""

    follow: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, path) of queued uploads
    added: int = 0
    updated: int = 0
    moved: int = 0
    deleted: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0

    def summary(self, skipped: int) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.moved} moved, {self.deleted} deleted, "
                f"{self.unchanged} unchanged, {self.failed} failed ({skipped} skipped, {self.duplicates} "
                "duplicates)")  # fmt: skip


async def indexed_documents(http: httpx.AsyncClient, source: str) -> list[Indexed]:
    return [Indexed.from_view(d) async for d in documents(http, limit=200, source=source)]


Say = Callable[[str], None]


async def apply(http: httpx.AsyncClient, source: str, todo: Plan, say: Say, warn: Say) -> Outcome:
    """Carry out `todo` against the engine; one line per change (`say`) or failure (`warn`). An unreachable
    engine stops the sync (`EngineUnreachable` propagates); any other refusal is counted and the sync goes on."""
    out = Outcome(unchanged=len(todo.unchanged))
    for f, doc in todo.unchanged:  # the same bytes would fail the same way: not sent again, but not in the index
        if doc.status == "failed":
            out.failed += 1
            warn(f"failed    {f.path}: {doc.error or 'its ingest failed'} (document {doc.doc_id}; change the file "
                 "or delete the document to try again)")  # fmt: skip

    async def attempt(what: str, path: str, action: Callable[[], Any]) -> Any:
        try:
            return await action()
        except EngineUnreachable:
            raise
        except EngineError as e:
            if (existing := duplicate_of(e)) is not None:
                out.duplicates += 1
                warn(f"duplicate {path}: the same bytes are already document {existing}; not indexed twice")
                return None
            out.failed += 1
            warn(f"failed    {what} {path}: {e}")
            return None

    for doc in todo.deleted:
        if await attempt("delete", doc.path, lambda d=doc: delete(http, d.doc_id)) is not None:
            out.deleted += 1
            say(f"deleted   {doc.path}  {doc.doc_id}")
    for f, doc in todo.moved:
        if await attempt("move", f.path, lambda f=f, d=doc: move(http, d.doc_id, source, f.path)) is not None:
            out.moved += 1
            say(f"moved     {doc.path} -> {f.path}  {doc.doc_id}")
    for f, doc in todo.updated:
        got = await attempt("update", f.path, lambda f=f, d=doc: replace(http, d.doc_id, f.file, source=source,
                                                                        source_path=f.path))  # fmt: skip
        if got is not None:
            if got["status"] == "unchanged":  # changed back meanwhile
                out.unchanged += 1
                continue
            out.updated += 1
            out.follow.append((doc.doc_id, f.path))
            say(f"updated   {f.path}  {doc.doc_id}")
    for f in todo.added:
        got = await attempt("add", f.path, lambda f=f: upload(http, f.file, source=source, source_path=f.path))
        if got is not None:
            out.added += 1
            out.follow.append((got["doc_id"], f.path))
            say(f"added     {f.path}  {got['doc_id']}")
    return out


def describe(todo: Plan, say: Say) -> None:
    """The plan of a dry run, one line per change."""
    for doc in todo.deleted:
        say(f"would delete   {doc.path}  {doc.doc_id}")
    for f, doc in todo.moved:
        say(f"would move     {doc.path} -> {f.path}  {doc.doc_id}")
    for f, doc in todo.updated:
        say(f"would update   {f.path}  {doc.doc_id}")
    for f in todo.added:
        say(f"would add      {f.path}")


def skipped_lines(skipped: list[Skipped]) -> list[str]:
    return [f"skipped   {s.path}: {s.reason}" for s in skipped]
