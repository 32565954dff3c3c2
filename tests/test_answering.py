"""The reranker's scoring and the extractive answerer, as pure functions."""

from __future__ import annotations

from agents.generator import NOTHING_FOUND, extractive_answer
from agents.reranker import rerank
from contracts.messages import Hit


def hit(n: int, text: str, score: float, page: int = 1) -> Hit:
    return Hit(chunk_id=f"d-{n}", doc_id="d", filename="f.pdf", page=page, bbox=(0, 0, 1, 1), text=text, score=score)


def test_rerank_promotes_the_chunk_with_the_query_terms() -> None:
    candidates = [
        hit(0, "Reactors are large machines used in many plants.", 0.62),
        hit(1, "The Zorblax-7 reactor core operates at 4127 degrees Kelvin.", 0.55),
        hit(2, "Weather today is mild.", 0.10),
    ]
    ranked = rerank("What temperature does the Zorblax-7 reactor core run at?", candidates, top_k=2)
    assert [h.chunk_id for h in ranked] == ["d-1", "d-0"]
    assert all(0 <= h.score <= 1 for h in ranked)
    assert ranked[0].score > ranked[1].score


def test_answer_quotes_the_matching_sentence_with_its_citation() -> None:
    hits = [
        hit(0, "Intro text about plants. The Zorblax-7 reactor core operates at 4127 degrees Kelvin. Outro.", 0.9, page=3),
        hit(1, "Unrelated page about gardening and soil.", 0.5, page=1),
    ]
    answer = extractive_answer("At what temperature does the Zorblax-7 reactor core operate?", hits)
    assert answer.text == "The Zorblax-7 reactor core operates at 4127 degrees Kelvin. [1]"
    assert answer.cited == [hits[0]]


def test_answer_numbers_citations_in_order_of_use() -> None:
    hits = [hit(0, "Cats and dogs sleep a lot.", 0.9), hit(1, "Dogs bark at cats and dogs play.", 0.8)]
    answer = extractive_answer("Do dogs and cats play?", hits)
    assert answer.text.startswith("Dogs bark at cats and dogs play. [1]")
    assert answer.cited[0] is hits[1]
    assert "[2]" in answer.text and answer.cited[1] is hits[0]


def test_answer_without_hits_or_matches() -> None:
    assert extractive_answer("anything", []).text == NOTHING_FOUND
    fallback = extractive_answer("quantum", [hit(0, "Nothing relevant here.", 0.2)])
    assert fallback.text == "The closest passage I found: Nothing relevant here. [1]"


def test_a_table_hit_is_answered_with_the_matching_row_under_its_header() -> None:
    table = Hit(chunk_id="t-0", doc_id="t", filename="parts.pdf", page=2, bbox=(0, 0, 1, 1), modality="table",
                text="|Part|Material|Supplier|\n|---|---|---|\n|Flange|Steel|Arden Works|\n|Gasket|Rubber|Belmont Seals|",
                score=0.9)  # fmt: skip
    answer = extractive_answer("Which supplier provides the gaskets?", [table])
    assert answer.text.startswith("|Part|Material|Supplier|\n|Gasket|Rubber|Belmont Seals|\n[1]")
    assert "Flange" not in answer.text and answer.cited == [table]


def test_the_same_sentence_on_two_pages_is_quoted_once() -> None:
    text = "Replace the filter cartridge every six months."
    hits = [hit(0, text, 0.9, page=1), hit(1, text, 0.8, page=2)]
    answer = extractive_answer("How often is the filter cartridge replaced?", hits)
    assert answer.text == f"{text} [1]" and answer.cited == [hits[0]]
