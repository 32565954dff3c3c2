"""Stand-ins shared by several test modules, for what a test needs to observe or to misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler

from contracts.messages import AnswerEvent, answer_event_adapter


class RecordingNats:
    """Stands in for the NATS connection of an `AnswerEmitter`: keeps what would be published, in order."""

    def __init__(self) -> None:
        self.events: list[AnswerEvent] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.events.append(answer_event_adapter.validate_json(data))

    async def flush(self) -> None:
        pass


@contextlib.asynccontextmanager
async def silent_tcp_server() -> AsyncIterator[int]:
    """A loopback port that accepts connections, reads, and never answers (a hung Redis); yields the port."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def send_openai_stream(handler: BaseHTTPRequestHandler, text: str) -> None:
    """Answer an OpenAI-compatible `chat/completions` request (an `http.server` handler's) as the real APIs
    stream it: `text` in one delta, a `stop`, then ``[DONE]``."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    handler.wfile.write(f"data: {json.dumps(delta)}\n\ndata: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
