"""`mmrag chat` prints where each citation is the way `mmrag ask` does: an office file's locator, else its page."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

import mmrag.chat as chat


async def test_a_citation_names_its_locator_else_its_page(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    async def events(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202 - stands in for the engine's ask stream
        yield "token", {"text": "160 EUR a night."}
        yield "citation", {"n": 1, "filename": "policy.docx", "page": 2, "doc_id": "d1",
                           "locator": "section 2: Expenses, table 1"}  # fmt: skip
        yield "citation", {"n": 2, "filename": "manual.pdf", "page": 14, "doc_id": "d2", "locator": None}
        yield "done", {}

    monkeypatch.setattr(chat, "ask_events", events)
    await chat._answer(None, "hotel?", "c1", 5, Console(file=io.StringIO()))  # noqa: SLF001
    out = capsys.readouterr().out
    assert "[1] policy.docx section 2: Expenses, table 1 (doc d1)" in out
    assert "[2] manual.pdf page 14 (doc d2)" in out
