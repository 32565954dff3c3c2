"""Who may do what on the bus: one NATS identity per role, its permissions derived from `contracts.topology`.

Pure data, no NATS import: `mmrag.natsauth` writes these into nats-server's ``authorization`` block, and
`infra/` renders the same table for compose and Kubernetes. Every grant is built from the topology's streams,
consumers, buckets and subject functions, so a renamed stream or a new consumer changes the permissions with it.

How NATS checks them: a client may *publish* only to the subjects its identity allows and *subscribe* only to
the subjects it allows. Everything JetStream does is a publish to an API subject (``$JS.API.<op>.<stream>...``)
with a reply to the client's inbox, so "may purge DOCS" is "may publish to ``$JS.API.STREAM.PURGE.DOCS``". Each
identity gets its own inbox prefix (`inbox_prefix`) and may subscribe only below it: nobody can read another
identity's replies (fetched messages, KV values, object chunks all arrive on inboxes).

Limits of subject permissions, on purpose stated here rather than hidden:
- A durable's name is one subject token, and an index generation's durables are made at run time (``parser-g2``):
  a role may use every durable of the streams it consumes (``$JS.API.CONSUMER.*.DOCS.*``), not only its own.
- A purge names its stream in the subject and its filter in the body: whoever may purge a stream may purge all
  of it. Only the roles that delete data (indexer, re-index coordinator) may purge DOCS, DEADLETTER and GRAPH;
  CHUNKS's consumers (OCR, embedder, indexer) may purge and delete in CHUNKS, whose messages they remove once
  handled (`StreamDef.consumed_once`) and may read all of anyway; an Object Store writer must purge its bucket's
  stream (an overwrite purges the old chunks).
- Ephemeral consumers (KV watches, object reads, the graph follower) carry their filter in the body: a role that
  may watch a bucket may read all of it. External publishers therefore get no watch, only direct gets of their
  own keys. The edge API reads DOCS with direct gets only (its byte quota included), so it holds no DOCS consumer.
- Uploads live in one bucket per tenant (`contracts.topology.uploads_bucket`), so a tenant's credential is granted
  its own bucket by name. A NATS wildcard matches whole tokens only (``mmrag-uploads-*`` is a literal), so the roles
  that serve every tenant are granted the object-store subjects with ``*`` where the bucket or stream goes
  (`_any_uploads`) and denied every stream and bucket of the topology they have no grant of their own on
  (`_wildcard_denials`): what is left is the tenants' buckets, and any stream created outside the topology.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.topology import (
    CONVERSATIONS_BUCKET,
    DEADLETTER_STREAM,
    DOCS_STREAM,
    EVALUATIONS_BUCKET,
    GRAPH_STREAM,
    INDEX_BUCKET,
    LANES,
    PROGRESS_BUCKET,
    QUERY_CONSUMERS,
    QUERY_IMAGES_BUCKET,
    REQUIRED_STREAMS,
    STREAMS_BY_NAME,
    LEGACY_UPLOADS_BUCKET,
    ConsumerDef,
    IndexGeneration,
    Subjects,
    check_token,
    durable_role,
    ingest_consumers,
    uploads_bucket,
)

API = "$JS.API"
# Any generation's durable of a role: generations are created at run time (see the module docstring).
_ANY_GENERATION = IndexGeneration(1)


@dataclass(frozen=True)
class Permissions:
    """Subjects an identity may publish to and subscribe to (NATS wildcards); `deny_publish` wins over `publish`."""

    publish: frozenset[str] = field(default_factory=frozenset)
    subscribe: frozenset[str] = field(default_factory=frozenset)
    deny_publish: frozenset[str] = field(default_factory=frozenset)

    def __or__(self, other: Permissions) -> Permissions:
        return Permissions(
            self.publish | other.publish, self.subscribe | other.subscribe, self.deny_publish | other.deny_publish
        )


def _pub(*subjects: str) -> Permissions:
    return Permissions(publish=frozenset(subjects))


def _sub(*subjects: str) -> Permissions:
    return Permissions(subscribe=frozenset(subjects))


def inbox_prefix(user: str) -> str:
    """The inbox prefix of an identity (nats-py ``inbox_prefix``): its replies arrive below it, and only it may
    subscribe there."""
    return f"_INBOX_{check_token(user, 'NATS user')}"


def _inbox(user: str) -> Permissions:
    return _sub(f"{inbox_prefix(user)}.>")


# -- JetStream building blocks ---------------------------------------------------------------------------------


def _stream_read(stream: str) -> Permissions:
    """Stream info and reading single messages (``get_last_msg``, direct gets)."""
    return _pub(
        f"{API}.STREAM.INFO.{stream}", f"{API}.STREAM.MSG.GET.{stream}", f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
    )  # fmt: skip


def _ephemeral_reader(stream: str) -> Permissions:
    """An ordered (ephemeral) consumer on `stream`: KV watches, object reads, the graph follower."""
    return _pub(
        f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.CREATE.{stream}.>", f"{API}.CONSUMER.INFO.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*", f"{API}.STREAM.NAMES", f"$JS.FC.{stream}.>",
    ) | _stream_read(stream)  # fmt: skip


def _purge(stream: str) -> Permissions:
    return _pub(f"{API}.STREAM.PURGE.{stream}")


def _consume(consumer: ConsumerDef) -> Permissions:
    """Create, inspect, fetch from and ack a durable of this role (any generation's: `_ANY_GENERATION`); follow its
    max-deliveries advisory and read the message it names (`PullWorker` gives up on a message whose deliveries all
    crashed their process)."""
    stream = consumer.stream
    durable = "*" if durable_role(consumer.durable) != consumer.durable else consumer.durable
    return _pub(
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}", f"{API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{API}.CONSUMER.CREATE.{stream}.{durable}.>", f"{API}.CONSUMER.INFO.{stream}.{durable}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>",
        Subjects.deadletters(durable), f"{API}.STREAM.MSG.GET.{stream}",
    ) | _sub(Subjects.max_deliveries_advisory(stream, durable)) | (
        _consumed_once(stream) if STREAMS_BY_NAME[stream].consumed_once else Permissions()
    )  # fmt: skip


def _consumed_once(stream: str) -> Permissions:
    """Delete a settled message, and purge its own subject below its ack floor (`PullWorker`): whoever may do that
    may purge all of the stream (a purge names its filter in the body), as whoever consumes it may read all of it."""
    return _pub(f"{API}.STREAM.MSG.DELETE.{stream}") | _purge(stream)


def _kv_read(bucket: str) -> Permissions:
    return _ephemeral_reader(f"KV_{bucket}")


def _kv_write(bucket: str) -> Permissions:
    return _kv_read(bucket) | _pub(f"$KV.{bucket}.>")


def _object_read(bucket: str, stream: str | None = None) -> Permissions:
    return _ephemeral_reader(stream or f"OBJ_{bucket}")


def _object_write(bucket: str, stream: str | None = None) -> Permissions:
    # Writing an object purges the chunks it replaces; deleting one purges its chunks.
    stream = stream or f"OBJ_{bucket}"
    return _object_read(bucket, stream) | _pub(f"$O.{bucket}.>") | _purge(stream)


# Every tenant's uploads bucket, for the roles that serve every tenant: ``*`` where the bucket and its stream go,
# narrowed by `_wildcard_denials` (see the module docstring). `_ANY_UPLOADS_CREATE`: making a tenant's bucket.
_ANY_UPLOADS_READ = _object_read("*", "*")
_ANY_UPLOADS_WRITE = _object_write("*", "*")
_ANY_UPLOADS_CREATE = _pub(f"{API}.STREAM.CREATE.*")
# Streams and buckets that are not a tenant's uploads: what the wildcards above must not reach.
_NOT_UPLOADS_STREAMS = (*REQUIRED_STREAMS, f"OBJ_{LEGACY_UPLOADS_BUCKET}")
_NOT_UPLOADS_BUCKETS = (QUERY_IMAGES_BUCKET, LEGACY_UPLOADS_BUCKET)


def _overlap(a: str, b: str) -> bool:
    """Can one subject match both NATS patterns `a` and `b`?"""
    ta, tb = a.split("."), b.split(".")
    for x, y in zip(ta, tb, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(ta) == len(tb)


def _wildcard_denials(granted: Permissions, wildcards: Permissions) -> Permissions:
    """Deny what `wildcards` would add on the topology's other streams and buckets, except where `granted` (the
    role's own grants, without the wildcards) already allows some of it (a denial would take that away too)."""
    deny: set[str] = set()
    for pattern in wildcards.publish:
        for name in _NOT_UPLOADS_STREAMS if pattern.startswith("$JS.") else _NOT_UPLOADS_BUCKETS:
            concrete = pattern.replace(".*", f".{name}", 1) if ".*" in pattern else pattern
            if concrete != pattern and not any(_overlap(concrete, g) for g in granted.publish):
                deny.add(concrete)
    return Permissions(deny_publish=frozenset(deny))


def _serving_every_tenant(granted: Permissions, wildcards: Permissions) -> Permissions:
    """A role's own grants plus `wildcards` on every tenant's uploads bucket, denied on everything else."""
    return granted | wildcards | _wildcard_denials(granted, wildcards)


_GEN_CONSUMERS = ingest_consumers(_ANY_GENERATION)
# The durable consumers each agent role pulls from (its generation-1 names; every generation's are allowed).
ROLE_CONSUMERS: dict[str, tuple[ConsumerDef, ...]] = {
    "parser": (_GEN_CONSUMERS["parser"],),
    "ocr": tuple(_GEN_CONSUMERS[f"ocr-{lane}"] for lane in LANES),
    "embedder": tuple(_GEN_CONSUMERS[f"embedder-text-{lane}"] for lane in LANES),
    "indexer": (_GEN_CONSUMERS["indexer"], _GEN_CONSUMERS["deleter"]),
    "retriever": (QUERY_CONSUMERS["retriever"],),
    "reranker": (QUERY_CONSUMERS["reranker"],),
    "generator": (QUERY_CONSUMERS["generator"],),
}


def _consumes(role: str) -> Permissions:
    out = Permissions()
    for consumer in ROLE_CONSUMERS[role]:
        out |= _consume(consumer)
    return out


# Every agent process bootstraps the topology on start and after a reconnection (a restarted server has lost the
# memory stream QUERIES), carries 0.1 submissions forward (`bus.migrate`) and follows the index generations.
_BOOTSTRAP = (
    _pub(f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.LIST")
    | _pub(*(f"{API}.STREAM.{op}.{s}" for s in REQUIRED_STREAMS for op in ("CREATE", "UPDATE", "INFO")))
    | _pub(*(f"{API}.CONSUMER.DURABLE.CREATE.{c.stream}.{c.durable}" for c in QUERY_CONSUMERS.values()))
    | _stream_read(DOCS_STREAM.name)
    | _kv_write(INDEX_BUCKET)
    | _stream_read(f"KV_{PROGRESS_BUCKET}")
)

_ALL_INGEST_STREAMS = sorted({c.stream for c in _GEN_CONSUMERS.values()})

# What each role does on the bus (`agents/<role>.py`, `edge_api/`); `_serving_every_tenant` adds every tenant's
# uploads bucket (its second argument) to a role's own grants.
_ROLES: dict[str, Permissions] = {
    "parser": _serving_every_tenant(
        _BOOTSTRAP
        | _consumes("parser")
        | _pub(f"{Subjects.CHUNKS_PARSED}.>", f"{Subjects.CHUNKS_OCR}.>")
        | _kv_write(PROGRESS_BUCKET),
        _ANY_UPLOADS_WRITE,  # the upload; page rasters and extracted images beside it
    ),
    "ocr": _serving_every_tenant(
        _BOOTSTRAP | _consumes("ocr") | _pub(f"{Subjects.CHUNKS_PARSED}.>") | _kv_write(PROGRESS_BUCKET),
        _ANY_UPLOADS_READ,
    ),
    "embedder": _serving_every_tenant(
        _BOOTSTRAP | _consumes("embedder") | _pub(f"{Subjects.CHUNKS_EMBEDDED}.>") | _kv_write(PROGRESS_BUCKET),
        _ANY_UPLOADS_READ,  # extracted images, for image vectors
    ),
    "indexer": _serving_every_tenant(
    _BOOTSTRAP
    | _consumes("indexer")
    | _pub(f"{Subjects.DOCS_INDEXED}.>", f"{Subjects.GRAPH_FACTS}.>")
    | _stream_read(GRAPH_STREAM.name)
    | _purge(DOCS_STREAM.name)  # a deleted document's submissions and completion events
    | _purge(GRAPH_STREAM.name)
    | _purge(DEADLETTER_STREAM.name)  # dead letters about a deleted document
    | _purge(f"KV_{PROGRESS_BUCKET}")  # a deleted document's progress history (its tombstone stays)
    | _kv_write(PROGRESS_BUCKET)
    # The shared bucket of earlier releases, moved into the tenants' buckets and removed (`bus.migrate`).
    | _object_write(LEGACY_UPLOADS_BUCKET)
    | _pub(f"{API}.STREAM.DELETE.OBJ_{LEGACY_UPLOADS_BUCKET}"),
    _ANY_UPLOADS_WRITE | _ANY_UPLOADS_CREATE,  # a deleted document's upload and images; the migration's buckets
    ),
    "retriever": _BOOTSTRAP
    | _consumes("retriever")
    | _pub(f"{Subjects.QUERY_RERANK}.*", f"{Subjects.ANSWER_PREFIX}.>")  # a browse's results, a give-up's error
    | _ephemeral_reader(GRAPH_STREAM.name)
    | _object_read(QUERY_IMAGES_BUCKET),
    "reranker": _BOOTSTRAP | _consumes("reranker") | _pub(f"{Subjects.QUERY_GENERATE}.*"),
    "generator": _BOOTSTRAP | _consumes("generator") | _pub(f"{Subjects.ANSWER_PREFIX}.>"),
    # The re-index coordinator (runs beside the indexer): watches every ingest durable's lag, drops a retired
    # generation's durables, chunks, progress keys and graph facts; runs evaluations (and re-index gates) by
    # asking through the query path like the edge API does, and stores their reports.
    "reindexer": _BOOTSTRAP
    | _pub(f"{Subjects.QUERY_RETRIEVE}.*")
    | _sub(f"{Subjects.ANSWER_PREFIX}.>")
    | _kv_write(EVALUATIONS_BUCKET)
    | _pub(*(f"{API}.CONSUMER.{op}.{s}.*" for s in _ALL_INGEST_STREAMS for op in ("INFO", "DELETE")))
    | _pub(*(f"{API}.STREAM.PURGE.{s}" for s in ("CHUNKS", DOCS_STREAM.name, GRAPH_STREAM.name)))
    | _purge(f"KV_{PROGRESS_BUCKET}")
    | _kv_write(PROGRESS_BUCKET),
    # The edge API: submits, deletes and reads documents, asks, streams answers and progress, runs re-indexes.
    "edge": _serving_every_tenant(
        _pub(f"{API}.INFO", f"{Subjects.DOCS_INGEST}.*.*", f"{Subjects.DOCS_DELETE}.*.*",
             f"{Subjects.QUERY_RETRIEVE}.*")
        | _pub(*(f"{API}.STREAM.INFO.{s}" for s in REQUIRED_STREAMS))
        | _sub(f"{Subjects.ANSWER_PREFIX}.>")
        | _stream_read(DOCS_STREAM.name)
        | _object_write(QUERY_IMAGES_BUCKET)
        | _kv_write(PROGRESS_BUCKET)  # "queued" on submission, the tombstone of a delete
        | _kv_write(INDEX_BUCKET)
        | _kv_write(EVALUATIONS_BUCKET)  # evaluation requests and their reports
        | _kv_write(CONVERSATIONS_BUCKET),  # conversations: only the edge API reads and writes them
        _ANY_UPLOADS_WRITE | _ANY_UPLOADS_CREATE,  # uploads, pages, deletes; a tenant's bucket on its first upload
    ),
}  # fmt: skip

ROLES: tuple[str, ...] = tuple(_ROLES)
# Not used by any process: the operator's own credential (the `nats` CLI, inspection, tests). Full access.
ADMIN = "admin"
_TENANT_PREFIX = "tenant-"


def role_permissions(*roles: str) -> Permissions:
    """The permissions of a process that holds these roles (`mmrag up`'s agents process holds several)."""
    unknown = [r for r in roles if r not in _ROLES]
    if unknown:
        raise ValueError(f"unknown NATS role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
    out = Permissions()
    for role in roles:
        out |= _ROLES[role]
    # One role's denial must not take away what another role of the same process is granted by name (the indexer's
    # reading of the shared bucket, denied to the parser): keep only the denials none of the grants overlaps.
    own = out.publish - _ANY_UPLOADS_WRITE.publish - _ANY_UPLOADS_CREATE.publish
    deny = frozenset(d for d in out.deny_publish if not any(_overlap(d, g) for g in own))
    return Permissions(out.publish, out.subscribe, deny)


def tenant_user(tenant: str) -> str:
    """The NATS user of a tenant's external publisher."""
    return f"{_TENANT_PREFIX}{check_token(tenant, 'tenant')}"


def tenant_permissions(tenant: str) -> Permissions:
    """An external publisher of `tenant`: submit and delete its documents (``docs.ingest/delete.<tenant>.*``, with
    JetStream's publish acknowledgement) and read its progress keys; nothing else.

    And its own uploads bucket (`uploads_bucket`), what nats-py's `ObjectStore` needs to bind it, ``put``,
    ``get_info`` and ``delete`` there (found by running them under this identity: tests/security/). Not its
    ``get``/``list``/``watch``: nats-py looks the stream up with ``$JS.API.STREAM.NAMES``, whose answer names every
    stream, so every tenant (``OBJ_mmrag-uploads-<tenant>``); a tenant reads its documents through the HTTP API.
    """
    check_token(tenant, "tenant")
    progress = f"KV_{PROGRESS_BUCKET}"
    # No stream info, not even of the progress bucket: its message and subject counts are every tenant's together.
    # A key is read with a direct get that names it: nats-py ``js.get_msg(stream, subject=key_subject, direct=True)``.
    return (
        _pub(Subjects.ingest(tenant, "*"), Subjects.delete(tenant, "*"))
        | _pub(f"{API}.DIRECT.GET.{progress}.$KV.{PROGRESS_BUCKET}.*.{tenant}.*")
        | _pub(*(s for s in _object_write(uploads_bucket(tenant)).publish if s != f"{API}.STREAM.NAMES"))
        | _inbox(tenant_user(tenant))
    )


def identity_permissions(user: str, roles: tuple[str, ...] = ()) -> Permissions:
    """The permissions of NATS user `user` holding `roles`, its own inbox included."""
    return role_permissions(*roles) | _inbox(user)
