"""What the engine's extra chunks are: the parser's text-layer chunks of bench/ingest.py's corpus (no OCR), each
classed by why it ended, against a plain 254-word-piece splitter over the same text.

    .venv/bin/python bench/chunk_census.py [--quick]

A text chunk ends because the next block did not fit (``full``), because a heading started a new chunk
(``heading``), or because its page ended (``page end``; a chunk never crosses a page); ``table`` chunks are one
per table piece. For each class: chunks, their share, median word pieces, and how many are small (< 64 word
pieces, a quarter of the model's window). The plain splitter packs the same text's paragraphs greedily up to
254 word pieces, across headings and pages. Prints one table; no engine, no model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import corpus  # noqa: E402
from documents import parse  # noqa: E402
from documents.chunks import MAX_TOKENS, split_to_tokens, wordpiece_counter  # noqa: E402

SMALL = 64


def census(data: bytes, count) -> tuple[dict[str, list[int]], int]:  # noqa: ANN001
    """word pieces of each chunk by class; and the chunks of a plain splitter over the whole text."""
    classes: dict[str, list[int]] = defaultdict(list)
    whole: list[str] = []
    with parse(data, "application/pdf") as doc:
        for page in doc:
            chunks = page.chunks
            for n, c in enumerate(chunks):
                if c.modality != "text":
                    classes[c.modality].append(count(c.embed_text))
                    continue
                whole.append(c.text)
                nxt = chunks[n + 1] if n + 1 < len(chunks) else None
                if nxt is None:
                    why = "page end"
                elif nxt.modality == "text" and nxt.headings != c.headings:
                    why = "heading"
                elif nxt.modality != "text":
                    why = "table/image next"
                else:
                    why = "full"
                classes[why].append(count(c.embed_text))
    return classes, len(packed(whole, count))


def packed(texts: list[str], count) -> list[str]:  # noqa: ANN001
    """A plain 254-word-piece splitter over a document's text: paragraphs (cut to fit, `split_to_tokens`)
    packed greedily, across headings and pages."""
    out: list[str] = []
    for text in texts:
        for para in text.split("\n\n"):
            for piece in split_to_tokens(para, MAX_TOKENS, count):
                if out and count(out[-1] + "\n\n" + piece) <= MAX_TOKENS:
                    out[-1] += "\n\n" + piece
                else:
                    out.append(piece)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    big, _small = corpus(args.quick)
    count = wordpiece_counter()
    total: dict[str, list[int]] = defaultdict(list)
    plain_total = 0
    for doc in big:
        classes, plain = census(doc.data, count)
        n = sum(len(v) for v in classes.values())
        print(f"{doc.name:<14} {doc.pages:>4} pages: {n} chunks, a 254-piece splitter over its text {plain}")
        for k, v in classes.items():
            total[k] += v
        plain_total += plain
    n = sum(len(v) for v in total.values())
    print(f"\nall: {n} chunks, plain splitter {plain_total} ({n / max(plain_total, 1):.2f}x)")
    print(f"{'ends because':<18} {'chunks':>7} {'share':>6} {'median pieces':>14} {'< ' + str(SMALL):>6}")
    for k, v in sorted(total.items(), key=lambda kv: -len(kv[1])):
        small = sum(x < SMALL for x in v)
        print(f"{k:<18} {len(v):>7} {len(v) / n:>6.0%} {statistics.median(v):>14.0f} {small:>6}")


if __name__ == "__main__":
    main()
