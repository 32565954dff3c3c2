"""Two JetStream KV patterns used by every record kind we keep in a bucket (progress, generations).

- :func:`compare_and_set`: a read-modify-write on one key, retried on a revision conflict, so concurrent writers
  (N indexers, the parser, the coordinator) never lose an update nor apply one to a stale value;
- :func:`current_values`: the current value of every key matching a pattern, through one watch;
- :func:`watch`: every watch of a bucket opens through it, so a stopped watch leaves no consumer behind;
- :func:`latest`: a key's last value as the stream's leader has it (read-your-writes in a cluster).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

T = TypeVar("T")

# How long nats-server keeps a watch's consumer once nobody listens on it. nats-py's default for a KV watch is 5
# minutes, and `stop()` only unsubscribes; a stream takes at most 1,000 consumers (the server's default limit). So
# 1,000 document lists, progress streams or generation look-ups within 5 minutes made every further watch of the
# bucket fail with "maximum consumers limit reached" (found by bench/reliability.py). A live watch has interest
# and is never dropped for inactivity; a stopped one goes within seconds.
WATCH_INACTIVE_S = 5.0


async def watch(kv: KeyValue, pattern: str) -> KeyValue.KeyWatcher:
    """`kv.watch(pattern)` (current values, a None marker, then every change, deletes included) whose server-side
    consumer is removed `WATCH_INACTIVE_S` after the watcher stops. Call ``await watcher.stop()`` when done."""
    return await kv.watch(pattern, inactive_threshold=WATCH_INACTIVE_S)


async def compare_and_set(kv: KeyValue, key: str, decode: Callable[[bytes | None], T | None],
                          change: Callable[[T | None], T | None], *, attempts: int = 50) -> T | None:  # fmt: skip
    """Apply ``change`` to the decoded current value of ``key`` (None if absent) atomically; return what is stored.

    ``change`` returning None, its argument, or an equal value writes nothing (and returns the current value).
    Raises RuntimeError when the key kept changing under ``attempts`` tries.
    """
    for _ in range(attempts):
        try:
            entry = await kv.get(key)
            current, revision = decode(entry.value), entry.revision
        except KeyNotFoundError:
            current, revision = None, None
        new = change(current)
        if new is None or new is current or new == current:
            return current
        payload = new.model_dump_json().encode()  # type: ignore[attr-defined]  (a pydantic model)
        try:
            if revision is None:
                await kv.create(key, payload)
            else:
                await kv.update(key, payload, last=revision)
            return new
        except KeyWrongLastSequenceError:
            continue  # someone else wrote first: re-read and re-apply
    raise RuntimeError(f"{key} kept changing under {attempts} attempts")


async def stored_keys(kv: KeyValue, pattern: str) -> int:
    """How many keys matching ``pattern`` the bucket's stream holds a message for (deleted keys' markers too).

    nats-py has no public accessor for a bucket's stream and subject prefix; these private names have been
    stable since its KV support began."""
    info = await kv._js.stream_info(kv._stream, subjects_filter=f"{kv._pre}{pattern}")  # noqa: SLF001
    return len(info.state.subjects or {})


async def current_values(
    kv: KeyValue, pattern: str, *, timeout_s: float = 5.0, expected: int | None = None
) -> list[tuple[str, bytes]]:
    """(key, value) of every live key matching ``pattern`` (deleted and empty values left out).

    One watch, which delivers the current value of each key and a None marker at the end of those. (Not
    ``kv.keys(filters=...)``: nats-py filters those client-side, over every key of the bucket.) A key written
    while the watch delivers comes twice before the marker: each key is returned once, with its latest value.

    The marker alone is not trusted: nats-py can send it before values the server has already sent (its setup
    compares the server's pending count with the messages its callback has handled, not those in flight:
    nats-io/nats.py#842, fix proposed in #995), which made a tenant's document list come back empty at times.
    So the keys the stream holds are counted first (`stored_keys`, or ``expected``), and the watch is read
    until that many keys have come and the marker has; a key purged meanwhile ends the wait at ``timeout_s``.
    """
    if expected is None:
        expected = await stored_keys(kv, pattern)
    if expected == 0:
        return []
    watcher = await watch(kv, pattern)  # deletes included: their markers count among the stored keys
    found: dict[str, bytes] = {}
    seen: set[str] = set()
    marker = False
    try:
        while not (marker and len(seen) >= expected):
            try:
                entry = await watcher.updates(timeout=timeout_s)
            except TimeoutError:
                if marker:  # a counted key was purged before the watch reached it
                    break
                raise
            if entry is None:
                marker = True
                continue
            seen.add(entry.key)
            if entry.value:
                found[entry.key] = entry.value
            else:
                found.pop(entry.key, None)
    finally:
        await watcher.stop()
    return list(found.items())


async def latest(kv: KeyValue, key: str) -> bytes | None:
    """The value of `key` as the bucket's stream leader has it; None when the key is absent, deleted or purged.

    nats-py's ``kv.get`` reads a bucket created with ``allow_direct`` (every bucket of ours) from *any* replica,
    and in a cluster a follower may not have applied the last write yet: an agent that had just recorded a
    document's revision read an older record (or none) and took the revision for superseded, acked its message
    and left the document `parsing` for good (tests/e2e/test_cluster_engine.py, one run in two on three nodes).
    A read through the leader (``STREAM.MSG.GET``) sees every write acknowledged before it. Private nats-py names
    as in `stored_keys`."""
    try:
        msg = await kv._js.get_msg(kv._stream, subject=f"{kv._pre}{key}", direct=False)  # noqa: SLF001
    except NotFoundError:
        return None
    if msg.headers and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE):
        return None
    return msg.data
