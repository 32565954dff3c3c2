"""A real `mmrag up` as a process tree: its up line and NATS monitoring, its data dir lock, and its supervised
children killed (restarted, or given up on). It kills the engine's processes: a private engine (tests/e2e/conftest.py).
The lock and the supervisor with dummy children: tests/unit/test_runner.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import aiohttp
import psutil
import pytest

from mmrag.datadir import LOCK_NAME, DataDirLock
from mmrag.processes import port_in_use
from tests.engine import BIN, Engine, free_port, sse_events, upload_bytes, wait_status
from tests.factories import make_pdf
from tests.unit.test_runner import reaped, until


@pytest.fixture(scope="module")
def engine(private_engine: Engine) -> Engine:
    return private_engine


def _children(engine: Engine) -> list[psutil.Process]:
    assert engine.proc is not None
    return psutil.Process(engine.proc.pid).children()


def _nats_pid(engine: Engine) -> int | None:
    return next((p.pid for p in _children(engine) if p.name() == "nats-server"), None)


def _edge_pid(engine: Engine) -> int | None:
    return next((p.pid for p in _children(engine) if "edge_api" in p.cmdline()), None)


def _log_since(engine: Engine, offset: int) -> str:
    return engine.log_path.read_bytes()[offset:].decode(errors="replace")


async def test_up_line_and_nats_monitoring(engine: Engine, http: aiohttp.ClientSession) -> None:
    line = next(ln for ln in engine.log_path.read_text().splitlines() if "mmrag is up" in ln)
    nats = f"nats://127.0.0.1:{engine.nats_port}"
    assert f"{engine.url}  NATS {nats} (monitoring {engine.monitor_url}), credentials in {engine.data_dir}" in line
    assert engine.nats_credential().password not in engine.log_path.read_text()  # never printed
    async with http.get(f"{engine.monitor_url}/varz") as resp:
        assert resp.status == 200
        varz = await resp.json(content_type=None)
    assert varz["port"] == engine.nats_port and varz["jetstream"]["config"]["store_dir"].startswith(str(engine.data_dir))
    async with http.get(f"{engine.monitor_url}/jsz?consumers=true") as resp:
        assert resp.status == 200 and (await resp.json(content_type=None))["streams"] > 0


async def test_second_engine_on_the_same_data_dir_is_refused(engine: Engine, http: aiohttp.ClientSession) -> None:
    assert (engine.data_dir / LOCK_NAME).read_text().strip() == str(engine.proc.pid)
    started = time.monotonic()
    run = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "mmrag"), "up", "--data-dir", str(engine.data_dir), "--port", str(free_port()),
         "--nats-port", str(free_port()), "--nats-monitor-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and time.monotonic() - started < 30
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert str(engine.data_dir.resolve()) in lines[0] and f"process {engine.proc.pid}" in lines[0]
    # The first engine keeps working.
    resp = await upload_bytes(http, engine.url, b"The second engine was refused; the ibex count is 31.", "ibex.txt", "text/plain")
    assert resp.status == 202
    status = await wait_status(http, engine.url, (await resp.json())["doc_id"], {"indexed", "failed"})
    assert status["status"] == "indexed", status


async def test_killed_nats_server_is_restarted_and_the_engine_recovers(engine: Engine, http: aiohttp.ClientSession) -> None:
    pid = _nats_pid(engine)
    assert pid is not None
    offset = engine.log_path.stat().st_size
    os.kill(pid, signal.SIGKILL)
    await until(lambda: reaped(pid), 5, "the killed nats-server reaped (no zombie)")
    await until(lambda: _nats_pid(engine) not in (None, pid), 20, "a new nats-server")

    deadline = time.monotonic() + 20
    while True:  # the edge API and the agents reconnect by themselves
        resp = await upload_bytes(http, engine.url, make_pdf(["After the restart the lynx count is 58."]), "lynx.pdf")
        if resp.status == 202 or time.monotonic() > deadline:
            break
        assert resp.status == 503, await resp.text()
        await asyncio.sleep(0.2)
    assert resp.status == 202, f"upload not accepted 20 s after the restart: {resp.status}\n{engine.log_tail()}"
    doc_id = (await resp.json())["doc_id"]
    assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
    events = await sse_events(http, engine.url, {"question": "What is the lynx count?", "top_k": 3})
    assert events[-1][0] == "done" and any(k == "citation" and d["doc_id"] == doc_id for k, d in events)
    async with http.get(f"{engine.monitor_url}/varz") as mon:
        assert mon.status == 200  # monitoring came back on its port too

    log = _log_since(engine, offset)
    deaths = [line for line in log.splitlines() if f"nats-server (pid {pid})" in line]
    assert len(deaths) == 1 and "was killed by SIGKILL" in deaths[0], log
    assert "Traceback" not in log, log


async def test_killed_edge_api_is_restarted(engine: Engine, http: aiohttp.ClientSession) -> None:
    pid = _edge_pid(engine)
    assert pid is not None
    offset = engine.log_path.stat().st_size
    os.kill(pid, signal.SIGKILL)
    await until(lambda: reaped(pid), 5, "the killed edge API reaped (no zombie)")

    async def healthy() -> bool:
        try:
            async with http.get(f"{engine.url}/health") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False

    deadline = time.monotonic() + 20
    while not await healthy():
        assert time.monotonic() < deadline, f"/health not back within 20 s\n{engine.log_tail()}"
        await asyncio.sleep(0.2)
    assert _edge_pid(engine) not in (None, pid)
    async with http.get(f"{engine.url}/ready") as resp:
        assert resp.status in (200, 503)  # answering; NATS may still be connecting
    log = _log_since(engine, offset)
    deaths = [line for line in log.splitlines() if f"edge API (pid {pid})" in line]
    assert len(deaths) == 1 and "was killed by SIGKILL" in deaths[0], log
    assert "Traceback" not in log, log


async def test_nats_server_that_keeps_dying_stops_the_engine_non_zero(tmp_path) -> None:
    engine = Engine(tmp_path / "data", tmp_path / "engine.log").start()
    try:
        edge = _edge_pid(engine)
        killed: list[int] = []
        deadline = time.monotonic() + 120
        while engine.proc.poll() is None:  # kill every nats-server the supervisor starts, until it gives up
            assert time.monotonic() < deadline, f"mmrag up did not give up\n{engine.log_tail()}"
            pid = _nats_pid(engine) if engine.proc.poll() is None else None
            if pid is not None and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            await asyncio.sleep(0.05)
        assert engine.proc.wait() == 1
        assert len(killed) == 6  # 5 restarts allowed within 60 s; the 6th death stops the engine
        log = engine.log_path.read_text()
        assert "error: mmrag up: nats-server died 6 times within 60s; giving up and stopping mmrag" in log
        for pid in killed:
            assert len([line for line in log.splitlines() if f"nats-server (pid {pid})" in line]) == 1
        assert "Traceback" not in log, log
        assert edge is not None and reaped(edge)  # the edge API was stopped with it
        for port in (engine.port, engine.nats_port, engine.nats_monitor_port):
            assert not port_in_use("127.0.0.1", port)
        with DataDirLock(engine.data_dir):  # and the data dir is free for the next start
            pass
    finally:
        engine.stop()
