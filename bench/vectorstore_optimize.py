"""Can searches run while the embedded engine builds its HNSW index? How long is the build?

Fills an EdgeShardStore collection with random 384-d points, then runs
``maintain()`` (which calls ``EdgeShard.optimize()``) in one thread while a
heartbeat thread ticks every 10 ms and a search thread queries in a loop.
If the engine released the GIL while building, both would keep running.

    PYTHONPATH=. python bench/vectorstore_optimize.py --points 20000

Prints query latency before/after the build, the build time, how many
heartbeat ticks and searches happened during it, and the longest stall.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from search.vectorstore import (
    TEXT_DENSE,
    CollectionSchema,
    EdgeShardStore,
    OptimizePolicy,
    PointPayload,
    SearchFilter,
    VectorPoint,
)

DIM = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(0)

    def vec() -> list[float]:
        return [rng.gauss(0, 1) for _ in range(DIM)]

    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeShardStore(Path(tmp), OptimizePolicy(min_points=1, idle_seconds=0))
        store.create_collection("bench", CollectionSchema(text_dim=DIM, sparse=False))
        started = time.perf_counter()
        for start in range(0, args.points, 1000):
            store.upsert(
                "bench",
                [
                    VectorPoint(
                        str(uuid.uuid4()),
                        PointPayload(
                            tenant="a", doc_id=f"d{i // 50}", revision=1, chunk_id=str(i), index=i, page=1,
                            modality="text", text="", filename="f.pdf",
                        ),
                        text=vec(),
                    )
                    for i in range(start, min(start + 1000, args.points))
                ],
            )
        print(f"upserted {args.points} x {DIM}-d in {time.perf_counter() - started:.1f} s")
        query, where = vec(), SearchFilter(tenant="a")

        def search_ms(n: int = 20) -> float:
            times = []
            for _ in range(n):
                t = time.perf_counter()
                store.search("bench", query, using=TEXT_DENSE, filter=where, limit=10)
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1000

        info = store.shard_info("bench")
        print(f"before: segments={info.segments_count} indexed={info.indexed_vectors_count}; "
              f"search median {search_ms():.1f} ms")

        ticks: list[float] = []
        searches: list[float] = []
        building = threading.Event()
        done = threading.Event()

        def heartbeat() -> None:
            while not done.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0.01)

        def searcher() -> None:
            building.wait()
            while not done.is_set():
                store.search("bench", query, using=TEXT_DENSE, filter=where, limit=10)
                searches.append(time.perf_counter())

        threads = [threading.Thread(target=heartbeat), threading.Thread(target=searcher)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        building.set()
        t0 = time.perf_counter()
        built = store.maintain()
        t1 = time.perf_counter()
        done.set()
        for thread in threads:
            thread.join()

        during = [t for t in ticks if t0 <= t <= t1]
        marks = [t0, *during, t1]
        stall = max(b - a for a, b in zip(marks, marks[1:]))
        print(f"maintain() -> {built} in {t1 - t0:.1f} s: {len(during)} heartbeat ticks "
              f"(expected ~{(t1 - t0) / 0.01:.0f} if not blocked), "
              f"{sum(t0 <= t <= t1 for t in searches)} searches completed, longest stall {stall * 1000:.0f} ms")
        info = store.shard_info("bench")
        print(f"after: segments={info.segments_count} indexed={info.indexed_vectors_count}; "
              f"search median {search_ms():.1f} ms")
        t = time.perf_counter()
        print(f"maintain() again -> {store.maintain()} in {(time.perf_counter() - t) * 1000:.1f} ms")
        store.close()


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("vectorstore_optimize"):
        main()
