"""Streaming bytes into the JetStream Object Store while they are read, with a size limit.

nats-py's `ObjectStore.put` wants the whole payload or a synchronous reader (it calls `readinto` in an executor
thread since nats-io/nats.py#453); an HTTP upload is an async stream we must not buffer in memory. No upstream
issue asking `put` to take an async iterator was found (GitHub issues searched 2026-12); nats-io/nats.py#936
(open) adds a new Object Store package: check whether its `put` streams before keeping this writer.
`put_stream` writes the same on-the-wire layout as nats-py (chunks on `$O.<bucket>.C.<nuid>`, then one
rolled-up meta message on `$O.<bucket>.M.<name>`), so any NATS client reads the object back with a normal `get`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from hashlib import sha256

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.nuid import NUID
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
)

# A NUID generator of our own (nats-py's public `nats.nuid`), not the connection's private `_nuid`: chunk subjects
# only need to be unique, which NUID's random prefix guarantees per generator.
_NUID = NUID()


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


async def put_stream(
    js: JetStreamContext, bucket: str, name: str, chunks: AsyncIterator[bytes], *, max_bytes: int
) -> api.ObjectInfo:
    """Store the bytes of `chunks` as object `name`; returns once the object is durable.

    Raises `UploadTooLarge` as soon as more than `max_bytes` arrive, without reading further; whatever was
    written is purged, so a failed upload leaves nothing behind. The caller owns `chunks`.
    """
    nuid = _NUID.next().decode()  # the id scheme nats-py's own `put` uses (it reads the connection's private one)
    chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
    digest = sha256()
    pending: list[asyncio.Future] = []
    total = count = 0
    buffer = bytearray()

    async def send(payload: bytes) -> None:
        nonlocal count
        digest.update(payload)
        pending.append(await js.publish_async(chunk_subject, payload))
        count += 1

    try:
        async for piece in chunks:
            total += len(piece)
            if total > max_bytes:
                raise UploadTooLarge(max_bytes)
            buffer.extend(piece)
            while len(buffer) >= OBJ_DEFAULT_CHUNK_SIZE:
                await send(bytes(buffer[:OBJ_DEFAULT_CHUNK_SIZE]))
                del buffer[:OBJ_DEFAULT_CHUNK_SIZE]
        if buffer:
            await send(bytes(buffer))
        try:
            await asyncio.wait_for(asyncio.gather(*pending), 30)
        except asyncio.TimeoutError as err:  # not stored in time: NATS is down or overloaded
            raise nats.errors.TimeoutError from err
        info = api.ObjectInfo(
            name=name,
            bucket=bucket,
            nuid=nuid,
            size=total,
            chunks=count,
            mtime=datetime.now(UTC).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(digest.digest()).decode()),
            options=api.ObjectMetaOptions(max_chunk_size=OBJ_DEFAULT_CHUNK_SIZE),
        )
        meta_subject = OBJ_META_PRE_TEMPLATE.format(bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode())
        await js.publish(meta_subject, json.dumps(info.as_dict()).encode(), headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT})
        return info
    except BaseException:
        # Let in-flight chunks land first: JetStream may apply a purge before chunks it has not stored yet.
        if pending:
            await asyncio.wait(pending, timeout=5)
        # Best effort: with NATS down the purge fails too, and the orphaned chunks have no meta (invisible).
        with contextlib.suppress(Exception):
            await js.purge_stream(OBJ_STREAM_TEMPLATE.format(bucket=bucket), subject=chunk_subject)
        raise


async def remove_object(js: JetStreamContext, bucket: str, name: str) -> bool:
    """Remove object `name` entirely: its chunks and its meta message (nats-py's `ObjectStore.delete` leaves a
    meta marker that names the object). False if there was no such object."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    meta = OBJ_META_PRE_TEMPLATE.format(bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode())
    try:
        raw = await js.get_last_msg(stream, meta)
    except nats.js.errors.NotFoundError:
        return False
    nuid = json.loads(raw.data or b"{}").get("nuid")
    if nuid:
        await js.purge_stream(stream, subject=OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid))
    await js.purge_stream(stream, subject=meta)
    return True
