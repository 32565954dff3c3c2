"""Probing what a NATS identity may do: a connection that records the server's permission refusals.

nats-server answers a refused publish or subscribe with an asynchronous ``-ERR 'Permissions Violation ...'`` (a
JetStream API call then times out without a reply); `Probe.refused` waits for that error, `Probe.allowed` checks
that an action worked and drew none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext

from bus.connection import connect_options
from bus.identities import Permissions
from mmrag.natsauth import Credential, authorization
from tests.engine import NatsServer

VIOLATION = "permissions violation"


class Probe:
    def __init__(self, nc: nats.NATS, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors
        self.js: JetStreamContext = nc.jetstream(timeout=1.5)

    @classmethod
    async def connect(cls, url: str, user: str, password: str) -> Probe:
        errors: list[str] = []

        async def on_error(err: Exception) -> None:
            errors.append(str(err).lower())

        nc = await nats.connect(
            **connect_options(url, user=user, password=password), error_cb=on_error, allow_reconnect=False,
            connect_timeout=2,
        )  # fmt: skip
        return cls(nc, errors)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def refused(self, action: Callable[[], Awaitable[Any]], what: str) -> None:
        """`action` must draw a permissions violation (whatever it raises meanwhile: usually a timeout)."""
        self.errors.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(action(), 0.5)  # a refused request gets no reply: no need to wait it out
        for _ in range(40):
            if any(VIOLATION in e for e in self.errors):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what}: was allowed (no permissions violation; errors {self.errors})")

    async def allowed(self, action: Callable[[], Awaitable[Any]], what: str) -> Any:
        """`action` must succeed and draw no permissions violation."""
        self.errors.clear()
        try:
            result = await action()
        except Exception as err:
            raise AssertionError(f"{what}: failed with {err!r} (errors {self.errors})") from err
        await self.nc.flush()
        assert not [e for e in self.errors if VIOLATION in e], f"{what}: {self.errors}"
        return result


def locked_server(tmp_path: Path, users: list[tuple[Credential, Permissions | None]]) -> NatsServer:
    """A nats-server whose only users are `users` (the config `mmrag.natsauth` writes), not yet started."""
    config = tmp_path / "nats-auth.conf"
    config.write_text(json.dumps(authorization(users)))
    os.chmod(config, 0o600)
    return NatsServer(tmp_path / "nats", config=config)
