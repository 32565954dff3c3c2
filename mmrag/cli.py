"""The `mmrag` command line: run the engine, run one agent, ingest, ask, export schemas."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

app = typer.Typer(help="mmrag: multi-modal RAG engine on NATS JetStream.", no_args_is_help=True)
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOption = Annotated[str, typer.Option("--url", envvar="MMRAG_URL", help="base URL of a running engine")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address of the HTTP API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the HTTP API")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="where NATS and Qdrant keep their files")] = Path(".mmrag-data"),
    nats_port: Annotated[int, typer.Option(help="loopback port of the embedded nats-server")] = 4222,
    verbose: bool = False,
) -> None:
    """Run the whole engine on embedded defaults (nats-server, six agents, edge API)."""
    from agents.runner import up as run_up

    _logging(verbose)
    asyncio.run(run_up(host=host, port=port, data_dir=data_dir, nats_port=nats_port))


@app.command()
def agent(
    names: Annotated[list[str], typer.Argument(help="one or more of: parser embedder indexer retriever reranker generator")],
    verbose: bool = False,
) -> None:
    """Run agents against NATS_URL (one Deployment per agent on Kubernetes)."""
    import signal

    from agents.registry import AGENT_NAMES
    from agents.runtime.host import run_agents
    from agents.settings import AgentSettings

    unknown = [n for n in names if n not in AGENT_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown agent(s) {', '.join(unknown)}; choose from {', '.join(AGENT_NAMES)}")
    _logging(verbose)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_agents(names, AgentSettings(), stop)

    asyncio.run(main())


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="PDF, .txt or .md files")],
    url: UrlOption = DEFAULT_URL,
    wait: Annotated[bool, typer.Option(help="wait until every document is indexed or failed")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for indexing")] = 600,
) -> None:
    """Upload documents to a running engine and follow them to `indexed`."""
    from agents.client import EngineError, status, upload

    async def main() -> int:
        failures = 0
        async with aiohttp.ClientSession() as session:
            docs = []
            for path in paths:
                try:
                    doc = await upload(session, url, path)
                except EngineError as e:
                    err.print(f"[red]rejected[/red] {path}: {e}")
                    failures += 1
                    continue
                docs.append((path, doc["doc_id"]))
                print(f"{doc['doc_id']}  {path}")
            if not wait:
                return failures
            columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"))
            with Progress(*columns, console=err) as progress:
                tasks = {doc_id: progress.add_task(path.name, total=None, state="queued") for path, doc_id in docs}
                pending = dict(tasks)
                deadline = asyncio.get_running_loop().time() + timeout
                while pending and asyncio.get_running_loop().time() < deadline:
                    for doc_id, task in list(pending.items()):
                        st = await status(session, url, doc_id)
                        progress.update(
                            task, total=st.get("chunks_total"), completed=st.get("chunks_indexed", 0), state=st["status"]
                        )
                        if st["status"] in ("indexed", "failed"):
                            del pending[doc_id]
                            if st["status"] == "failed":
                                failures += 1
                                err.print(f"[red]failed[/red] {doc_id}: {st.get('error')}")
                    await asyncio.sleep(0.3)
                if pending:
                    err.print(f"[yellow]still in progress after {timeout}s:[/yellow] {', '.join(pending)}")
                    failures += len(pending)
        return failures

    raise typer.Exit(code=1 if asyncio.run(main()) else 0)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    url: UrlOption = DEFAULT_URL,
    top_k: Annotated[int, typer.Option(help="how many passages to use")] = 5,
) -> None:
    """Ask a running engine; the answer streams to stdout, then its citations."""
    from agents.client import ask_events

    async def main() -> int:
        citations = []
        async with aiohttp.ClientSession() as session:
            async for event, data in ask_events(session, url, question, top_k):
                if event == "token":
                    sys.stdout.write(data["text"])
                    sys.stdout.flush()
                elif event == "citation":
                    citations.append(data)
                elif event == "error":
                    err.print(f"\n[red]error[/red] {data['code']}: {data['message']}")
                    return 1
        print()
        for c in citations:
            print(f"[{c['n']}] {c['filename']} page {c['page']} (doc {c['doc_id']})")
        return 0

    raise typer.Exit(code=asyncio.run(main()))


@app.command()
def schemas(out: Annotated[Path, typer.Option(help="folder for the JSON Schema files")] = Path("docs/schemas")) -> None:
    """Write the JSON Schema of every message into a folder."""
    from contracts.schemas import write_schemas

    for path in write_schemas(out):
        print(path)


if __name__ == "__main__":
    app()
