"""A circuit breaker per LLM provider: a provider that keeps failing is not called for a while.

Without it, a provider that hangs makes every question wait `MMRAG_LLM_READ_TIMEOUT_S` before the next link (the
next provider, then the offline extractive answerer) answers. The states:

- **closed**: calls go through; `failure_threshold` failures in a row (errors and timeouts alike, before or
  during the answer) open it. A success resets the count.
- **open** for `cooldown_s`: `allow()` is False, the chain skips the provider at once.
- **half-open** once the cool-down has passed: `allow()` lets exactly one call through (the trial) and keeps
  refusing the others while it runs; its success closes the circuit, its failure opens it for another
  cool-down. A trial that ends neither way (the question was cancelled) gives the next call the trial.

`failure_threshold` 0 turns the breaker off (always closed). Opening and closing are logged in one line each
and exported as the gauge `mmrag_llm_circuit_open{provider}` (1 open or half-open, 0 closed). No library is
used: none of the maintained breakers (pybreaker, aiobreaker, purgatory) is installed, and the project adds no
dependency outside its lock (decision 77).
"""

from __future__ import annotations

import logging
import time
from enum import Enum

from telemetry.metrics import LLM_CIRCUIT_OPEN

log = logging.getLogger(__name__)
_now = time.monotonic  # the breaker's clock (tests move it instead of waiting out a cool-down)


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The circuit of one provider (one per provider and `ProviderChain`; a process's chains do not share it)."""

    def __init__(self, provider: str, *, failure_threshold: int, cooldown_s: float) -> None:
        if failure_threshold < 0 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 0 (0 = off) and cooldown_s > 0")
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._failures = 0  # in a row
        self._opened_at: float | None = None  # None: closed
        self._trial = False  # a half-open trial call is running
        LLM_CIRCUIT_OPEN.labels(provider).set(0)

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if _now() - self._opened_at < self.cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self) -> CircuitState | None:
        """Whether to call the provider now: None (skip it), or the state the call runs in; a `HALF_OPEN` call is
        the one trial, and its caller must report how it ended (`success`, `failure` or `abandon`, with
        `trial=True`)."""
        state = self.state
        if state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._trial):
            return None
        if state is CircuitState.HALF_OPEN:
            self._trial = True
            log.info("llm provider %r: cool-down over, trying one request (circuit half-open)", self.provider)
        return state

    def success(self, *, trial: bool = False) -> None:
        if self._opened_at is not None:
            log.warning("llm provider %r answered again: circuit closed, it is called again", self.provider)
            LLM_CIRCUIT_OPEN.labels(self.provider).set(0)
        self._failures, self._opened_at = 0, None
        if trial:
            self._trial = False

    def failure(self, *, trial: bool = False) -> None:
        self._failures += 1
        if trial:
            self._trial = False
        if trial or (self.failure_threshold and self._failures >= self.failure_threshold and self._opened_at is None):
            self._opened_at = _now()
            LLM_CIRCUIT_OPEN.labels(self.provider).set(1)
            why = "its trial request failed" if trial else f"{self._failures} failures in a row"
            log.warning(
                "llm provider %r: circuit open after %s; not called for %gs, questions go to the next link "
                "(MMRAG_LLM_CIRCUIT_FAILURES, MMRAG_LLM_CIRCUIT_COOLDOWN_S)",
                self.provider, why, self.cooldown_s,
            )  # fmt: skip

    def abandon(self, *, trial: bool = False) -> None:
        """A call ended without an outcome (its question was cancelled): if it was the trial, the next call may try."""
        if trial:
            self._trial = False
