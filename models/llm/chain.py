"""The ordered provider chain: providers are tried in order until one answers completely.

`ProviderChain.stream` yields what happens, for the generator to turn into answer events:

- `Text(provider, text)`: the next piece of the current provider's answer;
- `Failed(provider, reason, mid_stream)`: that provider failed; `mid_stream` when it had already produced text
  (the generator then tells the client to discard it). The next provider, if any, starts from scratch;
- `Completed(provider)`: the current provider's answer is complete; nothing follows.

When the stream ends without `Completed`, every provider failed: the generator's offline answerer is the last
link. Each failure is logged in one line (provider name and reason, never the key) and counted in `FALLBACKS`.

Each provider has a circuit breaker (`models.llm.breaker`): after `circuit_failures` failures in a row it is
skipped at once for `circuit_cooldown_s` (a `Failed` with `mid_stream=False`, stage `circuit_open`, logged at
debug level only), then one trial request decides whether it is called again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from models.llm.breaker import CircuitBreaker, CircuitState
from models.llm.client import LLMProvider, ProviderError, stream_chat
from telemetry.metrics import LLM_FALLBACKS

log = logging.getLogger(__name__)

# (provider name, "before_first_token" | "mid_stream") -> failures, for the metrics endpoint to export.
FALLBACKS: Counter[tuple[str, str]] = Counter()


@dataclass(frozen=True)
class Text:
    provider: str
    text: str


@dataclass(frozen=True)
class Failed:
    provider: str
    reason: str
    mid_stream: bool


@dataclass(frozen=True)
class Completed:
    provider: str


ChainItem = Text | Failed | Completed


class ProviderChain:
    def __init__(
        self,
        providers: Sequence[LLMProvider],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_tokens: int,
        circuit_failures: int = 3,
        circuit_cooldown_s: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.providers = list(providers)
        self.breakers = {
            p.name: CircuitBreaker(p.name, failure_threshold=circuit_failures, cooldown_s=circuit_cooldown_s)
            for p in self.providers
        }
        self.max_tokens = max_tokens
        self.timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._client = client
        self._own_client = client is None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def stream(
        self, messages: list[dict[str, Any]], *, vision_messages: list[dict[str, Any]] | None = None
    ) -> AsyncIterator[ChainItem]:
        """The first provider's answer that completes, as `Text` pieces then `Completed`; `Failed` for each provider
        that fails (the next one is tried). A provider marked `vision` gets `vision_messages` when given (the same
        prompt with the pictures), every other provider `messages`."""
        for index, provider in enumerate(self.providers):
            sent = vision_messages if provider.vision and vision_messages is not None else messages
            following = self.providers[index + 1].name if index + 1 < len(self.providers) else "extractive"
            breaker = self.breakers[provider.name]
            state = breaker.allow()
            if state is None:
                FALLBACKS[(provider.name, "circuit_open")] += 1
                LLM_FALLBACKS.labels(provider.name, "circuit_open").inc()
                log.debug("llm provider %r skipped: its circuit is open; %r answers", provider.name, following)
                yield Failed(provider.name, "circuit open: the provider failed repeatedly", mid_stream=False)
                continue
            trial = state is CircuitState.HALF_OPEN
            produced = False
            try:
                async for text in stream_chat(
                    self._http(), provider, sent, max_tokens=self.max_tokens, timeout=self.timeout
                ):
                    produced = True
                    yield Text(provider.name, text)
            except ProviderError as exc:
                breaker.failure(trial=trial)
                stage = "mid_stream" if produced else "before_first_token"
                FALLBACKS[(provider.name, stage)] += 1
                LLM_FALLBACKS.labels(provider.name, stage).inc()
                log.warning(
                    "llm provider %r failed %s (%s); falling back to %r",
                    provider.name, stage.replace("_", " "), exc, following,
                )  # fmt: skip
                yield Failed(provider.name, str(exc), mid_stream=produced)
                continue
            except BaseException:  # cancelled, or the caller stopped reading: no outcome to judge the provider by
                breaker.abandon(trial=trial)
                raise
            breaker.success(trial=trial)
            yield Completed(provider.name)
            return
