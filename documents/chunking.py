"""Layout-aware chunking: text blocks -> linked :class:`~contracts.messages.Chunk` s.

Contract of :func:`chunk_blocks`:
- consecutive blocks of the same page are merged (joined by a blank line) while the text stays <= max_chars;
- a chunk never crosses a page; its bbox is the union of its blocks' bboxes (None if they have none);
- a block longer than max_chars is split on sentence boundaries (then whitespace, then hard) into chunks
  that all carry that block's bbox, so every chunk's text is <= max_chars;
- chunk ids are ``f"{doc_id}-{index}"``, indices run 0..n-1 in reading order, prev/next link neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from contracts.messages import BBox, Chunk

from .extract import TextBlock

T = TypeVar("T")

_SEPARATOR = "\n\n"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_blocks(
    blocks: list[TextBlock], *, doc_id: str, tenant: str, filename: str, max_chars: int = 1000
) -> list[Chunk]:
    """Chunks of a document's blocks (given in reading order); see the module docstring for the contract."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces = _merge_blocks(blocks, max_chars)
    ids = [f"{doc_id}-{i}" for i in range(len(pieces))]
    return [
        Chunk(
            chunk_id=ids[i],
            index=i,
            doc_id=doc_id,
            tenant=tenant,
            filename=filename,
            page=piece.page,
            bbox=piece.bbox,
            text=piece.text,
            prev_chunk_id=ids[i - 1] if i > 0 else None,
            next_chunk_id=ids[i + 1] if i + 1 < len(ids) else None,
        )
        for i, piece in enumerate(pieces)
    ]


def batched(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in order, cut into lists of ``size`` (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _merge_blocks(blocks: list[TextBlock], max_chars: int) -> list[TextBlock]:
    """Greedy same-page merge; oversized blocks are emitted as their own split pieces."""
    merged: list[TextBlock] = []
    current: TextBlock | None = None
    for block in blocks:
        if len(block.text) > max_chars:
            if current is not None:
                merged.append(current)
                current = None
            merged.extend(TextBlock(block.page, block.bbox, part) for part in split_text(block.text, max_chars))
        elif current is not None and _fits(current, block, max_chars):
            current = TextBlock(current.page, _union(current.bbox, block.bbox), current.text + _SEPARATOR + block.text)
        else:
            if current is not None:
                merged.append(current)
            current = block
    if current is not None:
        merged.append(current)
    return merged


def _fits(current: TextBlock, block: TextBlock, max_chars: int) -> bool:
    return block.page == current.page and len(current.text) + len(_SEPARATOR) + len(block.text) <= max_chars


def _union(a: BBox | None, b: BBox | None) -> BBox | None:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


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
