"""Every integer of a query's filters is bounded: a page number of hundreds of digits overflowed the vector store's
float filter (502, delivered twice, dead-lettered forever: issue 16)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.messages import MAX_PAGE, QueryFilters


@pytest.mark.parametrize("field", ["page_from", "page_to"])
def test_a_page_number_past_the_bound_is_refused(field: str) -> None:
    for huge in (MAX_PAGE + 1, 10**308, 10**4300 - 1):
        with pytest.raises(ValidationError, match="less than or equal"):
            QueryFilters.model_validate({field: huge})


def test_the_bound_itself_and_an_open_range_stay_valid() -> None:
    assert QueryFilters(page_from=3, page_to=MAX_PAGE).pages == (3, MAX_PAGE)
    assert QueryFilters(page_from=3).pages == (3, MAX_PAGE)
    assert float(MAX_PAGE) == MAX_PAGE  # exact as a float: what the stores' range filters compare with
