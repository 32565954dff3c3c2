"""How a new collection is laid out on a Qdrant cluster: shards, replicas, write consistency.

Read from the settings (``MMRAG_QDRANT_SHARD_NUMBER``, ``MMRAG_QDRANT_REPLICATION_FACTOR``,
``MMRAG_QDRANT_WRITE_CONSISTENCY_FACTOR``) and passed by the ``qdrant-client`` adapter to
``create_collection`` when it creates a collection (an index generation). They are fixed at creation: changing
them applies to the next generation (a re-index), never to an existing collection. The embedded engine
(Qdrant Edge) is one shard on one machine and ignores them.

No qdrant import here, so the settings can be turned into a layout without loading the client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterLayout:
    """``None`` leaves a field to the server's default (1 shard per node at creation, 1 replica, factor 1).

    - ``shard_number``: shards the collection is split into; more shards spread points and search work over
      more nodes (Qdrant cannot re-split a collection later: pick for the largest cluster this generation runs on).
    - ``replication_factor``: copies of each shard on different nodes; a node may be lost without losing points
      or answers when it is 2 or more.
    - ``write_consistency_factor``: replicas that must apply a write before it is acknowledged (at most
      ``replication_factor``); the indexer acks a batch only after that acknowledgement.
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def __post_init__(self) -> None:
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.write_consistency_factor is not None and self.write_consistency_factor > (self.replication_factor or 1):
            raise ValueError(
                f"write_consistency_factor {self.write_consistency_factor} exceeds replication_factor "
                f"{self.replication_factor or 1}: a write could never be acknowledged"
            )

    def create_params(self) -> dict[str, int]:
        """The keyword arguments of ``QdrantClient.create_collection`` this layout sets (none for a default)."""
        return {
            name: value
            for name, value in (
                ("shard_number", self.shard_number),
                ("replication_factor", self.replication_factor),
                ("write_consistency_factor", self.write_consistency_factor),
            )
            if value is not None
        }
