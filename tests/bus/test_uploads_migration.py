"""The shared uploads bucket of earlier releases is moved into one bucket per tenant (`bus.migrate.migrate_uploads`,
decision 81): every object readable from its tenant's bucket afterwards, byte for byte, the shared bucket gone."""

from __future__ import annotations

import nats
import pytest
from nats.js import api
from nats.js.errors import NotFoundError

from bus.migrate import migrate_uploads
from bus.topology import ensure_topology
from bus.uploads import UploadBuckets
from contracts.topology import LEGACY_UPLOADS_BUCKET, object_name, uploads_bucket
from tests.engine import NatsServer

BIG = bytes(range(256)) * 2000  # 512,000 bytes: several chunks


async def test_objects_of_the_shared_bucket_move_to_their_tenants_buckets(nats_server: NatsServer) -> None:
    async with await nats.connect(nats_server.url) as nc:
        js = nc.jetstream()
        await ensure_topology(js)
        legacy = await js.create_object_store(
            LEGACY_UPLOADS_BUCKET, config=api.ObjectStoreConfig(storage=api.StorageType.FILE)
        )
        objects = {
            object_name("acme", "d1"): BIG,
            f"{object_name('acme', 'd1')}/images/abc": b"\x89PNG acme's figure",
            object_name("beta", "d2"): b"beta's notes\n",
        }
        for name, data in objects.items():
            await legacy.put(name, data)
        await legacy.put(object_name("beta", "gone"), b"deleted before the upgrade")
        await legacy.delete(object_name("beta", "gone"))  # nats-py's delete marker: not moved

        assert await migrate_uploads(js) == 3
        buckets = UploadBuckets(js)
        for name, data in objects.items():
            tenant = name.split("/", 1)[0]
            assert (await (await buckets.store(tenant)).get(name)).data == data, name
        with pytest.raises(NotFoundError):
            await (await buckets.store("beta")).get_info(object_name("beta", "gone"))
        with pytest.raises(NotFoundError):  # beta's objects are not in acme's bucket
            await (await buckets.store("acme")).get_info(object_name("beta", "d2"))
        with pytest.raises(NotFoundError):
            await js.stream_info(f"OBJ_{LEGACY_UPLOADS_BUCKET}")
        assert (await js.stream_info(f"OBJ_{uploads_bucket('acme')}")).config.num_replicas == 1
        assert await migrate_uploads(js) == 0  # nothing left: idempotent


async def test_an_object_that_names_no_tenant_keeps_the_shared_bucket(nats_server: NatsServer) -> None:
    async with await nats.connect(nats_server.url) as nc:
        js = nc.jetstream()
        await ensure_topology(js)
        legacy = await js.create_object_store(LEGACY_UPLOADS_BUCKET)
        await legacy.put("no tenant here.txt", b"kept")
        await legacy.put(object_name("acme", "d1"), b"moved")
        assert await migrate_uploads(js) == 1
        assert (await legacy.get("no tenant here.txt")).data == b"kept"  # nothing deleted that was not copied
        with pytest.raises(NotFoundError):
            await legacy.get_info(object_name("acme", "d1"))
