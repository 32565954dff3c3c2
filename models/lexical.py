"""Tiny lexical helpers shared by the reranker and the extractive answerer."""

from __future__ import annotations

import functools
import re

import snowballstemmer

from documents.sentences import sentences

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

STOPWORDS = frozenset(
    """a an and are as at be been being by can could did do does for from had has have how i in into is it its
    of on or that the their them there these they this those to was were what when where which who whom why
    will with would you your about after before than then so such not no yes also any all more most other
    some our we us me my he she his her him many much often should must shall may might
    mean means meaning say says tell happen happens explain describe""".split()
)


_STEMMER = snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Snowball's English stem of a word ("tightened" -> "tighten", "gaskets" -> "gasket"); a word with a digit is an
    identifier or a number and stays as it is."""
    if any(c.isdigit() for c in word):
        return word
    return _STEMMER.stemWord(word)


@functools.lru_cache(maxsize=32768)
def terms(text: str) -> frozenset[str]:
    """Lower-cased content words (stopwords removed, stemmed); hyphenated words are kept whole and split.

    Cached: the reranker and the answerer meet the same chunks and sentences again and again."""
    words = _WORD.findall(text.lower())
    out = {_stem(w) for w in words if w not in STOPWORDS}
    out.update(_stem(part) for w in words if "-" in w for part in w.split("-") if part and part not in STOPWORDS)
    return frozenset(out)


# An identifier: a token that mixes letters and digits ("E-103", "D3P5", "FW-3.2.7"), joins names with dots or
# underscores ("heapq.nsmallest", "insort_left"), is camelCase, or is an upper-case word of 4+ letters ("EROFS").
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]")


def identifiers(text: str) -> set[str]:
    """The exact identifiers of `text` (lower-cased): error codes, part numbers, function names."""
    out = set()
    for token in _TOKEN.findall(text):
        has_digit = any(c.isdigit() for c in token)
        has_alpha = any(c.isalpha() for c in token)
        if (
            (has_digit and has_alpha)
            or (has_alpha and ("_" in token or re.search(r"[a-z]\.[a-z]", token, re.I) is not None))
            or re.search(r"[a-z][A-Z]", token) is not None
            or (token.isupper() and len(token) >= 4)
        ):
            out.add(token.lower())
    return out


def contains_identifier(text: str, identifier: str) -> bool:
    """`identifier` (lower-case) appears in `text` as a whole token (not inside a longer one: E-10 is not E-103)."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(identifier) + r"(?![A-Za-z0-9]|[.\-_][A-Za-z0-9])"
    return re.search(pattern, text, re.I) is not None


def table_rows(text: str) -> tuple[str, list[str]] | None:
    """(header row, data rows) of a markdown table chunk, or None if `text` is not one."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    if len(rows) >= 3 and set(rows[1]) <= set("|-: "):
        return rows[0], rows[2:]
    return None


def units(text: str, modality: str) -> list[tuple[str, str]]:
    """(text to match, text to quote) of what a chunk offers an answer: its sentences; for a table, its data rows,
    matched together with the header (column names are words of the question) and quoted under it, so the quote
    reads as a one-row table."""
    if modality == "table":
        table = table_rows(text)
        if table is not None:
            header, rows = table
            return [(f"{header}\n{row}", f"{header}\n{row}") for row in rows]
        return [(row, row) for row in text.splitlines() if row.strip()]
    return [(s, s) for s in sentences(text)]
