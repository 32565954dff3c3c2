"""What the per-tenant quota check costs at each upload (edge_api/quotas.py, decision 57): the usage read of a
tenant holding 100, 1,000 and 5,000 documents (its progress records, then each document's last submission on
the DOCS stream), against a real nats-server.

    .venv/bin/python bench/quota_usage.py

Prints the milliseconds of each read (one run each; a shared machine: orders of magnitude). Paid only when
MMRAG_TENANT_MAX_DOCUMENTS or MMRAG_TENANT_MAX_BYTES is set. Figures, not a pass/fail test.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bus.generations import GenerationStore  # noqa: E402
from bus.progress import ProgressStore  # noqa: E402
from bus.publish import Outgoing, publish  # noqa: E402
from bus.topology import ensure_topology  # noqa: E402
from contracts.messages import DocumentStatus, DocumentSubmitted  # noqa: E402
from contracts.topology import PROGRESS_BUCKET, IndexGeneration, Subjects  # noqa: E402
from edge_api import quotas  # noqa: E402
from edge_api.settings import EdgeSettings  # noqa: E402
from edge_api.state import Backbone  # noqa: E402
from tests.engine import NatsServer  # noqa: E402

SIZES = (100, 1000, 5000)
TENANT = "acme"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js)
            await (await GenerationStore.open(js)).bootstrap(1)
            store = ProgressStore(await js.key_value(PROGRESS_BUCKET), IndexGeneration(1))
            settings = EdgeSettings(nats_url=server.url, auth="off", tenant_max_documents=10**9, tenant_max_bytes=10**12)
            bb = Backbone(settings, nc, js)
            held = 0
            for size in SIZES:
                pending = []
                for n in range(held, size):
                    doc = f"{n:032x}"
                    submitted = DocumentSubmitted(doc_id=doc, tenant=TENANT, filename="a.pdf", object_name=f"{TENANT}/{doc}",
                                                  size=1000, content_type="application/pdf")  # fmt: skip
                    pending.append(publish(js, Outgoing(Subjects.ingest(TENANT, doc), submitted, msg_id=doc)))
                    pending.append(store.update(TENANT, doc, lambda _, d=doc: store.new(TENANT, d, 1, DocumentStatus.INDEXED)))
                    if len(pending) >= 200:
                        await asyncio.gather(*pending)
                        pending = []
                await asyncio.gather(*pending)
                held = size
                started = time.perf_counter()
                usage = await quotas.usage(bb, TENANT)
                elapsed = time.perf_counter() - started
                assert usage is not None and usage.documents == size and usage.bytes == size * 1000
                print(f"{size:>5} documents: usage read in {elapsed * 1000:.0f} ms")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
