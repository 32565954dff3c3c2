"""A process's text-model calls take turns, questions first (`models.turns`), through the models the agents get
(`models.embedding_models.EmbeddingModels`): a question's call never waits, a document's passages wait while a
question is embedded (issue 15: `/v1/search` p95 was 12.5 s during an ingest, 0.45 s idle)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from models.embedding_models import EmbeddingModels
from models.turns import INGEST, INGEST_NICENESS, QUERY, ModelTurns


class Gated:
    """A text model whose calls each wait for their own release; records which calls started and overlapped."""

    name = "gated"
    dim = 2

    def __init__(self) -> None:
        self.started: list[str] = []
        self.releases: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self.overlaps: set[frozenset[str]] = set()
        self._lock = threading.Lock()

    def _call(self, texts: list[str]) -> np.ndarray:
        name = texts[0]
        with self._lock:
            self.started.append(name)
            self.overlaps |= {frozenset((name, other)) for other in self.running}
            self.running.add(name)
            release = self.releases.setdefault(name, threading.Event())
        assert release.wait(10), f"{name} was never released"
        with self._lock:
            self.running.discard(name)
        return np.ones((len(texts), self.dim), dtype=np.float32)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._call(texts).tolist()

    embed_passages = embed_queries = embed_array = _call

    def release(self, name: str) -> None:
        with self._lock:
            self.releases.setdefault(name, threading.Event()).set()


def _start(fn, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _settle() -> None:
    time.sleep(0.2)  # long enough for a thread that may start a call to start it


def test_a_question_starts_at_once_and_passages_wait_for_the_questions() -> None:
    model = Gated()
    models = EmbeddingModels("minilm", lambda: model)
    models.turns.passages_max_wait_s = 30  # this test is about the order, not the bound
    ingest, query = models.get(None, "ingest"), models.get(None, "query")
    threads = [_start(ingest.embed, ["passages 1"])]
    _until(lambda: model.started == ["passages 1"], "the first passage call did not start")
    threads.append(_start(ingest.embed_passages, ["passages 2"]))
    threads.append(_start(query.embed_queries, ["question"]))
    threads.append(_start(query.embed_array, ["sentences"]))
    _until(lambda: len(model.started) == 3, "a question waited for the passage call in progress")
    assert set(model.started[1:]) == {"question", "sentences"}  # the queued passages did not go first
    model.release("passages 1")
    _settle()
    assert "passages 2" not in model.started  # questions are being embedded: passages wait
    model.release("question")
    _settle()
    assert "passages 2" not in model.started  # one question left
    model.release("sentences")
    _until(lambda: "passages 2" in model.started, "the passages did not go on after the questions")
    model.release("passages 2")
    for t in threads:
        t.join(10)
    # questions ran beside each other and beside the call already running; passage calls never overlapped
    assert frozenset(("passages 1", "passages 2")) not in model.overlaps
    assert frozenset(("question", "sentences")) in model.overlaps


def test_passage_calls_run_one_at_a_time() -> None:
    model = Gated()
    models = EmbeddingModels("minilm", lambda: model)
    ingest = models.get(None, "ingest")
    threads = [_start(ingest.embed, ["a"]), _start(ingest.embed, ["b"])]
    _until(lambda: len(model.started) == 1, "no passage call started")
    _settle()
    assert len(model.started) == 1
    model.release(model.started[0])
    _until(lambda: len(model.started) == 2, "the second passage call did not follow")
    model.release(model.started[1])
    for t in threads:
        t.join(10)
    assert not model.overlaps


def test_a_stream_of_questions_delays_passages_by_the_bound_at_most() -> None:
    turns = ModelTurns(passages_max_wait_s=0.3)
    question_done = threading.Event()
    in_question = threading.Event()

    def question() -> None:
        with turns.turn(QUERY):
            in_question.set()
            question_done.wait(10)

    thread = _start(question)
    assert in_question.wait(10)
    t0 = time.monotonic()
    with turns.turn(INGEST):  # the question is still running: passages go anyway after the bound
        waited = time.monotonic() - t0
    question_done.set()
    thread.join(10)
    assert 0.25 <= waited < 5


def test_an_unknown_role_is_refused_and_a_failed_call_passes_its_turn_on() -> None:
    models = EmbeddingModels("minilm", Gated)
    with pytest.raises(ValueError, match="one of query, ingest"):
        models.get(None, "passages")
    turns = ModelTurns()
    with pytest.raises(RuntimeError), turns.turn(INGEST):
        raise RuntimeError("the model failed")
    with turns.turn(INGEST):  # would wait forever if the failed call had kept the turn
        pass


def _nice(tid: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


class Niceness(Gated):
    """Records the nice value of the thread each call ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.nice: dict[str, int] = {}

    def _call(self, texts: list[str]) -> np.ndarray:
        self.nice[texts[0]] = _nice(threading.get_native_id())
        return np.ones((len(texts), self.dim), dtype=np.float32)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._call(texts).tolist()

    embed_passages = embed_queries = embed_array = _call


def test_passages_run_at_the_ingest_niceness_and_questions_at_the_processs() -> None:
    """Turns order the calls; the cores are shared by priority: a passage call already running must not take half
    of them from a question (search p95 during ingest was 3.6x idle with turns alone)."""
    model = Niceness()
    models = EmbeddingModels("minilm", lambda: model)
    own = _nice(threading.get_native_id())
    models.get(None, "ingest").embed(["passages"])
    models.get(None, "query").embed_queries(["question"])
    assert model.nice == {"passages": own + INGEST_NICENESS, "question": own}
    assert _nice(threading.get_native_id()) == own  # the caller's thread is left as it was


def test_the_real_models_passage_threads_are_created_at_the_ingest_niceness() -> None:
    """ONNX Runtime's intra-op threads are made when the session loads and keep the niceness of the thread that
    loaded it: the ingest side is loaded in the background thread, so its whole thread pool runs lower."""
    from agents.runtime.resources import text_embedder
    from agents.settings import AgentSettings

    settings = AgentSettings(embedding_threads=2)
    own = _nice(threading.get_native_id())
    before = set(os.listdir("/proc/self/task"))
    models = EmbeddingModels("minilm", lambda: text_embedder(settings))
    passages = models.get(None, "ingest")
    new = {int(t) for t in set(os.listdir("/proc/self/task")) - before}
    assert passages.embed_passages(["a passage"]).shape == (1, 384)
    niced = {t for t in new if _nice(t) == own + INGEST_NICENESS}
    assert len(niced) >= 2, f"the background thread and ORT's pool thread: {new} -> {niced}"
    loaded = set(os.listdir("/proc/self/task"))
    models.get(None, "query").embed_queries(["a question"])
    questions = {int(t) for t in set(os.listdir("/proc/self/task")) - loaded}
    assert questions and all(_nice(t) == own for t in questions), "the question side's pool runs at full priority"
