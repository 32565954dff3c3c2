"""The engines of the end-to-end tier.

`engine`: a tenant of ONE `mmrag up --auth` shared by the whole session (`shared_engine`), with its own API key,
a new one for each test: tests share the engine, never each other's documents. A module whose tests read one
corpus uploaded once (a module fixture) binds `engine` to `module_tenant`, one tenant for the module. What a test
reads of an engine (`url`, `nats_url`, `data_dir`, `log_tail()`) is there; `headers` go on its requests (the
`http` fixture and `tests.engine.sse_events` send them), `client_env` on the `mmrag` CLI. Starting `mmrag up`
costs seconds of both cores; a test that only adds documents and asks about them takes this one.

`private_engine`: a `mmrag up` of the module's own, in local mode (auth off, no key), for what must not touch the
shared one: killing or restarting its processes, other settings, the web UI's local mode. A module that needs one
binds it to the name `engine` with a module fixture (`def engine(private_engine): return private_engine`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from edge_api.keys import create_key
from tests.engine import Engine, TenantEngine

# The settings of the shared engine: small limits that make the error paths cheap to reach.
SHARED_ENV = {
    "MMRAG_MAX_UPLOAD_BYTES": str(1024 * 1024),  # 413 with a 3 MiB body (tests/e2e/test_engine_api.py)
    "MMRAG_MAX_QUERY_IMAGE_BYTES": str(256 * 1024),  # tests/e2e/test_image_search.py's QUERY_IMAGE_CAP
    "MMRAG_CONVERSATION_MAX_TURNS": "4",  # tests/e2e/test_conversations.py reaches the turn cap in 4 asks
}
_TENANT_NUMBERS = itertools.count(1)


@pytest.fixture(scope="session")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("shared-engine")
    eng = Engine(root / "data", root / "engine.log", args=("--auth",), env=SHARED_ENV).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"the shared mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


def new_tenant(shared: Engine, name: str, role: str = "writer") -> TenantEngine:
    """A tenant of the shared engine with a fresh key (the edge API re-reads its keys file when it changes)."""
    tenant = f"{re.sub(r'[^A-Za-z0-9_-]', '-', name)[-56:]}-{next(_TENANT_NUMBERS)}"
    _, key = create_key(shared.data_dir / "api-keys.json", tenant, role)
    return TenantEngine(shared, tenant, key)


@pytest.fixture
def engine(shared_engine: Engine, request: pytest.FixtureRequest) -> TenantEngine:
    """The test's own tenant of the shared engine."""
    return new_tenant(shared_engine, request.node.name)


@pytest.fixture(scope="module")
def module_tenant(shared_engine: Engine, request: pytest.FixtureRequest) -> TenantEngine:
    """One tenant of the shared engine for a whole module (its module fixtures upload a corpus once)."""
    return new_tenant(shared_engine, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def private_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A `mmrag up` of the module's own, local mode (uploads limited to 1 MiB to test 413 cheaply)."""
    root = tmp_path_factory.mktemp("engine")
    eng = Engine(root / "data", root / "engine.log", env={"MMRAG_MAX_UPLOAD_BYTES": str(1024 * 1024)}).start()
    yield eng
    code = eng.stop()
    assert code == 0, f"mmrag up did not stop cleanly ({code}):\n{eng.log_tail()}"


@pytest.fixture
async def http(request: pytest.FixtureRequest) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session that sends the key of the test's tenant (none for a private engine)."""
    names = [name for name in ("engine", "module_tenant") if name in request.fixturenames]
    headers = request.getfixturevalue(names[0]).headers if names else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=headers) as session:
        yield session
