"""A search's model calls while a document is embedded, with and without turns (`models.turns`), in one process.

    .venv/bin/python bench/model_turns.py [--queries 30] [--every 0.5]

One run, three phases on the engine's own MiniLM (`agents.runtime.resources.text_embedder`, ONNX int8):
1. idle: a search's model work alone, every ``--every`` s: the question (`embed_queries`, the retriever) and 130
   short sentences (`embed_array`, the reranker's sentence scorer at its maximum, `search.rerank`);
2. beside an ingest without turns: a thread embeds passages in calls of `MMRAG_EMBEDDING_BATCH_SIZE` (32) chunks,
   without a pause, on the same model; the searches go on as in 1 (the engine before issue 15's fix);
3. the same with turns only: one model instance, the searches in the ``query`` role, the passages in ``ingest``,
   every thread at one CPU priority (the engine at 9b2aeb3);
4. turns and priority: both sides through `EmbeddingModels`, whose ingest side is its own instance loaded and
   called in a thread at `models.turns.INGEST_NICENESS` (the engine now).
Prints each phase's search latency (p50, p95, max) and the passages embedded per second beside it: the cost of the
turns to ingest. The machine is shared: read the phases against each other, within the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.runtime.resources import text_embedder  # noqa: E402
from agents.settings import AgentSettings  # noqa: E402
from bench.ingest import QUERIES  # noqa: E402
from bench.results import recorded  # noqa: E402
from models.embedding_models import EmbeddingModels  # noqa: E402
from models.turns import INGEST, QUERY, ModelTurns, TurnTakingEncoder  # noqa: E402
from search.rerank import SENTENCE_CANDIDATES, SENTENCE_UNITS  # noqa: E402

SENTENCE = ("The option sets the width of the pen that draws every line of the picture, in points, and applies to "
            "each path drawn after it, number {i}.")  # fmt: skip
PASSAGE = " ".join(SENTENCE.format(i=i) for i in range(9))  # ~230 word pieces: a full chunk


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def searches(query_model, n: int, every: float) -> list[float]:  # noqa: ANN001
    """Latency (s) of `n` searches' model work, one started every `every` s (open loop, one at a time)."""
    sentences = [SENTENCE.format(i=i) for i in range(SENTENCE_CANDIDATES * (SENTENCE_UNITS + 1))]
    out = []
    start = time.monotonic()
    for k in range(n):
        time.sleep(max(start + k * every - time.monotonic(), 0.0))
        t0 = time.monotonic()
        query_model.embed_queries([QUERIES[k % len(QUERIES)]])
        query_model.embed_array([QUERIES[k % len(QUERIES)], *sentences])
        out.append(time.monotonic() - t0)
    return out


def with_ingest(ingest_model, query_model, n: int, every: float, batch: int) -> tuple[list[float], float]:  # noqa: ANN001
    """The searches' latencies beside a thread embedding passages without a pause; and its passages/s."""
    stop = threading.Event()
    done = [0]

    def ingest() -> None:
        while not stop.is_set():
            ingest_model.embed([PASSAGE] * batch)
            done[0] += batch

    thread = threading.Thread(target=ingest, daemon=True)
    t0 = time.monotonic()
    thread.start()
    time.sleep(1.0)  # the ingest is under way before the first search
    latencies = searches(query_model, n, every)
    stop.set()
    thread.join()
    return latencies, done[0] / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=30, help="searches per phase")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between searches")
    args = ap.parse_args()
    settings = AgentSettings()
    raw = text_embedder(settings)
    turns = ModelTurns()
    models = EmbeddingModels("minilm", lambda: text_embedder(settings))
    batch = settings.embedding_batch_size
    raw.embed_array(["warm up"] * 8)

    phases: dict[str, tuple[list[float], float | None]] = {"idle": (searches(raw, args.queries, args.every), None)}
    phases["ingest, no turns"] = with_ingest(raw, raw, args.queries, args.every, batch)
    phases["ingest, turns"] = with_ingest(TurnTakingEncoder(raw, turns, INGEST), TurnTakingEncoder(raw, turns, QUERY),
                                          args.queries, args.every, batch)  # fmt: skip
    phases["turns + priority"] = with_ingest(models.get(None, "ingest"), models.get(None, "query"), args.queries,
                                             args.every, batch)  # fmt: skip
    lines = [f"{args.queries} searches per phase, one every {args.every} s (a question + "
             f"{SENTENCE_CANDIDATES * (SENTENCE_UNITS + 1)} sentences); passages in calls of {batch}"]  # fmt: skip
    idle_p95 = pct(phases["idle"][0], 95)
    for name, (lat, rate) in phases.items():
        ms = [x * 1000 for x in lat]
        beside = f"   passages/s beside: {rate:6.1f}" if rate is not None else ""
        lines.append(f"  {name:18} p50 {pct(ms, 50):6.0f} ms  p95 {pct(ms, 95):6.0f} ms  max {max(ms):6.0f} ms"
                     f"  p95/idle {pct(lat, 95) / idle_p95:5.1f}x{beside}")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    with recorded("model_turns"):
        main()
