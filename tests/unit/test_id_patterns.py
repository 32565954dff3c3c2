"""Every id, number and name checked with a regular expression matches the whole string: Python's `$` also matches
before a trailing newline, so `re.match(r"^...$")` let `doc\\n` through as a token and `/pages/1%0A` as page 1."""

from __future__ import annotations

import re

import pytest

from contracts.topology import TOKEN, check_token
from edge_api import keys
from edge_api.routes import documents, pages, reindex, ui

PATTERNS = {
    "subject token": (TOKEN, "doc-1"),
    "tenant": (keys.TENANT, "acme"),
    "key hash": (keys._HEX64, "0" * 64),
    "page": (pages._PAGE, "1"),
    "width": (pages._WIDTH, "800"),
    "list limit": (documents._LIMIT, "50"),
    "re-index id": (reindex._ID, "g2"),
    "UI asset": (ui._ASSET_NAME, "app.js"),
}


@pytest.mark.parametrize("name", PATTERNS)
def test_a_trailing_newline_never_passes(name: str) -> None:
    pattern, valid = PATTERNS[name]
    assert isinstance(pattern, re.Pattern) and pattern.match(valid), f"{name}: the valid example must pass"
    for suffix in ("\n", "\r\n", " "):
        assert pattern.match(valid + suffix) is None, f"{name} accepted {valid + suffix!r}"


def test_check_token_refuses_a_trailing_newline() -> None:
    assert check_token("doc-1", "doc_id") == "doc-1"
    with pytest.raises(ValueError, match="not a valid subject token"):
        check_token("doc-1\n", "doc_id")
