"""The answer cache's key follows the shape of what it stores: entries of a release whose hits or answer events
had another schema are never read back (they would no longer validate against the routes' declared models)."""

from __future__ import annotations

import pytest

from contracts.messages import QueryMode, QueryRequest
from edge_api import cache


def test_the_key_changes_with_the_cached_shape_and_nothing_else_of_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    query = QueryRequest(request_id="a" * 32, tenant="t", query="pump pressure", top_k=5, mode=QueryMode.SEARCH)
    same = query.model_copy(update={"request_id": "b" * 32})
    before = cache.digest(query, 1)
    assert cache.digest(same, 1) == before, "the request id is not part of the answer"
    monkeypatch.setattr(cache, "CACHED_SHAPE", "another-release")
    assert cache.digest(query, 1) != before
