"""Per-document progress in the JetStream KV bucket, one key per (generation, tenant, document).

Several replicas (parser, N indexers) update the same key; every update is a read-modify-write retried
on a revision conflict, so no update is lost and none is applied on a stale value.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js.kv import KeyValue

from bus.kv import compare_and_set, latest
from contracts.messages import DocumentProgress, DocumentStatus, utcnow
from contracts.topology import IndexGeneration, progress_key

Update = Callable[[DocumentProgress | None], DocumentProgress | None]


def decode(value: bytes | None) -> DocumentProgress | None:
    return DocumentProgress.model_validate_json(value) if value else None


class ProgressStore:
    """The progress of one index generation's documents. Owns nothing: the caller owns the KV handle."""

    def __init__(self, kv: KeyValue, generation: IndexGeneration) -> None:
        self._kv = kv
        self.generation = generation

    def key(self, tenant: str, doc_id: str) -> str:
        return progress_key(self.generation, tenant, doc_id)

    async def get(self, tenant: str, doc_id: str) -> DocumentProgress | None:
        """The document's record as last written (a leader read, `bus.kv.latest`: whether a revision is still the
        document's is decided on it); None if it has none."""
        return decode(await latest(self._kv, self.key(tenant, doc_id)))

    async def update(self, tenant: str, doc_id: str, change: Update, *, attempts: int = 50) -> DocumentProgress | None:
        """Apply `change` to the current value (None if absent) atomically; returns the stored value.

        `change` returning None, its argument or an equal value writes nothing.
        """
        return await compare_and_set(self._kv, self.key(tenant, doc_id), decode, change, attempts=attempts)

    def new(self, tenant: str, doc_id: str, revision: int, status: DocumentStatus, **fields: object) -> DocumentProgress:
        return DocumentProgress(
            doc_id=doc_id, tenant=tenant, generation=self.generation.number, revision=revision, status=status,
            **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    async def mark_failed(self, tenant: str, doc_id: str, revision: int, error: str) -> DocumentProgress | None:
        """Mark the document failed, unless a newer submission (or a delete) has replaced it meanwhile."""

        def change(current: DocumentProgress | None) -> DocumentProgress:
            if current is not None and current.revision > revision:
                return current
            base = current or self.new(tenant, doc_id, revision, DocumentStatus.FAILED)
            return base.model_copy(update={"status": DocumentStatus.FAILED, "error": error, "updated_at": utcnow()})

        return await self.update(tenant, doc_id, change)
