"""The paraphrase set: questions worded the way a person who has not read the manual asks them, over real
manuals (`bench/quality/manuals.py`, 7 Debian documentation PDFs, 517 pages), in `paraphrase.jsonl`.

Kinds: ``paraphrase`` (one answer page, or two where the answer runs over a page break; the question avoids the page's own key terms: "see-through" for
opacity, "every other line of a table" for \\rowcolors), ``two-page`` (two answer pages of one manual, one fact
on each), ``unanswerable`` (nothing in the manuals answers it, and each names a real entity of the corpus:
booktabs, convert-ly, \\toprule...). Every question has a ``split``: ``tuning`` (what steps and settings were
chosen on) or ``held-out`` (reported, never looked at while tuning). Written by reading each answer page and
then asking as a user who does not know the manual's vocabulary would; add new questions at the end, never
reword old ones (figures of later changes must stay comparable).

`load()` checks that every expected fact lies on its answer page(s) (case, runs of spaces and the PDFs'
ligature characters ignored), so a changed manual fails loudly instead of silently moving the goal posts.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.quality.corpus import Document, Question
from bench.quality.manuals import digest, manuals

QUESTIONS = Path(__file__).resolve().parent / "paraphrase.jsonl"
KINDS = ("paraphrase", "two-page", "unanswerable")
SPLITS = ("tuning", "held-out")
LIGATURES = str.maketrans({"ﬁ": "fi", "ﬂ": "fl", "ﬀ": "ff", "ﬃ": "ffi", "ﬄ": "ffl"})


def plain(text: str) -> str:
    """Lower case, ligatures spelled out, runs of whitespace as one space: what facts are compared on."""
    return " ".join(text.translate(LIGATURES).lower().split())


def questions() -> list[tuple[Question, str]]:
    """Every question with its split, in file order."""
    out = []
    for line in QUESTIONS.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        assert row["kind"] in KINDS and row["split"] in SPLITS, row
        q = Question(row["qid"], row["kind"], row["question"], row["doc"], tuple(row["pages"]), tuple(row["facts"]))
        out.append((q, row["split"]))
    return out


def load() -> tuple[list[Document], list[tuple[Question, str]], str]:
    """The manuals (fetched when missing), the questions with their split, and the manuals' digest."""
    docs = manuals()
    by_id = {d.doc_id: d for d in docs}
    rows = questions()
    for q, _ in rows:
        if q.doc is None:
            assert q.kind == "unanswerable" and not q.pages, q
            continue
        assert len(q.pages) == 2 if q.kind == "two-page" else len(q.pages) >= 1, q
        for n, fact in enumerate(q.facts):
            # A two-page question has one fact per page, in page order; a one-page question's facts are on its page.
            pages = [q.pages[n]] if q.kind == "two-page" else q.pages
            text = plain(" ".join(by_id[q.doc].page_texts[p] for p in pages))
            assert plain(fact) in text, f"{q.qid}: {fact!r} is not on page {pages} of {q.doc}"
    return docs, rows, digest(docs)
