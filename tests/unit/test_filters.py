"""Search filters (document ids, modalities, page range): the contract and the CLI's options.

Through a real `mmrag up`: tests/e2e/test_filters_engine.py. The vector store's translation of the filters is
tested against both adapters in `tests/unit/test_vectorstore.py`.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from contracts.messages import MAX_FILTER_DOC_IDS, QueryFilters, QueryRequest
from mmrag.client import filters, parse_pages

# --------------------------------------------------------------------------- the contract


def test_lists_are_canonical_sets_so_equal_filters_are_equal() -> None:
    a = QueryFilters(doc_ids=["d2", "d1", "d2"], modalities=["table", "text"])
    b = QueryFilters(doc_ids=["d1", "d2"], modalities=["text", "table", "text"])
    assert a == b and a.doc_ids == ["d1", "d2"] and a.modalities == ["table", "text"]
    assert a.model_dump_json() == b.model_dump_json()


def test_page_range_open_ends_and_order() -> None:
    assert QueryFilters().pages is None
    assert QueryFilters(page_from=3, page_to=5).pages == (3, 5)
    assert QueryFilters(page_from=4, page_to=4).pages == (4, 4)
    assert QueryFilters(page_from=3).pages == (3, 2**31 - 1)
    assert QueryFilters(page_to=5).pages == (1, 5)
    with pytest.raises(ValidationError, match=r"page_from \(6\) must be <= page_to \(5\)"):
        QueryFilters(page_from=6, page_to=5)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"doc_ids": []}, "doc_ids"),
        ({"doc_ids": ["not a valid id!"]}, "doc_ids.0"),
        ({"doc_ids": [f"d{i}" for i in range(MAX_FILTER_DOC_IDS + 1)]}, "doc_ids"),
        ({"modalities": []}, "modalities"),
        ({"modalities": ["video"]}, "modalities.0"),
        ({"page_from": 0}, "page_from"),
        ({"page_to": "5"}, "page_to"),
        ({"page_from": 2.0}, "page_from"),
        ({"tenant": "other"}, "tenant"),
    ],
)
def test_invalid_filters_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        QueryFilters.model_validate_json(json.dumps(data))
    assert field in {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_a_request_without_filters_restricts_nothing() -> None:
    request = QueryRequest(request_id="r", tenant="t", query="what?")
    assert request.filters == QueryFilters() and request.filters.pages is None
    assert request.schema_version >= 3  # v3 brought filters


def test_cli_filters_from_options() -> None:
    assert filters() == {}
    assert filters(doc_ids=["a", "b"], modalities=["table"], pages="3-5") == {
        "doc_ids": ["a", "b"], "modalities": ["table"], "page_from": 3, "page_to": 5,
    }  # fmt: skip
    assert parse_pages("4") == (4, 4) and parse_pages("3-") == (3, None) and parse_pages("-5") == (None, 5)
    for bad in ("", "-", "a-b", "3-5-7", "x"):
        with pytest.raises(ValueError, match="pages must look like"):
            parse_pages(bad)


def test_the_collections_filter_becomes_the_vector_store_filter() -> None:
    from search.hybrid import search_filter

    request = QueryRequest(request_id="r", tenant="t", query="what?", filters=QueryFilters(collections=["b", "a", "b"]))
    where = search_filter(request)
    assert where.collections == frozenset({"a", "b"}) and where.tenant == "t"
    assert search_filter(QueryRequest(request_id="r", tenant="t", query="what?")).collections is None


def test_a_browse_names_one_document_and_pages_and_needs_no_text() -> None:
    from contracts.messages import QueryMode

    one = QueryFilters(doc_ids=["d"], page_from=2, page_to=3)
    browse = QueryRequest(request_id="r", tenant="t", mode=QueryMode.BROWSE, filters=one)
    assert browse.query is None and browse.filters.pages == (2, 3)
    for bad in (QueryFilters(doc_ids=["d", "e"], page_from=1), QueryFilters(page_from=1), QueryFilters(doc_ids=["d"])):
        with pytest.raises(ValidationError, match="a browse names one document"):
            QueryRequest(request_id="r", tenant="t", mode=QueryMode.BROWSE, filters=bad)
    with pytest.raises(ValidationError, match="query text, an image, or both"):
        QueryRequest(request_id="r", tenant="t", mode=QueryMode.SEARCH, filters=one)
