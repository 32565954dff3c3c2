"""Turns at a process's text models: a question's calls go first, a document's passages wait for them.

A search embeds its question (the retriever) and up to 130 short sentences (the reranker's sentence scorer) with
the same model, and the same cores, that the embedder uses for a big document's passages, in calls of
`MMRAG_EMBEDDING_BATCH_SIZE`. Side by side without an order, the search took the ingest's pace: `/v1/search`
p95 was 12.5 s during an ingest against 0.45 s idle (bench/results/ingest.md at aa6f720, issue 15).

`ModelTurns` is the order (one per process, owned by `models.embedding_models.EmbeddingModels`):
- a question's call never waits: it starts at once, beside other questions and beside at most the one passage
  call already running (a call in progress is never interrupted);
- a passage call starts only when no question is being embedded, and one at a time; so a stream of passage
  calls pauses for every search. It waits at most `PASSAGES_MAX_WAIT_S` for the questions to stop, then runs
  beside them anyway: a flood of searches slows ingest down but never stops it.

`TurnTakingEncoder` is a text model whose every call takes its role's turn. Thread-safe: model calls run in
worker threads (`asyncio.to_thread`), so the waiting is on a `threading.Condition`, not the event loop. The
embedder's lanes (interactive before bulk) are ordered before their calls get here
(`agents.runtime.priority.PriorityLock`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import numpy as np

QUERY = "query"  # a question's embedding, the reranker's sentences, the abstention's paraphrase cosine
INGEST = "ingest"  # a document's passages
ROLES = (QUERY, INGEST)
PASSAGES_MAX_WAIT_S = 2.0


class ModelTurns:
    """Questions first, passages one at a time when no question runs (see the module docstring)."""

    def __init__(self, *, passages_max_wait_s: float = PASSAGES_MAX_WAIT_S) -> None:
        self._changed = threading.Condition()
        self._questions = 0  # question calls in progress
        self._passages = False  # a passage call in progress
        self.passages_max_wait_s = passages_max_wait_s

    @contextlib.contextmanager
    def turn(self, role: str) -> Iterator[None]:
        """Hold `role`'s turn (``query`` or ``ingest``) for the block."""
        if role == QUERY:
            with self._changed:
                self._questions += 1
            try:
                yield
            finally:
                with self._changed:
                    self._questions -= 1
                    self._changed.notify_all()
            return
        deadline = time.monotonic() + self.passages_max_wait_s
        with self._changed:
            while self._passages or (self._questions and time.monotonic() < deadline):
                # Woken when a call ends; with only questions in the way, at the deadline at the latest.
                self._changed.wait(None if self._passages else deadline - time.monotonic())
            self._passages = True
        try:
            yield
        finally:
            with self._changed:
                self._passages = False
                self._changed.notify_all()


class TurnTakingEncoder:
    """`model` (a `models.embedding_models.TextEncoder`) whose every call takes `role`'s turn of `turns`.
    Same vectors, same attributes (`name`, `dim`, `max_call`: the most texts the embedder should give one call)."""

    def __init__(self, model, turns: ModelTurns, role: str) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.name: str = model.name
        self.dim: int = model.dim
        self.max_call: int = getattr(model, "max_call", 256)
        self._turns = turns
        self._role = role

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._turns.turn(self._role):
            return self.model.embed(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._turns.turn(self._role):
            return self.model.embed_passages(texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        with self._turns.turn(self._role):
            return self.model.embed_queries(texts)

    def embed_array(self, texts: list[str]) -> np.ndarray:
        with self._turns.turn(self._role):
            return self.model.embed_array(texts)
