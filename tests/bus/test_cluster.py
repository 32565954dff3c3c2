"""A three-node NATS cluster on loopback, and `mmrag up --nats-url` on an existing NATS.

- the topology is replicated (R3) and survives the loss of a node;
- the engine on a cluster through the loss of a node: tests/e2e/test_cluster_engine.py;
- `mmrag up --nats-url` starts no nats-server, leaves that NATS running when it stops, and refuses in one line
  a NATS that is unreachable, has no JetStream, or cannot hold the requested replicas.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from bus.topology import ensure_topology
from bus.uploads import ensure_uploads_bucket
from contracts.topology import PROGRESS_BUCKET, STREAMS, uploads_bucket
from mmrag.processes import nats_server_binary, spawn, stop, wait_for_port
from tests.engine import free_port

BIN = Path(sys.executable).parent
DOCS = 50


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def start_cluster(root: Path) -> list[Node]:
    """Three nats-servers with JetStream on loopback, routed into one cluster; their stores and logs in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{cluster_port}" for _, cluster_port, _ in ports)
    nodes = []
    for i, (port, cluster_port, monitor_port) in enumerate(ports):
        argv = [
            nats_server_binary(), "-js", "-sd", str(root / f"n{i}"), "-a", "127.0.0.1", "-p", str(port),
            "-m", str(monitor_port), "--server_name", f"n{i}", "--cluster_name", "mmrag",
            "--cluster", f"nats://127.0.0.1:{cluster_port}", "--routes", routes, "-l", str(root / f"n{i}.log"),
        ]  # fmt: skip
        proc = spawn(argv)
        wait_for_port("127.0.0.1", port, proc=proc, what=f"nats-server n{i}")
        nodes.append(Node(f"n{i}", proc, port, monitor_port))
    return nodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = start_cluster(tmp_path)
    yield nodes
    for node in nodes:
        stop(node.proc)


def urls(nodes: list[Node]) -> str:
    return ",".join(node.url for node in nodes)


async def test_streams_and_buckets_are_replicated_three_times_and_survive_a_node(cluster: list[Node]) -> None:
    nc = await nats.connect(servers=urls(cluster).split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(60):
            while True:  # the cluster elects its JetStream meta leader first
                try:
                    await ensure_topology(js, replicas=3)
                    break
                except Exception:  # noqa: BLE001 - not ready yet (no meta leader / not enough peers)
                    await asyncio.sleep(0.5)
        await ensure_uploads_bucket(js, "t")  # a tenant's bucket takes the replicas of the topology
        for name in [*(s.name for s in STREAMS), f"OBJ_{uploads_bucket('t')}", f"KV_{PROGRESS_BUCKET}"]:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
        ack = await js.publish("docs.ingest.t.d1", b"{}")
        victim = next(node.proc for node in cluster if node.port != nc.connected_url.port)
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


# --------------------------------------------------------------------------- mmrag up --nats-url refusals


def refused(nats_url: str, tmp_path: Path, **env: str) -> str:
    """Run `mmrag up --nats-url` expecting a refusal: the one stderr line."""
    run = subprocess.run(
        [str(BIN / "mmrag"), "up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), "--nats-url", nats_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "mmrag is up" not in run.stdout
    assert not (tmp_path / "d" / "nats").exists()  # no store of its own
    return lines[0]


def test_an_unreachable_nats_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}"
    assert "unreachable" in refused(url, tmp_path)


def test_a_nats_without_jetstream_is_refused_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)])  # no -js
    try:
        wait_for_port("127.0.0.1", port, proc=proc, what="nats-server")
        line = refused(f"nats://127.0.0.1:{port}", tmp_path)
        assert "has no JetStream" in line and "-js" in line
        assert proc.poll() is None  # left running
    finally:
        stop(proc)


def test_more_replicas_than_servers_are_refused_in_one_line(nats_server, tmp_path: Path) -> None:
    line = refused(nats_server.url, tmp_path, MMRAG_STREAM_REPLICAS="3")
    assert "refused the topology with 3 replica(s)" in line and "MMRAG_STREAM_REPLICAS" in line
