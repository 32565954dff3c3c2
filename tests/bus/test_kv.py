"""`bus.kv`: the read-modify-write and the "current value of every key" patterns, on a real nats-server."""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import KeyValueConfig

from bus.kv import WATCH_INACTIVE_S, compare_and_set, current_values


async def _bucket(nc: nats.NATS, name: str = "kvtest"):
    return await nc.jetstream().create_key_value(KeyValueConfig(bucket=name, history=5))


async def test_current_values_gives_each_live_key_once_with_its_latest_value(nc) -> None:
    kv = await _bucket(nc)
    for i in range(50):
        await kv.put(f"doc.{i:02d}", f"v{i}".encode())
    await kv.put("doc.07", b"newer")
    await kv.delete("doc.08")
    await kv.put("other.1", b"not matched")

    values = dict(await current_values(kv, "doc.*"))
    assert len(values) == 49 and "doc.08" not in values and "other.1" not in values
    assert values["doc.07"] == b"newer" and values["doc.09"] == b"v9"


async def test_a_key_written_while_the_watch_delivers_is_returned_once() -> None:
    """A watch delivers a key again when it is written before the end-of-initial-values marker (the server's
    ``num_pending`` reaches 0 only after the new write); the document list showed such a document twice (found
    by a browser test: two rows for one upload). That timing cannot be forced on a real server, so the watcher
    here replays what such a watch delivers."""

    class Entry:
        def __init__(self, key: str, value: bytes) -> None:
            self.key, self.value = key, value

    class RacingWatch:
        def __init__(self) -> None:
            self.stopped = False
            self._feed = [Entry("doc.1", b"parsing"), Entry("doc.2", b"indexed"), Entry("doc.1", b"indexed"),
                          Entry("doc.3", b"x"), Entry("doc.3", b""), None]  # fmt: skip

        async def updates(self, timeout: float) -> Entry | None:
            return self._feed.pop(0)

        async def stop(self) -> None:
            self.stopped = True

    watch = RacingWatch()

    class Bucket:
        async def watch(self, pattern: str, **kw: object) -> RacingWatch:
            return watch

    assert await current_values(Bucket(), "doc.*", expected=3) == [("doc.1", b"indexed"), ("doc.2", b"indexed")]  # type: ignore[arg-type]
    assert watch.stopped


async def test_an_end_marker_sent_before_the_values_does_not_end_the_read() -> None:
    """nats-py can put the end-of-initial-values marker first when the server's messages are still in flight
    (nats-io/nats.py#842): a tenant's list came back empty (seen once in tests/e2e/test_sync_engine.py). The
    keys the stream holds are counted first, so the read goes on until they have come."""

    class Entry:
        def __init__(self, key: str, value: bytes) -> None:
            self.key, self.value = key, value

    class EarlyMarkerWatch:
        _feed = [None, Entry("doc.1", b"queued"), Entry("doc.2", b"indexed")]

        async def updates(self, timeout: float) -> Entry | None:
            if not self._feed:
                raise TimeoutError
            return self._feed.pop(0)

        async def stop(self) -> None:
            pass

    class Bucket:
        async def watch(self, pattern: str, **kw: object) -> EarlyMarkerWatch:
            return EarlyMarkerWatch()

    assert await current_values(Bucket(), "doc.*", expected=2) == [("doc.1", b"queued"), ("doc.2", b"indexed")]  # type: ignore[arg-type]


async def test_no_matching_key_is_an_empty_list_at_once(nc) -> None:
    kv = await _bucket(nc)
    await kv.put("other.1", b"x")
    assert await current_values(kv, "doc.*", timeout_s=0.5) == []


async def test_compare_and_set_never_loses_a_concurrent_update(nc) -> None:
    kv = await _bucket(nc)

    def decode(raw: bytes | None) -> int | None:
        return int(raw) if raw else None

    class Count(int):
        def model_dump_json(self) -> str:
            return str(int(self))

    async def add_one() -> None:
        await compare_and_set(kv, "counter", decode, lambda n: Count((n or 0) + 1))

    await asyncio.gather(*(add_one() for _ in range(20)))
    assert int((await kv.get("counter")).value) == 20


async def test_a_finished_watch_leaves_no_consumer_behind(nc) -> None:
    """A stream takes at most 1,000 consumers; a watch's consumer once outlived its watch by 5 minutes (nats-py's
    default), so 1,000 reads within 5 minutes made every further watch of the bucket fail (bench/reliability.py)."""
    kv = await _bucket(nc)
    await kv.put("doc.1", b"v")
    for _ in range(3):
        assert dict(await current_values(kv, "doc.*")) == {"doc.1": b"v"}
    js = nc.jetstream()
    async with asyncio.timeout(20 * WATCH_INACTIVE_S):  # gone within seconds, not the 5 minutes of before
        while (await js.stream_info("KV_kvtest")).state.consumer_count:
            await asyncio.sleep(0.5)
