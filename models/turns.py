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

Turns order the calls, not the cores: a passage call already running kept both cores at the priority of the
question's threads, so the question's sentence scoring ran at half speed beside it (search p95 during ingest
3.6x idle, bench/results/ingest.md at 9b2aeb3). So passages also run at a lower CPU priority, like the parser's
and OCR's worker processes: `BackgroundThread` is one thread at `INGEST_NICENESS`, in which the passage side
of a model is loaded (ONNX Runtime's intra-op threads are created then, and inherit the thread's niceness:
Linux keeps it per thread) and every passage call runs. Alone, the passages get the cores as before; beside a
question, the kernel gives the question's threads about nine tenths of them.

`TurnTakingEncoder` is a text model whose every call takes its role's turn. Thread-safe: model calls run in
worker threads (`asyncio.to_thread`), so the waiting is on a `threading.Condition`, not the event loop. The
embedder's lanes (interactive before bulk) are ordered before their calls get here
(`agents.runtime.priority.PriorityLock`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")

QUERY = "query"  # a question's embedding, the reranker's sentences, the abstention's paraphrase cosine
INGEST = "ingest"  # a document's passages
ROLES = (QUERY, INGEST)
PASSAGES_MAX_WAIT_S = 2.0
# The niceness of ingest work (passage calls here, the parser's and OCR's worker processes in
# `agents.runtime.work_pool`): weight 110 against a question's 1024 in Linux's scheduler.
INGEST_NICENESS = 10


def lower_this_threads_priority(niceness: int = INGEST_NICENESS) -> bool:
    """Add `niceness` to the calling thread's nice value (Linux: per thread; elsewhere the call may reach the whole
    process, so it is skipped there). False when it could not be lowered (logged, the work runs anyway)."""
    if not hasattr(os, "setpriority") or not os.path.isdir(f"/proc/self/task/{threading.get_native_id()}"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
        return True
    except OSError:
        log.warning("could not lower the ingest thread's CPU priority; passages run at the questions' priority")
        return False


class BackgroundThread:
    """One worker thread at `INGEST_NICENESS`: `call(fn, *args)` runs `fn` there and returns its result (or raises
    its error) to the calling thread. What `fn` starts (ONNX Runtime's thread pool, when a model is loaded
    through `call`) inherits the lower priority."""

    def __init__(self, name: str = "mmrag-ingest-model") -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=lower_this_threads_priority)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        return self._executor.submit(fn, *args).result()


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
    """`model` (a `models.embedding_models.TextEncoder`) whose every call takes `role`'s turn of `turns`, and
    runs in `background` when one is given (the ingest side: `BackgroundThread`), else in the calling thread.
    Same vectors, same attributes (`name`, `dim`, `max_call`: the most texts the embedder should give one call)."""

    def __init__(self, model, turns: ModelTurns, role: str, background: BackgroundThread | None = None) -> None:  # type: ignore[no-untyped-def]
        self.model = model
        self.name: str = model.name
        self.dim: int = model.dim
        self.max_call: int = getattr(model, "max_call", 256)
        self._turns = turns
        self._role = role
        self._background = background

    def _call(self, method: Callable[[list[str]], T], texts: list[str]) -> T:
        with self._turns.turn(self._role):
            return self._background.call(method, texts) if self._background else method(texts)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._call(self.model.embed, texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._call(self.model.embed_passages, texts)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._call(self.model.embed_queries, texts)

    def embed_array(self, texts: list[str]) -> np.ndarray:
        return self._call(self.model.embed_array, texts)
