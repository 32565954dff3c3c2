"""`mmrag up --nats-url`: check an existing NATS (server or cluster) before the engine uses it.

The engine does not start, supervise or stop that NATS; it only needs it to answer with JetStream and to
accept the topology (`bus.topology.ensure_topology`, with `MMRAG_STREAM_REPLICAS` replicas). Anything else is
a `StartError` with one line that says what is wrong, before any agent loads a model:

- no server in the list answers: "unreachable";
- a server answers but JetStream is off (no responder on ``$JS.API.INFO``): "has no JetStream";
- the server refuses the topology (e.g. 3 replicas on a single server): the server's own reason;
- a cluster still electing its JetStream meta leader answers "temporarily unavailable": that is waited out,
  up to `within_s`.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.js.errors import APIError, ServiceUnavailableError

from bus.connection import connect_options, redacted, refused_credentials
from bus.topology import ensure_topology
from contracts.topology import IndexGeneration
from mmrag.processes import StartError

CONNECT_TIMEOUT_S = 2.0
RETRY_S = 0.5
# JetStream API errors that waiting cannot cure (a 4xx is never cured either):
REPLICAS_NOT_SUPPORTED = 10074  # "replicas > 1 not supported in non-clustered mode" (a 500)


async def prepare_external_nats(
    url: str, *, replicas: int, generations: tuple[IndexGeneration, ...] = (IndexGeneration(1),), within_s: float = 60.0,
    user: str | None = None, password: str | None = None,
) -> None:
    """Connect to `url` (comma-separated servers), check JetStream and ensure the topology; raise `StartError`.

    Returns once the streams, consumers and buckets exist with `replicas` replicas. Closes its connection.
    `user`/`password`: the agents' identity (MMRAG_NATS_USER/MMRAG_NATS_PASSWORD); else the URL's, if any.
    """
    options = connect_options(url, user=user, password=password)
    url = redacted(url)  # from here on only for messages
    if not options["servers"]:
        raise StartError("--nats-url is empty: give nats://host:port, or several comma-separated")
    seen: list[Exception] = []

    async def remember(err: Exception) -> None:  # nats-py reports a refusal here, then raises "no servers"
        seen.append(err)

    try:
        async with asyncio.timeout(within_s):
            nc = await nats.connect(
                **options, name="mmrag-up-check", connect_timeout=CONNECT_TIMEOUT_S, allow_reconnect=True,
                max_reconnect_attempts=1, reconnect_time_wait=RETRY_S, error_cb=remember,
            )  # fmt: skip
    except (OSError, TimeoutError, nats.errors.Error) as err:
        refusal = next((e for e in [err, *seen] if refused_credentials(e)), None)
        if refusal is not None:
            raise StartError(
                f"NATS at {url} refused the credentials ({refusal}): set MMRAG_NATS_USER/MMRAG_NATS_PASSWORD (or "
                "nats://user:password@host:port) to a user of that server (docs/operations.md, 'NATS identities')"
            ) from err
        raise StartError(f"NATS at {url} is unreachable ({type(err).__name__}: {err}); is it running?") from err
    try:
        await _ensure(nc, url, replicas, generations, within_s)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _ensure(
    nc: nats.NATS, url: str, replicas: int, generations: tuple[IndexGeneration, ...], within_s: float
) -> None:
    js = nc.jetstream()
    last: Exception | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        try:
            await ensure_topology(js, generations, replicas=replicas)
            return
        except ServiceUnavailableError as err:
            if not err.description:  # no responder at all on the JetStream API: JetStream is off
                raise StartError(
                    f"NATS at {url} has no JetStream: start nats-server with -js (or `jetstream {{}}` in its config)"
                ) from err
            last = err  # "JetStream system temporarily unavailable": a cluster electing its meta leader
        except APIError as err:
            if err.err_code == REPLICAS_NOT_SUPPORTED or (err.code is not None and 400 <= err.code < 500):
                raise StartError(
                    f"NATS at {url} refused the topology with {replicas} replica(s): {err.description} "
                    "(MMRAG_STREAM_REPLICAS must not exceed the cluster's JetStream servers)"
                ) from err
            last = err
        except (TimeoutError, nats.errors.Error) as err:  # a node going away under us, no quorum yet
            last = err
        await asyncio.sleep(RETRY_S)
    reason = getattr(last, "description", None) or repr(last)
    raise StartError(f"JetStream at {url} did not accept the topology within {within_s:.0f}s: {reason}")
