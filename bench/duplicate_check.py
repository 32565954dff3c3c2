"""What the duplicate check costs at each upload (`edge_api/routes/documents.py`, decision 72), for a tenant holding
100, 1,000 and 5,000 documents, against a real nats-server: the claim of new bytes (one KV create) and the finding
of a duplicate (the claim's get, then the holder's record), beside a read of all the tenant's records (what the
document list does, and what a check by scanning them would cost). Also the count of the stored keys that every
such read now starts with (`bus.kv.stored_keys`, the guard against nats-py's early end-of-values marker).

    .venv/bin/python bench/duplicate_check.py

Prints the milliseconds of each read (median of 5; a shared machine: orders of magnitude). Figures, not a
pass/fail test.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.generations import GenerationStore  # noqa: E402
from bus.kv import stored_keys  # noqa: E402
from bus.progress import ProgressStore  # noqa: E402
from bus.topology import ensure_topology  # noqa: E402
from contracts.messages import DocumentStatus  # noqa: E402
from contracts.topology import PROGRESS_BUCKET, IndexGeneration  # noqa: E402
from edge_api.routes.documents import _claim_bytes, _tenant_documents  # noqa: E402
from edge_api.settings import EdgeSettings  # noqa: E402
from edge_api.state import Backbone  # noqa: E402
from tests.engine import NatsServer  # noqa: E402

SIZES = (100, 1000, 5000)
TENANT = "acme"
RUNS = 5


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


async def median_ms(make) -> float:  # noqa: ANN001 - a coroutine factory
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await make()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js)
            await (await GenerationStore.open(js)).bootstrap(1)
            kv = await js.key_value(PROGRESS_BUCKET)
            store = ProgressStore(kv, IndexGeneration(1))
            bb = Backbone(EdgeSettings(nats_url=server.url, auth="off"), nc, js)
            pattern = f"g1.{TENANT}.*"
            held = 0
            for size in SIZES:
                pending = []
                for n in range(held, size):
                    doc = f"{n:032x}"
                    record = store.new(TENANT, doc, 1, DocumentStatus.INDEXED, sha256=sha(n), source="hb", source_path=f"{n}.md")
                    pending.append(store.update(TENANT, doc, lambda _, r=record: r))
                    pending.append(_claim_bytes(bb, TENANT, sha(n), doc))
                    if len(pending) >= 200:
                        await asyncio.gather(*pending)
                        pending = []
                await asyncio.gather(*pending)
                held = size
                found = await _claim_bytes(bb, TENANT, sha(size // 2), "f" * 32)
                assert found is not None and found.doc_id == f"{size // 2:032x}"
                fresh = iter(range(10**9, 10**9 + RUNS))
                claim = await median_ms(lambda: _claim_bytes(bb, TENANT, sha(next(fresh)), "e" * 32))
                duplicate = await median_ms(lambda: _claim_bytes(bb, TENANT, sha(size // 2), "f" * 32))
                scan = await median_ms(lambda: _tenant_documents(bb, TENANT))
                count = await median_ms(lambda: stored_keys(kv, pattern))
                print(f"{size:>5} documents: new bytes claimed in {claim:.1f} ms, a duplicate found in {duplicate:.1f} ms; "
                      f"reading every record {scan:.0f} ms (counting the keys first {count:.1f} ms)")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
