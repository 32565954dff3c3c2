"""Real processes for tests: a nats-server, and `mmrag up` / `mmrag agent` as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bus.identities import ADMIN
from mmrag.natsauth import Credential, stored_credential
from mmrag.processes import free_port, port_in_use, start_nats_server, stop

BIN = Path(sys.executable).parent


def wait_port_free(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while port_in_use("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still in use after {timeout_s}s")
        time.sleep(0.1)


@dataclass
class NatsServer:
    store_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None  # e.g. users and permissions (`mmrag.natsauth`)
    pid_file: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.proc = start_nats_server(self.store_dir, port=self.port, config=self.config, pid_file=self.pid_file)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Engine:
    """`mmrag up` in a subprocess on free ports; `start()` returns once it printed its URL."""

    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    nats_monitor_port: int = field(default_factory=free_port)
    external_nats: str | None = None  # `mmrag up --nats-url`: no nats-server of its own
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def own_ports(self) -> tuple[int, ...]:
        return (self.port,) if self.external_nats else (self.port, self.nats_port, self.nats_monitor_port)

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.nats_monitor_port}"

    def nats_credential(self, name: str = ADMIN) -> Credential | None:
        """A credential `mmrag up` wrote for its own nats-server (default: the operator's full-access one); None
        with an external NATS or before the first start."""
        return None if self.external_nats else stored_credential(self.data_dir, name)

    @property
    def nats_url(self) -> str:
        """The engine's NATS, with the operator's credential in the URL: what tests and benches connect with."""
        if self.external_nats:
            return self.external_nats
        cred = self.nats_credential()
        return cred.url("127.0.0.1", self.nats_port) if cred else f"nats://127.0.0.1:{self.nats_port}"

    def start(self, timeout_s: float = 120) -> Engine:
        for port in self.own_ports:
            wait_port_free(port)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "mmrag"), "up", "--port", str(self.port), "--nats-port", str(self.nats_port),
             "--nats-monitor-port", str(self.nats_monitor_port), "--data-dir", str(self.data_dir),
             *(["--nats-url", self.external_nats] if self.external_nats else [])],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", **self.env},
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while b"mmrag is up" not in self.log_path.read_bytes()[offset:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mmrag up exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mmrag up did not start in {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def log_tail(self, n: int = 20000) -> str:
        """The end of the log: long enough for the thread and task stacks a hung stop writes (`Engine.stop`)."""
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # every thread's stack into the log, for the failure message
            time.sleep(2)
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL `mmrag up` itself (its children die with it) and wait until its ports are free."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        for port in self.own_ports:
            wait_port_free(port)


async def upload_bytes(
    session: aiohttp.ClientSession, url: str, data: bytes, filename: str, content_type: str = "application/pdf"
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    resp = await session.post(f"{url}/v1/documents", data=form)
    await resp.read()
    return resp


async def wait_status(
    session: aiohttp.ClientSession, url: str, doc_id: str, wanted: set[str], timeout_s: float = 120
) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        async with session.get(f"{url}/v1/documents/{doc_id}") as resp:
            if resp.status == 200:
                last = await resp.json()
                if last["status"] in wanted:
                    return last
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{doc_id} did not reach {wanted} in {timeout_s}s; last: {last}")


async def sse_events(session: aiohttp.ClientSession | None, url: str, body: dict) -> list[tuple[str, dict]]:
    """The (event, data) pairs of one `/v1/ask`, read by the CLI's client (httpx + httpx_sse).

    `session` is unused (kept so existing callers work): the client opens its own connection.
    """
    from mmrag.client import ask_events, client

    async with client(url) as http:
        return [e async for e in ask_events(http, body["question"], body.get("top_k", 5))]
