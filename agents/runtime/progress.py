"""Per-document progress in the JetStream KV bucket, updated with compare-and-set.

Several replicas (parser, N indexers) update the same key; every update is a read-modify-write retried
on a revision conflict, so no update is lost and none is applied on a stale value.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.messages import DocumentProgress, DocumentStatus, utcnow

Update = Callable[[DocumentProgress | None], DocumentProgress]


class ProgressStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, doc_id: str) -> DocumentProgress | None:
        try:
            entry = await self._kv.get(doc_id)
        except KeyNotFoundError:
            return None
        return DocumentProgress.model_validate_json(entry.value) if entry.value else None

    async def update(self, doc_id: str, change: Update, *, attempts: int = 50) -> DocumentProgress:
        """Apply `change` to the current value (None if absent) atomically; returns the stored value."""
        for _ in range(attempts):
            try:
                entry = await self._kv.get(doc_id)
                current = DocumentProgress.model_validate_json(entry.value) if entry.value else None
                revision = entry.revision
            except KeyNotFoundError:
                current, revision = None, None
            new = change(current)
            if new is current:
                return new  # nothing to change (e.g. a batch already counted)
            payload = new.model_dump_json().encode()
            try:
                if revision is None:
                    await self._kv.create(doc_id, payload)
                else:
                    await self._kv.update(doc_id, payload, last=revision)
                return new
            except KeyWrongLastSequenceError:
                continue  # someone else updated it first: re-read and re-apply
        raise RuntimeError(f"progress of {doc_id} kept changing under {attempts} attempts")

    async def mark_failed(self, doc_id: str, tenant: str, error: str) -> DocumentProgress:
        def change(current: DocumentProgress | None) -> DocumentProgress:
            base = current or DocumentProgress(doc_id=doc_id, tenant=tenant, status=DocumentStatus.FAILED)
            return base.model_copy(update={"status": DocumentStatus.FAILED, "error": error, "updated_at": utcnow()})

        return await self.update(doc_id, change)
