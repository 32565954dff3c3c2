"""JSON request bodies: their models and their limits, each limit stated once here.

A body is parsed strictly: unknown fields are rejected (so a client cannot, e.g., pick a tenant), numbers
must be JSON integers (not ``"5"``, ``5.0`` or ``true``), and text is stripped and must say something.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from contracts.messages import QueryFilters
from edge_api.errors import ApiError
from edge_api.operations import Err
from edge_api.security import require_json

MAX_TEXT_CHARS = 4000  # a question or a search query (the contract's QueryRequest.query allows no more)
MIN_TOP_K = 1
MAX_TOP_K = 50  # the contract's QueryRequest.top_k allows no more
ASK_DEFAULT_TOP_K = 5
SEARCH_DEFAULT_TOP_K = 10
_ALLOWED_CONTROLS = frozenset("\n\t")

# What `read_body` answers besides the body: the error responses of every operation with a JSON body.
JSON_BODY_ERRORS = {
    400: Err(
        "`invalid_body`: invalid JSON, an unknown field, a `top_k` that is not a JSON integer from 1 to 50, or a text "
        "that is empty, over 4000 characters, without a letter or digit, or with control characters, or `filters` "
        "that are not valid (an empty list, a bad document id, an unknown modality, `page_from` > `page_to`); "
        "`details` names each field (e.g. `filters.page_from`) and its problem"
    ),
    413: Err("`too_large`: the body is over 64 KiB"),
    415: Err("`unsupported_media_type`: the body was not sent as `application/json`"),
}

M = TypeVar("M", bound=BaseModel)


def _meaningful_text(value: str) -> str:
    for char in value:
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            raise ValueError(f"must not contain control characters (found U+{ord(char):04X})")
    if not any(char.isalnum() for char in value):
        raise ValueError("must contain at least one letter or digit")
    return value


Text = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_CHARS),  # checked after stripping (str_strip_whitespace)
    AfterValidator(_meaningful_text),
]


def _top_k(default: int):  # noqa: ANN202 - a pydantic Field
    return Field(default=default, ge=MIN_TOP_K, le=MAX_TOP_K, strict=True)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


def _filters():  # noqa: ANN202 - a pydantic Field
    # The contract's model itself: one definition of what a filter may say (the tenant is never one of them).
    return Field(default_factory=QueryFilters)


class AskBody(_Body):
    question: Text
    top_k: int = _top_k(ASK_DEFAULT_TOP_K)
    filters: QueryFilters = _filters()
    conversation_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="a conversation of the caller's (`POST /v1/conversations`): the question may follow up on its "
        "earlier turns, and the answer is added as its next turn",
    )  # fmt: skip
    regenerate: bool = Field(
        default=False, strict=True,
        description="with `conversation_id`: answer again in place of the conversation's last turn (its question "
        "is asked against the turns before it), instead of adding a turn",
    )  # fmt: skip


class SearchBody(_Body):
    query: Text
    top_k: int = _top_k(SEARCH_DEFAULT_TOP_K)
    filters: QueryFilters = _filters()


async def read_body(request: web.Request, model: type[M]) -> M:
    """The validated body, or `ApiError` 415 (not JSON), 413 (over ``client_max_size``), 400 (invalid)."""
    require_json(request)
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False)
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]} for e in errors]
        kind = "invalid JSON" if any(e["type"] == "json_invalid" for e in errors) else "invalid request body"
        raise ApiError(400, "invalid_body", f"{kind}: see details", details=details) from None
