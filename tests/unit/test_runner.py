"""`mmrag up` as a process tree: one engine per data dir (lock), supervised children (restart, reap, give up),
with dummy children. A real `mmrag up` (monitoring, children killed): tests/e2e/test_runner_engine.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from mmrag.datadir import LOCK_NAME, DataDirInUse, DataDirLock
from mmrag.processes import port_in_use
from mmrag.supervisor import ChildSpec, GaveUp, Supervisor
from tests.engine import BIN, free_port

LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)\n"
)
HOLD_LOCK = (
    "import sys; from pathlib import Path; from mmrag.datadir import DataDirLock\n"
    "DataDirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()\n"
)


async def until(cond: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s}s")
        await asyncio.sleep(every_s)


def reaped(pid: int) -> bool:
    """Gone for good: not running, and not a zombie waiting for its parent to reap it."""
    return not psutil.pid_exists(pid)


@pytest.fixture
def lock_holder(tmp_path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process that holds the lock of `tmp_path/data` until its stdin closes."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"  # blocks until it holds the lock
    yield data, proc
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------- the data dir lock


def test_lock_names_the_holder_and_dies_with_it(lock_holder) -> None:
    data, holder = lock_holder
    assert (data / LOCK_NAME).read_text().strip() == str(holder.pid)
    with pytest.raises(DataDirInUse) as refused:
        DataDirLock(data).acquire()
    assert refused.value.pid == holder.pid
    assert str(data) in str(refused.value) and f"process {holder.pid}" in str(refused.value)

    holder.kill()  # SIGKILL: no clean-up ran, the lock file stays; the kernel drops the lock
    holder.wait()
    with DataDirLock(data):
        assert (data / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(DataDirInUse):
            DataDirLock(data).acquire()  # a second open file description of this same process is refused too
    with DataDirLock(data):  # released on exit: taken again
        pass


def test_mmrag_up_refuses_a_locked_data_dir_before_starting_anything(lock_holder) -> None:
    data, holder = lock_holder
    nats_port = free_port()
    run = subprocess.run(
        [str(BIN / "mmrag"), "up", "--data-dir", str(data), "--port", str(free_port()), "--nats-port", str(nats_port),
         "--nats-monitor-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1  # "before starting anything" is checked below by what exists, not by a clock
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert str(data.resolve()) in lines[0] and f"process {holder.pid}" in lines[0]
    assert "mmrag is up" not in run.stdout
    assert not (data / "nats").exists() and not port_in_use("127.0.0.1", nats_port)
    assert holder.poll() is None
    with pytest.raises(DataDirInUse):  # the holder still holds it
        DataDirLock(data).acquire()


def _refused_start(data_dir: Path, port: int, nats_port: int, monitor_port: int) -> str:
    """The one line `mmrag up` prints on stderr when it refuses to start with these ports (exit status 1)."""
    run = subprocess.run(
        [str(BIN / "mmrag"), "up", "--data-dir", str(data_dir), "--port", str(port),
         "--nats-port", str(nats_port), "--nats-monitor-port", str(monitor_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def test_mmrag_up_refuses_a_port_in_use_in_one_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _refused_start(tmp_path / "d", free_port(), free_port(), port)
    assert f"port {port}" in line and "--nats-monitor-port" in line
    assert DataDirLock(tmp_path / "d").acquire()  # the refused start let go of the lock


def test_mmrag_up_refuses_one_port_given_twice_and_free_port_never_repeats_itself(tmp_path) -> None:
    """Both free, one port for the HTTP API and NATS monitoring: nats-server would take it first and the edge
    API's start check would find nats-server's page there (seen in CI, where two draws gave one port)."""
    port = free_port()
    line = _refused_start(tmp_path / "d", port, free_port(), port)
    assert f"port {port}" in line and "--port" in line and "--nats-monitor-port" in line
    drawn = [free_port() for _ in range(300)]
    assert len(set(drawn)) == len(drawn)


# --------------------------------------------------------------------------- the supervisor, with dummy children


def _deaths(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mmrag.supervisor" and text in r.getMessage()]


async def test_supervisor_reaps_reports_and_restarts_a_killed_child(caplog) -> None:
    caplog.set_level(logging.INFO, logger="mmrag.supervisor")
    port = free_port()
    sup = Supervisor(backoff_s=0.1)
    first = (await sup.start(ChildSpec("dummy", [sys.executable, "-c", LISTENER, str(port)], listen=("127.0.0.1", port)))).pid
    try:
        os.kill(first, signal.SIGKILL)
        await until(lambda: reaped(first), 5, "the killed child reaped (no zombie)")
        await until(lambda: sup.pid("dummy") not in (None, first), 10, "a new child")
        await until(lambda: port_in_use("127.0.0.1", port), 10, "the new child listening")
        lines = _deaths(caplog, f"dummy (pid {first})")
        assert len(lines) == 1 and "was killed by SIGKILL" in lines[0] and "restarting it in 0.1s" in lines[0]
        assert _deaths(caplog, f"dummy restarted (pid {sup.pid('dummy')})")
    finally:
        second = sup.pid("dummy")
        await sup.stop_all()
    assert second is not None and reaped(second)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and str(second) in r.getMessage()]


async def test_supervisor_gives_up_on_a_child_that_keeps_dying(caplog) -> None:
    caplog.set_level(logging.INFO, logger="mmrag.supervisor")
    sup = Supervisor(max_restarts=3, window_s=60, backoff_s=0.01)
    await sup.start(ChildSpec("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"]))
    reason = await asyncio.wait_for(sup.failed(), 20)
    assert isinstance(reason, GaveUp)
    assert str(reason) == "crasher died 4 times within 60s; giving up and stopping mmrag"
    lines = _deaths(caplog, "exited with code 3")
    assert len(lines) == 4  # one line per death, the last one says it gives up
    assert "giving up" in lines[-1] and all("restarting it" in line for line in lines[:-1])
    assert sup.pid("crasher") is None  # not restarted again
    await sup.stop_all()


async def test_supervisor_stop_is_not_a_death(caplog) -> None:
    caplog.set_level(logging.INFO, logger="mmrag.supervisor")
    sup = Supervisor(backoff_s=0.01)
    proc = await sup.start(ChildSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]))
    await sup.stop("sleeper")
    assert proc.returncode is not None and reaped(proc.pid)
    assert sup.pid("sleeper") is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_new_data_dir_and_its_lock_are_private_to_their_user(tmp_path) -> None:
    """Uploads, indexes and API keys live there: no other local user may list or read them."""
    data = tmp_path / "new" / "data"
    with DataDirLock(data):
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / LOCK_NAME).stat().st_mode) == 0o600
