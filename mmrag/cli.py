"""The `mmrag` command line: run the engine, run one agent, ingest, sync, ask, chat, search, list, delete, export
schemas.

Ordinary failures (engine not running, a 4xx/5xx answer, a data dir in use, a port taken) are ONE line on
stderr and exit code 1: no traceback. A traceback means a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

if TYPE_CHECKING:
    from mmrag.client import CitationData, Hit

app = typer.Typer(
    help="mmrag: multi-modal RAG engine on NATS JetStream.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
# soft_wrap: a long message stays one line (rich would wrap it at 80 columns when stderr is not a terminal).
err = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_URL = "http://127.0.0.1:8080"
UrlOption = Annotated[str, typer.Option("--url", envvar="MMRAG_URL", help="base URL of a running engine")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="MMRAG_API_KEY", show_default=False, help="API key (not needed in local mode)"),
]
DEFAULT_KEYS_FILE = Path(".mmrag-data") / "api-keys.json"
DocOption = Annotated[
    list[str] | None, typer.Option("--doc", show_default=False, help="only this document (repeat for several)")
]
ModalityOption = Annotated[
    list[str] | None,
    typer.Option("--modality", show_default=False, help="only text, table or image chunks (repeat for several)"),
]
PagesOption = Annotated[
    str | None, typer.Option("--pages", show_default=False, help="only these pages: 3-5, 4, 3- or -5")
]
KeysFileOption = Annotated[
    Path, typer.Option("--file", envvar="MMRAG_API_KEYS_FILE", help="the keys file (JSON, keys stored hashed)")
]


def _logging(verbose: bool) -> None:
    """structlog JSON lines, or a console rendering on a terminal (`MMRAG_LOG_FORMAT`, `telemetry.logs`)."""
    from telemetry.logs import configure_logging

    configure_logging(logging.DEBUG if verbose else logging.INFO)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(' '.join(message.split()))}")
    raise typer.Exit(code)


def _run(main: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; an `EngineError` becomes one line on stderr and exit code 1."""
    from mmrag.client import EngineError

    try:
        code = asyncio.run(main)
    except EngineError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address of the HTTP API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the HTTP API")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="where NATS and Qdrant keep their files")] = Path(".mmrag-data"),
    nats_port: Annotated[int, typer.Option(help="loopback port of the embedded nats-server")] = 4222,
    nats_monitor_port: Annotated[
        int, typer.Option(help="loopback port of nats-server's HTTP monitoring (/varz, /jsz: what KEDA reads)")
    ] = 8222,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            show_default=False,
            help="use this NATS (server or cluster, comma-separated URLs) instead of starting nats-server; the "
            "topology is created there with MMRAG_STREAM_REPLICAS replicas (3 on a cluster); --nats-port and "
            "--nats-monitor-port are then unused",
        ),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="require API keys even on loopback (always on for other addresses); with no key yet, creates an "
            "operator key for tenant `default` in <data-dir>/api-keys.json and prints it once"
        ),
    ] = False,
    verbose: bool = False,
) -> None:
    """Run the whole engine on embedded defaults (nats-server, the eight agents, edge API), or on an existing NATS."""
    from mmrag.datadir import DataDirInUse
    from mmrag.processes import StartError
    from mmrag.runner import ShutdownHung
    from mmrag.runner import up as run_up
    from mmrag.supervisor import GaveUp
    from models.embedding_onnx import ModelCacheNotWritable

    _logging(verbose)
    try:
        asyncio.run(
            run_up(
                host=host, port=port, data_dir=data_dir, nats_port=nats_port, nats_monitor_port=nats_monitor_port,
                auth=auth, nats_url=nats_url,
            )  # fmt: skip
        )
    # ValueError: keys; ModelCacheNotWritable: a read-only ONNX cache and no baked model
    except (DataDirInUse, StartError, GaveUp, ShutdownHung, FileNotFoundError, ValueError, ModelCacheNotWritable) as e:
        _fail(f"mmrag up: {e}")


@app.command()
def agent(
    names: Annotated[
        list[str], typer.Argument(help="one or more of: parser ocr embedder indexer retriever reranker generator")
    ],
    verbose: bool = False,
) -> None:
    """Run agents against NATS_URL (one Deployment per agent on Kubernetes)."""
    import signal

    from agents.runtime.host import run_agents
    from agents.settings import AgentSettings
    from mmrag.registry import AGENT_NAMES, agent_types

    unknown = [n for n in names if n not in AGENT_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown agent(s) {', '.join(unknown)}; choose from {', '.join(AGENT_NAMES)}")
    _logging(verbose)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_agents(agent_types(names), AgentSettings(), stop)

    try:
        asyncio.run(main())
    except (OSError, ValueError, RuntimeError) as e:  # e.g. NATS unreachable, settings over max_payload
        _fail(f"mmrag agent {' '.join(names)}: {e}")


@app.command()
def models() -> None:
    """Prepare the models offline: export and cache the ONNX text embedder, load the OCR models once.

    `make install` runs it, so no engine start waits for an export; safe to run again (it reuses the cache).
    """
    from agents.runtime.resources import text_embedder
    from agents.settings import AgentSettings
    from documents.ocr import warm_up

    from models.embedding_onnx import ModelCacheNotWritable

    _logging(False)
    try:
        embedder = text_embedder(AgentSettings())
    except ModelCacheNotWritable as e:
        _fail(f"mmrag models: {e}")
    files = getattr(embedder, "onnx_files", None)
    where = f" ({files.directory})" if files is not None else ""
    print(f"text embedder: {embedder.name}, {embedder.dim}-d, backend {embedder.backend}{where}")
    warm_up()
    print("OCR: PP-OCR models from the rapidocr wheel loaded")


IncludeOption = Annotated[
    list[str] | None,
    typer.Option("--include", show_default=False,
                 help="in folders, only files matching this gitignore-style pattern, e.g. '*.pdf' (repeatable)"),
]  # fmt: skip
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option("--exclude", show_default=False,
                 help="in folders, leave out files matching this gitignore-style pattern, e.g. 'drafts/' (repeatable)"),
]  # fmt: skip
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait for indexing")]
RetryForOption = Annotated[
    float, typer.Option(help="seconds to keep polling a document through errors (503, 404, no connection)")
]
PollOption = Annotated[float, typer.Option(help="seconds between status polls")]


async def _follow(http: Any, docs: list[tuple[str, str]], timeout: float, retry_for: float, poll: float) -> int:
    """Follow (doc_id, label) documents until each is `indexed` or failed, with a progress bar on stderr; the
    number that did not end `indexed` in `timeout` seconds."""
    from mmrag.client import EngineError, status

    loop = asyncio.get_running_loop()
    failures = 0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"))
    with Progress(*columns, console=err) as progress:
        tasks = {doc_id: progress.add_task(label, total=None, state="queued") for doc_id, label in docs}
        pending = dict(tasks)
        failing_since: dict[str, float] = {}  # doc_id -> when its polls started failing
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            for doc_id, task in list(pending.items()):
                try:
                    st = await status(http, doc_id)
                except EngineError as e:
                    # A restarting engine answers 503 or nothing for a while; 404 while it catches up.
                    first = failing_since.setdefault(doc_id, loop.time())
                    if (e.transient or e.status == 404) and loop.time() - first < retry_for:
                        progress.update(task, state=f"retrying ({e.status or 'no connection'})")
                        continue
                    del pending[doc_id]
                    failures += 1
                    err.print(f"[red]gave up[/red] on {doc_id}: {escape(str(e))}")
                    continue
                failing_since.pop(doc_id, None)
                progress.update(
                    task, total=st.get("chunks_total"), completed=st.get("chunks_indexed", 0), state=st["status"]
                )
                if st["status"] in ("indexed", "failed", "deleted"):
                    del pending[doc_id]
                    for warning in st.get("warnings") or []:
                        err.print(f"[yellow]warning[/yellow] {doc_id}: {escape(str(warning))}")
                    if st["status"] != "indexed":
                        failures += 1
                        reason = st.get("error") or st["status"]
                        err.print(f"[red]{st['status']}[/red] {doc_id}: {escape(str(reason))}")
            if pending:
                await asyncio.sleep(poll)
        if pending:
            err.print(f"[yellow]still in progress after {timeout}s:[/yellow] {', '.join(pending)}")
            failures += len(pending)
    return failures


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, help="files (PDF, DOCX, PPTX, XLSX, CSV, PNG, JPEG, WebP, TIFF, GIF, HTML, EPUB, "
                       ".eml, .txt, .md) or folders (recursive)"),
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    wait: Annotated[bool, typer.Option(help="wait until every document is indexed or failed")] = True,
    timeout: TimeoutOption = 600,
    retry_for: RetryForOption = 30,
    poll: PollOption = 0.3,
) -> None:
    """Upload files and folders to a running engine and follow them to `indexed`.

    In a folder, files the engine cannot read are skipped with their reason; a file whose bytes the tenant
    already has is reported with that document's id, not uploaded twice. Exit code 0 only when every file
    selected is in the index (or already was)."""
    from mmrag.client import AsyncClient, EngineError, EngineUnreachable, duplicate_of
    from mmrag.files import select

    files: list[tuple[str, Path]] = []
    skipped = 0
    for path in paths:
        if not path.is_dir():
            files.append((str(path), path))
            continue
        chosen = select(path, include or (), exclude or ())
        for s in chosen.skipped:
            err.print(f"[yellow]skipped[/yellow] {escape(str(path / s.path))}: {escape(s.reason)}")
        skipped += len(chosen.skipped)
        files.extend((str(path / f.path), f.file) for f in chosen.files)

    async def main() -> int:
        failures = duplicates = 0
        async with AsyncClient(url, api_key) as engine:
            docs = []
            for label, path in files:
                try:
                    doc = await engine.upload(path)
                except EngineUnreachable:
                    raise
                except EngineError as e:
                    if (existing := duplicate_of(e)) is not None:
                        duplicates += 1
                        print(f"{existing}  {label}  already indexed (same bytes)", flush=True)
                        continue
                    err.print(f"[red]rejected[/red] {escape(label)}: {escape(str(e))}")
                    failures += 1
                    continue
                docs.append((doc.doc_id, Path(label).name))
                print(f"{doc.doc_id}  {label}", flush=True)
            if wait:
                failures += await _follow(engine.http, docs, timeout, retry_for, poll)
        if len(files) + skipped > 1:
            err.print(f"ingest: {len(docs)} uploaded, {duplicates} already indexed, {skipped} skipped, "
                      f"{failures} failed")  # fmt: skip
        return 1 if failures or skipped else 0

    _run(main())


@app.command()
def sync(
    folder: Annotated[
        str, typer.Argument(help="the folder the index must equal, or s3://BUCKET/PREFIX (S3-compatible: AWS_ENDPOINT_URL)")
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    source: Annotated[
        str | None,
        typer.Option(show_default=False, help="the source's name on the engine (default: the folder's name); "
                     "machines syncing the same folder must use the same name"),
    ] = None,  # fmt: skip
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would change; change nothing")] = False,
    wait: Annotated[bool, typer.Option(help="wait until every added or updated document is indexed")] = True,
    timeout: TimeoutOption = 600,
    retry_for: RetryForOption = 30,
    poll: PollOption = 0.3,
) -> None:
    """Make the tenant's documents of one source equal to a folder or an S3 prefix: add new files, replace changed
    ones (a new revision of the same document), move renamed ones (same bytes: nothing indexed again), delete
    removed ones.

    The state is on the engine (each document's source, path and SHA-256), not in a local file. Exit code 0
    when every file selected is in the index and every change went through."""
    import tempfile

    from mmrag import s3
    from mmrag.files import select
    from mmrag.sync import check_source_name, default_source_name, skipped_lines

    with tempfile.TemporaryDirectory(prefix="mmrag-sync-") as workdir:
        try:
            if s3.is_s3_url(folder):
                name = check_source_name(source) if source is not None else default_source_name(s3.default_source_name(folder))
                chosen = s3.select(folder, Path(workdir), include or (), exclude or ())
            else:
                if not Path(folder).is_dir():
                    _fail(f"{folder} is not a folder (nor an s3:// URL)")
                name = check_source_name(source) if source is not None else default_source_name(Path(folder))
                chosen = select(Path(folder), include or (), exclude or ())
        except (ValueError, s3.S3Error) as e:
            _fail(str(e))
        for line in skipped_lines(chosen.skipped):
            err.print(escape(line))
        _sync(url, api_key, name, chosen, dry_run=dry_run, wait=wait, timeout=timeout, retry_for=retry_for, poll=poll)


def _sync(url: str, api_key: str | None, name: str, chosen: Any, *, dry_run: bool, wait: bool, timeout: float,
          retry_for: float, poll: float) -> None:  # fmt: skip
    from mmrag.client import client
    from mmrag.sync import apply, describe, indexed_documents, plan

    async def main() -> int:
        async with client(url, api_key=api_key) as http:
            todo = plan(chosen.files, await indexed_documents(http, name))
            if dry_run:
                describe(todo, print)
                print(f"sync {name} (dry run, nothing changed): {len(todo.added)} to add, {len(todo.updated)} to "
                      f"update, {len(todo.moved)} to move, {len(todo.deleted)} to delete, {len(todo.unchanged)} "
                      f"unchanged ({len(chosen.skipped)} skipped)")  # fmt: skip
                return 1 if chosen.skipped else 0
            out = await apply(http, name, todo, lambda line: print(line, flush=True), lambda line: err.print(escape(line)))
            if wait and out.follow:
                out.failed += await _follow(http, out.follow, timeout, retry_for, poll)
        print(f"sync {name}: {out.summary(len(chosen.skipped))}")
        return 1 if out.failed or chosen.skipped else 0

    _run(main())


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    top_k: Annotated[int, typer.Option(help="how many passages to use")] = 5,
    doc: DocOption = None,
    modality: ModalityOption = None,
    pages: PagesOption = None,
) -> None:
    """Ask a running engine; the answer streams to stdout, then its citations."""
    from mmrag.client import AsyncClient

    _filters(doc, modality, pages)  # a malformed --pages is one line before anything is sent

    async def main() -> int:
        citations = []
        wrote = False
        async with AsyncClient(url, api_key) as engine, contextlib.aclosing(
            engine.ask(question, top_k=top_k, doc_ids=doc, modalities=modality, pages=pages)
        ) as events:
            async for ev in events:
                if ev.event == "token":
                    sys.stdout.write(ev.data.text)
                    sys.stdout.flush()
                    wrote = True
                elif ev.event == "reset":  # a provider failed mid-answer: what was printed is void
                    if wrote:
                        print()
                    err.print(f"[yellow](answer restarted: {ev.data.reason})[/yellow]")
                    citations.clear()
                    wrote = False
                elif ev.event == "citation":
                    citations.append(ev.data)
                elif ev.event == "error":
                    if wrote:
                        print()
                    _fail(f"{ev.data.code}: {ev.data.message}")
        print()
        for c in citations:
            print(f"[{c.n}] {c.filename} {_where(c)} (doc {c.doc_id})")
        return 0

    _run(main())


@app.command()
def chat(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", show_default=False, help="continue this conversation (its id)")
    ] = None,
    top_k: Annotated[int, typer.Option(help="how many passages to use")] = 5,
) -> None:
    """Chat with a running engine: each line of input is asked in one conversation (follow-ups understood);
    /quit or the end of input ends it. Without --conversation a new one starts (its id is printed on stderr)."""
    from mmrag.chat import chat as run_chat

    _run(run_chat(url, api_key, conversation, top_k, err))


def _where(hit: Hit | CitationData) -> str:
    """Where a hit or citation is: its locator (an office file's slide, sheet rows or section, a web page's
    section), else its page."""
    return hit.locator or f"page {hit.page}"


def _filters(doc: list[str] | None, modality: list[str] | None, pages: str | None) -> dict[str, Any]:
    """The `filters` of a search or ask from the command's options; a malformed --pages is one line, exit 1."""
    from mmrag.client import filters

    try:
        return filters(doc_ids=doc, modalities=modality, pages=pages)
    except ValueError as e:
        _fail(f"--pages: {e}")


def _excerpt(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="what to look for (optional with --image)")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    top_k: Annotated[int, typer.Option(help="how many hits")] = 10,
    doc: DocOption = None,
    modality: ModalityOption = None,
    pages: PagesOption = None,
    image: Annotated[
        Path | None, typer.Option(help="search with this image (PNG, JPEG, WebP, TIFF): the same picture, its text")
    ] = None,
) -> None:
    """Search a running engine: ranked hits with score, file, page and an excerpt."""
    from mmrag.client import AsyncClient

    _filters(doc, modality, pages)
    if query is None and image is None:
        _fail("give a query, an --image, or both")
    if image is not None and not image.is_file():
        _fail(f"no such image file: {image}")

    async def main() -> int:
        where = {"top_k": top_k, "doc_ids": doc, "modalities": modality, "pages": pages}
        async with AsyncClient(url, api_key) as engine:
            if image is not None:
                hits = await engine.search_image(image, query, **where)
            else:
                assert query is not None
                hits = await engine.search(query, **where)
        if not hits:
            err.print("no hits")
        for n, h in enumerate(hits, 1):
            print(f"{n:>2}. {h.score:.3f}  {h.filename}  {_where(h)}  {_excerpt(h.text)}")
        return 0

    _run(main())


@app.command("documents")
def list_documents(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    limit: Annotated[int, typer.Option(help="documents per request (all pages are listed)")] = 100,
    source: Annotated[
        str | None, typer.Option(show_default=False, help="only the documents of this synced source (`mmrag sync`)")
    ] = None,
) -> None:
    """List the tenant's documents: id, status, pages, chunks, filename (and source/path of synced ones), and each
    warning on a line below."""
    from mmrag.client import AsyncClient

    async def main() -> int:
        count = 0
        async with AsyncClient(url, api_key) as engine:
            async for d in engine.documents(limit=limit, source=source):
                chunks = f"{d.chunks_indexed}/{d.chunks_total}" if d.chunks_total is not None else "-"
                pages = d.pages if d.pages is not None else "-"
                where = f"  ({d.source}/{d.source_path})" if d.source else ""
                print(f"{d.doc_id}  {d.status:<9}  {pages!s:>5} pages  {chunks:>9} chunks  {d.filename or ''}{where}")
                for warning in d.warnings:
                    print(f"    warning: {warning}")
                count += 1
        err.print(f"{count} document{'s' if count != 1 else ''}")
        return 0

    _run(main())


@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="ids of the documents to delete")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete documents (their chunks leave the index; their status becomes `deleted`)."""
    from mmrag.client import AsyncClient, EngineError, EngineUnreachable

    async def main() -> int:
        failures = 0
        async with AsyncClient(url, api_key) as engine:
            for doc_id in doc_ids:
                try:
                    await engine.delete(doc_id)
                except EngineUnreachable:
                    raise
                except EngineError as e:
                    err.print(f"[red]error:[/red] {escape(doc_id)}: {escape(str(e))}")
                    failures += 1
                    continue
                print(f"{doc_id}  deleted")
        return 1 if failures else 0

    _run(main())


@app.command()
def reindex(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    chunk_max_tokens: Annotated[
        int | None, typer.Option(show_default=False, help="largest chunk in word pieces (16-254) in the new generation")
    ] = None,
    chunks_per_message: Annotated[
        int | None, typer.Option(show_default=False, help="chunks per chunks.parsed message (1-64)")
    ] = None,
    quantization: Annotated[
        bool | None,
        typer.Option("--quantization/--no-quantization", show_default=False, help="int8 quantization of the new collection"),
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(show_default=False, help="text embedding model of the new generation: minilm (English) or "
                     "multilingual-e5-small (questions and documents in different languages)"),
    ] = None,
    wait: Annotated[bool, typer.Option(help="follow it until the new generation serves")] = True,
    gate: Annotated[
        Path | None,
        typer.Option(show_default=False, help="a questions file (JSON Lines, as for `mmrag eval`): flip only if "
                     "the new generation is not worse on it than the serving one"),
    ] = None,
    gate_tenant: Annotated[str, typer.Option(help="the tenant whose documents the gate's questions are about")] = "default",
    gate_metric: Annotated[str, typer.Option(help="recall, ndcg@10, mrr or fact_rate")] = "ndcg@10",
    gate_tolerance: Annotated[float, typer.Option(help="how much worse (0-1) the new generation may be")] = 0.0,
    cancel: Annotated[
        str | None, typer.Option(show_default=False, help="cancel this building generation (e.g. g2) instead")
    ] = None,
) -> None:
    """Re-index by replay: build a new index generation with these settings (unset ones carry over) while the
    current one keeps answering; the new one serves once it has caught up (and, with --gate, once it is not
    worse on the gate's questions). Needs an operator key."""
    from mmrag.client import AsyncClient
    from mmrag.evaluate import QuestionsFileError, read_questions

    gate_body = None
    if gate is not None:
        try:
            gate_body = {"tenant": gate_tenant, "questions": read_questions(gate), "metric": gate_metric,
                         "tolerance": gate_tolerance}  # fmt: skip
        except QuestionsFileError as e:
            _fail(str(e))

    settings = {
        k: v
        for k, v in (
            ("chunk_max_tokens", chunk_max_tokens), ("chunks_per_message", chunks_per_message),
            ("vector_quantization", quantization), ("embedding_model", embedding_model),
        )
        if v is not None
    }  # fmt: skip
    from contracts.generations import EMBEDDING_MODELS

    if embedding_model is not None and embedding_model not in EMBEDDING_MODELS:
        raise typer.BadParameter(f"{embedding_model!r}: use one of {', '.join(EMBEDDING_MODELS)}",
                                 param_hint="--embedding-model")  # fmt: skip

    async def main() -> int:
        async with AsyncClient(url, api_key) as engine:
            if cancel is not None:
                print(f"{cancel}  {(await engine.cancel_reindex(cancel))['state']}")
                return 0
            started = await engine.reindex(settings, gate_body)
            gen_id = started["id"]
            print(f"{gen_id}  building from g{started['source_generation']}  settings {started['settings']}", flush=True)
            if not wait:
                return 0
            columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"))
            final = started
            with Progress(*columns, console=err) as progress:
                task = progress.add_task(f"{gen_id} documents", total=None, state="building")
                async for kind, view in engine.reindex_events(gen_id):
                    if kind == "error":
                        err.print(f"[red]error:[/red] {escape(str(view.get('message')))}")
                        return 1
                    p = view["progress"]
                    progress.update(task, total=p["documents_total"] or None, completed=p["documents_done"],
                                    state=f"{view['state']}, {p['pending_messages']} messages pending")  # fmt: skip
                    final = view
            print(f"{gen_id}  {final['state']}")
            if final.get("gate_outcome"):
                print(f"{gen_id}  gate {final['gate_outcome']['state']}: {final['gate_outcome']['reason']}")
        return 0 if final["state"] == "serving" else 1

    _run(main())


@app.command()
def mcp(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Serve MCP over stdio for a local assistant (Claude Desktop, an IDE): the tools search, ask, list_documents,
    get_page and ingest call the engine at --url with the key (`MMRAG_API_KEY`). Logs go to stderr."""
    from edge_api.mcp import run_stdio

    _logging(False)
    try:
        asyncio.run(run_stdio(url, api_key))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("eval")
def eval_(
    questions: Annotated[Path, typer.Argument(help="JSON Lines: one question a line, with `expected` sources "
                                              "({doc, page}) and/or `facts`")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    k: Annotated[int, typer.Option(help="recall@k's k (1-50)")] = 10,
    name: Annotated[str | None, typer.Option(show_default=False, help="a label for the report")] = None,
    generation: Annotated[
        int | None, typer.Option(show_default=False, help="evaluate this index generation (operator key)")
    ] = None,
    compare_generation: Annotated[
        int | None, typer.Option(show_default=False, help="also run on this generation and list what changed (operator)")
    ] = None,
    compare_with: Annotated[
        str | None, typer.Option(show_default=False, help="list what changed since this earlier evaluation (its id)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for the report (else print the evaluation's id)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole report as JSON")] = False,
) -> None:
    """Evaluate your corpus with your questions: recall@k, nDCG@10, MRR, fact rate, abstention rate, per question,
    and what changed against another run or generation. Needs an admin key of the tenant."""
    from mmrag.client import AsyncClient
    from mmrag.evaluate import QuestionsFileError, read_questions, run_eval

    try:
        body: dict[str, Any] = {"questions": read_questions(questions), "k": k}
    except QuestionsFileError as e:
        _fail(str(e))
    extra = {"name": name, "generation": generation, "compare_generation": compare_generation,
             "compare_with": compare_with}  # fmt: skip
    body.update({key: v for key, v in extra.items() if v is not None})

    async def main() -> int:
        async with AsyncClient(url, api_key) as engine:
            return await run_eval(engine.http, body, wait=wait, as_json=as_json)

    _run(main())


keys_app = typer.Typer(help="Manage API keys (stored hashed in a JSON keys file).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")],
    role: Annotated[str, typer.Option(help="reader (GET, search, ask), writer (+ upload, delete), admin (its tenant) or operator "
                     "(+ re-index, which spans every tenant: give it to the deployment's operators only)")],
    file: KeysFileOption = DEFAULT_KEYS_FILE,
) -> None:
    """Create a key and print it: this is the only time it is shown (the file keeps only its SHA-256)."""
    from edge_api.keys import KeysFileError, create_key

    try:
        entry, key = create_key(file, tenant, role)
    except (KeysFileError, OSError) as e:
        _fail(f"mmrag keys create: {e}")
    err.print(f"created key {entry.id} (tenant {entry.tenant}, role {entry.role}) in {file}; it is shown only once:")
    print(key)


@keys_app.command("list")
def keys_list(file: KeysFileOption = DEFAULT_KEYS_FILE) -> None:
    """List the keys: id, tenant, role, created, revoked (never a key or its hash)."""
    from edge_api.keys import KeysFileError, load_file

    try:
        entries = load_file(file)
    except (KeysFileError, OSError) as e:
        _fail(f"mmrag keys list: {e}")
    for k in entries:
        print(f"{k.id}  {k.tenant:<20}  {k.role:<8}  {k.created_at}  {'revoked' if k.revoked else 'active'}")
    err.print(f"{len(entries)} key{'s' if len(entries) != 1 else ''} in {file}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, as `mmrag keys list` shows it")],
    file: KeysFileOption = DEFAULT_KEYS_FILE,
) -> None:
    """Revoke a key; a running edge API refuses it from its next request (it re-reads the file when it changes)."""
    from edge_api.keys import KeysFileError, revoke_key

    try:
        entry = revoke_key(file, key_id)
    except KeyError:
        _fail(f"mmrag keys revoke: no key {key_id!r} in {file}")
    except (KeysFileError, OSError) as e:
        _fail(f"mmrag keys revoke: {e}")
    print(f"{entry.id}  revoked")


nats_user_app = typer.Typer(help="NATS credentials of external publishers (the documented ingest path).", no_args_is_help=True)
app.add_typer(nats_user_app, name="nats-user")


@nats_user_app.command("create")
def nats_user_create(
    tenant: Annotated[str, typer.Option(help="the tenant whose documents the credential may submit and delete")],
    data_dir: Annotated[Path, typer.Option(help="the data dir of `mmrag up`")] = Path(".mmrag-data"),
    nats_url: Annotated[str, typer.Option(help="the engine's NATS, where T's uploads bucket is created",
                                          envvar="NATS_URL")] = "nats://127.0.0.1:4222",
) -> None:
    """Create tenant T's NATS credential (or show it again) and print it as JSON on stdout.

    It may write T's uploads bucket `mmrag-uploads-T` (put, get_info, delete), publish `docs.ingest.T.*` and
    `docs.delete.T.*` and read T's progress keys; nothing else (no other tenant, no answers, chunks or streams). A
    running `mmrag up` on this data dir accepts it at once, and the bucket is created there (with the data dir's
    admin credential), so the publisher can store bytes before T's first upload over HTTP.
    """
    import asyncio
    import json

    from mmrag.natsauth import auth_dir, create_tenant_bucket, reload_server, tenant_credential, write_server_config

    try:
        cred = tenant_credential(data_dir.resolve(), tenant)
        write_server_config(data_dir.resolve())
    except (ValueError, OSError) as e:
        _fail(f"mmrag nats-user create: {e}")
    running = reload_server(data_dir.resolve())
    err.print(
        f"NATS user {cred.user} for tenant {tenant} stored in {auth_dir(data_dir) / 'tenants'} (mode 0600); "
        + ("the running nats-server reloaded its config" if running else "`mmrag up` on this data dir accepts it")
    )
    try:
        bucket = asyncio.run(create_tenant_bucket(data_dir.resolve(), nats_url, tenant))
    except Exception as e:  # noqa: BLE001 - no engine there: the bucket comes later
        err.print(f"uploads bucket of {tenant} not created ({e}): run this again while the engine runs "
                  "(--nats-url), or upload one file over HTTP first")  # fmt: skip
    else:
        err.print(f"uploads bucket {bucket} ready")
    print(json.dumps({"user": cred.user, "password": cred.password}))


@app.command()
def schemas(out: Annotated[Path, typer.Option(help="folder for the JSON Schema files")] = Path("docs/schemas")) -> None:
    """Write the JSON Schema of every message into a folder, and the AsyncAPI document beside it."""
    from contracts.asyncapi import render
    from contracts.schemas import write_schemas

    for path in write_schemas(out):
        print(path)
    asyncapi = out.parent / "asyncapi.yaml"
    asyncapi.write_text(render())
    print(asyncapi)


if __name__ == "__main__":
    app()
