"""One streaming call to an OpenAI-compatible `POST {base_url}/chat/completions` (`stream: true`).

The SSE stream is read with `httpx-sse`, never parsed by hand. Every way a call can go wrong (connect error,
HTTP error status, timeout, a dropped connection, a malformed or error payload, a stream that ends without
saying it is finished, an empty answer) raises `ProviderError`, whose message never contains the API key:
the key only travels in the Authorization header, and no header or request body is put in a message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel, ConfigDict, Field, SecretStr


class LLMProvider(BaseModel):
    """One OpenAI-compatible chat-completions endpoint of the generator's provider chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="names the provider in logs and `done.answerer`")
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://api.groq.com/openai/v1")
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token; never logged")
    model: str = Field(min_length=1)
    vision: bool = Field(
        default=False,
        description="the model reads images: the pictures of image hits are sent with their caption and OCR text",
    )


class ProviderError(Exception):
    """A provider failed; `str()` is safe to log (no key, no response body)."""


def _delta(data: str) -> tuple[str, bool]:
    """(text, finished) of one `data:` payload of a chat-completion chunk."""
    try:
        chunk: Any = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"malformed stream: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(chunk, dict):
        raise ProviderError("malformed stream: a chunk is not an object")
    if chunk.get("error"):  # vLLM, llama.cpp and others report failures inside the stream
        raise ProviderError("the provider reported an error in the stream")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise ProviderError("malformed stream: no choices")
    if not choices:  # e.g. a trailing usage-only chunk
        return "", False
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ProviderError("malformed stream: a choice is not an object")
    delta = choice.get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if text is not None and not isinstance(text, str):
        raise ProviderError("malformed stream: content is not text")
    return text or "", choice.get("finish_reason") is not None


async def stream_chat(
    client: httpx.AsyncClient,
    provider: LLMProvider,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    timeout: httpx.Timeout,
) -> AsyncIterator[str]:
    """Yield the answer's text as it arrives (non-empty pieces only); raise `ProviderError` on any failure.

    `timeout.read` bounds the wait for the response headers and then for each next piece of the stream.
    """
    url = provider.base_url.rstrip("/") + "/chat/completions"
    headers = {"Accept": "text/event-stream"}
    if provider.api_key is not None:
        headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
    body = {"model": provider.model, "messages": messages, "stream": True, "max_tokens": max_tokens}
    finished = got_text = False
    try:
        async with aconnect_sse(client, "POST", url, json=body, headers=headers, timeout=timeout) as source:
            status = source.response.status_code
            if status != 200:
                raise ProviderError(f"HTTP {status}")
            async for sse in source.aiter_sse():
                if sse.data.strip() == "[DONE]":
                    finished = True
                    break
                if not sse.data:
                    continue
                text, done = _delta(sse.data)
                if text:
                    got_text = True
                    yield text
                finished = finished or done
    except httpx.TimeoutException as exc:
        raise ProviderError(f"timed out ({exc.__class__.__name__})") from None
    except httpx.HTTPError as exc:  # connect errors, dropped connections, protocol errors
        raise ProviderError(f"{exc.__class__.__name__}: {exc}") from None
    except SSEError as exc:  # not an event stream (e.g. a JSON error page with status 200)
        raise ProviderError(f"malformed stream: {exc}") from None
    if not finished:
        raise ProviderError("the stream ended before the answer was finished")
    if not got_text:
        raise ProviderError("empty answer")
