"""`mmrag chat`: an interactive loop over one conversation of a running engine.

Each line read from stdin is asked in the conversation (`POST /v1/ask` with its `conversation_id`), so a follow-up
("and how much does it weigh?") is resolved against the earlier turns; the answer streams to stdout followed by its
citations. On a terminal a `you>` prompt is shown; piped, the lines are read as they come (how tests drive it).
It ends at the end of input, on `/quit`, or on Ctrl-C. Without `--conversation` a new conversation is created
and its id is printed on stderr, to continue it later.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from mmrag.client import EngineError, ask_events, client, conversation, create_conversation

QUIT = frozenset({"/quit", "/exit"})


async def chat(url: str, api_key: str | None, conversation_id: str | None, top_k: int, err: Console) -> int:
    interactive = sys.stdin.isatty()
    async with client(url, api_key=api_key) as http:
        if conversation_id is None:
            created = await create_conversation(http)
            conversation_id = created["id"]
            err.print(f"conversation {conversation_id} (continue it: mmrag chat --conversation {conversation_id})")
        else:
            found = await conversation(http, conversation_id)
            err.print(f"continuing {escape(found['title'])!r} ({found['turn_count']} turns)")
        while True:
            if interactive:
                err.print("[bold]you>[/bold] ", end="")
            line = sys.stdin.readline()
            if not line:  # end of input
                return 0
            question = line.strip()
            if not question:
                continue
            if question in QUIT:
                return 0
            await _answer(http, question, conversation_id, top_k, err)


async def _answer(http: Any, question: str, conversation_id: str, top_k: int, err: Console) -> None:
    citations: list[dict[str, Any]] = []
    wrote = False
    async for event, data in ask_events(http, question, top_k, conversation_id=conversation_id):
        if event == "retrieval" and data.get("searched") and data["searched"] != question:
            err.print(f"[dim](searched: {escape(data['searched'])})[/dim]")
        elif event == "token":
            sys.stdout.write(data["text"])
            sys.stdout.flush()
            wrote = True
        elif event == "reset":  # a provider failed mid-answer: what was printed is void
            if wrote:
                print()
            err.print(f"[yellow](answer restarted: {escape(data.get('reason', ''))})[/yellow]")
            citations.clear()
            wrote = False
        elif event == "citation":
            citations.append(data)
        elif event == "error":
            if wrote:
                print()
            raise EngineError(f"{data.get('code', 'error')}: {data.get('message', '')}")
    print()
    for c in citations:
        where = c.get("locator") or f"page {c['page']}"  # an office file's slide, sheet rows or section
        print(f"[{c['n']}] {c['filename']} {where} (doc {c['doc_id']})")
    print(flush=True)
