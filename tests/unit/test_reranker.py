"""The reranker's scorers: the offline lexical + dense scorer, and a real CrossEncoder checkpoint built in the test."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agents.settings import AgentSettings
from contracts.messages import Hit, ImageRef
from search.abstention import abstains, decide, paraphrase_cosine
from search.rerank import CrossEncoderScorer, LexicalScorer, above_floor, build_scorer, rerank


def hit(n: int, text: str, score: float = 0.5, *, cosine: float | None = None, modality: str = "text") -> Hit:
    image = ImageRef(object_name=f"img-{n}", mime="image/png", width=10, height=10) if modality == "image" else None
    return Hit(chunk_id=f"d-{n}", doc_id="d", filename="f.pdf", page=n + 1, text=text, score=score,
               dense_score=cosine, modality=modality, image=image)  # fmt: skip


def test_scores_lie_in_0_1_and_the_chunk_that_answers_wins() -> None:
    candidates = [
        hit(0, "Reactors are large machines used in many plants.", 1.0, cosine=0.45),
        hit(1, "The Zorblax-7 reactor core operates at 4127 degrees Kelvin.", 0.9, cosine=0.62),
        hit(2, "Weather today is mild.", 0.5, cosine=0.05),
    ]
    ranked = rerank("What temperature does the Zorblax-7 reactor core run at?", candidates, top_k=3)
    assert [h.chunk_id for h in ranked] == ["d-1", "d-0", "d-2"]
    assert all(0.0 <= h.score <= 1.0 for h in ranked)
    assert ranked[0].score > ranked[1].score > ranked[2].score


def test_the_exact_identifier_wins_over_a_near_twin() -> None:
    candidates = [
        hit(0, "E-105: dry running detected by the power monitor; stop the pump.", 1.0, cosine=0.60),
        hit(1, "E-103: rotor blocked; turn the shaft by hand.", 0.8, cosine=0.55),
    ]
    ranked = rerank("What does error code E-103 mean?", candidates, top_k=2)
    assert ranked[0].chunk_id == "d-1"
    assert ranked[1].score < 0.5 * ranked[0].score  # the twin lacks the identifier asked for


def test_an_identifier_nobody_has_scores_below_the_default_threshold() -> None:
    candidates = [hit(n, f"Error code E-10{n}: a fault of the pump; check the supply.", 1.0, cosine=0.6) for n in range(1, 5)]
    ranked = rerank("What does error code E-150 mean?", candidates, top_k=3)
    assert abstains(ranked, AgentSettings().abstain_threshold)
    assert not abstains(rerank("What does error code E-103 mean?", candidates, top_k=3), AgentSettings().abstain_threshold)


def test_the_cosine_is_an_absolute_signal_and_fused_rank_only_a_fallback() -> None:
    same_words = "The pump housing is cast iron."
    strong = rerank("pump housing material", [hit(0, same_words, 1.0, cosine=0.7)], top_k=1)[0].score
    weak = rerank("pump housing material", [hit(0, same_words, 1.0, cosine=0.1)], top_k=1)[0].score
    assert strong > weak  # same text, same fused rank: the cosine decides how relevant it is
    # Without any cosine (an old retriever, an image-only query) the fused score stands in for it.
    assert rerank("pump housing material", [hit(0, same_words, 0.2)], top_k=1)[0].score < strong


def test_a_sparse_only_candidate_counts_the_lowest_cosine_seen() -> None:
    scorer = LexicalScorer()
    a, b = scorer.scores("gasket supplier", [hit(0, "Gasket supplier list.", 1.0, cosine=0.3),
                                             hit(1, "Gasket supplier list.", 0.9)])  # fmt: skip
    assert a == pytest.approx(b)


def test_an_image_hit_is_not_crowded_out_by_text() -> None:
    texts = [hit(n, f"Pump controller manual section {n}: the controller menu and its settings.", 1.0 - n / 20,
                 cosine=0.55) for n in range(6)]  # fmt: skip
    image = hit(9, "CONTROLLER MENU\nFLOW LIMIT 45 L/MIN", 0.4, cosine=0.5, modality="image")
    ranked = rerank("controller menu", [*texts, image], top_k=3)
    assert ranked[-1].chunk_id == "d-9" and sum(h.modality == "image" for h in ranked) == 1
    # ...but an image that does not match is not forced in.
    junk = hit(8, "A red square.", 0.4, cosine=0.0, modality="image")
    assert all(h.modality == "text" for h in rerank("controller menu", [*texts, junk], top_k=3))


def test_with_one_place_the_best_hit_keeps_it_over_an_image() -> None:
    """top_k 1: the image rule must never replace the only hit (a question was answered from an unrelated picture)."""
    texts = [hit(n, f"Pump controller manual section {n}: the controller menu and its settings.", 1.0 - n / 20,
                 cosine=0.55) for n in range(6)]  # fmt: skip
    image = hit(9, "CONTROLLER MENU\nFLOW LIMIT 45 L/MIN", 0.4, cosine=0.5, modality="image")
    best = rerank("controller menu", [*texts, image], top_k=3)[0]
    [only] = rerank("controller menu", [*texts, image], top_k=1)
    assert only.modality == "text" and only.chunk_id == best.chunk_id


def test_no_hits_always_abstains() -> None:
    assert abstains([], 0.0) and abstains([], 0.5)
    assert not abstains([hit(0, "x", 0.1)], 0.0)


def test_abstention_needs_both_signals_weak() -> None:
    low = [hit(0, "x", 0.2)]
    assert abstains(low, 0.38) and abstains(low, 0.38, paraphrase=0.5, paraphrase_threshold=0.54)
    assert not abstains(low, 0.38, paraphrase=0.6, paraphrase_threshold=0.54)  # a sentence says it in other words
    assert abstains(low, 0.38, paraphrase=0.9, paraphrase_threshold=0.0)  # 0 = the paraphrase signal is off
    assert abstains(low, 0.38, paraphrase=None, paraphrase_threshold=0.54)  # not measured: the score decides
    assert not abstains([hit(0, "x", 0.4)], 0.38, paraphrase=0.1, paraphrase_threshold=0.54)


@pytest.fixture(scope="module")
def embedder():
    """The real embedding model (all-MiniLM-L6-v2 from its wheel), on torch: no ONNX export in this test."""
    from models.embedding import TextEmbedder

    return TextEmbedder(backend="torch")


def test_a_reworded_question_is_rescued_by_one_sentence_and_an_unrelated_one_is_not(embedder) -> None:
    grease = hit(0, "Maintenance schedule. Regrease the motor bearings once a year with lithium complex grease of "
                    "consistency class NLGI 2. Do not mix greases of different soap types.", 0.9, cosine=0.42)  # fmt: skip
    reworded = "What lubricant does the manual recommend for the bearings?"
    ranked = rerank(reworded, [grease], top_k=1)
    default = AgentSettings()
    assert abstains(ranked, default.abstain_threshold)  # the words differ: the lexical score alone declines
    cosine = paraphrase_cosine(reworded, ranked, embedder.embed_array)
    assert cosine is not None and cosine >= default.abstain_paraphrase_cosine
    assert not abstains(ranked, default.abstain_threshold, paraphrase=cosine,
                        paraphrase_threshold=default.abstain_paraphrase_cosine)  # fmt: skip
    unrelated = paraphrase_cosine("Who won the football world cup in 1998?", ranked, embedder.embed_array)
    assert unrelated is not None and unrelated < default.abstain_paraphrase_cosine
    # `decide`, the reranker's one decision, reads both signals, and only the score without an embedder.
    settings = {"threshold": default.abstain_threshold, "paraphrase_threshold": default.abstain_paraphrase_cosine}
    assert decide(reworded, ranked, **settings, embed=embedder.embed_array) is False
    assert decide(reworded, ranked, **settings, embed=None) is True  # a cross-encoder scored: the score decides
    assert decide("Who won the football world cup in 1998?", ranked, **settings, embed=embedder.embed_array) is True


def test_decide_embeds_nothing_when_the_score_alone_settles_it() -> None:
    def embed(texts: list[str]):
        raise AssertionError(f"embedded {texts!r}: the score alone decides this question")

    strong = [hit(0, "Replace the filter cartridge every six months.", 0.9)]
    assert decide("How often is the filter cartridge replaced?", strong, threshold=0.38, paraphrase_threshold=0.54,
                  embed=embed) is False  # fmt: skip
    assert decide("anything", [], threshold=0.38, paraphrase_threshold=0.54, embed=embed) is True
    low = [hit(0, "x", 0.2)]
    assert decide("anything", low, threshold=0.38, paraphrase_threshold=0.0, embed=embed) is True  # signal off


def test_a_code_no_hit_holds_is_never_rescued_by_meaning(embedder) -> None:
    codes = [hit(n, f"E-10{n}: a fault of the pump; check the supply.", 0.9, cosine=0.6) for n in range(1, 5)]
    assert paraphrase_cosine("What does error code E-150 mean?", codes, embedder.embed_array) is None
    assert paraphrase_cosine("What does error code E-103 mean?", codes, embedder.embed_array) is not None
    assert paraphrase_cosine("", codes, embedder.embed_array) is None


# --------------------------------------------------------------------------- cross-encoder


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised BERT cross-encoder (one relevance logit) with its own word-piece vocabulary,
    saved as a checkpoint folder: what a deployment points MMRAG_RERANKER_MODEL_PATH at."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("cross-encoder")
    words = "the pump housing is cast iron gasket supplier rubber what material of a weather today mild".split()
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    torch.manual_seed(7)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(root)
    return root


def test_a_cross_encoder_checkpoint_is_loaded_and_scores_through_a_sigmoid(cross_encoder_dir: Path, monkeypatch) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("MMRAG_RERANKER_MODEL_PATH", str(cross_encoder_dir))
    scorer = build_scorer(AgentSettings().reranker_model_path)
    assert isinstance(scorer, CrossEncoderScorer)
    assert isinstance(build_scorer(None), LexicalScorer)

    query = "what material is the pump housing"
    candidates = [hit(0, "weather today is mild"), hit(1, "the pump housing is cast iron"), hit(2, "gasket supplier rubber")]
    scores = scorer.scores(query, candidates)
    # The same checkpoint read directly with transformers gives the same logits: the sigmoid of them is the score.
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder_dir).eval()
    with torch.no_grad():
        batch = tokenizer([query] * 3, [c.text for c in candidates], padding=True, return_tensors="pt")
        logits = model(**batch).logits.reshape(-1).tolist()
    assert scores == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)
    assert all(0.0 < s < 1.0 for s in scores)

    ranked = rerank(query, candidates, top_k=3, scorer=scorer)
    assert [h.chunk_id for h in ranked] == [candidates[i].chunk_id for i in sorted(range(3), key=lambda i: -scores[i])]
    assert [h.score for h in ranked] == pytest.approx(sorted(scores, reverse=True))


def test_the_search_floor_keeps_what_scores_and_zero_keeps_everything() -> None:
    hits = [hit(0, "a", 0.9), hit(1, "b", 0.3), hit(2, "c", 0.049), hit(3, "d", 0.0)]
    assert [h.chunk_id for h in above_floor(hits, 0.05)] == ["d-0", "d-1"]
    assert above_floor(hits, 0.0) == hits and above_floor([], 0.05) == []
