"""Create the streams, durable consumers and buckets of `contracts.topology` (idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

from bus.migrate import migrate_legacy
from contracts.evaluation import MAX_RECORD_BYTES
from contracts.topology import (
    CONVERSATIONS_BUCKET,
    CONVERSATIONS_MAX_BYTES,
    CONVERSATIONS_TTL_S,
    EVALUATIONS_BUCKET,
    INDEX_BUCKET,
    PROGRESS_BUCKET,
    QUERY_IMAGES_BUCKET,
    QUERY_IMAGES_TTL_S,
    STREAMS,
    ConsumerDef,
    IndexGeneration,
    StreamDef,
    all_consumers,
)

log = logging.getLogger(__name__)

# JSStreamNameExistErr: the stream exists with another configuration -> update it in place.
_STREAM_NAME_IN_USE = 10058


async def _ensure_direct_kv(js: JetStreamContext, config: api.KeyValueConfig) -> None:
    """Create a KV bucket with direct gets, or turn them on in one made before they were (the only difference)."""
    try:
        await js.create_key_value(config=config)
    except BadRequestError as err:
        if err.err_code != _STREAM_NAME_IN_USE:
            raise
        info = await js.stream_info(f"KV_{config.bucket}")
        if not info.config.allow_direct:
            await js.update_stream(info.config.evolve(allow_direct=True))


def stream_config(stream: StreamDef, replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        name=stream.name,
        num_replicas=replicas,
        description=stream.description or None,
        subjects=list(stream.subjects),
        storage=api.StorageType.FILE if stream.storage == "file" else api.StorageType.MEMORY,
        retention=api.RetentionPolicy.LIMITS,
        max_age=stream.max_age_s or None,
        max_bytes=stream.max_bytes or None,
        discard=api.DiscardPolicy.NEW if stream.discard == "new" else api.DiscardPolicy.OLD,
        duplicate_window=stream.duplicate_window_s,
    )


def consumer_config(consumer: ConsumerDef) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=consumer.durable,
        description=consumer.description or None,
        filter_subject=consumer.filter_subject,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        # With a backoff list, the server waits backoff[n-1] for the ack of delivery n (ack_wait is ignored).
        backoff=list(consumer.backoff_s),
        max_deliver=consumer.max_deliver,
        max_ack_pending=consumer.max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, consumer: ConsumerDef) -> None:
    # The legacy durable-create API creates or updates, so a changed definition takes effect on restart.
    await js.add_consumer(consumer.stream, consumer_config(consumer))


async def ensure_topology(
    js: JetStreamContext, generations: Sequence[IndexGeneration] = (IndexGeneration(1),), *, replicas: int = 1
) -> None:
    """Make the server's topology match `contracts.topology` for these index generations.

    `replicas` is the JetStream replication factor of every stream and bucket (3 on a NATS cluster: a node may
    die without losing an acknowledged message; 1 on a single server). Safe to call from every replica at
    start-up and after every reconnection.
    """
    for stream in STREAMS:
        config = stream_config(stream, replicas)
        try:
            await js.add_stream(config)
        except BadRequestError as err:
            if err.err_code != _STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
    await migrate_legacy(js)
    consumers = all_consumers(tuple(generations))
    for consumer in consumers:
        await ensure_consumer(js, consumer)
    # Uploads: one bucket per tenant, created on its first upload (`bus.uploads`), none here.
    # Direct gets (``$JS.API.DIRECT.GET.<stream>.<subject>``) name the key in the subject: what lets an external
    # publisher be allowed its own tenant's progress keys only (`bus.identities.tenant_permissions`).
    await _ensure_direct_kv(
        js, api.KeyValueConfig(bucket=PROGRESS_BUCKET, history=5, storage=api.StorageType.FILE, replicas=replicas,
                               direct=True)
    )  # fmt: skip
    await js.create_key_value(
        config=api.KeyValueConfig(bucket=INDEX_BUCKET, history=10, storage=api.StorageType.FILE, replicas=replicas)
    )
    await js.create_object_store(
        QUERY_IMAGES_BUCKET,
        config=api.ObjectStoreConfig(ttl=QUERY_IMAGES_TTL_S, storage=api.StorageType.FILE, replicas=replicas),
    )
    await js.create_key_value(
        config=api.KeyValueConfig(bucket=EVALUATIONS_BUCKET, history=1, storage=api.StorageType.FILE,
                                  replicas=replicas, max_value_size=MAX_RECORD_BYTES)
    )  # fmt: skip
    # One value a key (a conversation's meta or its turns): an update replaces the bytes of the last, a purge
    # removes them. Keys nobody wrote to for the TTL go; a full bucket refuses new writes.
    await js.create_key_value(
        config=api.KeyValueConfig(
            bucket=CONVERSATIONS_BUCKET, history=1, ttl=CONVERSATIONS_TTL_S, max_bytes=CONVERSATIONS_MAX_BYTES,
            storage=api.StorageType.FILE, replicas=replicas,
        )
    )  # fmt: skip
    log.info("topology ready: %d streams, %d consumers", len(STREAMS), len(consumers))
