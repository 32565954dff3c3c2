"""Tests' view of the tenants' uploads buckets (`contracts.topology.uploads_bucket`)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.topology import uploads_bucket


async def uploads_state(js: JetStreamContext, tenant: str) -> tuple[int, int]:
    """Messages and bytes of `tenant`'s uploads bucket stream, (0, 0) while it has none: any object or chunk
    written changes them."""
    try:
        state = (await js.stream_info(f"OBJ_{uploads_bucket(tenant)}")).state
    except NotFoundError:
        return 0, 0
    return state.messages, state.bytes
