"""A structured document's blocks in reading order -> chunks, for the readers of ``documents/formats``.

The blocks are laid out as one :class:`~documents.layout.PageContent` (one block under the other) and chunked
by :class:`~documents.chunks.Chunker`, so a web page, a chapter or a Markdown file is chunked like a PDF page:
sized in the embedder's word pieces and ``MMRAG_CHUNK_MAX_CHARS``, headings as the context of the chunks under
them (a heading of level n closes the open headings of level >= n), tables cut between rows under their
header row. Code is kept verbatim (indentation and line breaks) in a fenced block; a code block too long for
one chunk is cut between lines, each piece fenced again so it reads on its own. Chunks have no bbox; their
``locator`` says where they are (by default "section A > B", their heading path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ..chunks import Chunker, ParsedChunk, _with_context, split_to_tokens, wordpiece_counter
from ..layout import PageBlock, PageContent
from ..tables import Table, to_markdown


@dataclass(frozen=True)
class Heading:
    """``level``: 1-6 as in HTML and Markdown; 0 for a title above all of them (a chapter's, a page's <title>)."""

    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Code:
    """Preformatted text, verbatim; ``language`` from a fence's info string or a ``language-x`` class."""

    text: str
    language: str = ""


@dataclass(frozen=True)
class TableBlock:
    """A table's rows, the header row first, every row as wide as the widest."""

    rows: tuple[tuple[str, ...], ...]
    caption: str | None = None


Block = Heading | Paragraph | Code | TableBlock


def section_locator(headings: tuple[str, ...]) -> str | None:
    """"section A > B" for a chunk under headings A and B; None for a chunk under no heading."""
    return "section " + " > ".join(headings) if headings else None


def to_chunks(blocks: Iterable[Block], max_tokens: int, max_chars: int, *, page: int = 1,
              locator: Callable[[tuple[str, ...]], str | None] = section_locator) -> list[ParsedChunk]:  # fmt: skip
    """The chunks of ``blocks`` (see the module docstring); ``locator`` maps a chunk's heading path (a table's
    caption not included) to its locator."""
    count = wordpiece_counter()
    items: list[PageBlock] = []
    tables: list[Table] = []
    captions: set[str] = set()
    path: list[tuple[int, str]] = []  # the open headings, to size code pieces as the chunker will

    def box() -> tuple[float, float, float, float]:
        y = float(len(items) + len(tables))
        return (0.0, y, 1.0, y + 0.5)

    for block in blocks:
        if isinstance(block, Heading):
            items.append(PageBlock(page, box(), block.text, "heading", font_size=float(100 - block.level)))
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, block.text))
        elif isinstance(block, Paragraph):
            items.append(PageBlock(page, box(), block.text))
        elif isinstance(block, Code):
            context = tuple(text for _level, text in path)
            budget = max_tokens - (count(_with_context(context, "")) if context else 0)
            for piece in _code_pieces(block, budget, max_chars, count):
                items.append(PageBlock(page, box(), piece))
        elif block.rows:
            rows = block.rows
            tables.append(Table(page, box(), f"p{page}-t{len(tables)}", rows, rows[0], to_markdown(rows),
                                len(rows[0]), (), caption=block.caption))  # fmt: skip
            if block.caption:
                captions.add(block.caption)
    content = PageContent(page=page, width=1.0, height=float(len(items) + len(tables)), blocks=tuple(items),
                          tables=tuple(tables), images=(), skipped_images=(), needs_ocr=False)  # fmt: skip
    chunks = Chunker(max_tokens, max_chars, count).feed(content)
    return [replace(c, bbox=None, locator=locator(_without_caption(c, captions))) for c in chunks]


def _without_caption(chunk: ParsedChunk, captions: set[str]) -> tuple[str, ...]:
    if chunk.modality == "table" and chunk.headings and chunk.headings[-1] in captions:
        return chunk.headings[:-1]
    return chunk.headings


def _fenced(text: str, language: str) -> str:
    fence = "~~~" if "```" in text else "```"
    return f"{fence}{language}\n{text}\n{fence}"


def _code_pieces(code: Code, budget: int, max_chars: int, count: Callable[[str], int]) -> list[str]:
    """The code block fenced, whole when it fits ``budget`` word pieces and ``max_chars``; else cut between
    lines (a line too long alone is cut like prose), each piece fenced."""
    text = code.text.strip("\n")
    if not text.strip():
        return []
    whole = _fenced(text, code.language)
    if len(whole) <= max_chars and count(whole) <= budget:
        return [whole]
    overhead = len(_fenced("", code.language))
    fence_tokens = count(_fenced("", code.language))
    room_chars, room_tokens = max(16, max_chars - overhead), max(8, budget - fence_tokens)
    pieces: list[list[str]] = [[]]
    for line in text.split("\n"):
        parts = [line] if len(line) <= room_chars and count(line) <= room_tokens else split_to_tokens(
            line, room_tokens, count, room_chars)  # fmt: skip
        for part in parts:
            candidate = "\n".join([*pieces[-1], part])
            if pieces[-1] and (len(candidate) > room_chars or count(candidate) > room_tokens):
                pieces.append([part])
            else:
                pieces[-1].append(part)
    return [_fenced("\n".join(lines), code.language) for lines in pieces if "".join(lines).strip()]
