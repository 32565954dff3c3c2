"""Each tenant's uploads bucket (`contracts.topology.uploads_bucket`): opening it, creating it, caching the handles.

A tenant's bucket is created on its first upload by the edge API, by `mmrag nats-user create --tenant T` (so an
external publisher can write before any HTTP upload) and by the migration of the shared bucket of earlier
releases (`bus.migrate.migrate_uploads`). It is configured as the shared bucket was (file storage, no limits:
an upload stays until its document is deleted), with the replicas of the DOCS stream, which `ensure_topology`
created with the deployment's `MMRAG_STREAM_REPLICAS`: whoever creates a bucket needs no setting of its own.
"""

from __future__ import annotations

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

from contracts.topology import DOCS_STREAM, uploads_bucket


class UploadsBucketMissing(NotFoundError):
    """A tenant's uploads bucket does not exist: nothing was ever uploaded for that tenant."""


async def uploads_config(js: JetStreamContext, tenant: str) -> api.ObjectStoreConfig:
    """The configuration of `tenant`'s bucket: the shared bucket's (file storage, no limits), DOCS's replicas."""
    replicas = (await js.stream_info(DOCS_STREAM.name)).config.num_replicas or 1
    return api.ObjectStoreConfig(
        bucket=uploads_bucket(tenant), storage=api.StorageType.FILE, replicas=replicas,
        description=f"uploads, page rasters and extracted images of tenant {tenant}",
    )  # fmt: skip


async def ensure_uploads_bucket(js: JetStreamContext, tenant: str) -> ObjectStore:
    """Open `tenant`'s uploads bucket, creating it first if it does not exist yet (idempotent, safe to race)."""
    try:
        return await js.object_store(uploads_bucket(tenant))
    except (BucketNotFoundError, NotFoundError):
        pass
    # Creating a stream that exists with the same configuration succeeds: two racing creators both get the bucket.
    return await js.create_object_store(uploads_bucket(tenant), config=await uploads_config(js, tenant))


class UploadBuckets:
    """Tenant -> its uploads bucket handle, bound on first use and cached for the life of the connection.

    `store(tenant)` opens an existing bucket (`UploadsBucketMissing` if the tenant never uploaded anything);
    `ensure(tenant)` creates it when missing (the edge API before an upload is streamed).
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._stores: dict[str, ObjectStore] = {}

    async def store(self, tenant: str) -> ObjectStore:
        if tenant not in self._stores:
            try:
                self._stores[tenant] = await self._js.object_store(uploads_bucket(tenant))
            except (BucketNotFoundError, NotFoundError) as err:
                raise UploadsBucketMissing(description=f"no uploads bucket {uploads_bucket(tenant)}") from err
        return self._stores[tenant]

    async def ensure(self, tenant: str) -> ObjectStore:
        if tenant not in self._stores:
            self._stores[tenant] = await ensure_uploads_bucket(self._js, tenant)
        return self._stores[tenant]
