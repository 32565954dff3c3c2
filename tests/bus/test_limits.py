"""Start-up invariants: a chunks.embedded message must fit the NATS server's max_payload."""

from __future__ import annotations

import pytest

from bus.limits import SettingsExceedPayload, check_embedded_fits, embedded_message_bound
from contracts.messages import ChunksEmbedded, EmbeddedChunk
from contracts.topology import DEFAULT_MAX_PAYLOAD


def worst_case_message(*, chunks: int, chars: int, dim: int) -> bytes:
    """The biggest message these settings allow: long ids and filename, 3-byte characters, long floats."""
    text = ("€" * (chars - 1)) + '"'  # multi-byte UTF-8 plus a character JSON must escape
    embedded = [
        EmbeddedChunk(
            chunk_id=f"{'d' * 64}-{i}", index=i, doc_id="d" * 64, tenant="t" * 64, filename="f" * 255, page=99999,
            bbox=(-123456.789012345, -123456.789012345, 123456.789012345, 123456.789012345), modality="image",
            text=text, prev_chunk_id=f"{'d' * 64}-{i - 1}", next_chunk_id=f"{'d' * 64}-{i + 1}",
            vector=[-0.012345678901234567] * dim,
        )
        for i in range(chunks)
    ]  # fmt: skip
    message = ChunksEmbedded(
        doc_id="d" * 64, tenant="t" * 64, generation=999, revision=10**12, batch_index=chunks - 1, model="m" * 100, embedded_by="r" * 100, chunks=embedded,
    )  # fmt: skip
    return message.model_dump_json().encode()


@pytest.mark.parametrize(("chunks", "chars", "dim"), [(32, 1000, 384), (8, 4000, 1024), (1, 100, 3)])
def test_the_bound_is_an_upper_bound_of_real_messages(chunks: int, chars: int, dim: int) -> None:
    size = len(worst_case_message(chunks=chunks, chars=chars, dim=dim))
    assert size <= embedded_message_bound(chunks_per_message=chunks, chunk_max_chars=chars, dim=dim)


def test_defaults_fit_and_a_big_model_with_big_batches_is_refused_with_the_fix() -> None:
    check_embedded_fits(max_payload=DEFAULT_MAX_PAYLOAD, chunks_per_message=32, chunk_max_chars=1000, dim=384)
    with pytest.raises(SettingsExceedPayload, match=r"set MMRAG_CHUNKS_PER_MESSAGE to \d+ or less") as err:
        check_embedded_fits(max_payload=DEFAULT_MAX_PAYLOAD, chunks_per_message=64, chunk_max_chars=4000, dim=1024)
    fitting = int(str(err.value).split("MMRAG_CHUNKS_PER_MESSAGE to ")[1].split()[0])
    check_embedded_fits(max_payload=DEFAULT_MAX_PAYLOAD, chunks_per_message=fitting, chunk_max_chars=4000, dim=1024)
    with pytest.raises(SettingsExceedPayload):
        check_embedded_fits(max_payload=DEFAULT_MAX_PAYLOAD, chunks_per_message=fitting + 1, chunk_max_chars=4000, dim=1024)


def test_an_embedder_whose_settings_exceed_the_payload_refuses_to_start(nats_server) -> None:
    import os
    import subprocess

    from tests.engine import BIN

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NATS_URL": nats_server.url,
           "MMRAG_CHUNKS_PER_MESSAGE": "64", "MMRAG_CHUNK_MAX_CHARS": "4000"}  # fmt: skip
    result = subprocess.run([str(BIN / "mmrag"), "agent", "embedder"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "MMRAG_CHUNKS_PER_MESSAGE" in result.stdout + result.stderr
