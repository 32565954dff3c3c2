"""Invariants between settings and the server, checked at start-up instead of assumed."""

from __future__ import annotations

# Upper bounds of one chunk's share of a `chunks.embedded` message, as pydantic writes JSON: a float is at
# most ~24 characters with its comma, text is UTF-8 (up to 3 bytes a character for most scripts, escapes
# included), and ids, filename, bbox and field names add a fixed amount.
_BYTES_PER_FLOAT = 24
_BYTES_PER_CHAR = 3
_BYTES_PER_CHUNK = 800
_BYTES_PER_MESSAGE = 1024


def embedded_message_bound(*, chunks_per_message: int, chunk_max_chars: int, dim: int) -> int:
    """The largest a `chunks.embedded` message can be with these settings, in bytes."""
    per_chunk = dim * _BYTES_PER_FLOAT + chunk_max_chars * _BYTES_PER_CHAR + _BYTES_PER_CHUNK
    return chunks_per_message * per_chunk + _BYTES_PER_MESSAGE


class SettingsExceedPayload(ValueError):
    """The settings allow a message larger than the NATS server accepts."""


def check_embedded_fits(*, max_payload: int, chunks_per_message: int, chunk_max_chars: int, dim: int) -> None:
    """Raise `SettingsExceedPayload`, naming the setting to change, if a batch could exceed `max_payload`."""
    bound = embedded_message_bound(chunks_per_message=chunks_per_message, chunk_max_chars=chunk_max_chars, dim=dim)
    if bound <= max_payload:
        return
    fitting = max(
        (n for n in range(1, chunks_per_message)
         if embedded_message_bound(chunks_per_message=n, chunk_max_chars=chunk_max_chars, dim=dim) <= max_payload),
        default=0,
    )  # fmt: skip
    fix = (
        f"set MMRAG_CHUNKS_PER_MESSAGE to {fitting} or less" if fitting
        else "lower MMRAG_CHUNK_MAX_CHARS"
    ) + " (or raise max_payload in the NATS server configuration)"  # fmt: skip
    raise SettingsExceedPayload(
        f"a chunks.embedded message of {chunks_per_message} chunks x {chunk_max_chars} characters with "
        f"{dim}-dimensional vectors can reach {bound} bytes, over the NATS server's max_payload of "
        f"{max_payload} bytes: {fix}"
    )
