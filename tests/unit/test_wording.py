"""Retrieval that survives the user's wording (issue 17): pseudo-relevance feedback, dense-first fusion weights
and the sentence-level reranking, on the real embedding model, the real BM25 encoder and the embedded store."""

from __future__ import annotations

import pytest

from agents.settings import AgentSettings
from contracts.messages import Hit
from models.extractive import _compared_row, _number, extractive_answer, question_parts
from models.sparse import SparseEncoder
from search.expansion import Rewrite, expanded_sparse, feedback_terms, fusion_weights, overlap
from search.hybrid import PartQuery, hybrid_search
from search.rerank import SENTENCE_CANDIDATES, LexicalScorer, SentenceScorer, build_scorer, rerank
from search.vectorstore import CollectionSchema, EdgeShardStore, SearchFilter, SparseVector, VectorPoint
from tests.unit.test_vectorstore import payload

QUESTION = "Can I make a filled shape partly see-through?"
OPACITY = ("Pens carry more than colour. The opacity of a pen can be varied from 0 (fully transparent) to the "
           "default value of 1 (opaque), and a blend mode may be given.")  # fmt: skip
SHAPES = ("A filled shape is drawn with fill; a shape is filled and outlined with filldraw. Every shape needs a "
          "cyclic path, and a filled shape keeps the pen's colour.")  # fmt: skip


@pytest.fixture(scope="module")
def embedder():
    from agents.runtime.resources import text_embedder

    return text_embedder(AgentSettings())  # the engine's embedder (all-MiniLM-L6-v2 in ONNX Runtime)


def hit(n: int, text: str, cosine: float) -> Hit:
    return Hit(chunk_id=f"c{n}", doc_id="d", filename="f.pdf", page=n + 1, text=text, score=1.0 / (n + 1),
               dense_score=cosine)  # fmt: skip


def test_feedback_words_come_from_the_top_hits_and_leave_out_what_the_question_and_every_candidate_have() -> None:
    top = ["The opacity of a pen sets how transparent a fill is; opacity 0 is fully transparent."]
    others = ["Asymptote draws paths with pens.", "Asymptote labels are typeset with LaTeX.", "Pens have colours."]
    words = feedback_terms("how transparent can a fill be", top, top + others, 3)
    assert words[0] == "opacity"  # most frequent in the top hit, and in no other candidate
    assert "transparent" not in words  # the question has it already (stemmed: "transparent")
    assert "asymptote" not in words  # not in the top hit; a word of every candidate would weigh nothing anyway
    assert feedback_terms("anything", [], others, 3) == [] and feedback_terms("anything", top, top, 0) == []


def test_expanded_query_keeps_the_question_at_full_weight_and_the_feedback_lower() -> None:
    encoder = SparseEncoder()
    plain = encoder.encode_query("transparent fill")
    assert plain is not None
    expanded = expanded_sparse("transparent fill", ["opacity", "fill"], 0.3)
    assert expanded is not None
    weights = dict(zip(expanded.indices, expanded.values, strict=True))
    opacity = encoder.encode_query("opacity")
    assert opacity is not None and weights[opacity.indices[0]] == pytest.approx(0.3)
    assert all(weights[i] == pytest.approx(1.0) for i in plain.indices)  # "fill" is asked: it keeps 1.0
    assert expanded_sparse("transparent fill", [], 0.3) == plain


def test_dense_weighs_more_only_when_the_sparse_hits_miss_the_question_words() -> None:
    rewrite = Rewrite(dense_first_overlap=0.5, dense_first_weight=2.0)
    # 2 of 7 content words: "fill", "shape" of make, fill, shape, part, see-through, see, through.
    assert overlap(QUESTION, [SHAPES]) == pytest.approx(2 / 7)
    assert fusion_weights(rewrite, QUESTION, [OPACITY, SHAPES]) == (2.0, 1.0)
    assert fusion_weights(rewrite, "filled shape partly", [SHAPES]) == (1.0, 1.0)
    assert fusion_weights(Rewrite(), QUESTION, [OPACITY]) == (1.0, 1.0)  # off by default


def test_feedback_lets_the_sparse_search_find_a_page_in_the_manuals_words(tmp_path, embedder) -> None:
    """The answer ('opacity') shares no content word with the question; the dense search finds a page that uses
    both vocabularies, and its words lead the sparse search to the answer, which the plain sparse search misses."""
    texts = {
        "bridge": "To make a filled shape see-through, lower the opacity of its pen; the opacity is a pen property.",
        "answer": "opacity(real opacity=1, string blend) returns a pen; the opacity ranges from 0 to 1, the default.",
        "noise-1": "Labels are typeset with LaTeX and placed at a point with an alignment.",
        "noise-2": "The unitsize command sets the length of one user coordinate, for instance one centimetre.",
    }
    encoder = SparseEncoder()
    names = list(texts)
    vectors = embedder.embed([texts[n] for n in names])
    sparse = encoder.encode_documents([texts[n] for n in names])
    store = EdgeShardStore(tmp_path / "edge")
    try:
        store.create_collection("c", CollectionSchema(text_dim=embedder.dim, sparse=True))
        store.upsert("c", [VectorPoint(id=f"00000000-0000-0000-0000-00000000000{n}", text=v,
                                       sparse=SparseVector(tuple(s.indices), tuple(s.values)),
                                       payload=payload(index=n, text=texts[name]))
                           for n, (name, v, s) in enumerate(zip(names, vectors, sparse, strict=True))])  # fmt: skip
        question = "How do I make a filled area partly see-through?"
        dense = embedder.embed([question])[0]
        where = SearchFilter("a")

        def sparse_found(rewrite: Rewrite | None) -> set[str]:
            hits = hybrid_search(store, "c", None, encoder.encode_query(question), where, 10, 60.0, rewrite=rewrite,
                                 text=question)  # fmt: skip
            return {h.payload.text for h in hits}

        assert texts["answer"] not in sparse_found(None)  # BM25 alone: no shared word
        fused = hybrid_search(store, "c", dense, encoder.encode_query(question), where, 10, 60.0,
                              rewrite=Rewrite(feedback_docs=1, feedback_terms=4, feedback_weight=0.3), text=question)  # fmt: skip
        plain = hybrid_search(store, "c", dense, encoder.encode_query(question), where, 10, 60.0)
        score = {h.payload.text: h.score for h in fused}
        plain_score = {h.payload.text: h.score for h in plain}
        # Plain: only the dense ranking has it (about half the best fused score); with feedback both rankings do.
        assert plain_score[texts["answer"]] < 0.6 < score[texts["answer"]]
    finally:
        store.close()


def test_the_sentence_scorer_reads_the_one_sentence_that_answers_in_a_long_chunk(embedder) -> None:
    """A chunk of unrelated sentences with one that restates the question: its chunk cosine is diluted, its best
    sentence is not; each candidate gets its own sentences' best cosine (spans never shift between candidates)."""
    question = "Which extra program is needed to export GIF pictures?"
    answer = ("Fonts are selected by their NFSS name and size. The join style of a pen is miter by default. To export "
              "GIF pictures an extra program, ImageMagick, is needed. Patterns are tiled with PostScript code.")  # fmt: skip
    other = "Labels are typeset with LaTeX and placed at a point with an alignment."
    chunk = embedder.embed_array([question, answer])
    diluted = float(chunk[1] @ chunk[0])
    candidates = [hit(0, other, 0.1), hit(1, answer, diluted)]
    scorer = SentenceScorer(embedder.embed_array, weight=0.5)
    cosines = scorer.sentence_cosines(question, candidates)
    assert cosines[1] is not None and cosines[0] is not None
    assert cosines[1] > diluted + 0.1 and cosines[1] > cosines[0] + 0.3
    lexical = LexicalScorer().scores(question, candidates)
    blended = scorer.scores(question, candidates)
    assert blended[1] > lexical[1]  # the sentence lifts the chunk above what words and its chunk cosine say
    ranked = rerank(question, candidates, 2, scorer=scorer)
    assert ranked[0].chunk_id == "c1" and all(0.0 <= h.score <= 1.0 for h in ranked)


def test_candidates_past_the_limit_keep_their_chunk_cosine_and_the_weight_is_checked(embedder) -> None:
    scorer = SentenceScorer(embedder.embed_array, weight=0.5, candidates=1)
    candidates = [hit(0, OPACITY, 0.4), hit(1, OPACITY, 0.4)]
    assert scorer.sentence_cosines(QUESTION, candidates)[1] is None
    scores = scorer.scores(QUESTION, candidates)
    assert scores[0] != scores[1]  # the first has its sentence cosine, the second its chunk cosine
    with pytest.raises(ValueError, match="lexical scorer"):
        SentenceScorer(embedder.embed_array, weight=0.0, candidates=1)


def test_build_scorer_follows_the_settings(embedder) -> None:
    assert type(build_scorer(None)) is LexicalScorer
    assert type(build_scorer(None, embed=embedder.embed_array, sentence_weight=0.0)) is LexicalScorer
    built = build_scorer(None, embed=embedder.embed_array, sentence_weight=0.4)
    assert isinstance(built, SentenceScorer) and built.weight == 0.4 and built.candidates == SENTENCE_CANDIDATES


def test_a_candidate_without_the_asked_identifier_is_not_rescued_by_its_sentences(embedder) -> None:
    """An embedding barely tells E-150 from E-105: the sentence signal keeps the identifier penalty, or a code
    nobody has would score like an answer and abstention could not decline it."""
    candidates = [hit(0, "Error E-105: dry running detected; stop the pump and fill it.", 0.6)]
    scorer = SentenceScorer(embedder.embed_array, weight=0.6)
    asked = scorer.scores("What does error E-105 mean?", candidates)[0]
    missing = scorer.scores("What does error E-150 mean?", candidates)[0]
    assert missing < 0.5 * asked
    assert missing < AgentSettings().abstain_threshold


# --------------------------------------------------------------------------- the offline answer, by meaning

STOP = ("The controller stores the machine settings when the power is switched off. Press the red button on the "
        "front panel to stop the pump at once. The housing is made of cast iron.")  # fmt: skip


def page_hit(n: int, text: str, score: float, page: int) -> Hit:
    return Hit(chunk_id=f"c{n}", doc_id="d", filename="f.pdf", page=page, bbox=(0, 0, 1, 1), text=text, score=score)


def test_the_offline_answer_quotes_the_sentence_that_says_it_in_other_words(embedder) -> None:
    question = "How do I halt the machine immediately when something goes wrong?"
    hits = [page_hit(0, STOP, 0.8, page=4)]
    by_words = extractive_answer(question, hits)  # "machine" is the only shared word: the wrong sentence
    assert by_words.text.startswith("The controller stores the machine settings")
    by_meaning = extractive_answer(question, hits, embed=embedder.embed_array)
    assert by_meaning.text.startswith("Press the red button on the front panel to stop the pump at once. [1]")
    assert by_meaning.cited == hits


def test_a_two_part_question_gets_one_sentence_per_part_each_cited_with_its_own_page(embedder) -> None:
    question = "How often should the cartridge be swapped, and what do I clean the limescale off the heater with?"
    assert question_parts(question) == ["How often should the cartridge be swapped",
                                        "what do I clean the limescale off the heater with"]  # fmt: skip
    first = page_hit(0, "Filters are sold in packs of three. Replace the filter cartridge every six months. The "
                        "cartridge fits every model of the range.", 0.8, page=3)  # fmt: skip
    second = page_hit(1, "Use the blue hose for drinking water. Descale the heater with citric acid once a year.",
                      0.4, page=7)  # a lower-ranked page: only its own part brings it in
    result = extractive_answer(question, [first, second], embed=embedder.embed_array)
    assert result.text.startswith("Replace the filter cartridge every six months. [1] Descale the heater with "
                                  "citric acid once a year. [2]")  # fmt: skip
    assert [h.page for h in result.cited] == [3, 7]


def test_a_question_of_one_part_is_not_split() -> None:
    assert question_parts("Do dogs and cats play in the garden?") == ["Do dogs and cats play in the garden?"]
    assert question_parts("How do I print it, and why?") == ["How do I print it, and why?"]  # "why" is no part


def test_a_list_of_many_parts_is_asked_as_one_question() -> None:
    """Each part costs a search and a scoring: a 60-part "question" (4,000 characters allow 130) must not cost 60."""
    three = "How do I print the page; how do I save the file; how do I close the window"
    assert len(question_parts(three)) == 3
    many = "; ".join(f"how do I redirect error number {i} to a file" for i in range(60))
    assert question_parts(many) == [many]


TWO_PARTS = "How often should the cartridge be swapped, and what do I clean the limescale off the heater with?"
CARTRIDGE = [f"Replace the filter cartridge of model {n} every six months; the cartridge of model {n} is sold in "
             f"packs of three." for n in range(24)]  # fmt: skip
HEATER = "Descale the heating element with citric acid once a year."  # the user's words are not the page's


def test_a_two_part_question_is_searched_part_by_part_and_finds_the_page_of_its_second_part(tmp_path, embedder) -> None:
    """24 pages match the whole question better than the one page that answers its second part (in other words):
    only the parts' own searches bring that page into the 20 candidates, and near their top (decision 88)."""
    texts = [*CARTRIDGE, HEATER]
    encoder = SparseEncoder()
    vectors = embedder.embed(texts)
    sparse = encoder.encode_documents(texts)
    store = EdgeShardStore(tmp_path / "edge")
    try:
        store.create_collection("c", CollectionSchema(text_dim=embedder.dim, sparse=True))
        store.upsert("c", [VectorPoint(id=f"00000000-0000-0000-0000-{n:012d}", text=v,
                                       sparse=SparseVector(tuple(s.indices), tuple(s.values)),
                                       payload=payload(index=n, text=text))
                           for n, (text, v, s) in enumerate(zip(texts, vectors, sparse, strict=True))])  # fmt: skip
        where = SearchFilter("a")
        parts = [PartQuery(p, embedder.embed([p])[0], encoder.encode_query(p)) for p in question_parts(TWO_PARTS)]
        dense, query = embedder.embed([TWO_PARTS])[0], encoder.encode_query(TWO_PARTS)

        def found(with_parts: bool) -> list[str]:
            cosines: dict[str, float] = {}
            hits = hybrid_search(store, "c", dense, query, where, 20, 60.0, cosines=cosines, text=TWO_PARTS,
                                 parts=parts if with_parts else ())  # fmt: skip
            if with_parts:  # the second part's dense search found it: it carries that cosine for the reranker
                assert {h.payload.text: h.id for h in hits}[HEATER] in cosines
            return [h.payload.text for h in hits]

        assert HEATER not in found(False)
        assert found(True).index(HEATER) < 3  # among the first: the parts' rankings are taken in turn
    finally:
        store.close()


def test_a_two_part_question_keeps_the_best_page_of_each_part_in_its_top_hits(embedder) -> None:
    """Ranked by the whole question, the page of the second part stays below the top 3 (six pages share the first
    part's words); each part's best candidate keeps a place (decision 88)."""
    candidates = [hit(n, text, 0.6) for n, text in enumerate(CARTRIDGE[:6])] + [hit(6, HEATER, 0.3)]
    scorer = SentenceScorer(embedder.embed_array, weight=0.6)
    whole = rerank(TWO_PARTS, candidates, 3, scorer=scorer, parts=False)
    scored = rerank(TWO_PARTS, candidates, len(candidates), scorer=scorer, parts=False)
    kept = rerank(TWO_PARTS, candidates, 3, scorer=scorer)
    assert HEATER not in [h.text for h in whole]
    assert HEATER in [h.text for h in kept] and whole[0].chunk_id in {h.chunk_id for h in kept}
    heater = next(h for h in kept if h.text == HEATER)
    # Scored as it answers its part where that is higher than its whole-question score (which side is higher
    # depends on the CPU's int8 kernels here, so the rule is checked, not a side).
    part = question_parts(TWO_PARTS)[1]
    first = candidates[:SENTENCE_CANDIDATES]  # what the reranker reads for a part
    part_score = scorer.scores(part, first)[first.index(candidates[-1])]
    whole_score = next(h for h in scored if h.text == HEATER).score
    assert heater.score == pytest.approx(max(whole_score, min(max(part_score, 0.0), 1.0)))
    assert [h.score for h in kept] == sorted((h.score for h in kept), reverse=True)
    one_part = "How often should the cartridge be swapped?"
    assert rerank(one_part, candidates, 3, scorer=scorer) == rerank(one_part, candidates, 3, scorer=scorer, parts=False)


def test_the_offline_answer_quotes_a_sentence_once_not_again_with_another_number(embedder) -> None:
    hits = [page_hit(n, text, 0.8 - n / 10, page=n + 1) for n, text in enumerate(CARTRIDGE[:3])]
    result = extractive_answer("How often should the filter cartridge be replaced?", hits, embed=embedder.embed_array)
    assert result.text.count("Replace the filter cartridge") == 1 and len(result.cited) == 1


def test_the_offline_answer_shows_a_screenshots_text_as_its_lines() -> None:
    screenshot = Hit(chunk_id="c0", doc_id="d", filename="setup.pdf", page=2, bbox=(0, 0, 1, 1), modality="image",
                     text="Figure 2: account settings\nIncoming server: imap.example.org\nPort: 993\nSecurity: SSL/TLS",
                     score=0.7)  # fmt: skip
    result = extractive_answer("Which port does the incoming server use?", [screenshot])
    assert result.text == (
        "Figure 2: account settings\nIncoming server: imap.example.org\nPort: 993\nSecurity: SSL/TLS\n[1]"
    )


REVENUE = (
    "|Region|Revenue 2025 (M€)|Stores|\n|---|---|---|\n|EMEA|1.234,5|41|\n|Americas|2.050,0|17|\n"
    "|APAC|987,25|65|\n|Nordics|−12,0|3|"
)
REVENUE_TEXT = "Revenue grew in every region except the Nordics; EMEA and APAC opened the most new stores this year."


@pytest.mark.parametrize(
    ("question", "row"),
    [
        ("Which region had the highest revenue?", "|Americas|2.050,0|17|"),
        ("Which region had the lowest revenue?", "|Nordics|−12,0|3|"),
        ("Where are the most stores?", "|APAC|987,25|65|"),
        ("Welche Region hat die meisten Stores?", "|APAC|987,25|65|"),
    ],
)
def test_a_superlative_question_over_a_table_quotes_the_row_that_holds_the_extreme(question: str, row: str) -> None:
    hits = [
        page_hit(0, REVENUE_TEXT, 0.9, page=1),
        Hit(chunk_id="t", doc_id="d", filename="f.pdf", page=2, modality="table", text=REVENUE, score=0.8),
    ]
    result = extractive_answer(question, hits)
    assert result.text.startswith(f"|Region|Revenue 2025 (M€)|Stores|\n{row}\n[")
    assert result.text.count("|Region|") == 1  # the table's other rows, which share words, are not quoted
    assert result.cited[int(result.text.split("[")[1][0]) - 1].chunk_id == "t"  # cited to the table


@pytest.mark.parametrize(
    "question",
    ["What was the revenue of EMEA?", "Which region had the highest growth?",
     "List the regions from the highest revenue to the lowest."],
)  # fmt: skip
def test_nothing_is_computed_without_one_superlative_and_a_column_the_question_names(question: str) -> None:
    table = Hit(chunk_id="t", doc_id="d", filename="f.pdf", page=2, modality="table", text=REVENUE, score=0.8)
    assert _compared_row(question, [table]) is None


@pytest.mark.parametrize(
    ("cell", "value"),
    [("$1,200.50", 1200.5), ("1.234,5 €", 1234.5), ("1,200", 1200.0), ("1,5", 1.5), ("12 %", 12.0),
     ("−3", -3.0), ("1,234,567", 1234567.0), ("n/a", None)],
)  # fmt: skip
def test_a_cells_number_is_read_with_its_separators(cell: str, value: float | None) -> None:
    assert _number(cell) == value


def test_the_page_a_search_query_in_the_documents_words_found_keeps_a_place(embedder) -> None:
    """An LLM's search query searched beside the question (`RerankRequest.rewrites`) is one more part: ranked by the
    user's words alone the heater page is not in the top 3; the rewrite's best candidate is, scored by it."""
    candidates = [hit(n, text, 0.6) for n, text in enumerate(CARTRIDGE[:6])] + [hit(6, HEATER, 0.3)]
    scorer = SentenceScorer(embedder.embed_array, weight=0.6)
    question = "How do I get the chalk off?"
    assert HEATER not in [h.text for h in rerank(question, candidates, 3, scorer=scorer)]
    kept = rerank(question, candidates, 3, scorer=scorer, rewrites=["descale the heating element with citric acid"])
    assert kept[0].text == HEATER and kept[0].score > 0.5
