"""What one page of `GET /v1/documents` costs (edge_api/routes/documents.py `select_documents`): a tenant holding
300, 1,000, 5,000 and 20,000 documents (progress records in the KV bucket, as the agents write them), against a
real nats-server, with another tenant's 5,000 records beside them (never read).

    .venv/bin/python bench/doclist.py

Prints, per size, the milliseconds of the first page (limit 50) newest first, sorted by name with a filename
search, and the first page by size ascending; and the peak of Python allocations during one request
(tracemalloc): the list keeps 2 x (limit + 1) records, but nats-py queues every value the server pushes ahead
of the scan, so the peak grows with the tenant's documents. One run each on a shared machine: orders of
magnitude. Figures, not a pass/fail test.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import recorded  # noqa: E402
from bus.generations import GenerationStore  # noqa: E402
from bus.progress import ProgressStore  # noqa: E402
from bus.topology import ensure_topology  # noqa: E402
from contracts.messages import DocumentStatus  # noqa: E402
from contracts.topology import PROGRESS_BUCKET, IndexGeneration  # noqa: E402
from edge_api.routes.documents import ListQuery, select_documents  # noqa: E402
from edge_api.settings import EdgeSettings  # noqa: E402
from edge_api.state import Backbone  # noqa: E402
from tests.engine import NatsServer  # noqa: E402

SIZES = (300, 1000, 5000, 20000)
TENANT, OTHER = "acme", "beta"


def query(sort: str, descending: bool, text: str | None = None, limit: int = 50) -> ListQuery:
    return ListQuery(limit, sort, descending, None, text, None, None)


async def seed(store: ProgressStore, tenant: str, first: int, last: int) -> None:
    pending = []
    for n in range(first, last):
        doc = f"{n:032x}"
        record = store.new(tenant, doc, n + 1, DocumentStatus.INDEXED, filename=f"report {n % 997} {n}.pdf",
                           size=1000 + n, collections=["a"] if n % 3 else [], pages=12, pages_parsed=12,
                           batch_chunks={i: 30 for i in range(20)}, batches_total=20, batches_indexed=list(range(20)),
                           chunks_total=600, chunks_indexed=600)  # fmt: skip
        pending.append(store.update(tenant, doc, lambda _, r=record: r))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def timed(bb: Backbone, q: ListQuery) -> tuple[float, int]:
    started = time.perf_counter()
    page = await select_documents(bb, TENANT, q)
    return (time.perf_counter() - started) * 1000, page.total


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js)
            await (await GenerationStore.open(js)).bootstrap(1)
            store = ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1))
            bb = Backbone(EdgeSettings(nats_url=server.url, auth="off"), nc, js)
            await seed(store, OTHER, 0, 5000)
            held = 0
            print("documents | newest first, ms | name + q=report 1, ms | size asc, ms | peak alloc, KiB")
            for size in SIZES:
                await seed(store, TENANT, held, size)
                held = size
                newest, total = await timed(bb, query("uploaded", True))
                assert total == size
                named, found = await timed(bb, query("name", False, "report 1"))
                by_size, _ = await timed(bb, query("size", False))
                tracemalloc.start()
                await select_documents(bb, TENANT, query("uploaded", True))
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(f"{size:>9} | {newest:>16.0f} | {named:>21.0f} | {by_size:>12.0f} | {peak / 1024:>15.0f}")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    with recorded("doclist"):
        asyncio.run(main())
