"""VectorStore over embedded Qdrant Edge shards (``qdrant_edge``), no server.

Layout under ``root``::

    root/aliases.json              {"alias": "collection", ...}, replaced atomically
    root/<collection>/schema.json  the CollectionSchema, written before the shard
    root/<collection>/shard/       one EdgeShard (segments, WAL)

A directory without ``schema.json`` is not a collection (a creation that
crashed before its first step); ``create_collection`` completes it. Dropping
renames the directory away first, so a crash never leaves half a collection.
Aliases are this adapter's own: a JSON map written to a temp file, fsynced
and ``os.replace``d, so a crash leaves the old map or the new one.

One process owns ``root``: the engine locks each shard's WAL, so a second
process fails to open a collection held by the first, and aliases are read
from disk only at start-up.

Index-build policy (:class:`~search.vectorstore.base.OptimizePolicy`)
--------------------------------------------------------------------
Qdrant Edge builds HNSW indexes only inside ``EdgeShard.optimize()``; until
then new points sit in an appendable segment searched by full scan. Measured
on 2 cores (``bench/vectorstore_optimize.py``): ``optimize()`` *holds the GIL*
for the whole build (21 000 x 384-d: 8.7 s with not one tick of a 10 ms
heartbeat thread), so a build in this process would freeze every thread of it:
the event loop of the agents included. :meth:`EdgeShardStore.maintain` therefore
builds in a child process: it flushes and closes the collection's shard, runs
``optimize()`` in ``python -c`` on the same directory (the child dies with us:
PR_SET_PDEATHSIG), and reopens the shard. Calls on that collection wait for the
build (they hold its lock), but the process goes on: the event loop answers,
in-progress acks keep flowing, other collections serve. The policy bounds how
often a build happens. :meth:`EdgeShardStore.maintain` optimizes a collection
only when

* at least ``policy.min_points`` points were upserted since its last build
  (counted in memory; at open, the shard's unindexed points count), and
* no upsert touched it for ``policy.idle_seconds`` (the ingest burst is over),

and the engine itself skips segments under ``policy.indexing_threshold_kb``,
so a small collection is never rebuilt (``optimize()`` returns at once).
``update`` never builds on its own: without ``maintain()`` a collection is
searched by full scan forever (50 000 x 384-d: 13 ms per search unindexed,
3.3 ms after a 70 s build). ``policy.segment_number`` (default 8) keeps later
builds proportional to the new points instead of re-indexing everything.
Call ``maintain()`` on a timer or after ingest batches (the indexer does, every 30 s).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HasIdCondition,
    KeywordIndexParams,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    Query,
    QueryRequest,
    RangeFloat,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    UpdateOperation,
)
from qdrant_edge import SparseVector as EdgeSparseVector

from search.vectorstore.base import (
    IMAGE_DENSE,
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    SPARSE,
    TEXT_DENSE,
    CollectionInUse,
    CollectionNotFound,
    CollectionSchema,
    OptimizePolicy,
    PointPayload,
    SchemaMismatch,
    SearchFilter,
    SparseVector,
    VectorHit,
    VectorPoint,
    VectorRecord,
    canonical_id,
    check_name,
    check_points,
    check_query,
)

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
SCHEMA_FILE = "schema.json"
SHARD_DIR = "shard"
_DROPPED_PREFIX = ".dropped-"


# Run by `python -c` in the child that builds an index: load the shard (its stored config), optimize, close.
# The child asks the kernel to kill it if the engine dies (an orphan build would hold the shard's lock and keep the
# next engine from opening the collection), then checks that the engine did not die before it asked. It does so
# itself, after exec: `subprocess`'s ``preexec_fn`` runs between fork and exec in a copy of a process full of
# threads (ONNX Runtime, OpenVINO, the event loop's executors), where loading libc with ctypes can wait forever
# on a lock another thread held at the fork; the build then never starts and the store thread waits on it
# for good (seen in a loaded CI run: every search of the engine timed out from then on). Python's docs say
# ``preexec_fn`` is not safe with threads; without it `subprocess` uses posix_spawn/vfork.
_OPTIMIZE_CHILD = """
import os, signal, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[2]):
    sys.exit("the engine that started this index build is gone")
from qdrant_edge import EdgeShard
shard = EdgeShard.load(sys.argv[1])
changed = shard.optimize()
shard.flush()
shard.close()
print(changed)
"""

@dataclass(eq=False)
class _Collection:
    """An open shard with its schema and index-build bookkeeping; ``lock`` serialises its use."""

    name: str
    shard: EdgeShard | None
    schema: CollectionSchema
    lock: threading.RLock = field(default_factory=threading.RLock)
    pending: int = 0
    """Points upserted since the last index build (an upper bound)."""
    last_write: float = float("-inf")


class EdgeShardStore:
    """A :class:`~search.vectorstore.base.VectorStore` of Edge shards under ``root``.

    Collections are opened on first use and kept open in an in-memory map (no
    per-call existence checks); aliases are loaded once and kept in memory.
    Each :meth:`upsert` and :meth:`delete` flushes before returning, so
    acknowledged writes survive a crash. Thread-safe: each collection's shard
    is used under its own lock; creating, dropping and aliasing take a store
    lock. ``clock`` (monotonic seconds) is injectable for tests of the policy.
    """

    def __init__(
        self,
        root: Path,
        policy: OptimizePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = Path(root)
        self._policy = policy or OptimizePolicy()
        self._clock = clock
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._closed = False
        self._root.mkdir(parents=True, exist_ok=True)
        self._aliases: dict[str, str] = self._read_aliases()
        for leftover in self._root.glob(_DROPPED_PREFIX + "*"):  # drops interrupted by a crash
            shutil.rmtree(leftover, ignore_errors=True)

    # ------------------------------------------------------------------ collections and aliases

    def create_collection(self, name: str, schema: CollectionSchema) -> None:
        """Create (or open) collection ``name``; see :meth:`VectorStore.create_collection`."""
        check_name(name)
        with self._lock:
            self._check_open()
            if name in self._aliases:
                raise ValueError(f"{name!r} is an alias (of {self._aliases[name]!r}), not a collection name")
            existing = self._open.get(name)
            if existing is None:
                stored = self._read_schema(name)
                if stored is None:
                    self._write_schema(name, schema)
                    stored = schema
                self._raise_unless_same(name, stored, schema)
                self._open[name] = self._open_shard(name, stored)
            else:
                self._raise_unless_same(name, existing.schema, schema)

    def drop_collection(self, name: str) -> None:
        """Close and delete collection ``name``; idempotent; :class:`CollectionInUse` if aliased."""
        check_name(name)
        with self._lock:
            self._check_open()
            if name in self._aliases:
                raise ValueError(f"{name!r} is an alias; drop_collection takes a collection name")
            users = sorted(a for a, c in self._aliases.items() if c == name)
            if users:
                raise CollectionInUse(
                    f"collection {name!r} is in use by alias(es) {users}; point them at another collection first"
                )
            coll = self._open.pop(name, None)
            if coll is not None:
                with coll.lock:
                    if coll.shard is not None:
                        coll.shard.close()
                        coll.shard = None
            path = self._root / name
            if not path.exists():
                return
            doomed = self._root / f"{_DROPPED_PREFIX}{name}-{uuid.uuid4().hex}"
            os.replace(path, doomed)  # atomic: the collection is gone even if rmtree is interrupted
            _fsync_dir(self._root)
            shutil.rmtree(doomed, ignore_errors=True)

    def list_collections(self) -> list[str]:
        """Collections under ``root`` (directories with a schema), sorted."""
        with self._lock:
            self._check_open()
            return sorted(
                p.name
                for p in self._root.iterdir()
                if not p.name.startswith(".") and (p / SCHEMA_FILE).is_file()
            )

    def set_alias(self, alias: str, collection: str) -> None:
        """Create or re-point ``alias``; the alias map is replaced atomically on disk."""
        check_name(alias, "alias")
        check_name(collection)
        with self._lock:
            self._check_open()
            if collection in self._aliases:
                raise ValueError(f"{collection!r} is an alias; point {alias!r} at a collection name")
            if self._read_schema(collection) is None:
                raise CollectionNotFound(f"collection {collection!r} does not exist; create_collection first")
            if alias != collection and (self._root / alias / SCHEMA_FILE).is_file():
                raise ValueError(f"{alias!r} is a collection name and cannot also be an alias")
            updated = {**self._aliases, alias: collection}
            _write_json_atomic(self._root / ALIASES_FILE, updated)
            self._aliases = updated

    def resolve(self, name_or_alias: str) -> str | None:
        """Alias target, the name itself for a collection, or ``None``."""
        with self._lock:
            self._check_open()
            target = self._aliases.get(name_or_alias)
            if target is not None:
                return target
            if name_or_alias in self._open:
                return name_or_alias
            try:
                check_name(name_or_alias)
            except ValueError:
                return None
            return name_or_alias if self._read_schema(name_or_alias) is not None else None

    def schema(self, collection: str) -> CollectionSchema:
        """The schema of a collection or alias target."""
        return self._get(collection).schema

    # ------------------------------------------------------------------ points

    def upsert(self, collection: str, points: Sequence[VectorPoint]) -> None:
        """Validate, insert or replace ``points``, and flush them to disk before returning."""
        coll = self._get(collection)
        checked = check_points(coll.schema, points)
        if not checked:
            return
        batch = []
        for p in checked:
            vector: dict[str, object] = dict(p.dense)
            if p.sparse is not None:
                vector[SPARSE] = EdgeSparseVector(*p.sparse)
            batch.append(Point(id=p.id, vector=vector, payload=p.payload))
        with coll.lock:
            shard = self._shard(coll)
            shard.update(UpdateOperation.upsert_points(batch))
            shard.flush()
            coll.pending += len(batch)
            coll.last_write = self._clock()

    def search(
        self,
        collection: str,
        query: Sequence[float] | SparseVector,
        *,
        using: str,
        filter: SearchFilter,
        limit: int,
    ) -> list[VectorHit]:
        """Top-``limit`` points of ``filter.tenant`` by vector ``using``, best first."""
        coll = self._get(collection)
        checked = check_query(coll.schema, query, using)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if filter.matches_nothing():
            return []
        vector = EdgeSparseVector(*checked) if isinstance(checked, tuple) else checked
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector, using=using),
            filter=_search_filter(filter),
            with_payload=True,
        )
        with coll.lock:
            scored = self._shard(coll).query(request)
        return [VectorHit(str(p.id), float(p.score), PointPayload.from_stored(p.payload)) for p in scored]

    def delete(self, collection: str, *, tenant: str, doc_id: str, keep_revision: int | None = None) -> None:
        """Delete a document's points (other revisions only, with ``keep_revision``); flushed on return."""
        coll = self._get(collection)
        must = [FieldCondition("tenant", match=MatchValue(tenant)), FieldCondition("doc_id", match=MatchValue(doc_id))]
        must_not = None if keep_revision is None else [FieldCondition("revision", match=MatchValue(keep_revision))]
        with coll.lock:
            shard = self._shard(coll)
            shard.update(UpdateOperation.delete_points_by_filter(Filter(must=must, must_not=must_not)))
            shard.flush()

    def scroll(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        doc_id: str | None = None,
        limit: int = 100,
        offset: str | None = None,
        pages: tuple[int, int] | None = None,
    ) -> tuple[list[VectorRecord], str | None]:
        """One page in id order and the next page's offset (``None`` after the last page)."""
        coll = self._get(collection)
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        request = ScrollRequest(
            offset=None if offset is None else canonical_id(offset),
            limit=limit,
            filter=_payload_filter(tenant=tenant, doc_id=doc_id, pages=pages),
            with_payload=True,
        )
        with coll.lock:
            records, next_offset = self._shard(coll).scroll(request)
        page = [VectorRecord(str(r.id), PointPayload.from_stored(r.payload)) for r in records]
        return page, None if next_offset is None else str(next_offset)

    def count(self, collection: str, *, tenant: str | None = None, doc_id: str | None = None) -> int:
        """Exact count of points matching the given payload filters."""
        coll = self._get(collection)
        request = CountRequest(exact=True, filter=_payload_filter(tenant=tenant, doc_id=doc_id))
        with coll.lock:
            return self._shard(coll).count(request)

    # ------------------------------------------------------------------ lifecycle

    def maintain(self) -> list[str]:
        """Optimize each open collection the policy says is due (see the module docstring).

        Returns the names of collections whose ``optimize()`` ran. Blocks for
        as long as those builds take, and so does any call on a collection
        being built; the build itself runs in a child process, so the rest of
        this process keeps running.
        """
        if not self._policy.enabled:
            return []
        with self._lock:
            self._check_open()
            candidates = list(self._open.values())
        built = []
        for coll in candidates:
            with coll.lock:
                if coll.shard is None or coll.pending < self._policy.min_points:
                    continue
                if self._clock() - coll.last_write < self._policy.idle_seconds:
                    continue
                started = time.perf_counter()
                changed = self._optimize_in_child(coll)
                coll.pending = 0
                built.append(coll.name)
                log.info(
                    "vector store: optimize(%s) -> %s in %.1f s",
                    coll.name,
                    changed,
                    time.perf_counter() - started,
                )
        return built

    def _optimize_in_child(self, coll: _Collection) -> bool:
        """Build the HNSW index of `coll` in a child process (see the module docstring); the caller holds
        `coll.lock`. The shard is reopened whatever happens to the child."""
        path = self._root / coll.name / SHARD_DIR
        shard = self._shard(coll)
        shard.flush()
        shard.close()
        coll.shard = None
        try:
            result = subprocess.run(
                [sys.executable, "-c", _OPTIMIZE_CHILD, str(path), str(os.getpid())], capture_output=True, text=True
            )  # fmt: skip
        finally:
            coll.shard = EdgeShard.load(str(path), self._config(coll.schema))
        if result.returncode != 0:
            log.error("vector store: the index build of %s failed (%d): %s", coll.name, result.returncode,
                      result.stderr.strip()[-2000:])  # fmt: skip
            return False
        return result.stdout.strip().endswith("True")

    def close(self) -> None:
        """Close every open shard and release its lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for coll in self._open.values():
                with coll.lock:
                    if coll.shard is not None:
                        coll.shard.close()
                        coll.shard = None
            self._open.clear()

    def shard_info(self, collection: str):  # noqa: ANN201 - engine type, for diagnostics and tests
        """The engine's ``ShardInfo`` (segments, points, indexed vectors) of a collection."""
        coll = self._get(collection)
        with coll.lock:
            return self._shard(coll).info()

    # ------------------------------------------------------------------ internals

    def _get(self, name_or_alias: str) -> _Collection:
        """The open collection for a name or alias; opens it on first use. Hot path: two dict lookups."""
        name = self._aliases.get(name_or_alias, name_or_alias)
        coll = self._open.get(name)
        if coll is not None:
            return coll
        with self._lock:
            self._check_open()
            name = self._aliases.get(name_or_alias, name_or_alias)
            coll = self._open.get(name)
            if coll is None:
                stored = self._read_schema(name) if _valid_name(name) else None
                if stored is None:
                    raise CollectionNotFound(f"no collection or alias named {name_or_alias!r}")
                coll = self._open[name] = self._open_shard(name, stored)
            return coll

    def _shard(self, coll: _Collection) -> EdgeShard:
        if coll.shard is None:
            raise CollectionNotFound(f"collection {coll.name!r} was dropped or the store was closed")
        return coll.shard

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the vector store is closed")

    def _open_shard(self, name: str, schema: CollectionSchema) -> _Collection:
        path = self._root / name / SHARD_DIR
        config = self._config(schema)
        if (path / "segments").is_dir():
            try:
                shard = EdgeShard.load(str(path), config)
            except Exception as exc:  # the engine raises bare Exception
                if "incompatible" in str(exc).lower():
                    # The engine's text (kept as __cause__ for logs) may name data-dir paths: not in str().
                    raise SchemaMismatch(
                        f"collection {name!r}: its stored vectors do not match its schema ({schema.describe()}); "
                        "the collection was modified outside this store: drop it and re-index"
                    ) from exc
                raise
        else:
            shard = EdgeShard.create(str(path), config)
        for key in KEYWORD_INDEXES:  # idempotent: re-creating an index is a no-op
            params = KeywordIndexParams(is_tenant=True) if key == "tenant" else PayloadSchemaType.Keyword
            shard.update(UpdateOperation.create_field_index(key, params))
        for key in INTEGER_INDEXES:
            shard.update(UpdateOperation.create_field_index(key, PayloadSchemaType.Integer))
        shard.flush()
        info = shard.info()
        coll = _Collection(name, shard, schema)
        coll.pending = info.points_count if info.indexed_vectors_count == 0 else max(
            0, info.points_count - info.indexed_vectors_count
        )
        return coll

    def _config(self, schema: CollectionSchema) -> EdgeConfig:
        quantization = (
            ScalarQuantizationConfig(type=ScalarType.Int8, quantile=0.99, always_ram=True)
            if schema.quantization
            else None
        )
        vectors = {TEXT_DENSE: EdgeVectorParams(size=schema.text_dim, distance=Distance.Cosine)}
        if schema.image_dim is not None:
            vectors[IMAGE_DENSE] = EdgeVectorParams(size=schema.image_dim, distance=Distance.Cosine)
        policy = self._policy
        optimizers = None
        if policy.indexing_threshold_kb is not None or policy.segment_number is not None:
            optimizers = EdgeOptimizersConfig(
                indexing_threshold=policy.indexing_threshold_kb, default_segment_number=policy.segment_number
            )
        return EdgeConfig(
            vectors=vectors,
            sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)} if schema.sparse else None,
            quantization_config=quantization,
            optimizers=optimizers,
        )

    def _read_schema(self, name: str) -> CollectionSchema | None:
        try:
            data = json.loads((self._root / name / SCHEMA_FILE).read_text())
        except FileNotFoundError:
            return None
        return CollectionSchema.from_json(data)

    def _write_schema(self, name: str, schema: CollectionSchema) -> None:
        (self._root / name).mkdir(exist_ok=True)
        _write_json_atomic(self._root / name / SCHEMA_FILE, schema.to_json())
        _fsync_dir(self._root)

    def _read_aliases(self) -> dict[str, str]:
        try:
            data = json.loads((self._root / ALIASES_FILE).read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    @staticmethod
    def _raise_unless_same(name: str, existing: CollectionSchema, wanted: CollectionSchema) -> None:
        if not existing.same_shape(wanted):
            raise SchemaMismatch(
                f"collection {name!r} exists with {existing.describe()}, not {wanted.describe()}; "
                "create a new collection (generation) for the new schema and re-point the alias"
            )


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


def _payload_filter(*, tenant: str | None, doc_id: str | None, pages: tuple[int, int] | None = None) -> Filter | None:
    must = [
        FieldCondition(key=key, match=MatchValue(value))
        for key, value in (("tenant", tenant), ("doc_id", doc_id))
        if value is not None
    ]
    if pages is not None:
        must.append(FieldCondition("page", range=RangeFloat(gte=pages[0], lte=pages[1])))
    return Filter(must=must) if must else None


def _search_filter(f: SearchFilter) -> Filter:
    must = [FieldCondition("tenant", match=MatchValue(f.tenant))]
    if f.doc_ids is not None:
        must.append(FieldCondition("doc_id", match=MatchAny(sorted(f.doc_ids))))
    if f.modalities is not None:
        must.append(FieldCondition("modality", match=MatchAny(sorted(f.modalities))))
    if f.collections is not None:  # an array field: matches when any of its values is in the set
        must.append(FieldCondition("collections", match=MatchAny(sorted(f.collections))))
    if f.pages is not None:
        must.append(FieldCondition("page", range=RangeFloat(gte=f.pages[0], lte=f.pages[1])))
    if f.ids is not None:
        must.append(HasIdCondition(set(f.ids)))
    return Filter(must=must)


def _write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
