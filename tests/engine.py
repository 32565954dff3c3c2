"""Real processes for tests: a nats-server, and `mmrag up` / `mmrag agent` as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bus.identities import ADMIN
from mmrag.natsauth import Credential, stored_credential
from mmrag.processes import port_in_use, start_nats_server, stop

BIN = Path(sys.executable).parent


# Each pytest-xdist worker draws ports from its own range below the kernel's ephemeral range (32768-60999): a port
# an engine gave up when it was SIGKILLed (and takes again on restart) can then never be handed to the other
# worker's engine by bind(0) in between (seen once: a re-index restart found its NATS monitoring port taken).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_PORT_BASE = 10_000 + 5_000 * (int(_WORKER[2:]) + 1 if _WORKER.startswith("gw") and _WORKER[2:].isdigit() else 0)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, from this test worker's own range, and never one this process handed out before:
    an engine binds its ports seconds after it drew them, so two draws of one port (one engine's HTTP and NATS
    monitoring ports, seen in CI: its "HTTP API" answered with nats-server's 404 page) would both look free."""
    for _ in range(200):
        port = random.randrange(_PORT_BASE, _PORT_BASE + 5_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORT_BASE}..{_PORT_BASE + 4_999}")


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
    args: tuple[str, ...] = ()  # more options of `mmrag up`, e.g. ("--auth",)
    proc: subprocess.Popen[bytes] | None = None
    # Another checkout's engine (`bench/ingest.py --before`): its own `.venv/bin/mmrag`, started in that checkout so
    # the child processes it runs with `python -m` import its code, not this one's. None: this checkout's.
    checkout: Path | None = None
    # A private engine runs in local mode (auth off): every request is the default tenant, sent with no key.
    tenant = "default"
    headers: dict[str, str] = field(default_factory=dict)  # what a request to it carries: nothing
    client_env: dict[str, str] = field(default_factory=dict)  # what the `mmrag` CLI needs to reach it: nothing

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
            [str((self.checkout / ".venv" / "bin" if self.checkout else BIN) / "mmrag"), "up", "--port", str(self.port), "--nats-port", str(self.nats_port),
             "--nats-monitor-port", str(self.nats_monitor_port), "--data-dir", str(self.data_dir),
             *(["--nats-url", self.external_nats] if self.external_nats else []), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", **self.env},
            cwd=self.checkout,
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


@dataclass(frozen=True)
class TenantEngine:
    """One tenant of a shared `mmrag up --auth` (tests/e2e/conftest.py): what a test module sees of the engine.

    It reads like an `Engine` (`url`, `nats_url`, `data_dir`, `log_tail()`) but cannot stop or kill the engine
    the other modules use; `headers` (aiohttp) and `client_env` (the `mmrag` CLI) carry the tenant's key.
    """

    shared: Engine
    tenant: str
    key: str

    @property
    def url(self) -> str:
        return self.shared.url

    @property
    def nats_url(self) -> str:
        return self.shared.nats_url

    @property
    def monitor_url(self) -> str:
        return self.shared.monitor_url

    @property
    def data_dir(self) -> Path:
        return self.shared.data_dir

    def log_tail(self, n: int = 20000) -> str:
        return self.shared.log_tail(n)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def client_env(self) -> dict[str, str]:
        return {"MMRAG_API_KEY": self.key}


async def upload_bytes(
    session: aiohttp.ClientSession, url: str, data: bytes, filename: str, content_type: str = "application/pdf"
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    resp = await session.post(f"{url}/v1/documents", data=form)
    await resp.read()
    return resp


async def upload_until_accepted(
    session: aiohttp.ClientSession, url: str, data: bytes, filename: str, timeout_s: float = 180
) -> str:
    """Upload as a careful client does while the engine recovers, and return the document's id.

    A 503 ``backbone_unavailable`` (nothing was stored), or no connection at all (the edge API is restarting), is
    retried (a connection lost mid-request raises: the upload may have been stored); a 503
    ``submission_unconfirmed`` is settled by the document's status first (200: it was stored, keep
    that id; 404: it was not, upload again), so a retry never submits a document twice. Any other answer raises.
    """
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                resp = await upload_bytes(session, url, data, filename)
            except aiohttp.ClientConnectorError:  # nothing was sent: safe to try again
                await asyncio.sleep(0.5)
                continue
            if resp.status == 202:
                return (await resp.json())["doc_id"]
            if resp.status != 503:
                raise AssertionError(f"upload of {filename}: {resp.status} {await resp.text()}")
            error = (await resp.json())["error"]
            if error["code"] == "submission_unconfirmed":
                while True:
                    try:
                        async with session.get(f"{url}/v1/documents/{error['doc_id']}") as status:
                            if status.status == 200:
                                return error["doc_id"]
                            if status.status == 404:
                                break
                    except aiohttp.ClientConnectorError:
                        pass
                    await asyncio.sleep(0.5)
            await asyncio.sleep(0.5)


async def wait_status(
    session: aiohttp.ClientSession, url: str, doc_id: str, wanted: set[str], timeout_s: float = 120
) -> dict:
    """The document's record once its status is one of `wanted`, following the tenant's `GET /v1/progress`.

    The record is read once; then the progress stream tells each change as it lands (no polling interval). The
    stream ends when nothing of the tenant is moving (`idle`): then the record is read again, which also covers a
    change that landed between the first read and the stream's start (the stream does not repeat finished ones).
    """
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        async with session.get(f"{url}/v1/documents/{doc_id}") as resp:
            if resp.status == 200:
                last = await resp.json()
                if last["status"] in wanted:
                    return last
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(deadline - started, 0.1)):
                found = await _follow_progress(session, url, doc_id, wanted)
        except (TimeoutError, aiohttp.ClientError):
            found = None
        if found is not None:
            return found
        if time.monotonic() - started < 0.2:  # nothing moving yet (e.g. not recorded yet): not a busy loop
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{doc_id} did not reach {wanted} in {timeout_s}s; last: {last}")


async def _follow_progress(session: aiohttp.ClientSession, url: str, doc_id: str, wanted: set[str]) -> dict | None:
    """Read `/v1/progress` until `doc_id` reaches a wanted status (its record) or the stream ends (None)."""
    no_total = aiohttp.ClientTimeout(total=None)  # the caller's deadline bounds it, not the session's timeout
    async with session.get(f"{url}/v1/progress", headers={"Accept": "text/event-stream"}, timeout=no_total) as resp:
        if resp.status != 200:
            return None
        event, data = "message", []
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):  # a keep-alive comment
                continue
            if line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].removeprefix(" "))
            elif not line:  # the end of one event
                if event == "document":
                    record = json.loads("\n".join(data))
                    if record["doc_id"] == doc_id and record["status"] in wanted:
                        return record
                elif event in ("idle", "error"):  # nothing of the tenant moves any more, or the stream broke
                    return None
                event, data = "message", []
    return None


async def sse_events(session: aiohttp.ClientSession | None, url: str, body: dict) -> list[tuple[str, dict]]:
    """The (event, data) pairs of one `/v1/ask`, read by the CLI's client (httpx + httpx_sse).

    The client opens its own connection; it sends the API key of `session`'s default headers, if any (a tenant of
    the shared engine, `TenantEngine.headers`).
    """
    from mmrag.client import ask_events, client

    auth = session.headers.get("Authorization", "") if session is not None else ""
    async with client(url, api_key=auth.removeprefix("Bearer ") or None) as http:
        return [
            e async for e in ask_events(http, body["question"], body.get("top_k", 5), body.get("filters"),
                                        body.get("conversation_id"), body.get("regenerate", False))
        ]  # fmt: skip
