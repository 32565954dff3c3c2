"""What the locked bus costs: publish rate of the edge identity (its permission list, decision 61) vs `admin` (no
permissions) on one nats-server with the config `mmrag up` writes, interleaved, median of 3.

    .venv/bin/python bench/nats_permissions.py [DATA_DIR]     # a temporary dir by default; about 20 s
"""

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nats

from bus.connection import connect_options
from bus.topology import ensure_topology
from mmrag import natsauth
from mmrag.processes import free_port, start_nats_server, stop


async def rate(url, cred, n, js_mode):
    nc = await nats.connect(**connect_options(url, user=cred.user, password=cred.password))
    js = nc.jetstream()
    t = time.perf_counter()
    if js_mode:
        futs = [await js.publish_async(f"docs.ingest.t{i % 50}.d{i}", b"{}") for i in range(n)]
        await asyncio.gather(*futs)
    else:
        for i in range(n):
            await nc.publish(f"query.retrieve.t{i}", b"x")
        await nc.flush()
    dt = time.perf_counter() - t
    await nc.close()
    return n / dt


async def main():
    own = len(sys.argv) < 2
    data = Path(tempfile.mkdtemp(prefix="mmrag-natsperm-")) if own else Path(sys.argv[1])
    port = free_port()
    proc = start_nats_server(data / "nats", port=port, config=natsauth.write_server_config(data))
    try:
        creds = natsauth.local_credentials(data)
        url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(**connect_options(url, user="admin", password=creds["admin"].password))
        await ensure_topology(nc.jetstream(), [])
        await nc.close()
        for mode, n in (("core", 50000), ("jetstream", 10000)):
            res = {}
            for round_ in range(3):  # alternating who goes first
                for who in ("edge", "admin") if round_ % 2 == 0 else ("admin", "edge"):
                    res.setdefault(who, []).append(await rate(url, creds[who], n, mode == "jetstream"))
            edge, admin = sorted(res["edge"])[1], sorted(res["admin"])[1]
            print(f"{mode:9s} msgs/s, median of 3: edge (permissions) {edge:,.0f}  admin (none) {admin:,.0f}")
    finally:
        stop(proc)
        if own:
            shutil.rmtree(data)


if __name__ == "__main__":
    asyncio.run(main())
