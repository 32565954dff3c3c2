"""`mmrag up`: the whole engine on one machine, on embedded defaults.

One process tree: nats-server (child), the six agents (in this process, which also holds the embedded
Qdrant store), and the edge API (child process, so HTTP stays responsive while agents use the CPU).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from agents.processes import child_env, spawn, start_nats_server, stop, wait_for_port
from agents.registry import AGENT_NAMES
from agents.runtime.host import run_agents
from agents.settings import AgentSettings

log = logging.getLogger(__name__)


async def up(*, host: str, port: int, data_dir: Path, nats_port: int) -> None:
    data_dir = data_dir.resolve()
    nats = start_nats_server(data_dir / "nats", port=nats_port)
    nats_url = f"nats://127.0.0.1:{nats_port}"
    settings = AgentSettings(nats_url=nats_url, data_dir=data_dir)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)

    edge = None
    started = asyncio.Event()
    agents = asyncio.create_task(run_agents(AGENT_NAMES, settings, stop_event, started=started))
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([agents, waiter], return_when=asyncio.FIRST_COMPLETED)
        if agents.done():
            agents.result()  # start-up failed: raise its error
        edge = spawn(
            [sys.executable, "-m", "edge_api"],
            env=child_env(MMRAG_HOST=host, MMRAG_PORT=str(port), NATS_URL=nats_url),
        )
        await asyncio.to_thread(wait_for_port, host, port, proc=edge, what="edge API")
        print(f"mmrag is up: http://{host}:{port}  (data in {data_dir}; Ctrl-C stops)", flush=True)
        await agents
    finally:
        stop_event.set()
        if edge is not None:
            await asyncio.to_thread(stop, edge)
        if not agents.done():
            await asyncio.wait_for(agents, 60)
        await asyncio.to_thread(stop, nats)
        log.info("mmrag stopped")
