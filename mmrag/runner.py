"""`mmrag up`: the whole engine on one machine, on embedded defaults.

One process tree: nats-server (child), the eight agents (seven of the pipeline and the re-index coordinator: in
this process, which also holds the embedded Qdrant store), and the edge API (child process, so HTTP stays
responsive while agents use the CPU).

With `nats_url` (``mmrag up --nats-url``) the engine uses that NATS (a server or a cluster) instead: no
nats-server child, nothing of it supervised or stopped; the topology is ensured there with
`MMRAG_STREAM_REPLICAS` replicas before the agents start (`mmrag.external_nats`), and an unreachable server or
one without JetStream stops the start with one line.

The data dir is locked for the life of the process (`mmrag.datadir`): a second engine on it is refused
before anything starts. The children are supervised (`mmrag.supervisor`): one that dies is reported and
restarted; one that keeps dying stops the engine with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from bus.connection import redacted
from bus.tasks import await_chain, cancel_and_wait
from edge_api.settings import LOOPBACK_HOSTS
from mmrag import natsauth
from mmrag.datadir import DataDirLock
from mmrag.processes import StartError, child_env, nats_server_argv, port_in_use
from mmrag.supervisor import ChildSpec, Supervisor

log = logging.getLogger(__name__)

NATS_HOST = "127.0.0.1"
KEYS_FILE_NAME = "api-keys.json"
NATS_SERVER = "nats-server"
EDGE_API = "edge API"
# How long the agents get to finish in-flight batches after Ctrl-C before they are cancelled.
AGENTS_STOP_S = 60


class ShutdownHung(RuntimeError):
    """The agents had to be cancelled after the signal: stopped, but an in-flight batch may have been cut."""


async def up(
    *,
    host: str,
    port: int,
    data_dir: Path,
    nats_port: int,
    nats_monitor_port: int = 8222,
    supervisor: Supervisor | None = None,
    auth: bool = False,
    nats_url: str | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. Raises `DataDirInUse`, `StartError` or `GaveUp` with a one-line message.

    Auth is off only in local mode: bound to loopback and without `auth`. Otherwise it is on, with the keys of
    `MMRAG_API_KEYS_FILE` (or `MMRAG_API_KEYS`) if set, else of ``<data dir>/api-keys.json``; when that holds no
    key yet, one operator key for the default tenant is created and printed once.
    """
    data_dir = data_dir.resolve()
    with DataDirLock(data_dir):
        ports = [("HTTP API", host, port, "--port")]
        if not nats_url:  # an external NATS: its ports are not ours to check
            ports += [
                ("NATS", NATS_HOST, nats_port, "--nats-port"),
                ("NATS monitoring", NATS_HOST, nats_monitor_port, "--nats-monitor-port"),
            ]
        for (what, _, p, option), (other, _, q, other_option) in itertools.combinations(ports, 2):
            if p == q:  # the first to bind would take it, and the HTTP check would find the other's server
                raise StartError(f"{what} and {other} are both given port {p}: pick another {option} or {other_option}")
        for what, h, p, option in ports:
            if port_in_use(h, p):
                raise StartError(f"port {p} on {h} ({what}) is already in use: stop what runs there or pick another {option}")
        if nats_url:
            await _prepare_external_nats(nats_url)
        auth_env = _auth_env(auth or host.lower() not in LOOPBACK_HOSTS, data_dir)
        await _run(
            host=host, port=port, data_dir=data_dir, nats_port=nats_port, nats_monitor_port=nats_monitor_port,
            supervisor=supervisor or Supervisor(), auth_env=auth_env, external_nats=nats_url or None,
        )  # fmt: skip


async def _prepare_external_nats(nats_url: str) -> None:
    """Check the external NATS and ensure the topology there, before the agents take seconds to load."""
    from agents.settings import AgentSettings
    from contracts.topology import IndexGeneration
    from mmrag.external_nats import prepare_external_nats

    settings = AgentSettings(nats_url=nats_url)
    generation = IndexGeneration(settings.index_generation)
    user, password = settings.nats_credentials()
    await prepare_external_nats(
        nats_url, replicas=settings.stream_replicas, generations=(generation,), user=user, password=password
    )


def _auth_env(auth: bool, data_dir: Path) -> dict[str, str]:
    """The edge API's auth settings; creates (and prints, once) a first key when auth has none: an `operator` key,
    because whoever starts the engine runs it (re-index included); tenant keys come from `mmrag keys create`."""
    from edge_api.keys import create_key, load_file

    if not auth:
        return {"MMRAG_AUTH": "off"}
    if os.environ.get("MMRAG_API_KEYS") and not os.environ.get("MMRAG_API_KEYS_FILE"):
        return {"MMRAG_AUTH": "on"}
    keys_file = Path(os.environ.get("MMRAG_API_KEYS_FILE") or data_dir / KEYS_FILE_NAME)
    if not load_file(keys_file):
        entry, key = create_key(keys_file, "default", "operator")
        print(
            f"API key {entry.id} (role operator, tenant default), shown only this once: {key}\n"
            f"  stored hashed in {keys_file}; use it as MMRAG_API_KEY or --api-key; more with `mmrag keys create`",
            flush=True,
        )
    return {"MMRAG_AUTH": "on", "MMRAG_API_KEYS_FILE": str(keys_file)}


async def _run(
    *, host: str, port: int, data_dir: Path, nats_port: int, nats_monitor_port: int, supervisor: Supervisor,
    auth_env: dict[str, str] | None = None, external_nats: str | None = None,
) -> None:
    # Imported here, after the lock: loading the agents (torch, models) takes seconds, refusing must not.
    from agents.runtime.host import run_agents
    from agents.settings import AgentSettings
    from mmrag.registry import AGENT_NAMES, agent_types

    nats_url = external_nats or f"nats://{NATS_HOST}:{nats_port}"
    monitor_url = f"http://{NATS_HOST}:{nats_monitor_port}"
    nats_where = f"NATS {redacted(nats_url)} (external)" if external_nats else f"NATS {nats_url} (monitoring {monitor_url})"
    store_dir = data_dir / "nats"
    nats_config: Path | None = None
    # Our own nats-server runs with authentication: each child gets its own identity's credential (an external
    # NATS: the credentials of the environment, MMRAG_NATS_USER/MMRAG_NATS_PASSWORD or the URL's).
    agents_env: dict[str, str] = {}
    edge_env: dict[str, str] = {}
    if not external_nats:
        creds = natsauth.local_credentials(data_dir)
        nats_config = natsauth.write_server_config(data_dir)
        agents_env, edge_env = creds[natsauth.AGENTS].env(), creds[natsauth.EDGE].env()
        nats_where += f", credentials in {natsauth.auth_dir(data_dir)}"
    settings = AgentSettings(
        nats_url=nats_url, data_dir=data_dir,
        **({"nats_user": agents_env["MMRAG_NATS_USER"], "nats_password": agents_env["MMRAG_NATS_PASSWORD"]}
           if agents_env else {}),
    )  # fmt: skip
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)

    if not external_nats:
        store_dir.mkdir(parents=True, exist_ok=True)
    nats = ChildSpec(
        NATS_SERVER,
        nats_server_argv(
            store_dir, host=NATS_HOST, port=nats_port, monitor_port=nats_monitor_port, config=nats_config,
            pid_file=natsauth.pid_file(data_dir),
        ),
        listen=(NATS_HOST, nats_port),
    )
    edge = ChildSpec(
        EDGE_API,
        [sys.executable, "-m", "edge_api"],
        env=child_env(
            MMRAG_HOST=host, MMRAG_PORT=str(port), NATS_URL=nats_url, **edge_env,
            **(auth_env or {"MMRAG_AUTH": "off"}),
        ),
        listen=(host, port),
    )
    agents: asyncio.Task[None] | None = None
    helpers: list[asyncio.Task] = []
    hung = False
    try:
        if not external_nats:
            await supervisor.start(nats)
        started = asyncio.Event()
        agents = asyncio.create_task(run_agents(agent_types(AGENT_NAMES), settings, stop_event, started=started))
        gave_up = asyncio.create_task(supervisor.failed())
        ready = asyncio.create_task(started.wait())
        helpers += [gave_up, ready]
        await asyncio.wait([agents, gave_up, ready], return_when=asyncio.FIRST_COMPLETED)
        if gave_up.done():
            raise gave_up.result()
        if agents.done():
            agents.result()  # start-up failed: raise its error (or Ctrl-C came during start-up)
            return
        await supervisor.start(edge)
        print(
            f"mmrag is up: http://{host}:{port}  {nats_where}  data {data_dir}  Ctrl-C stops",
            flush=True,
        )
        # Wait for the signal too, not only for the agents: their shutdown is bounded below, in `finally` (where
        # a stuck task's stack is logged; a blocked loop is reported by the agents' `LoopWatchdog`).
        signalled = asyncio.create_task(stop_event.wait())
        helpers.append(signalled)
        await asyncio.wait([agents, gave_up, signalled], return_when=asyncio.FIRST_COMPLETED)
        if gave_up.done():
            raise gave_up.result()
        if agents.done():
            agents.result()
    finally:
        log.info("mmrag stopping: the agents finish their in-flight work (at most %d s)", AGENTS_STOP_S)
        stop_event.set()
        await supervisor.stop(EDGE_API)
        if agents is not None:
            await asyncio.wait([agents], timeout=AGENTS_STOP_S)  # finish in-flight batches, drain (nats still up)
            if not agents.done():
                log.error(
                    "agents did not stop within %d s; cancelling them. Still running:\n%s", AGENTS_STOP_S,
                    _task_stacks(),
                )  # fmt: skip
                hung = True
            with contextlib.suppress(BaseException):  # its error, if any, was raised above
                await cancel_and_wait(agents)
        await supervisor.stop_all()
        for task in helpers:
            task.cancel()
        log.info("mmrag stopped")
    if hung:  # stopped, but not cleanly: exit non-zero so that supervisors and tests notice
        raise ShutdownHung(f"the agents did not stop within {AGENTS_STOP_S} s of the signal; see the log above")


def _task_stacks() -> str:
    """Where every other task of this loop is waiting, down its chain of awaits (a task's own stack shows only its
    outermost frame: "await self.process(msgs)" says nothing of what `process` awaits), then every thread's stack
    (a task waiting on an executor waits on one of them): what a hung shutdown needs in its log to be diagnosed."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task() and not task.done():
            out.write(f"Task {task.get_name()}:\n")
            out.writelines(f"  {line}\n" for line in await_chain(task))
    for thread_id, frame in sys._current_frames().items():  # noqa: SLF001 - the documented way to read them
        out.write(f"Thread {thread_id}:\n{''.join(traceback.format_stack(frame, limit=8))}")
    return out.getvalue()
