"""Tiny lexical helpers shared by the reranker and the extractive answerer."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")

STOPWORDS = frozenset(
    """a an and are as at be been being by can could did do does for from had has have how i in into is it its
    of on or that the their them there these they this those to was were what when where which who whom why
    will with would you your about after before than then so such not no yes also any all more most other
    some our we us me my he she his her him""".split()
)


def _stem(word: str) -> str:
    """A light plural stem ("gaskets" -> "gasket", "boxes" stays "boxe"); enough to match a question's plural
    with a singular in the text, without a stemming library's surprises on identifiers."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")) and not any(c.isdigit() for c in word):
        return word[:-1]
    return word


def terms(text: str) -> set[str]:
    """Lower-cased content words (stopwords removed, plurals stemmed); hyphenated words are kept whole and split."""
    words = _WORD.findall(text.lower())
    out = {_stem(w) for w in words if w not in STOPWORDS}
    out.update(_stem(part) for w in words if "-" in w for part in w.split("-") if part and part not in STOPWORDS)
    return out


def overlap(query_terms: set[str], text: str) -> float:
    """Share of the query's terms that appear in `text` (0..1)."""
    if not query_terms:
        return 0.0
    return len(query_terms & terms(text)) / len(query_terms)


def sentences(text: str) -> list[str]:
    """Sentences of `text`; a line break also ends one (headings, list items, table rows)."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]
