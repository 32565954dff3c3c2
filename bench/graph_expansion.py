"""Knowledge-graph cost: fact extraction throughput, graph size and memory, and expansion latency per question.

    .venv/bin/python bench/graph_expansion.py [--docs 320] [--chunks-per-doc 32]

Builds a deliberately hub-heavy synthetic corpus (every chunk names people, projects, error codes and module
names drawn from small pools, so entities are named by hundreds or thousands of chunks and the graph is dense),
extracts the facts of every batch as the indexer does (`search.graph.build_facts`), folds them into a graph
(`KnowledgeGraph.apply`, as every retriever replica does), and times `expand` for a few questions at hops 1 and
2. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.graph import IndexedChunk, KnowledgeGraph, build_facts, expand  # noqa: E402

FIRST = ["Dana", "Ada", "Alan", "Grace", "Linus", "Guido", "Ken", "Barbara", "Edsger", "Donald"]
LAST = ["Smith", "Lovelace", "Turing", "Hopper", "Torvalds", "Rossum", "Thompson", "Liskov", "Dijkstra", "Knuth"]
PROJECTS = [f"Project {w}" for w in "Falcon Heron Osprey Kestrel Harrier Merlin Condor Eagle Hawk Raven".split()]
QUESTIONS = ["Who reviewed Project Falcon after error E1234?", "what does pump_17 do", "Did Grace Hopper approve it?"]


def chunk_text(rng: random.Random) -> str:
    return " ".join(
        f"{rng.choice(FIRST)} {rng.choice(LAST)} reviewed {rng.choice(PROJECTS)} after error E{rng.randint(1000, 1399)} "
        f"in module pump_{rng.randint(0, 300)}."
        for _ in range(6)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=320)
    parser.add_argument("--chunks-per-doc", type=int, default=32)
    args = parser.parse_args()
    rng = random.Random(1)
    batches = [
        [IndexedChunk(f"d{d}c{i}", str(uuid.UUID(int=rng.getrandbits(128))), chunk_text(rng)) for i in range(args.chunks_per_doc)]
        for d in range(args.docs)
    ]  # fmt: skip
    n = args.docs * args.chunks_per_doc
    t0 = time.perf_counter()
    facts = [build_facts(tenant="t", doc_id=f"d{d}", generation=1, revision=1, batch_index=0, chunks=b)
             for d, b in enumerate(batches)]  # fmt: skip
    extract_s = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    graph = KnowledgeGraph()
    for f in facts:
        graph.apply(f)
    fold_s = time.perf_counter() - t0
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tg = graph.tenant("t")
    assert tg is not None
    print(f"{n} chunks, {tg.graph.number_of_nodes()} entities, {tg.graph.number_of_edges()} relations")
    print(f"extraction: {n / extract_s:,.0f} chunks/s; folding into the graph: {n / fold_s:,.0f} chunks/s; "
          f"graph memory {memory / 2**20:.0f} MiB (facts kept per batch included)")  # fmt: skip
    for hops in (1, 2):
        times = []
        for _ in range(20):
            for q in QUESTIONS:
                t0 = time.perf_counter()
                expand(graph, "t", q, hops=hops, limit=10)
                times.append(time.perf_counter() - t0)
        times.sort()
        print(f"expand, hops {hops}: p50 {times[len(times) // 2] * 1000:.1f} ms, "
              f"p99 {times[int(len(times) * 0.99)] * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("graph_expansion"):
        main()
