"""Quality bench: retrieval and answer quality on the fixed evaluation set of `bench/quality/corpus.py`.

    .venv/bin/python -m bench.quality            # ingest (about a minute on 2 cores), then print every table
    .venv/bin/python -m bench.quality --store DIR   # keep the ingested store there; a rerun reuses it

Ingests the documents in-process with the agents' own functions (parser layout + chunking, OCR of scans and
images, the embedding model, BM25 sparse vectors, the embedded Qdrant engine: `bench/ingest_common.InProcess`),
then asks every question through each retrieval mode:

- dense: the text vector alone; sparse: BM25 alone; hybrid: both fused by the retriever's RRF;
- hybrid + rerank: the reranker (`search.rerank.rerank`) over the hybrid candidates;
- engine defaults: the retriever's and the reranker's own pipeline under the settings' defaults (`Bench.engine`:
  `hybrid_search` with the query rewrite of `search.expansion`, the configured offline scorer);
- + graph: the knowledge-graph expansion, when `search.graph` is importable (a row that says why otherwise).

Retrieval metrics per mode and per kind: recall@1, recall@10, MRR and nDCG@10, with a hit relevant when it lies
on an answer page of the question's document (each answer page counts once). Answer metrics (offline
extractive answerer on the engine defaults' top 5, after the abstention check on both signals, score and paraphrase
cosine): right page cited, expected fact present, unanswerable declined, answerable wrongly declined, and the
sweep of both thresholds. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from models.extractive import extractive_answer  # noqa: E402
from search.abstention import abstains, paraphrase_cosine  # noqa: E402
from search.expansion import Rewrite  # noqa: E402
from search.rerank import LexicalScorer, build_scorer, rerank  # noqa: E402
from search.evaluation import fact_found, ranking_metrics  # noqa: E402
from search.hybrid import PartQuery, hybrid_search, rrf, to_hit  # noqa: E402
from models.extractive import question_parts  # noqa: E402
from agents.settings import AgentSettings  # noqa: E402
from search.vectorstore import SPARSE, TEXT_DENSE, SearchFilter, SparseVector  # noqa: E402
from bench.quality.corpus import KINDS, Document, Question, build  # noqa: E402
from contracts.messages import Hit  # noqa: E402

COLLECTION = "bench"
ANSWER_TOP_K = 5  # QueryRequest's default top_k


def relevant(q: Question, hit: Hit) -> bool:
    return q.doc is not None and hit.doc_id == q.doc and hit.page in q.pages


def retrieval_metrics(q: Question, ranked: Sequence[Hit]) -> dict[str, float]:
    """recall@1/@10 (an answer page in the top 1/10), MRR (1 / rank of the first), nDCG@10 over answer pages:
    the product's metrics (`search.evaluation`, what `mmrag eval` reports), a page being one expected source."""
    sources = [f"{h.doc_id}:{h.page}" if relevant(q, h) else None for h in ranked]
    _, ndcg, rank = ranking_metrics(sources, len(q.pages), 10)
    return {
        "r@1": float(rank == 1),
        "r@10": float(rank is not None and rank <= 10),
        "mrr": 0.0 if rank is None else 1.0 / rank,
        "ndcg@10": ndcg,
    }


class Bench:
    """The ingested set and one function per retrieval mode (question index -> ranked hits)."""

    def __init__(self, store_dir: Path, corpus: tuple[list[Document], list[Question], str] | None = None) -> None:
        """`corpus`: (documents, questions, digest of the documents), the fixed set of `corpus.build()` by default."""
        from ingest_common import InProcess, StageClock

        self.settings = AgentSettings()
        self.docs, self.questions, self.digest = corpus or build()
        marker = store_dir / f"ingested-{self.digest}.json"
        self.ingest_s = 0.0
        if marker.exists():  # reuse: the same set was ingested there before
            from models.embedding import TextEmbedder  # noqa: F401  (InProcess loads the model and OCR)
        pipeline = InProcess(store_dir, batch=32) if not marker.exists() else None
        if pipeline is not None:
            t0 = time.perf_counter()
            clock = StageClock()
            counts = {d.doc_id: pipeline.ingest(d.pdf, d.doc_id, clock) for d in self.docs}
            self.ingest_s = time.perf_counter() - t0
            marker.write_text(json.dumps(counts))
            pipeline.close()
        self.chunks = json.loads(marker.read_text())
        from agents.runtime.resources import text_embedder
        from models.sparse import SparseEncoder
        from search.vectorstore import EdgeShardStore

        self.store = EdgeShardStore(store_dir / "inproc-qdrant")
        self.embedder = embedder = text_embedder(self.settings)
        texts = [q.question for q in self.questions]
        self.dense_q = embedder.embed(texts)
        self.embed_units = embedder.embed_array  # what a sentence-level scorer embeds with (a bench may cache it)
        self._sparse = sparse = SparseEncoder()
        self.sparse_q = [sparse.encode_query(t) for t in texts]
        self.limit = self.settings.retrieve_candidates
        self._where = SearchFilter(tenant="default")

    def close(self) -> None:
        self.store.close()

    def dense(self, i: int) -> list:
        return self.store.search(COLLECTION, self.dense_q[i], using=TEXT_DENSE, filter=self._where, limit=self.limit)

    def sparse(self, i: int) -> list:
        s = self.sparse_q[i]
        if s is None:
            return []
        vector = SparseVector(tuple(s.indices), tuple(s.values))
        return self.store.search(COLLECTION, vector, using=SPARSE, filter=self._where, limit=self.limit)

    def hybrid(self, i: int, extra: Sequence[tuple[list, float]] = ()) -> list[Hit]:
        """What the retriever hands the reranker: the dense and sparse rankings (and `extra` (ranking, weight)
        pairs) fused by its RRF, each hit carrying the cosine the dense search measured (`Hit.dense_score`)."""
        dense = self.dense(i)
        rankings, weights = [dense, self.sparse(i)], [1.0, 1.0]
        for ranking, weight in extra:
            rankings.append(ranking)
            weights.append(weight)
        kw = {"weights": weights} if extra else {}  # weighted fusion only where the retriever has it
        fused = rrf(rankings, k=self.settings.rrf_k, limit=self.limit, **kw)
        cosine = {h.id: h.score for h in dense}
        return [to_hit(h).model_copy(update={"dense_score": cosine.get(h.id)}) for h in fused]

    @functools.cache  # noqa: B019 - one Bench a run: the parts are embedded once, not once a mode
    def parts(self, i: int) -> tuple[PartQuery, ...]:
        """What the retriever searches besides question `i` when it asks two things (decision 88)."""
        found = question_parts(self.questions[i].question)
        if len(found) == 1:
            return ()
        vectors = self.embedder.embed(found)
        return tuple(PartQuery(text, v, self._sparse.encode_query(text)) for text, v in zip(found, vectors, strict=True))

    def fused(self, i: int, rewrite: Rewrite | None, *, parts: bool = True) -> list[Hit]:
        """The retriever's own candidates (`hybrid_search` with `rewrite`, and the question's parts unless
        `parts=False`), each with its dense cosine."""
        cosines: dict[str, float] = {}
        hits = hybrid_search(self.store, COLLECTION, self.dense_q[i], self.sparse_q[i], self._where, self.limit,
                             self.settings.rrf_k, cosines=cosines, rewrite=rewrite, text=self.questions[i].question,
                             parts=self.parts(i) if parts else ())  # fmt: skip
        return [to_hit(h, cosines.get(h.id)) for h in hits]

    def engine(self, i: int, top_k: int = 10, *, parts: bool = True) -> list[Hit]:
        """What the engine answers with under the settings' defaults: the retriever's `Rewrite`, the reranker's
        scorer (`MMRAG_QUERY_FEEDBACK_DOCS`, `MMRAG_DENSE_FIRST_OVERLAP`, `MMRAG_RERANK_SENTENCE_WEIGHT`), a
        two-part question searched part by part too (``parts=False``: the engine before decision 88)."""
        if not hasattr(self, "_engine"):
            s = self.settings
            self._engine = (Rewrite(feedback_docs=s.query_feedback_docs, dense_first_overlap=s.dense_first_overlap),
                            build_scorer(None, embed=self.embed_units, sentence_weight=s.rerank_sentence_weight))  # fmt: skip
        rewrite, scorer = self._engine
        question = self.questions[i].question
        return rerank(question, self.fused(i, rewrite, parts=parts), top_k, scorer=scorer, parts=parts)

    def modes(self) -> dict[str, Callable[[int], list[Hit]]]:
        scorer = LexicalScorer()
        modes: dict[str, Callable[[int], list[Hit]]] = {
            "dense": lambda i: [to_hit(h) for h in self.dense(i)],
            "sparse": lambda i: [to_hit(h) for h in self.sparse(i)],
            "hybrid": self.hybrid,
            "hybrid + rerank": lambda i: rerank(self.questions[i].question, self.hybrid(i), 10, scorer=scorer),
            "engine defaults": self.engine,
        }
        return modes


def graph_mode(bench: Bench) -> tuple[Callable[[int], list[Hit]] | None, str]:
    """The '+ graph' row: hybrid with the knowledge-graph expansion's ranking fused in (`GraphQuery.ranking`, with
    the settings' hops, candidates and weight, as the retriever does), then reranked; the graph is built in-process from
    the indexed chunks with the indexer's own fact extraction. None and the reason when that cannot be done."""
    try:
        from search.graph.facts import IndexedChunk, build_facts
        from search.graph.graph import KnowledgeGraph
        from search.graph.retrieval import GraphQuery

        graph = KnowledgeGraph()
        for n, doc in enumerate(bench.docs):
            records, offset = [], None
            while True:
                page, offset = bench.store.scroll(COLLECTION, tenant="default", doc_id=doc.doc_id, offset=offset)
                records += page
                if offset is None:
                    break
            chunks = [IndexedChunk(r.payload.chunk_id, r.id, " ".join([*r.payload.headings, r.payload.text]))
                      for r in records]  # fmt: skip
            graph.apply(build_facts(tenant="default", doc_id=doc.doc_id, generation=1, revision=n + 1,
                                    batch_index=0, chunks=chunks))  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the row is optional: say why it is missing
        return None, f"search.graph could not be used ({type(err).__name__}: {err})"
    s = bench.settings
    hops = max(s.graph_hops, 1)
    scorer = LexicalScorer()

    def fused(i: int) -> list[Hit]:  # the candidates the retriever hands over with expansion on
        q = bench.questions[i]
        query = GraphQuery.of(graph, "default", q.question, hops=hops, limit=s.graph_candidates, weight=s.graph_weight)
        ranking = query.ranking(bench.store, COLLECTION, bench.dense_q[i], bench._where)
        return bench.hybrid(i, [(ranking, query.weight)])

    def run(i: int) -> list[Hit]:
        return rerank(bench.questions[i].question, fused(i), 10, scorer=scorer)

    run.fused = fused  # type: ignore[attr-defined]  # the "hybrid + graph" row (before reranking)
    return run, f"hops {hops}, {s.graph_candidates} candidates, weight {s.graph_weight}"


def fmt_row(name: str, values: dict[str, float], keys: Sequence[str], n: int) -> str:
    return f"{name:<18}" + "".join(f"{values[k]:>9.3f}" for k in keys) + f"{n:>6}"


def evaluate(bench: Bench) -> dict:
    answerable = [i for i, q in enumerate(bench.questions) if q.kind != "unanswerable"]
    keys = ("r@1", "r@10", "mrr", "ndcg@10")
    modes = bench.modes()
    graph, graph_note = graph_mode(bench)
    if graph is not None:
        modes["hybrid + graph"] = graph.fused  # type: ignore[attr-defined]
        modes["+ graph + rerank"] = graph
    results: dict[str, dict[str, dict[str, float]]] = {}
    timings: dict[str, float] = {}
    for name, fn in modes.items():
        per_kind: dict[str, list[dict[str, float]]] = defaultdict(list)
        t0 = time.perf_counter()
        for i in answerable:
            q = bench.questions[i]
            m = retrieval_metrics(q, fn(i))
            per_kind[q.kind].append(m)
            per_kind["all"].append(m)
        timings[name] = (time.perf_counter() - t0) / len(answerable) * 1000
        results[name] = {kind: {k: sum(m[k] for m in ms) / len(ms) for k in keys} | {"n": len(ms)}
                         for kind, ms in per_kind.items()}  # fmt: skip

    print(f"\nRetrieval over {len(answerable)} answerable questions (candidates: {bench.limit})")
    print(f"{'mode':<18}" + "".join(f"{k:>9}" for k in keys) + f"{'n':>6}{'ms/q':>8}")
    for name in results:
        print(fmt_row(name, results[name]["all"], keys, int(results[name]["all"]["n"])) + f"{timings[name]:>8.1f}")
    if graph is None:
        print(f"{'+ graph':<18}  (not measured: {graph_note})")
    else:
        print(f"  (graph expansion: {graph_note})")
    for kind in KINDS:
        if kind == "unanswerable":
            continue
        print(f"\n  kind {kind}")
        for name in results:
            if kind in results[name]:
                print("  " + fmt_row(name, results[name][kind], keys, int(results[name][kind]["n"])))

    answers = answer_metrics(bench)
    return {"digest": bench.digest, "retrieval": results, "answers": answers, "graph": graph_note}


def answer_metrics(bench: Bench) -> dict:
    """The offline answerer on the engine's reranked top 5 (`Bench.engine`), after the abstention check, per kind."""
    per_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = []
    for i, q in enumerate(bench.questions):
        hits = bench.engine(i, ANSWER_TOP_K)
        # Measured for every question (the reranker agent only embeds when the score alone would decline).
        paraphrase = paraphrase_cosine(q.question, hits, bench.embedder.embed_array)
        declined = abstains(hits, bench.settings.abstain_threshold, paraphrase=paraphrase,
                            paraphrase_threshold=bench.settings.abstain_paraphrase_cosine)  # fmt: skip
        answer = None if declined else extractive_answer(q.question, hits, embed=bench.embedder.embed_array)
        stats = per_kind[q.kind]
        if q.kind == "unanswerable":
            stats["declined"].append(float(declined))
        else:
            stats["wrongly declined"].append(float(declined))
            stats["page cited"].append(float(answer is not None and any(relevant(q, h) for h in answer.cited)))
            stats["fact present"].append(float(answer is not None and all(fact_found(f, answer.text) for f in q.facts)))
        top = hits[0].score if hits else 0.0
        rows.append((q.qid, q.kind, top, declined, "" if answer is None else answer.text.replace("\n", " ")[:110],
                     paraphrase))  # fmt: skip
    print("\nAnswers (offline extractive answerer, the engine defaults' top 5, abstention on)")
    cols = ("page cited", "fact present", "wrongly declined", "declined")
    print(f"{'kind':<14}" + "".join(f"{c:>18}" for c in cols) + f"{'n':>5}")
    total: dict[str, list[float]] = defaultdict(list)
    for kind in KINDS:
        stats = per_kind.get(kind)
        if not stats:
            continue
        for c, v in stats.items():
            total[c] += v
        n = len(next(iter(stats.values())))
        print(f"{kind:<14}" + "".join(f"{_share(stats.get(c)):>18}" for c in cols) + f"{n:>5}")
    print(f"{'all':<14}" + "".join(f"{_share(total.get(c)):>18}" for c in cols))
    calibration(rows, bench)
    return {"per_kind": {k: {c: sum(v) / len(v) for c, v in s.items()} for k, s in per_kind.items()}, "rows": rows}


def calibration(rows: list[tuple], bench: Bench) -> None:
    """How the two abstention signals trade unanswerable declined against answerable refused (the curves the
    defaults were picked from: the middle of the widest gap meeting both targets). A question is declined when
    its best reranked score is below `abstain_threshold` and its paraphrase cosine (None: no sentence of a hit
    holding its identifiers) is below `abstain_paraphrase_cosine`."""
    s = bench.settings
    answerable = [r for r in rows if r[1] != "unanswerable"]
    unanswerable = [r for r in rows if r[1] == "unanswerable"]

    def cos(r: tuple) -> str:
        return "-" if r[5] is None else f"{r[5]:.3f}"

    print(f"\nAbstention (score threshold {s.abstain_threshold:.2f}, paraphrase cosine {s.abstain_paraphrase_cosine:.2f})")
    print("  unanswerable (score/cosine): " + " ".join(f"{r[0]} {r[2]:.3f}/{cos(r)}" for r in sorted(unanswerable, key=lambda r: -r[2])))
    low = sorted(answerable, key=lambda r: r[2])[:6]
    print("  lowest answerable:           " + " ".join(f"{r[0]} {r[2]:.3f}/{cos(r)}" for r in low))
    for p in (0.0, s.abstain_paraphrase_cosine):
        for t in (0.30, 0.35, 0.38, 0.40, 0.42, 0.45, 0.50):
            declined = sum(abstains([_top(r)], t, paraphrase=r[5], paraphrase_threshold=p) for r in unanswerable)
            refused = sum(abstains([_top(r)], t, paraphrase=r[5], paraphrase_threshold=p) for r in answerable)
            print(f"  score {t:.2f}, paraphrase {'off ' if p == 0 else f'{p:.2f}'}: unanswerable declined "
                  f"{declined}/{len(unanswerable)}, answerable refused {refused}/{len(answerable)} ({refused / len(answerable):.1%})")  # fmt: skip
    for p in (0.45, 0.50, 0.54, 0.58, 0.62):
        declined = sum(abstains([_top(r)], s.abstain_threshold, paraphrase=r[5], paraphrase_threshold=p) for r in unanswerable)
        refused = sum(abstains([_top(r)], s.abstain_threshold, paraphrase=r[5], paraphrase_threshold=p) for r in answerable)
        print(f"  score {s.abstain_threshold:.2f}, paraphrase {p:.2f}: unanswerable declined {declined}/{len(unanswerable)}, "
              f"answerable refused {refused}/{len(answerable)} ({refused / len(answerable):.1%})")  # fmt: skip


def _top(row: tuple) -> Hit:
    """A stand-in for a question's best hit: only its score matters to `abstains`."""
    return Hit(chunk_id="c", doc_id="d", filename="f", page=1, text="", score=row[2])


def _share(values: list[float] | None) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):.2f} ({int(sum(values))}/{len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="keep the ingested store here and reuse it on the next run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--verbose", action="store_true", help="print each question's top score and answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = args.store or Path(tmp)
        store_dir.mkdir(parents=True, exist_ok=True)
        bench = Bench(store_dir)
        try:
            print(f"evaluation set {bench.digest}: {len(bench.docs)} documents, {sum(bench.chunks.values())} chunks, "
                  f"{len(bench.questions)} questions" + (f"; ingested in {bench.ingest_s:.0f} s" if bench.ingest_s else ""))  # fmt: skip
            out = evaluate(bench)
            if args.verbose:
                print()
                for qid, kind, top, declined, text, paraphrase in out["answers"]["rows"]:
                    cosine = "-" if paraphrase is None else f"{paraphrase:.3f}"
                    print(f"{qid} {kind:<12} top={top:.3f} cos={cosine} {'DECLINED' if declined else ''} {text}")
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))
        finally:
            bench.close()


if __name__ == "__main__":
    main()
