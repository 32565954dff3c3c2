"""The files of a folder that `mmrag ingest DIR` and `mmrag sync DIR` send: walked, filtered, sniffed, hashed.

`--include` / `--exclude` are gitignore-style patterns (`pathspec`) matched against each file's path relative to
the folder: `*.pdf` matches at any depth, `drafts/` a folder, `/notes.md` only at the top. A file is taken when
it matches an include pattern (every file when none is given) and no exclude pattern. Hidden files and folders
(a name starting with `.`) are left out, as are symbolic links that leave the folder. A file the engine would
refuse (not a PDF, a supported image or UTF-8 text, by the same sniffer as the edge API: `documents.filetypes`)
is skipped with its one-line reason instead of being sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from documents.filetypes import UnsupportedFile, detect_content_type

SNIFF_BYTES = 8192  # what the edge API reads before deciding (edge_api.routes.documents.SNIFF_BYTES)
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """A file to send: its path relative to the folder ('/'-separated), where it is, its size and SHA-256."""

    path: str
    file: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Selection:
    files: list[LocalFile]
    skipped: list[Skipped]


def _spec(patterns: Sequence[str]) -> pathspec.PathSpec | None:
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def _walk(root: Path) -> Iterator[Path]:
    """Every regular file under `root`, sorted, hidden names left out, no link followed out of `root`."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                continue
            if path.is_file():
                yield path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def why_unsupported(path: Path, name: str) -> str | None:
    """None if the engine takes the file, else why not (one line)."""
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if not head:
        return "empty file"
    try:
        detect_content_type(name, None, head)
    except UnsupportedFile as e:
        return str(e)
    return None


def wanted_by(include: Sequence[str], exclude: Sequence[str]) -> Callable[[str], bool]:
    """Whether a relative path is selected by these patterns (hidden names never are)."""
    wanted, unwanted = _spec(include), _spec(exclude)

    def check(rel: str) -> bool:
        if any(part.startswith(".") for part in rel.split("/")):
            return False
        return (wanted is None or wanted.match_file(rel)) and (unwanted is None or not unwanted.match_file(rel))

    return check


def take(rel: str, path: Path) -> LocalFile | Skipped:
    """The file at `path` (named `rel` in its source), hashed, or why it is skipped."""
    reason = why_unsupported(path, PurePosixPath(rel).name)
    if reason is not None:
        return Skipped(rel, reason)
    try:
        return LocalFile(rel, path, path.stat().st_size, sha256_of(path))
    except OSError as e:
        return Skipped(rel, f"cannot be read: {e.strerror or e}")


def select(root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Selection:
    """The files of folder `root` to send (hashed), and those skipped with their reason, in path order."""
    selected = wanted_by(include, exclude)
    files, skipped = [], []
    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        if selected(rel):
            got = take(rel, path)
            (files if isinstance(got, LocalFile) else skipped).append(got)  # type: ignore[arg-type]
    return Selection(files, skipped)
