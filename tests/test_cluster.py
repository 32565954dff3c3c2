"""A three-node NATS cluster on loopback: the topology is replicated (R3) and survives the loss of a node."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from bus.topology import ensure_topology
from contracts.topology import PROGRESS_BUCKET, STREAMS, UPLOADS_BUCKET
from mmrag.processes import free_port, nats_server_binary, spawn, stop, wait_for_port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    ports = [(free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{cluster_port}" for _, cluster_port in ports)
    nodes = []
    for i, (port, cluster_port) in enumerate(ports):
        argv = [
            nats_server_binary(), "-js", "-sd", str(tmp_path / f"n{i}"), "-a", "127.0.0.1", "-p", str(port),
            "--server_name", f"n{i}", "--cluster_name", "mmrag", "--cluster", f"nats://127.0.0.1:{cluster_port}",
            "--routes", routes, "-l", str(tmp_path / f"n{i}.log"),
        ]  # fmt: skip
        proc = spawn(argv)
        wait_for_port("127.0.0.1", port, proc=proc, what=f"nats-server n{i}")
        nodes.append((proc, port))
    yield nodes
    for proc, _ in nodes:
        stop(proc)


async def test_streams_and_buckets_are_replicated_three_times_and_survive_a_node(cluster) -> None:
    urls = ",".join(f"nats://127.0.0.1:{port}" for _, port in cluster)
    nc = await nats.connect(servers=urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(60):
            while True:  # the cluster elects its JetStream meta leader first
                try:
                    await ensure_topology(js, replicas=3)
                    break
                except Exception:  # noqa: BLE001 - not ready yet (no meta leader / not enough peers)
                    await asyncio.sleep(0.5)
        for name in [*(s.name for s in STREAMS), f"OBJ_{UPLOADS_BUCKET}", f"KV_{PROGRESS_BUCKET}"]:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
        ack = await js.publish("docs.ingest.t.d1", b"{}")
        victim = next(proc for proc, port in cluster if port != nc.connected_url.port)
        victim.kill()
        victim.wait()
        async with asyncio.timeout(30):  # a quorum of two keeps the acknowledged message
            while True:
                try:
                    msg = await js.get_msg("DOCS", ack.seq)
                    break
                except Exception:  # noqa: BLE001 - leader election after the loss
                    await asyncio.sleep(0.3)
        assert msg.data == b"{}"
    finally:
        await nc.close()
